package broker_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// The MQTT request path under fuzzing, through a raw socket: the bytes go
// through the listener, mochi's packet decoder, the ACL and the request
// hook exactly as a device's would. `go test` runs the seeds; `make fuzz`
// runs each target for a bounded time.

// rawConn is a hand-driven MQTT 3.1.1 connection: the fuzz targets need to
// write bytes no client library would.
type rawConn struct {
	t  testing.TB
	c  net.Conn
	r  *bufio.Reader
	id uint16
}

// rawLogin connects as user over TCP and subscribes to its rsp topic.
func rawLogin(t testing.TB, addr, user string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rc := &rawConn{t: t, c: c, r: bufio.NewReader(c)}
	rc.write(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60,
			ClientIdentifier: user + ":fuzz", UsernameFlag: true, Username: []byte(user),
			PasswordFlag: true, Password: []byte(sig(t, user)),
		},
	})
	if hb, body, err := rc.read(); err != nil || hb>>4 != packets.Connack || len(body) < 2 || body[1] != 0 {
		t.Fatalf("CONNACK: %x body %x err %v", hb, body, err)
	}
	rc.id++
	rc.write(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    rc.id,
		Filters:     packets.Subscriptions{{Filter: "im/" + user + "/rsp", Qos: 1}},
	})
	if hb, _, err := rc.read(); err != nil || hb>>4 != packets.Suback {
		t.Fatalf("SUBACK: %x err %v", hb, err)
	}
	return rc
}

func (rc *rawConn) write(pk packets.Packet) {
	rc.t.Helper()
	var b bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&b)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&b)
	case packets.Publish:
		err = pk.PublishEncode(&b)
	}
	if err != nil {
		rc.t.Fatal(err)
	}
	rc.writeRaw(b.Bytes())
}

func (rc *rawConn) writeRaw(b []byte) error {
	rc.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := rc.c.Write(b)
	return err
}

// read returns the next packet's first byte (type and flags) and its
// variable header plus payload.
func (rc *rawConn) read() (byte, []byte, error) {
	rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	hb, err := rc.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, _, err := packets.DecodeLength(rc.r)
	if err != nil {
		return 0, nil, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(rc.r, body); err != nil {
		return 0, nil, err
	}
	return hb, body, nil
}

// request publishes payload at QoS 1 to topic and returns the reply that
// arrives on rsp, having checked that the request's PUBACK came too.
func (rc *rawConn) request(topic string, payload []byte) (map[string]any, error) {
	rc.id++
	if rc.id == 0 {
		rc.id = 1
	}
	rc.write(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   topic, PacketID: rc.id, Payload: payload,
	})
	var reply map[string]any
	acked := false
	for reply == nil || !acked {
		hb, body, err := rc.read()
		if err != nil {
			return nil, fmt.Errorf("after %d bytes to %s (acked %v, reply %v): %w", len(payload), topic, acked, reply != nil, err)
		}
		switch hb >> 4 {
		case packets.Puback:
			acked = true
		case packets.Publish:
			pk := packets.Packet{ProtocolVersion: 4}
			if err := pk.FixedHeader.Decode(hb); err != nil {
				return nil, err
			}
			if err := pk.PublishDecode(body); err != nil {
				return nil, err
			}
			if pk.FixedHeader.Qos > 0 {
				var ack bytes.Buffer
				(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID}).PubackEncode(&ack)
				rc.writeRaw(ack.Bytes())
			}
			if err := json.Unmarshal(pk.Payload, &reply); err != nil {
				return nil, fmt.Errorf("reply on %s is not JSON: %q", pk.TopicName, pk.Payload)
			}
		}
	}
	return reply, nil
}

var fuzzCommands = []string{
	"openim/sendmsg", "openim/getmsg", "openim/sync", "openim/typing", "openim/msgwithdraw",
	"openim/set_msg_read", "recentcontact/get_list", "recentcontact/delete", "sns/friend_add",
	"sns/black_list_add", "profile/portrait_set", "profile/portrait_get", "push/set_token",
	"openim/batchsendmsg", "no/such_command",
}

// FuzzMQTTRequest sends random bodies to real command topics over one
// logged-in raw connection. Every request is PUBACKed and answered on rsp
// with a JSON reply that carries an ErrorCode, and the connection stays up.
func FuzzMQTTRequest(f *testing.F) {
	srv := startServer(f, serverOpts{maxRequest: 4096})
	srv.users("alice", "bob")
	for i := range fuzzCommands {
		for _, body := range []string{
			`{}`, `{"ReqId":"r1"}`, `[1,2]`, `"x"`, ``, "\xff\xfe",
			`{"To_Account":"bob","MsgRandom":1,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]}`,
			`{"Peer_Account":"bob","MaxCnt":5}`, `{"FromSeq":0}`,
		} {
			f.Add(uint8(i), []byte(body))
		}
	}
	var rc *rawConn
	f.Fuzz(func(t *testing.T, cmd uint8, body []byte) {
		if rc == nil {
			rc = rawLogin(t, srv.addr, "alice")
		}
		rc.t = t
		topic := "im/alice/req/" + fuzzCommands[int(cmd)%len(fuzzCommands)]
		reply, err := rc.request(topic, body)
		if err != nil {
			rc.c.Close()
			rc = nil
			t.Fatal(err)
		}
		if _, ok := reply["ErrorCode"].(float64); !ok {
			t.Fatalf("%s %q: reply without ErrorCode: %v", topic, body, reply)
		}
		if code := reply["ErrorCode"].(float64); code == 91000 {
			t.Fatalf("%s %q: bad input answered as an internal error: %v", topic, body, reply)
		}
	})
}

// FuzzMQTTPackets writes arbitrary bytes after a valid login. The server may
// close that connection, but it must keep serving everyone else: a fresh
// connection's request is answered afterwards.
func FuzzMQTTPackets(f *testing.F) {
	srv := startServer(f, serverOpts{maxRequest: 4096})
	srv.users("alice", "bob")
	for _, seed := range [][]byte{
		{0x30, 0x02, 0x00, 0x00},                         // PUBLISH with an empty topic
		{0x32, 0x7f},                                     // a PUBLISH whose remaining length never arrives
		{0x82, 0x05, 0x00, 0x01, 0x00, 0x01, 'x'},        // SUBSCRIBE with no QoS byte
		{0x62, 0x02, 0x00, 0x01},                         // PUBREL for nothing
		{0xe0, 0x00},                                     // DISCONNECT
		{0x10, 0x00},                                     // a second CONNECT
		{0xff, 0xff, 0xff, 0xff, 0x7f},                   // a length over four bytes
		{0x40, 0x02, 0x12, 0x34, 0xc0, 0x00, 0xa2, 0x03}, // PUBACK, PINGREQ, UNSUBSCRIBE cut short
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, junk []byte) {
		bad := rawLogin(t, srv.addr, "bob")
		bad.writeRaw(junk)
		bad.c.Close()
		good := rawLogin(t, srv.addr, "alice")
		defer good.c.Close()
		reply, err := good.request("im/alice/req/profile/portrait_get", []byte(`{"To_Account":["alice"],"TagList":["Tag_Profile_IM_Nick"]}`))
		if err != nil {
			t.Fatalf("after %x the server no longer answers: %v", junk, err)
		}
		if reply["ErrorCode"] != float64(0) {
			t.Fatalf("after %x: %v", junk, reply)
		}
	})
}
