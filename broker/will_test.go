package broker_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	v3packets "github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/duet-im/duet/internal/wait"
)

// forgedEvent is what an attacker would like bob's devices to take for a
// timeline event: a message "from the administrator" with a Seq that a
// de-duplicating device would then refuse when the real one arrives.
const forgedEvent = `{"Seq":7,"Event":"msg","From_Account":"administrator","To_Account":"bob","MsgKey":"forged","MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"forged"}}]}`

// willSpec is a Will Message an attacker puts in its CONNECT.
type willSpec struct {
	topic  string
	qos    byte
	retain bool
	binary bool   // paho.mqtt SetBinaryWill instead of SetWill
	delay  uint32 // MQTT 5 Will Delay Interval, seconds
}

// Issue 11 §1: a Will is published by mochi without the publish ACL, so a
// CONNECT carrying one is refused (PROTOCOL §3): MQTT 5 CONNACK 0x87 with a
// reason string saying so, MQTT 3.1.1 CONNACK 0x05. The victim's devices
// receive nothing, on either version, including a delayed Will.
func TestWillRefused(t *testing.T) {
	cases := []struct {
		name string
		v5   bool
		will willSpec
	}{
		{"v3/SetWill in", false, willSpec{topic: "im/bob/in", qos: 1}},
		{"v3/SetBinaryWill live", false, willSpec{topic: "im/bob/live", binary: true}},
		{"v3/retained Will rsp", false, willSpec{topic: "im/bob/rsp", qos: 1, retain: true}},
		{"v3/Will on a request topic", false, willSpec{topic: "im/bob/req/openim/sendmsg", qos: 1}},
		{"v5/Will in", true, willSpec{topic: "im/bob/in", qos: 1}},
		{"v5/Will live", true, willSpec{topic: "im/bob/live"}},
		{"v5/retained Will in", true, willSpec{topic: "im/bob/in", retain: true}},
		{"v5/delayed Will in", true, willSpec{topic: "im/bob/in", qos: 1, delay: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := startServer(t, serverOpts{})
			s.users("alice", "bob", "mallory")
			bob := s.connect("bob", connectOpts{v5: tc.v5})
			bob.syncComplete()
			before := bob.arrivals.Load()

			drop, err := dialWithWill(t, s, "mallory", tc.v5, tc.will)
			if err == nil {
				t.Errorf("a CONNECT with a Will on %s was accepted", tc.will.topic)
				drop() // an abrupt end: mochi publishes the Will now (or after its delay)
			} else {
				checkWillRefusal(t, tc.v5, err)
			}
			// Wait past the moment mochi would publish the Will (after the
			// Will Delay Interval, on its one-second tick), watching bob.
			window := time.Second + 3*time.Duration(tc.will.delay)*time.Second
			wait.Quiet(t, window, 20*time.Millisecond, func() error {
				if n := bob.arrivals.Load(); n != before {
					return fmt.Errorf("bob received %d publish(es) after the Will connection: %v", n-before, drainAll(bob))
				}
				return nil
			})
			// Bob is still served: the next thing he receives is real.
			alice := s.connect("alice", connectOpts{v5: tc.v5})
			alice.syncComplete()
			r := alice.send("bob", 1)
			e := bob.next()
			if e.str("MsgKey") != r.str("MsgKey") || e.num("_arrival") != before+1 {
				t.Fatalf("bob's next publish is %v, want alice's message %s as arrival %d", e, r.str("MsgKey"), before+1)
			}
		})
	}
}

// checkWillRefusal checks the CONNACK that refused a Will.
func checkWillRefusal(t *testing.T, v5 bool, err error) {
	t.Helper()
	if v5 {
		var r *refused
		if !errors.As(err, &r) || r.code != 0x87 || !strings.Contains(r.reason, "Will") {
			t.Fatalf("refusal %v, want CONNACK 0x87 with a reason string about Wills", err)
		}
		return
	}
	if !errors.Is(err, v3packets.ErrorRefusedNotAuthorised) {
		t.Fatalf("refusal %v, want CONNACK return code 0x05", err)
	}
}

// drainAll returns what is queued on d's channels, for a failure message.
func drainAll(d *device) []event {
	var out []event
	for _, ch := range []chan event{d.in, d.live, d.rsp} {
		for {
			select {
			case e := <-ch:
				out = append(out, e)
				continue
			default:
			}
			break
		}
	}
	return out
}

// dialWithWill connects user with a Will and returns a function that ends
// the connection abruptly (no DISCONNECT, so a server would publish the
// Will), or the CONNACK refusal.
func dialWithWill(t *testing.T, s *testServer, user string, v5 bool, w willSpec) (drop func(), err error) {
	t.Helper()
	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if v5 {
		c := paho.NewClient(paho.ClientConfig{ClientID: user + ":will", Conn: conn})
		cp := &paho.Connect{ClientID: user + ":will", Username: user, UsernameFlag: true, Password: []byte(sig(t, user)),
			PasswordFlag: true, KeepAlive: 30, CleanStart: true,
			WillMessage: &paho.WillMessage{Topic: w.topic, QoS: w.qos, Retain: w.retain, Payload: []byte(forgedEvent)}}
		if w.delay > 0 {
			// A Session Expiry above the delay, so the server does not shorten it.
			expiry := w.delay + 60
			cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
			cp.WillProperties = &paho.WillProperties{WillDelayInterval: &w.delay}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ack, err := c.Connect(ctx, cp)
		if err != nil {
			if ack != nil {
				return nil, connackRefusal(ack)
			}
			t.Fatalf("connect: %v", err)
		}
		return func() { conn.Close() }, nil
	}
	opts := pahov3.NewClientOptions().AddBroker("tcp://" + s.addr).SetClientID(user + ":will").
		SetUsername(user).SetPassword(sig(t, user)).SetCleanSession(true).SetAutoReconnect(false).
		SetConnectRetry(false).SetProtocolVersion(4).
		SetCustomOpenConnectionFn(func(*url.URL, pahov3.ClientOptions) (net.Conn, error) { return conn, nil })
	if w.binary {
		opts.SetBinaryWill(w.topic, []byte(forgedEvent), w.qos, w.retain)
	} else {
		opts.SetWill(w.topic, forgedEvent, w.qos, w.retain)
	}
	c := pahov3.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(5 * time.Second) {
		t.Fatal("connect timeout")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	return func() { conn.Close() }, nil
}
