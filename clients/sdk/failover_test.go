package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/clustertest"
	srvpkg "github.com/duet-im/duet/internal/server"
	"github.com/duet-im/duet/store"
)

// refusingAddr is a loopback address where nothing listens: a dial is
// refused at once.
func refusingAddr(t *testing.T) string {
	t.Helper()
	return freeAddr(t)
}

// unavailableAddr answers every CONNECT with CONNACK "server unavailable"
// (MQTT 5 reason 0x88 [MQTT-3.2.2-8]; MQTT 3.1.1 return code 3), as a
// cluster node that is catching up does (docs/cluster.md), and closes the
// connection.
func unavailableAddr(t *testing.T) string { return fakeNode(t, false) }

// busyAtSubscribeAddr accepts the CONNECT and answers the SUBSCRIBE with
// DISCONNECT 0x89 "server busy" (MQTT 3.1.1: by closing the connection), as
// a node whose replay could not start does (broker.go).
func busyAtSubscribeAddr(t *testing.T) string { return fakeNode(t, true) }

func fakeNode(t *testing.T, acceptConnect bool) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				// CONNECT: fixed header, remaining length (1 to 4 bytes,
				// the last without the continuation bit [MQTT-1.5.5]),
				// "MQTT" name (2+4 bytes), then the protocol level.
				buf := make([]byte, 1024)
				n, _ := io.ReadAtLeast(conn, buf, 16)
				i := 1
				for i < n && buf[i]&0x80 != 0 {
					i++
				}
				if i+7 >= n {
					return
				}
				v5 := buf[i+7] == 5
				switch {
				case !acceptConnect && v5:
					conn.Write([]byte{0x20, 3, 0, 0x88, 0}) // flags, reason, no properties
				case !acceptConnect:
					conn.Write([]byte{0x20, 2, 0, 3})
				case v5:
					conn.Write([]byte{0x20, 3, 0, 0, 0})
				default:
					conn.Write([]byte{0x20, 2, 0, 0})
				}
				if !acceptConnect {
					return
				}
				// Whatever comes next (the SUBSCRIBE) is answered by the end.
				if _, err := conn.Read(buf); err != nil {
					return
				}
				if v5 {
					conn.Write([]byte{0xE0, 2, 0x89, 0}) // DISCONNECT, reason, no properties
				}
			}()
		}
	}()
	return l.Addr().String()
}

// An address list whose first entry cannot serve logs in through the
// second, and the client keeps working there.
func TestLoginFailsOverToTheNextAddress(t *testing.T) {
	s := startServer(t)
	tcp := func() string { return s.addr }
	ws := func() string { return "ws://" + s.wsAddr + "/mqtt" }
	firsts := []struct {
		name   string
		addr   func(*testing.T) string
		second func() string
	}{
		{"connection refused", refusingAddr, tcp},
		{"server unavailable", unavailableAddr, tcp},
		{"busy at subscribe", busyAtSubscribeAddr, tcp},
		// Entries may take any form Addr takes.
		{"refused then WebSocket", refusingAddr, ws},
	}
	for i, first := range firsts {
		for _, pr := range protocols {
			t.Run(first.name+"/"+pr.name, func(t *testing.T) {
				bad := first.addr(t)
				// Users of their own: a new device replays its user's timeline.
				a, b := fmt.Sprintf("alice-%d%s", i, pr.name), fmt.Sprintf("bob-%d%s", i, pr.name)
				s.users(a, b)
				up := make(chan string, 8)
				bob := s.login(t, b, "phone", "", pr.p, func(o *Options) {
					o.Addr, o.Addrs = "", []string{bad, first.second()}
					o.OnConnectionChanged = func(ok bool, reason string) {
						if ok {
							up <- reason
						}
					}
				})
				if r := <-up; r != "login" {
					t.Fatalf("first connection reported as %q", r)
				}
				alice := s.login(t, a, "phone", "", pr.p)
				if _, err := alice.SendText(ctxT(t), b, "hi "+pr.name); err != nil {
					t.Fatal(err)
				}
				if m := bob.rec.waitMsgs(1); m[len(m)-1].Text() != "hi "+pr.name {
					t.Fatalf("bob got %q", texts(m))
				}
			})
		}
	}
}

// Login with no address at all is refused before anything is opened.
func TestLoginNeedsAnAddress(t *testing.T) {
	_, err := Login(context.Background(), Options{Addrs: []string{" ", ""}, UserID: "bob", UserSig: "x", Dir: t.TempDir()})
	if err == nil {
		t.Fatal("Login without an address succeeded")
	}
}

// A node of a three-node cluster is stopped while alice (on another node)
// sends to bob and bob sends to alice; bob's client, given two nodes'
// addresses, moves to the second by itself. Bob ends with every message
// alice's client got acked, once each, in Seq order without a gap; every
// send of bob's (some in flight when the node went) is stored once.
func TestFailoverToAnotherNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three-node clusters")
	}
	cases := []struct {
		name string
		// a, b and c as offsets from the owner's index.
		a, b, c int
	}{
		{"A not the owner", 1, 2, 0},
		{"A the owner", 0, 1, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfgs := clustertest.Configs(t, 3)
			for i := range cfgs {
				cfgs[i].Secret, cfgs[i].SDKAppID = testKey, testAppID
			}
			srvs := clustertest.New(t, cfgs)
			clustertest.StartAll(t, srvs)
			o := clustertest.Owner(t, srvs)
			nodeA, nodeB, nodeC := srvs[(o+tc.a)%3], srvs[(o+tc.b)%3], srvs[(o+tc.c)%3]
			for _, u := range []string{"alice", "bob"} {
				if _, err := srvs[o].Store().ImportAccount(store.Account{UserID: u}); err != nil {
					t.Fatal(err)
				}
			}
			clustertest.Settle(t, srvs)
			failoverRun(t, nodeA, nodeB, nodeC)
		})
	}
}

func failoverRun(t *testing.T, nodeA, nodeB, nodeC *srvpkg.Server) {
	addrA, addrB := nodeA.Addr("tcp"), nodeB.Addr("tcp")
	login := func(user string, addrs []string, rec *recorder, conn func(bool, string)) *Client {
		ls := rec.listeners()
		ls.OnConnectionChanged = conn
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := Login(ctx, Options{
			Addrs: addrs, UserID: user, UserSig: sig(t, user), DeviceID: "phone", Dir: t.TempDir(),
			RequestTimeout: 3 * time.Second, MinBackoff: 20 * time.Millisecond, MaxBackoff: 300 * time.Millisecond,
			Listeners: ls, Logger: testLogger(),
		})
		if err != nil {
			t.Fatalf("login %s: %v", user, err)
		}
		t.Cleanup(func() { c.Logout() })
		return c
	}
	var cmu sync.Mutex
	var conns []string
	bobRec := newRecorder(t)
	bob := login("bob", []string{addrA, addrB}, bobRec, func(up bool, reason string) {
		cmu.Lock()
		defer cmu.Unlock()
		conns = append(conns, fmt.Sprint(up, " ", reason))
	})
	aliceRec := newRecorder(t)
	alice := login("alice", []string{nodeC.Addr("tcp")}, aliceRec, nil)
	bobRec.waitRefreshes(1)
	aliceRec.waitRefreshes(1)

	// Both send continuously; the node goes once both have sent a few.
	const n = 40
	var amu sync.Mutex
	var acked, bobAcked []string
	sender := func(c *Client, to, prefix string, into *[]string) func() {
		return func() {
			for i := range n {
				text := fmt.Sprintf("%s%03d", prefix, i)
				if _, err := c.SendText(ctxT(t), to, text); err != nil {
					t.Errorf("%s: %v", text, err)
					return
				}
				amu.Lock()
				*into = append(*into, text)
				amu.Unlock()
			}
		}
	}
	var wg sync.WaitGroup
	wg.Go(sender(alice, "bob", "a", &acked))
	wg.Go(sender(bob, "alice", "b", &bobAcked))
	checkFor(t, 20*time.Second, func() error {
		amu.Lock()
		defer amu.Unlock()
		if len(acked) < n/4 || len(bobAcked) < n/4 {
			return fmt.Errorf("%d and %d sends acked", len(acked), len(bobAcked))
		}
		return nil
	})
	amu.Lock()
	before := len(bobAcked)
	amu.Unlock()
	nodeA.Close()
	wg.Wait()
	if before >= n {
		t.Fatalf("bob's sends were over before his node went (%d of %d)", before, n)
	}
	if t.Failed() {
		return
	}

	// Every acked message once, in Seq order, and no gap: bob's device got
	// exactly the Seqs of alice's messages in his timeline (his own sends
	// are in it too, but not reported on the device that sent them).
	var msgs []*Message
	checkFor(t, 30*time.Second, func() error {
		_, msgs, _ = bobRec.snapshot()
		if len(msgs) < len(acked) {
			return fmt.Errorf("bob has %d of %d messages", len(msgs), len(acked))
		}
		return nil
	})
	got := texts(msgs)
	if !slices.Equal(got, acked) {
		t.Fatalf("bob got %q;\nwant %q", got, acked)
	}
	gotSeqs := make([]uint64, len(msgs))
	for i, m := range msgs {
		gotSeqs[i] = m.Seq
	}
	if want := seqsFrom(t, nodeB, "bob", "alice"); !slices.Equal(gotSeqs, want) {
		t.Fatalf("bob's device got Seqs %v;\nhis timeline has alice's messages at %v", gotSeqs, want)
	}
	cmu.Lock()
	seen := slices.Clone(conns)
	cmu.Unlock()
	if !slices.Contains(seen, "true reconnected") || seen[0] != "true login" {
		t.Fatalf("bob's connection changes %q; want login, then down, then reconnected", seen)
	}
	bob.mu.Lock()
	cur := bob.conn
	bob.mu.Unlock()
	if cur == nil || cur.addr() != addrB {
		t.Fatalf("bob is not connected to node B (%s)", addrB)
	}

	// Bob's sends, some in flight when his node went and resent through
	// the other: each stored once in alice's timeline (the server knows a
	// resend by its MsgRandom).
	checkFor(t, 10*time.Second, func() error {
		if fromBob := texts(fromIn(t, nodeC, "alice", "bob")); !slices.Equal(fromBob, bobAcked) {
			return fmt.Errorf("alice's timeline has bob's %q;\nwant %q", fromBob, bobAcked)
		}
		return nil
	})
}

// fromIn is the messages from peer in user's timeline, as a node's view
// has it, with their Seqs.
func fromIn(t *testing.T, node *srvpkg.Server, user, peer string) []*Message {
	t.Helper()
	evs, err := node.Store().ReadTimeline(user, 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	var out []*Message
	for _, e := range evs {
		m := &Message{}
		if json.Unmarshal(e.Data, m) == nil && m.From == peer {
			m.Seq = e.Seq
			out = append(out, m)
		}
	}
	return out
}

func seqsFrom(t *testing.T, node *srvpkg.Server, user, peer string) []uint64 {
	t.Helper()
	var out []uint64
	for _, m := range fromIn(t, node, user, peer) {
		out = append(out, m.Seq)
	}
	return out
}
