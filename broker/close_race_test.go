package broker_test

import (
	"bytes"
	"flag"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

var stress = flag.Bool("stress", false, "run the race-hunting tests for many rounds")

// Closing the broker while connections end by themselves must not hang.
// mochi v2.7.9's own shutdown read-locks its client map twice in a row
// (Clients.GetByListener calls Len); a connection's cleanup asking for the
// write lock between the two left both waiting for ever. The race is
// narrow: 20 rounds in a normal run, 500 with -stress (go test ./broker
// -run TestCloseWhileClientsLeave -stress).
func TestCloseWhileClientsLeave(t *testing.T) {
	runs := 20
	if *stress {
		runs = 500
	}
	for i := 0; i < runs; i++ {
		// A subtest each, so each run's data directory goes when it ends.
		t.Run("", func(t *testing.T) { closeWhileClientsLeave(t, i) })
	}
}

func closeWhileClientsLeave(t *testing.T, i int) {
	{
		s := startServer(t, serverOpts{websocket: true})
		s.users("bob")
		var conns []net.Conn
		for j := 0; j < 16; j++ {
			c, err := net.Dial("tcp", s.addr)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
				Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60,
					ClientIdentifier: "bob:d" + string(rune('a'+j)), UsernameFlag: true, Username: []byte("bob"),
					PasswordFlag: true, Password: []byte(sig(t, "bob"))}}
			if err := connect.ConnectEncode(&buf); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write(buf.Bytes()); err != nil {
				t.Fatal(err)
			}
			ack := make([]byte, 4)
			if _, err := c.Read(ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
				t.Fatalf("CONNACK %x, %v", ack, err)
			}
			conns = append(conns, c)
		}
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Go(func() { c.Close() })
		}
		closed := make(chan struct{})
		go func() { s.stop(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(20 * time.Second):
			t.Fatalf("run %d: the broker did not close while its clients were leaving", i)
		}
		wg.Wait()
	}
}
