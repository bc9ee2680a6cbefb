package broker_test

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// readAck reads the next non-PUBLISH packet, decoding a SUBACK or an
// UNSUBACK (rawClient.read knows no UNSUBACK).
func readAck(t *testing.T, c *rawClient) packets.Packet {
	t.Helper()
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		var pk packets.Packet
		b, err := c.r.ReadByte()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if err := pk.FixedHeader.Decode(b); err != nil {
			t.Fatal(err)
		}
		n, _, err := packets.DecodeLength(c.r)
		if err != nil {
			t.Fatal(err)
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(c.r, body); err != nil {
			t.Fatal(err)
		}
		pk.FixedHeader.Remaining, pk.ProtocolVersion = n, c.ver
		switch pk.FixedHeader.Type {
		case packets.Publish:
			continue
		case packets.Suback:
			err = pk.SubackDecode(body)
		case packets.Unsuback:
			err = pk.UnsubackDecode(body)
		default:
			t.Fatalf("unexpected packet type %d", pk.FixedHeader.Type)
		}
		if err != nil {
			t.Fatal(err)
		}
		return pk
	}
}

func unsubscribe(t *testing.T, c *rawClient, id uint16, filters ...string) {
	t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, PacketID: id, ProtocolVersion: c.ver}
	for _, f := range filters {
		pk.Filters = append(pk.Filters, packets.Subscription{Filter: f})
	}
	var buf bytes.Buffer
	if err := pk.UnsubscribeEncode(&buf); err != nil {
		t.Fatal(err)
	}
	c.write(buf.Bytes())
}

// SUBACK and UNSUBACK reason codes are mochi's (pinned on main before the
// topic tree was emptied), and the tree holds nothing of a device's
// subscriptions: Duet delivers itself (docs/mqtt.md, Memory per connection).
func TestSubscribeCodesAndEmptyTree(t *testing.T) {
	s := startServer(t, serverOpts{})
	s.users("alice")
	filters := []packets.Subscription{
		{Filter: "im/alice/#", Qos: 1},
		{Filter: "im/alice/live", Qos: 2},        // capped to the server's maximum, 1 [MQTT-3.2.2-9]
		{Filter: "im/bob/#", Qos: 1},             // not authorized
		{Filter: "im/alice/a#b", Qos: 0},         // invalid filter
		{Filter: "#", Qos: 0},                    // not authorized
		{Filter: "$share/g/im/alice/in", Qos: 1}, // shared: the ACL refuses it (not below im/alice/)
	}
	for _, tc := range []struct {
		name      string
		ver       byte
		suback    []byte
		unsuback  []byte // v5 only
		unsuback2 []byte
	}{
		{"v3", 4, []byte{0x01, 0x01, 0x80, 0x80, 0x80, 0x80}, nil, nil},
		{"v5", 5, []byte{0x01, 0x01, 0x87, 0x8F, 0x87, 0x87}, []byte{0x00, 0x11, 0x00}, []byte{0x11}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := rawConnect(t, s, "alice", "alice:tree"+tc.name, tc.ver)
			c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 7, Filters: filters})
			ack := readAck(t, c)
			if ack.FixedHeader.Type != packets.Suback || ack.PacketID != 7 || !bytes.Equal(ack.ReasonCodes, tc.suback) {
				t.Fatalf("SUBACK %d id %d codes % x, want % x", ack.FixedHeader.Type, ack.PacketID, ack.ReasonCodes, tc.suback)
			}
			cl, ok := s.broker.Server.Clients.Get("alice:tree" + tc.name)
			if !ok {
				t.Fatal("client not found")
			}
			for _, f := range []string{"im/alice/#", "im/alice/live"} {
				if _, ok := cl.State.Subscriptions.Get(f); !ok {
					t.Fatalf("%s not in the client's subscriptions", f)
				}
			}
			if subs := s.broker.Server.Topics.Subscribers("im/alice/in"); len(subs.Subscriptions)+len(subs.Shared) > 0 {
				t.Fatalf("topic tree holds %v %v", subs.Subscriptions, subs.Shared)
			}
			unsubscribe(t, c, 8, "im/alice/#", "im/alice/none", "im/alice/live")
			ack = readAck(t, c)
			if ack.FixedHeader.Type != packets.Unsuback || ack.PacketID != 8 || !bytes.Equal(ack.ReasonCodes, tc.unsuback) {
				t.Fatalf("UNSUBACK %d id %d codes % x, want % x", ack.FixedHeader.Type, ack.PacketID, ack.ReasonCodes, tc.unsuback)
			}
			unsubscribe(t, c, 9, "im/alice/#")
			ack = readAck(t, c)
			if ack.FixedHeader.Type != packets.Unsuback || ack.PacketID != 9 || !bytes.Equal(ack.ReasonCodes, tc.unsuback2) {
				t.Fatalf("second UNSUBACK id %d codes % x, want % x", ack.PacketID, ack.ReasonCodes, tc.unsuback2)
			}
			if n := len(cl.State.Subscriptions.GetAll()); n != 0 {
				t.Fatalf("%d subscriptions left", n)
			}
			if subs := s.broker.Server.Topics.Subscribers("im/alice/in"); len(subs.Subscriptions)+len(subs.Shared) > 0 {
				t.Fatalf("topic tree holds %v %v", subs.Subscriptions, subs.Shared)
			}
		})
	}
}
