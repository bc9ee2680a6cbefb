package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/duet-im/duet/internal/wait"
)

func TestRemainingLength(t *testing.T) {
	for _, c := range []struct {
		n    int
		size int
	}{
		{0, 1}, {127, 1}, {128, 2}, {16383, 2}, {16384, 3}, {2097151, 3}, {2097152, 4}, {maxRemLen, 4},
	} {
		b := appendRemLen(nil, c.n)
		if len(b) != c.size {
			t.Errorf("%d encodes to %d bytes % x, want %d", c.n, len(b), b, c.size)
		}
		got, size, err := decodeRemLen(b)
		if err != nil || got != c.n || size != c.size {
			t.Errorf("decode % x = %d, %d, %v; want %d, %d", b, got, size, err, c.n, c.size)
		}
		got, err = readRemLen(bufio.NewReader(bytes.NewReader(append(b, 0xAA)))) // must stop at the field's end
		if err != nil || got != c.n {
			t.Errorf("read % x = %d, %v; want %d", b, got, err, c.n)
		}
		if _, _, err := decodeRemLen(b[:len(b)-1]); len(b) > 1 && err != errRemLenShort {
			t.Errorf("truncated % x: %v, want errRemLenShort", b[:len(b)-1], err)
		}
	}
	// The specification's own examples (§2.2.3).
	if b := appendRemLen(nil, 321); !bytes.Equal(b, []byte{0xC1, 0x02}) {
		t.Errorf("321 encodes to % x", b)
	}
	if n, _, _ := decodeRemLen([]byte{0x80, 0x80, 0x80, 0x01}); n != 2097152 {
		t.Errorf("80 80 80 01 decodes to %d", n)
	}
	five := []byte{0xFF, 0xFF, 0xFF, 0xFF, 0x7F}
	if _, _, err := decodeRemLen(five); err != errRemLenTooLong {
		t.Errorf("5-byte length: %v, want errRemLenTooLong", err)
	}
	br := bufio.NewReader(bytes.NewReader(five))
	if _, err := readRemLen(br); err != errRemLenTooLong {
		t.Errorf("read 5-byte length: %v, want errRemLenTooLong", err)
	}
	if br.Buffered() != 1 {
		t.Errorf("reader consumed the fifth byte (%d left)", br.Buffered())
	}
	if _, err := readRemLen(bufio.NewReader(bytes.NewReader([]byte{0x80}))); err != io.ErrUnexpectedEOF {
		t.Errorf("cut length: %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestEncodePackets(t *testing.T) {
	got := appendPublish(nil, 0x1234, "a/b", []byte("hi"))
	want := []byte{0x32, 9, 0, 3, 'a', '/', 'b', 0x12, 0x34, 'h', 'i'}
	if !bytes.Equal(got, want) {
		t.Errorf("PUBLISH % x, want % x", got, want)
	}
	got = appendSubscribe(nil, 7, []string{"x", "yz"})
	want = []byte{0x82, 11, 0, 7, 0, 1, 'x', 1, 0, 2, 'y', 'z', 1}
	if !bytes.Equal(got, want) {
		t.Errorf("SUBSCRIBE % x, want % x", got, want)
	}
	got = appendConnect(nil, "c", "", "", 0)
	want = []byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 0, 0, 1, 'c'}
	if !bytes.Equal(got, want) {
		t.Errorf("anonymous CONNECT % x, want % x", got, want)
	}
	// A body of 200 bytes needs a two-byte length.
	got = appendPublish(nil, 1, "t", make([]byte, 195))
	if n, size, err := decodeRemLen(got[1:]); err != nil || size != 2 || n != 200 || len(got) != 1+2+200 {
		t.Errorf("long PUBLISH: length %d in %d bytes (%v), packet %d bytes", n, size, err, len(got))
	}
}

// fakeServer accepts one connection on a loopback port and runs script on
// it; the test's cleanup waits for script to return.
func fakeServer(t *testing.T, script func(conn net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second)) // a broken test must not hang
		script(conn, bufio.NewReader(conn))
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	return ln.Addr().String()
}

// readPacket reads one whole packet as a test server.
func readPacket(br *bufio.Reader) (byte, []byte, error) {
	h, err := br.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, err := readRemLen(br)
	if err != nil {
		return 0, nil, err
	}
	body := make([]byte, n)
	_, err = io.ReadFull(br, body)
	return h, body, err
}

var connackOK = []byte{pktConnack << 4, 2, 0, 0}

// lostRecorder is an onLost that counts its calls.
type lostRecorder struct {
	n   atomic.Int64
	err chan error
}

func newLostRecorder() *lostRecorder { return &lostRecorder{err: make(chan error, 4)} }

func (l *lostRecorder) onLost(err error) {
	l.n.Add(1)
	l.err <- err
}

func (l *lostRecorder) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-l.err:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("onLost not called within 10s")
		return nil
	}
}

func wireOpts(hostport string) dialOptions {
	return dialOptions{hostport: hostport, wire: true, clientID: "w", timeout: 10 * time.Second,
		keepAlive: time.Minute, onMessage: func(string, []byte) {}}
}

func TestWireConnackRefused(t *testing.T) {
	for code := byte(1); code <= 5; code++ {
		t.Run(fmt.Sprintf("0x%02x", code), func(t *testing.T) {
			hostport := fakeServer(t, func(conn net.Conn, br *bufio.Reader) {
				h, body, err := readPacket(br)
				if err != nil {
					t.Errorf("reading CONNECT: %v", err)
					return
				}
				want := append([]byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0xC2, 0, 60, 0, 1, 'w'}, // user, password, clean session
					0, 1, 'u', 0, 2, 'p', 'w')
				if h != 0x10 || !bytes.Equal(body, want) {
					t.Errorf("CONNECT %02x % x, want 10 % x", h, body, want)
				}
				_, _ = conn.Write([]byte{pktConnack << 4, 2, 0, code})
				_, _, _ = readPacket(br) // the client hangs up
			})
			o := wireOpts(hostport)
			o.username, o.password = "u", "pw"
			c, err := dial(t.Context(), o)
			if err == nil {
				c.close()
				t.Fatal("refused connect succeeded")
			}
			if want := fmt.Sprintf("return code 0x%02x (%s)", code, connackReason(code)); !strings.Contains(err.Error(), want) {
				t.Errorf("error %q, want it to contain %q", err, want)
			}
		})
	}
}

func TestWirePasswordNeedsUser(t *testing.T) {
	o := wireOpts("127.0.0.1:1") // refused before dialling
	o.password = "p"
	if _, err := dial(t.Context(), o); err == nil || !strings.Contains(err.Error(), "MQTT-3.1.2-22") {
		t.Errorf("password without user: %v", err)
	}
}

// denyHook lets everyone in and refuses subscriptions under deny/.
type denyHook struct{ mqtt.HookBase }

func (h *denyHook) ID() string { return "deny" }
func (h *denyHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}
func (h *denyHook) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }
func (h *denyHook) OnACLCheck(_ *mqtt.Client, topic string, write bool) bool {
	return write || !strings.HasPrefix(topic, "deny/")
}

func TestSubackRefused(t *testing.T) {
	_, addr := startBroker(t, false, &denyHook{})
	hostport := strings.TrimPrefix(addr, "tcp://")
	for _, wire := range []bool{true, false} {
		t.Run(fmt.Sprintf("wire=%v", wire), func(t *testing.T) {
			o := wireOpts(hostport)
			o.wire = wire
			o.clientID = fmt.Sprintf("sub-%v", wire)
			o.topics = []string{"ok/1", "deny/1"}
			c, err := dial(t.Context(), o)
			if err == nil {
				c.close()
				t.Fatal("refused subscription accepted")
			}
			if !strings.Contains(err.Error(), "deny/1: refused (0x80)") || strings.Contains(err.Error(), "ok/1") {
				t.Errorf("error %q", err)
			}
		})
	}
}

func TestWireConnectionLost(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply []byte // sent after the client's PUBLISH; nil hangs up
		want  string
	}{
		{"drop", nil, "EOF"},
		{"qos2-publish", []byte{0x34, 7, 0, 3, 'a', '/', 'b', 0, 1}, "QoS 2"},
		{"qos3-publish", []byte{0x36, 7, 0, 3, 'a', '/', 'b', 0, 1}, "QoS 3"},
		{"five-byte-length", []byte{0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F}, "more than 4 bytes"},
		{"puback-flags", []byte{0x41, 2, 0, 1}, "malformed PUBACK"},
		{"second-connack", connackOK, "unexpected packet type 2"},
		{"wildcard-topic", []byte{0x30, 5, 0, 3, 'a', '/', '#'}, "wildcard"},
		{"topic-too-long", []byte{0x30, 3, 0, 9, 'a'}, "topic name longer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			published := make(chan []byte, 1)
			hostport := fakeServer(t, func(conn net.Conn, br *bufio.Reader) {
				if _, _, err := readPacket(br); err != nil {
					return
				}
				_, _ = conn.Write(connackOK)
				h, body, err := readPacket(br)
				if err != nil {
					t.Errorf("waiting for PUBLISH: %v", err)
					return
				}
				published <- append([]byte{h}, body...)
				if tc.reply == nil {
					return // hang up with the publish unacknowledged
				}
				_, _ = conn.Write(tc.reply)
				_, _ = io.Copy(io.Discard, br) // until the client closes
			})
			lost := newLostRecorder()
			o := wireOpts(hostport)
			o.timeout = time.Minute // a failure must not wait for the ack timeout
			o.onLost = lost.onLost
			c, err := dial(t.Context(), o)
			if err != nil {
				t.Fatal(err)
			}
			defer c.close()
			start := time.Now()
			pubErr := make(chan error, 1)
			go func() { pubErr <- c.publish(context.Background(), "x/y", []byte("42")) }()
			select {
			case err := <-pubErr:
				if err == nil {
					t.Error("publish succeeded on a lost connection")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("pending publish still waiting 10s after the connection ended")
			}
			if p := <-published; p[0] != 0x32 || !bytes.Equal(p[1:6], []byte{0, 3, 'x', '/', 'y'}) || p[6]|p[7] == 0 || string(p[8:]) != "42" {
				t.Errorf("server saw PUBLISH % x", p)
			}
			if err := lost.wait(t); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("onLost(%v), want an error containing %q", err, tc.want)
			}
			if err := c.publish(context.Background(), "x/y", nil); err == nil {
				t.Error("publish after the loss succeeded")
			}
			c.close() // waits for the reader, so a second onLost would have happened
			if n := lost.n.Load(); n != 1 {
				t.Errorf("onLost called %d times", n)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

func TestWireCloseSendsDisconnect(t *testing.T) {
	got := make(chan string, 1)
	hostport := fakeServer(t, func(conn net.Conn, br *bufio.Reader) {
		if _, _, err := readPacket(br); err != nil {
			return
		}
		_, _ = conn.Write(connackOK)
		h, body, err := readPacket(br)
		_, eof := br.ReadByte()
		got <- fmt.Sprintf("%02x %d %v then %v", h, len(body), err, eof)
	})
	lost := newLostRecorder()
	o := wireOpts(hostport)
	o.onLost = lost.onLost
	c, err := dial(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	c.close()
	if s := <-got; s != "e0 0 <nil> then EOF" {
		t.Errorf("server saw %s, want DISCONNECT then EOF", s)
	}
	if lost.n.Load() != 0 {
		t.Error("close reported a lost connection")
	}
	if err := c.publish(context.Background(), "x", nil); err == nil {
		t.Error("publish after close succeeded")
	}
}

func TestWireKeepAlive(t *testing.T) {
	t.Run("answered", func(t *testing.T) {
		_, addr := startBroker(t, false)
		lost := newLostRecorder()
		o := wireOpts(strings.TrimPrefix(addr, "tcp://"))
		o.keepAlive = time.Second // a PINGREQ every 500ms
		o.onLost = lost.onLost
		c, err := dial(t.Context(), o)
		if err != nil {
			t.Fatal(err)
		}
		defer c.close()
		wc := c.(*wireClient)
		wait.Until(t, 10*time.Second, "3 PINGRESPs", func() bool { return wc.pingResps.Load() >= 3 })
		if lost.n.Load() != 0 {
			t.Errorf("connection lost: %v", <-lost.err)
		}
	})
	t.Run("unanswered", func(t *testing.T) {
		hostport := fakeServer(t, func(conn net.Conn, br *bufio.Reader) {
			if _, _, err := readPacket(br); err != nil {
				return
			}
			_, _ = conn.Write(connackOK)
			_, _ = io.Copy(io.Discard, br) // PINGREQs go unanswered
		})
		lost := newLostRecorder()
		o := wireOpts(hostport)
		o.keepAlive = time.Second
		o.onLost = lost.onLost
		c, err := dial(t.Context(), o)
		if err != nil {
			t.Fatal(err)
		}
		defer c.close()
		if err := lost.wait(t); err == nil || !strings.Contains(err.Error(), "no PINGRESP") {
			t.Errorf("onLost(%v)", err)
		}
	})
}

func TestWirePacketIDWraps(t *testing.T) {
	_, addr := startBroker(t, false)
	var got atomic.Int64
	o := wireOpts(strings.TrimPrefix(addr, "tcp://"))
	o.topics = []string{"wrap/1"}
	o.onMessage = func(topic string, payload []byte) {
		if topic == "wrap/1" && string(payload) == "p" {
			got.Add(1)
		}
	}
	c, err := dial(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	wc := c.(*wireClient)
	wc.mu.Lock()
	wc.nextID = 65533
	wc.mu.Unlock()
	for range 5 { // ids 65534, 65535, then 1, 2, 3: never 0
		if err := c.publish(t.Context(), "wrap/1", []byte("p")); err != nil {
			t.Fatal(err)
		}
	}
	wc.mu.Lock()
	id := wc.nextID
	wc.mu.Unlock()
	if id != 3 {
		t.Errorf("next id %d after wrapping, want 3", id)
	}
	wait.Until(t, 10*time.Second, "5 own messages", func() bool { return got.Load() >= 5 })
}

func TestWirePublishCancelled(t *testing.T) {
	// A server that never acknowledges: ctx and the ack timeout both end the wait.
	hostport := fakeServer(t, func(conn net.Conn, br *bufio.Reader) {
		if _, _, err := readPacket(br); err != nil {
			return
		}
		_, _ = conn.Write(connackOK)
		_, _ = io.Copy(io.Discard, br)
	})
	o := wireOpts(hostport)
	o.timeout = 200 * time.Millisecond
	c, err := dial(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	if err := c.publish(t.Context(), "x", nil); err == nil || !strings.Contains(err.Error(), "no ack within") {
		t.Errorf("unacknowledged publish: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := c.publish(ctx, "x", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled publish: %v", err)
	}
	wc := c.(*wireClient)
	wc.mu.Lock()
	n := len(wc.inflight)
	wc.mu.Unlock()
	if n != 0 {
		t.Errorf("%d packet ids still in flight after the publishes gave up", n)
	}
}
