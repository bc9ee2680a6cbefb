package broker_test

// Issue 11 §5: where Duet's MQTT departed from the protocol, seen from a
// raw socket so every byte the server sends (or does not send) is checked.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// rawClient speaks MQTT over a plain socket, with mochi's codec.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	ver  byte // 4 (3.1.1) or 5
}

// rawConnect logs user in with client id clientID and returns the client
// and the CONNACK.
func rawConnect(t *testing.T, s *testServer, user, clientID string, ver byte) (*rawClient, packets.Packet) {
	t.Helper()
	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawClient{t: t, conn: conn, r: bufio.NewReader(conn), ver: ver}
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: clientID,
			UsernameFlag: true, Username: []byte(user), PasswordFlag: true, Password: []byte(sig(t, user))}})
	ack, err := c.read()
	if err != nil || ack.FixedHeader.Type != packets.Connack {
		t.Fatalf("CONNACK: %+v, %v", ack, err)
	}
	return c, ack
}

func (c *rawClient) send(pk packets.Packet) {
	c.t.Helper()
	pk.ProtocolVersion = c.ver
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	default:
		err = fmt.Errorf("cannot send type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	c.write(buf.Bytes())
}

func (c *rawClient) write(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

// publish sends a PUBLISH; id 0 means QoS 0.
func (c *rawClient) publish(id uint16, topic string, alias uint16, retain bool, payload string) {
	c.t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: retain}, PacketID: id,
		TopicName: topic, Payload: []byte(payload)}
	if id > 0 {
		pk.FixedHeader.Qos = 1
	}
	if alias > 0 {
		pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = alias, true
	}
	c.send(pk)
}

// read returns the next packet from the server (within 5 s).
func (c *rawClient) read() (packets.Packet, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var pk packets.Packet
	b, err := c.r.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(b); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(c.r)
	if err != nil {
		return pk, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return pk, err
	}
	pk.FixedHeader.Remaining = n
	pk.ProtocolVersion = c.ver
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	default:
		err = fmt.Errorf("unexpected packet type %d", pk.FixedHeader.Type)
	}
	return pk, err
}

// next skips PUBLISHes (replies, events) and returns the next other packet.
func (c *rawClient) next() packets.Packet {
	c.t.Helper()
	for {
		pk, err := c.read()
		if err != nil {
			c.t.Fatalf("read: %v", err)
		}
		if pk.FixedHeader.Type != packets.Publish {
			return pk
		}
	}
}

// expectPuback checks that the next packet is the PUBACK of id, with code.
func (c *rawClient) expectPuback(id uint16, code byte) {
	c.t.Helper()
	if pk := c.next(); pk.FixedHeader.Type != packets.Puback || pk.PacketID != id || pk.ReasonCode != code {
		c.t.Fatalf("got %s id %d reason 0x%02x, want PUBACK %d 0x%02x", packets.PacketNames[pk.FixedHeader.Type], pk.PacketID, pk.ReasonCode, id, code)
	}
}

// expectDisconnect checks that the server sends an MQTT 5 DISCONNECT with
// code and then closes the connection.
func (c *rawClient) expectDisconnect(code byte) {
	c.t.Helper()
	pk := c.next()
	if pk.FixedHeader.Type != packets.Disconnect || pk.ReasonCode != code {
		c.t.Fatalf("got %s (reason 0x%02x), want DISCONNECT 0x%02x", packets.PacketNames[pk.FixedHeader.Type], pk.ReasonCode, code)
	}
	c.expectClosed()
}

// expectClosed checks that the server closes the connection without
// sending anything more: an MQTT 3.1.1 server has no DISCONNECT to send.
func (c *rawClient) expectClosed() {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(c.r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatalf("connection still open (received %x)", rest)
	}
	if len(rest) > 0 {
		c.t.Fatalf("received %x before the close, want nothing", rest)
	}
}

// withVictim starts a server with alice, bob and mallory, and bob
// connected (3.1.1) with his timeline replayed; ver is the MQTT protocol
// level of the version under test.
func withVictim(t *testing.T, v5 bool) (s *testServer, bob *device, ver byte) {
	t.Helper()
	s = startServer(t, serverOpts{})
	s.users("alice", "bob", "mallory")
	bob = s.connect("bob", connectOpts{})
	bob.syncComplete()
	if ver = 4; v5 {
		ver = 5
	}
	return s, bob, ver
}

// sendBody is a sendmsg request from alice to bob.
func sendBody(random int) string {
	return fmt.Sprintf(`{"To_Account":"bob","MsgRandom":%d,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi %d"}}]}`, random, random)
}

// bobGetsOnly checks that bob's next message is the one alice sends now:
// whatever was refused before it stored or delivered nothing.
func bobGetsOnly(t *testing.T, s *testServer, bob *device) {
	t.Helper()
	alice := s.connect("alice", connectOpts{clientID: "alice:check"})
	alice.drainToSync()
	r := alice.send("bob", 424242)
	if e := bob.nextMsg(); e.str("MsgKey") != r.str("MsgKey") {
		t.Fatalf("bob's next message is %v, want %s", e, r.str("MsgKey"))
	}
}

// MQTT 5 §3.2.2.3: the CONNACK states what the server supports; mochi left
// out Retain Available 0, the Maximum Packet Size and Topic Alias Maximum.
func TestConnackCapabilities(t *testing.T) {
	s := startServer(t, serverOpts{})
	s.users("alice")
	_, ack := rawConnect(t, s, "alice", "alice:caps", 5)
	p := ack.Properties
	if ack.ReasonCode != 0 || !p.RetainAvailableFlag || p.RetainAvailable != 0 || p.MaximumPacketSize != 1<<20 || p.TopicAliasMaximum == 0 {
		t.Fatalf("CONNACK 0x%02x: Retain Available %d (present %v), Maximum Packet Size %d, Topic Alias Maximum %d",
			ack.ReasonCode, p.RetainAvailable, p.RetainAvailableFlag, p.MaximumPacketSize, p.TopicAliasMaximum)
	}
}

// A QoS 1 PUBLISH to $SYS/… was dropped with no PUBACK and no disconnect:
// it is refused like any topic a user may not publish to (PROTOCOL §2).
func TestSysPublishRefused(t *testing.T) {
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			s, bob, ver := withVictim(t, v.v5)
			c, _ := rawConnect(t, s, "alice", "alice:sys", ver)
			c.publish(9, "$SYS/broker/clients/connected", 0, false, sendBody(1))
			if !v.v5 {
				c.expectClosed() // no negative PUBACK in 3.1.1
				return
			}
			c.expectPuback(9, 0x87)
			// The connection stays up, as for any refused topic.
			c.publish(10, "im/alice/req/openim/sendmsg", 0, false, sendBody(2))
			c.expectPuback(10, 0)
			if e := bob.nextMsg(); e.num("MsgRandom") != 2 {
				t.Fatalf("bob got %v", e)
			}
		})
	}
}

// Retain Available is 0: a PUBLISH with RETAIN=1 ends the connection (MQTT
// 5 DISCONNECT 0x9A; 3.1.1 closed) and is not executed: the sendmsg it
// carries is not stored, and nothing is retained.
func TestRetainRefused(t *testing.T) {
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			s, bob, ver := withVictim(t, v.v5)
			c, _ := rawConnect(t, s, "alice", "alice:retain", ver)
			c.publish(3, "im/alice/req/openim/sendmsg", 0, true, sendBody(1))
			if v.v5 {
				c.expectDisconnect(0x9A)
			} else {
				c.expectClosed()
			}
			if got := s.broker.Server.Topics.Messages("im/#"); len(got) > 0 {
				t.Fatalf("retained: %v", got)
			}
			bobGetsOnly(t, s, bob)
		})
	}
}

// Topic aliases are resolved before the ACL: a PUBLISH that names its
// topic by alias only was refused (0x87) because mochi checked its empty
// topic. An alias stands only for a topic the sender may publish to.
func TestTopicAlias(t *testing.T) {
	s, bob, _ := withVictim(t, true)
	c, _ := rawConnect(t, s, "alice", "alice:alias", 5)
	c.publish(1, "im/alice/req/openim/sendmsg", 1, false, sendBody(1)) // sets alias 1
	c.expectPuback(1, 0)
	c.publish(2, "", 1, false, sendBody(2)) // uses it
	c.expectPuback(2, 0)
	for _, want := range []int64{1, 2} {
		if e := bob.nextMsg(); e.num("MsgRandom") != want {
			t.Fatalf("bob got %v, want MsgRandom %d", e, want)
		}
	}
	// An alias for a forbidden topic is refused with its PUBLISH and is not
	// set: using it afterwards is a protocol error.
	c.publish(3, "im/bob/in", 2, false, forgedEvent)
	c.expectPuback(3, 0x87)
	c.publish(4, "", 2, false, forgedEvent)
	c.expectDisconnect(0x82)
	// An alias above the advertised maximum: 0x94 [MQTT-3.3.2-9].
	c2, ack := rawConnect(t, s, "alice", "alice:alias2", 5)
	c2.publish(1, "im/alice/req/openim/sendmsg", ack.Properties.TopicAliasMaximum+1, false, sendBody(3))
	c2.expectDisconnect(0x94)
	bobGetsOnly(t, s, bob)
}

// A packet above the Maximum Packet Size ends an MQTT 5 connection with
// DISCONNECT 0x95 [MQTT-3.2.2-15] (3.1.1: closed, nothing sent). The server
// needs only the fixed header to know.
func TestPacketTooLarge(t *testing.T) {
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			s := startServer(t, serverOpts{})
			s.users("alice")
			ver := byte(4)
			if v.v5 {
				ver = 5
			}
			c, _ := rawConnect(t, s, "alice", "alice:big", ver)
			// A request that fits, then the header of one that does not,
			// in one write: the first is answered before the DISCONNECT.
			var buf bytes.Buffer
			ok := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: ver,
				PacketID: 1, TopicName: "im/alice/req/openim/sendmsg", Payload: []byte(`{}`)}
			if err := ok.PublishEncode(&buf); err != nil {
				t.Fatal(err)
			}
			buf.Write([]byte{0x32, 0x81, 0x80, 0x40}) // PUBLISH QoS 1, remaining length 1 MiB + 1
			buf.WriteString("\x00\x1bim/alice/req/openim/sendmsg")
			c.write(buf.Bytes())
			if pk := c.next(); pk.FixedHeader.Type != packets.Puback || pk.PacketID != 1 {
				t.Fatalf("got %+v, want the PUBACK of the request that fits", pk)
			}
			if v.v5 {
				c.expectDisconnect(0x95)
			} else {
				c.expectClosed()
			}
		})
	}
}

// MQTT 3.1.1 defines DISCONNECT only from the client (§3.14): the server
// closes the connection without one — when it refuses a publish, and when
// another connection takes over the client id.
func TestNoDisconnectToV3(t *testing.T) {
	s := startServer(t, serverOpts{})
	s.users("alice", "bob")
	c, _ := rawConnect(t, s, "alice", "alice:v3", 4)
	c.publish(5, "im/bob/in", 0, false, forgedEvent)
	c.expectClosed()

	old, _ := rawConnect(t, s, "alice", "alice:taken", 4)
	rawConnect(t, s, "alice", "alice:taken", 4)
	old.expectClosed()
}

// A DeviceID is 1–128 bytes of [A-Za-z0-9_-@.]: a 65,000-byte one went into
// the cursor key. Others are refused with MQTT 5 0x85 Client Identifier
// not valid, MQTT 3.1.1 0x02 identifier rejected.
func TestDeviceIDRefused(t *testing.T) {
	s := startServer(t, serverOpts{})
	s.users("alice")
	cases := []struct {
		device string
		ok     bool
	}{
		{strings.Repeat("d", 128), true},
		{"Phone_1-a@b.c", true},
		{strings.Repeat("d", 129), false},
		{strings.Repeat("d", 3000), false}, // a 65,000-byte one is over the CONNECT cap: closed unanswered (TestConnectSizeCap)
		{"dev/1", false},
		{"dev 1", false},
		{"dév", false},
		{"~assigned", false},
		{"a:b", false},
	}
	for _, v := range versions {
		for _, tc := range cases {
			name := tc.device
			if len(name) > 20 {
				name = fmt.Sprintf("%d bytes", len(name))
			}
			t.Run(v.name+"/"+name, func(t *testing.T) {
				d, err := s.dial("alice", connectOpts{v5: v.v5, clientID: "alice:" + tc.device, noSub: true})
				if tc.ok {
					if err != nil {
						t.Fatalf("refused: %v", err)
					}
					d.close()
					return
				}
				if err == nil {
					t.Fatal("accepted")
				}
				if v.v5 {
					var r *refused
					if !errors.As(err, &r) || r.code != 0x85 || !strings.Contains(r.reason, "DeviceID") {
						t.Fatalf("got %v, want 0x85 naming the DeviceID rule", err)
					}
				} else if !strings.Contains(err.Error(), "identifier rejected") {
					t.Fatalf("got %v, want return code 0x02", err)
				}
			})
		}
	}
}

// Issue 11 §1 audit: mochi's inline client publishes without the ACL; Duet
// does not enable it, so there is nothing to call.
func TestInlineClientDisabled(t *testing.T) {
	s := startServer(t, serverOpts{})
	if err := s.broker.Server.Publish("im/bob/in", []byte(forgedEvent), false, 1); !errors.Is(err, mqtt.ErrInlineClientNotEnabled) {
		t.Fatalf("inline publish: %v", err)
	}
}

// Issue 11 §1 audit: mochi publishes and retains $SYS topics itself; no
// device can subscribe to a filter that matches them: every filter it may
// hold starts with im/{me}/.
func TestSysTopicsNotDelivered(t *testing.T) {
	s := startServer(t, serverOpts{})
	s.users("alice")
	for _, v := range versions {
		d := s.connect("alice", connectOpts{v5: v.v5, clientID: "alice:sys" + v.name})
		d.syncComplete()
		for _, f := range []string{"$SYS/#", "$SYS/broker/uptime", "#", "+/broker/#"} {
			if code := d.subscribeCode(f); code < 0x80 {
				t.Fatalf("%s: subscribe %s granted 0x%02x", v.name, f, code)
			}
		}
		// mochi holds retained $SYS messages, for no one.
		if len(s.broker.Server.Topics.Messages("$SYS/#")) == 0 {
			t.Fatal("no $SYS messages retained: the test no longer looks at them")
		}
		if n := d.arrivals.Load(); n != 1 { // the sync_complete only
			t.Fatalf("%s: %d publishes, want 1: %v", v.name, n, drainAll(d))
		}
	}
}

// Issue 11 §1 audit: a session takeover carries the old connection's
// subscriptions (and would have sent its Will) to the new one; a client
// id belongs to one user, so only that user's devices can take it over.
func TestTakeoverOtherUserRefused(t *testing.T) {
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			s := startServer(t, serverOpts{})
			s.users("alice", "bob", "mallory")
			bob := s.connect("bob", connectOpts{v5: v.v5, clientID: "bob:phone"})
			bob.syncComplete()
			_, err := s.dial("mallory", connectOpts{v5: v.v5, clientID: "bob:phone", noSub: true})
			if err == nil {
				t.Fatal("mallory took over bob's session")
			}
			bobGetsOnly(t, s, bob) // bob's connection was not taken over
		})
	}
}
