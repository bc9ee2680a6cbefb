package broker_test

// The MQTT edge before login (issue 11 §2–3), from the client's side: raw
// sockets that never log in, dribble or announce a huge CONNECT, and real
// clients that must still get in.

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/duet-im/duet/broker"
	"github.com/duet-im/duet/internal/fdlimit"
	"github.com/duet-im/duet/internal/wait"
	"github.com/duet-im/duet/usersig"
)

// connectPacket encodes a CONNECT as a device sends it.
func connectPacket(t testing.TB, version byte, clientID, user, password string) []byte {
	t.Helper()
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: version,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: clientID,
			UsernameFlag: true, Username: []byte(user), PasswordFlag: true, Password: []byte(password),
		},
	}
	if version == 5 {
		pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 0, true
		pk.Properties.ReceiveMaximum = 128
	}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// dialFrom opens a TCP connection from source address ip (any 127.0.0.0/8
// address works on loopback), so tests can act as several clients.
func dialFrom(t testing.TB, ip, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedWithin reads c until the server closes it (anything it sends is
// skipped) and returns when that happened; ok is false if it stayed open
// for wait.
func closedWithin(c net.Conn, wait time.Duration) (at time.Time, ok bool) {
	c.SetReadDeadline(time.Now().Add(wait))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return time.Time{}, false
	}
	return time.Now(), true
}

// readConnack reads the CONNACK answering a CONNECT: its return code.
func readConnack(t testing.TB, c net.Conn) byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [4]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatalf("no CONNACK: %v", err)
	}
	if b[0] != 0x20 {
		t.Fatalf("first packet %x, want a CONNACK", b)
	}
	return b[3]
}

func edgeLimits(timeout time.Duration, perIP, total int) func(*broker.Config) {
	return func(c *broker.Config) {
		c.ConnectTimeout, c.PendingPerIP, c.MaxPending = timeout, perIP, total
	}
}

// Issue 11 §3: 500 connections that announce a 1 MiB CONNECT and send all
// but 10 bytes of it held 500 MB (mochi allocates the announced size) for
// as long as they liked.
func TestOversizedConnectsHoldNoMemory(t *testing.T) {
	// Just under the 1 MiB MQTT packet cap, which mochi checks first.
	const conns, announced = 500, 1<<20 - 64
	timeout := 2 * time.Second
	s := startServer(t, serverOpts{broker: edgeLimits(timeout, 1000, 1000)})
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc

	// A CONNECT that announces it: the variable header, then zeros; all
	// but the last 10 bytes are sent.
	head := []byte{0x10}
	for n := announced; ; n >>= 7 { // Remaining Length [MQTT-2.2.3]
		if n < 0x80 {
			head = append(head, byte(n))
			break
		}
		head = append(head, byte(n&0x7f|0x80))
	}
	fixed := len(head)
	head = append(head, 0, 4, 'M', 'Q', 'T', 'T', 4, 0xc2, 0, 30)
	body := make([]byte, announced-10-(len(head)-fixed))
	cs := make([]net.Conn, conns)
	opened := make([]time.Time, conns)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range cs {
		cs[i] = dialFrom(t, "127.0.0.1", s.addr)
		opened[i] = time.Now()
		wg.Add(1)
		sem <- struct{}{}
		go func(c net.Conn) {
			defer func() { <-sem; wg.Done() }()
			c.SetWriteDeadline(time.Now().Add(30 * time.Second))
			// A server that refuses the CONNECT resets the connection: the
			// write fails, as it should.
			if _, err := c.Write(head); err == nil {
				c.Write(body)
			}
		}(cs[i])
	}
	wg.Wait()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	extra := int64(ms.HeapAlloc) - int64(base)
	t.Logf("%d connections announcing %d bytes: heap %+.1f MB", conns, announced, float64(extra)/1e6)
	if extra > 50e6 {
		t.Errorf("heap grew by %.0f MB, want ≤ 50 MB", float64(extra)/1e6)
	}
	var late int
	var worst time.Duration
	for i, c := range cs {
		at, ok := closedWithin(c, time.Until(opened[i].Add(timeout+3*time.Second)))
		if !ok {
			late++
			continue
		}
		worst = max(worst, at.Sub(opened[i]))
	}
	if late > 0 {
		t.Fatalf("%d of %d connections still open %v after the CONNECT deadline", late, conns, 3*time.Second)
	}
	t.Logf("all closed, the last %v after it opened (deadline %v)", worst.Round(time.Millisecond), timeout)
	if n := s.broker.Edge.TooLarge.Load(); n != conns {
		t.Errorf("TooLarge counted %d, want %d", n, conns)
	}
}

// Issue 11 §3: silent connections held two goroutines and ~66 KB each for
// minutes; each must be closed at the CONNECT deadline.
func TestSilentConnectionsClosedAtDeadline(t *testing.T) {
	const conns = 1000
	timeout := time.Second
	s := startServer(t, serverOpts{broker: edgeLimits(timeout, 2*conns, 2*conns)})
	cs := make([]net.Conn, conns)
	opened := make([]time.Time, conns)
	for i := range cs {
		// Spread over source addresses, as many clients would be. The time
		// is taken before the dial: the server's deadline starts at its
		// accept, which a loaded machine may run well before dialFrom
		// returns here, so a later stamp could make a punctual close look
		// early.
		opened[i] = time.Now()
		cs[i] = dialFrom(t, fmt.Sprintf("127.0.1.%d", 1+i%200), s.addr)
	}
	allOpen := time.Now()
	after := make([]time.Duration, conns)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var late int
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			at, ok := closedWithin(c, time.Until(opened[i].Add(timeout+5*time.Second)))
			mu.Lock()
			defer mu.Unlock()
			if !ok {
				late++
			}
			after[i] = at.Sub(opened[i])
		}()
	}
	wg.Wait()
	if late > 0 {
		t.Fatalf("%d of %d silent connections still open 5 s after the %v deadline", late, conns, timeout)
	}
	last := slices.Clone(after)
	slices.Sort(last)
	t.Logf("%d silent connections: all closed %v after the last opened; per connection %v (median) to %v (max) after opening, deadline %v",
		conns, time.Since(allOpen).Round(time.Millisecond), last[conns/2].Round(time.Millisecond), last[conns-1].Round(time.Millisecond), timeout)
	if last[0] < timeout-50*time.Millisecond {
		t.Errorf("a connection was closed %v after opening, before the %v deadline", last[0], timeout)
	}
	if n := s.broker.Edge.TimedOut.Load(); n != conns {
		t.Errorf("TimedOut counted %d, want %d", n, conns)
	}
}

// A CONNECT dribbled a byte at a time (slowloris) is closed at the deadline
// that started at accept, on every transport; so is a WebSocket upgrade
// request dribbled the same way.
func TestSlowlorisClosedAtDeadline(t *testing.T) {
	timeout := time.Second
	ts := httptest.NewUnstartedServer(nil)
	ts.StartTLS() // for its test certificate
	cert := ts.TLS.Certificates[0]
	ts.Close()
	s := startServer(t, serverOpts{websocket: true, broker: func(c *broker.Config) {
		edgeLimits(timeout, 100, 100)(c)
		c.TLSAddr, c.TLS = "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}}
	}})
	connect := connectPacket(t, 4, "bob:dev", "bob", sig(t, "bob"))
	cases := []struct {
		name string
		// dial returns a connection and a function writing one byte of the
		// dribble.
		dial func(t *testing.T) (net.Conn, func(b byte) error)
		data []byte
	}{
		{"tcp", func(t *testing.T) (net.Conn, func(byte) error) {
			c := dialFrom(t, "127.0.0.1", s.addr)
			return c, func(b byte) error { _, err := c.Write([]byte{b}); return err }
		}, connect},
		{"tls", func(t *testing.T) (net.Conn, func(byte) error) {
			c, err := tls.Dial("tcp", s.broker.Addr("tls"), &tls.Config{InsecureSkipVerify: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return c, func(b byte) error { _, err := c.Write([]byte{b}); return err }
		}, connect},
		{"tls-silent-handshake", func(t *testing.T) (net.Conn, func(byte) error) {
			c := dialFrom(t, "127.0.0.1", s.broker.Addr("tls"))
			return c, func(b byte) error { return nil } // never starts the handshake
		}, connect},
		{"websocket", func(t *testing.T) (net.Conn, func(byte) error) {
			ws, _, err := websocket.DefaultDialer.Dial("ws://"+s.ws+"/mqtt", nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ws.Close() })
			return ws.NetConn(), func(b byte) error { return ws.WriteMessage(websocket.BinaryMessage, []byte{b}) }
		}, connect},
		{"websocket-upgrade", func(t *testing.T) (net.Conn, func(byte) error) {
			c := dialFrom(t, "127.0.0.1", s.ws)
			return c, func(b byte) error { _, err := c.Write([]byte{b}); return err }
		}, []byte("GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Slow: " + strings.Repeat("a", 200))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, write := tc.dial(t)
			start := time.Now()
			closed := make(chan time.Time, 1)
			go func() {
				at, _ := closedWithin(c, timeout+5*time.Second)
				closed <- at
			}()
			tick := time.NewTicker(50 * time.Millisecond) // the dribble's pace, not synchronisation
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case at := <-closed:
					if at.IsZero() {
						t.Fatalf("still open 5 s after the %v deadline", timeout)
					}
					took := at.Sub(start)
					t.Logf("closed after %v (deadline %v), %d bytes sent", took.Round(time.Millisecond), timeout, i)
					if took < timeout-100*time.Millisecond || took > timeout+time.Second {
						t.Errorf("closed after %v, want the %v deadline", took, timeout)
					}
					return
				case <-tick.C:
					if i < len(tc.data)-1 { // never the last byte
						write(tc.data[i])
					}
				}
			}
		})
	}
}

// The pending-login caps: a client IP may hold PendingPerIP connections that
// have not logged in, the server MaxPending; more are closed at once, and a
// logged-in connection no longer counts.
func TestPendingLoginCaps(t *testing.T) {
	s := startServer(t, serverOpts{autoAccounts: true, broker: edgeLimits(10*time.Second, 3, 5)})
	edge := &s.broker.Edge
	pending := func(n int64) {
		t.Helper()
		wait.For(t, 5*time.Second, 5*time.Millisecond, func() error {
			if got := edge.Pending.Load(); got != n {
				return fmt.Errorf("%d pending, want %d", got, n)
			}
			return nil
		})
	}
	refusedNow := func(c net.Conn, why string) {
		t.Helper()
		// Closed at accept, long before the 10 s deadline.
		if _, ok := closedWithin(c, 5*time.Second); !ok {
			t.Fatalf("%s: connection left open", why)
		}
	}
	a1 := dialFrom(t, "127.0.0.1", s.addr)
	dialFrom(t, "127.0.0.1", s.addr)
	dialFrom(t, "127.0.0.1", s.addr)
	pending(3)
	refusedNow(dialFrom(t, "127.0.0.1", s.addr), "a 4th from one IP")
	if _, err := s.dial("alice", connectOpts{}); err == nil {
		t.Fatal("a login from an IP at its cap got in")
	}
	// Another IP still gets in, until the total cap.
	dialFrom(t, "127.0.0.2", s.addr)
	dialFrom(t, "127.0.0.3", s.addr)
	pending(5)
	refusedNow(dialFrom(t, "127.0.0.4", s.addr), "over the total cap")
	if n := edge.OverLimit.Load(); n != 3 {
		t.Errorf("OverLimit counted %d, want 3", n)
	}

	a1.Close()
	pending(4)
	// Logged-in connections do not count: two devices log in from the IP
	// that holds two pending connections.
	alice := s.connect("alice", connectOpts{})
	defer alice.close()
	bob := s.connect("bob", connectOpts{})
	defer bob.close()
	pending(4)
	alice.send("bob", 1)
	if e := bob.nextMsg(); e.str("From_Account") != "alice" {
		t.Fatalf("bob got %v", e)
	}
}

// The CONNECT size cap leaves room for the longest login Duet issues: a
// 32-byte UserID, its UserSig, and a 128-byte DeviceID. A CONNECT over the
// cap, or a first packet that is not a CONNECT, is closed without a CONNACK
// and before its bytes are read.
func TestConnectSizeCap(t *testing.T) {
	s := startServer(t, serverOpts{autoAccounts: true})
	user := strings.Repeat("u", 32)
	longSig, err := usersig.Gen(testAppID, testKey, user, 1<<40, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	longest := connectPacket(t, 5, user+":"+strings.Repeat("d", 128), user, longSig)
	t.Logf("longest login: UserSig %d bytes, CONNECT %d bytes (cap %d)", len(longSig), len(longest), broker.DefaultMaxConnect)
	if 2*len(longest) > broker.DefaultMaxConnect {
		t.Errorf("the longest login (%d bytes) leaves less than half of the cap free", len(longest))
	}
	c := dialFrom(t, "127.0.0.1", s.addr)
	c.Write(longest)
	if rc := readConnack(t, c); rc != 0 {
		t.Fatalf("longest login refused: 0x%02x", rc)
	}

	over := connectPacket(t, 4, "bob:dev", "bob", strings.Repeat("x", broker.DefaultMaxConnect))
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"over the cap", over[:len(over)-10]}, // all but 10 bytes
		{"pingreq first", []byte{0xc0, 0}},
		{"publish first", []byte{0x30, 0x05, 0, 1, 'a', 'h', 'i'}},
		{"malformed length", []byte{0x10, 0xff, 0xff, 0xff, 0xff, 0x01}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialFrom(t, "127.0.0.1", s.addr)
			start := time.Now()
			c.Write(tc.data)
			var first [1]byte
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := c.Read(first[:])
			if n > 0 {
				t.Fatalf("server answered 0x%02x; want the connection closed", first[0])
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("connection left open")
			}
			t.Logf("closed after %v", time.Since(start).Round(time.Millisecond))
		})
	}
}

// Issue 11 §2: out of file descriptors, mochi's TCP accept loop returned and
// MQTT never accepted again. The server runs in a child process (this test
// binary again) with a low RLIMIT_NOFILE; the parent fills it with idle
// connections, closes them, and a device must then log in.
func TestListenerSurvivesFDExhaustion(t *testing.T) {
	if os.Getenv("DUET_FD_CHILD") != "" {
		s := startServer(t, serverOpts{autoAccounts: true, websocket: true})
		limit, err := fdlimit.Lower(32)
		if err != nil {
			t.Fatal(err)
		}
		fdlimit.Ready(s.addr, s.ws, limit)
		return
	}
	for _, transport := range []string{"tcp", "ws"} {
		t.Run(transport, func(t *testing.T) {
			child := fdlimit.Start(t, "TestListenerSurvivesFDExhaustion", "DUET_FD_CHILD=1")
			srv := &testServer{t: t, addr: child.Fields[0], ws: child.Fields[1]}
			limit, _ := strconv.Atoi(child.Fields[2])
			target := srv.addr
			if transport == "ws" {
				target = srv.ws
			}
			for _, c := range child.Exhaust(t, target, limit) {
				c.Close()
			}
			var d *device
			wait.For(t, 15*time.Second, 50*time.Millisecond, func() (err error) {
				d, err = srv.dial("alice", connectOpts{ws: transport == "ws"})
				return err
			})
			d.close()
			if out := child.Log(); !strings.Contains(out, "listener failing to accept") {
				t.Errorf("running out of descriptors was not logged; the child logged:\n%s", out)
			}
		})
	}
}
