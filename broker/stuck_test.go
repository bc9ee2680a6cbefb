package broker_test

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/duet-im/duet/hooks"
	"github.com/duet-im/duet/internal/wait"
)

// A device that stops reading cannot hold the server: its writes give up
// after hooks.WriteTimeout, so the broker still closes.
func TestStuckDeviceDoesNotBlockClose(t *testing.T) {
	defer func(d time.Duration) { hooks.WriteTimeout = d }(hooks.WriteTimeout)
	hooks.WriteTimeout = 300 * time.Millisecond
	s := startServer(t, serverOpts{window: 1000})
	s.users("bob")
	// Large events, so the socket buffers fill long before the backlog ends.
	pad := strings.Repeat("x", 8000)
	for i := 0; i < 40; i++ {
		appendBacklogText(t, s, "bob", 100, pad)
	}
	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var buf bytes.Buffer
	connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: "bob:stuck",
			UsernameFlag: true, Username: []byte("bob"), PasswordFlag: true, Password: []byte(sig(t, "bob"))}}
	if err := connect.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 4, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "im/bob/in", Qos: 1}}}
	if err := sub.SubscribeEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	// It never reads. Wait until the server is delivering to it (events are
	// in flight; the write carrying them may never finish).
	wait.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s.broker.Devices.Metrics.PendingMax.Load() == 0 {
			return errNotYet
		}
		return nil
	})
	closed := make(chan struct{})
	go func() { s.stop(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("the broker did not close while a device was not reading")
	}
}
