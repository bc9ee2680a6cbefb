package sdk

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// Issue 18 §3: two clients with one DeviceID (two processes of one app).
// The newer connection wins: the older is told (MQTT 5 DISCONNECT 0x8E; on
// 3.1.1 the SDK sees the takeover loop), reports OnReplaced once and stops
// reconnecting, so only one of them handles messages.
func TestReplacedByAnotherProcess(t *testing.T) {
	for _, pr := range protocols {
		t.Run(pr.name, func(t *testing.T) {
			s := startServer(t)
			s.users("alice", "bob")
			var mu sync.Mutex
			replaced := map[int][]string{}
			onReplaced := func(i int) func(*Options) {
				return func(o *Options) {
					o.OnReplaced = func(reason string) {
						mu.Lock()
						replaced[i] = append(replaced[i], reason)
						mu.Unlock()
					}
				}
			}
			clients := []*device{s.login(t, "bob", "phone", "", pr.p, onReplaced(0))}
			clients[0].rec.waitRefreshes(1)
			clients = append(clients, s.login(t, "bob", "phone", "", pr.p, onReplaced(1)))
			checkFor(t, 15*time.Second, func() error {
				mu.Lock()
				defer mu.Unlock()
				if len(replaced) == 0 {
					return fmt.Errorf("no OnReplaced")
				}
				return nil
			})
			mu.Lock()
			loser := 0
			if _, ok := replaced[1]; ok {
				loser = 1
			}
			reason := replaced[loser][0]
			mu.Unlock()
			// MQTT 5: the server said so, and the older one gave way at once.
			if pr.p == MQTT5 && (loser != 0 || !strings.Contains(reason, "Session taken over")) {
				t.Fatalf("client %d replaced (%q), want the older told by DISCONNECT 0x8E", loser, reason)
			}
			old, survivor := clients[loser], clients[1-loser]
			// The replaced client is closed and stays away: the other one
			// keeps its connection and gets every message, alone.
			if _, err := old.SendText(ctxT(t), "alice", "x"); err != ErrClosed {
				t.Fatalf("send on the replaced client: %v, want ErrClosed", err)
			}
			survivor.rec.waitRefreshes(1)
			alice := s.login(t, "alice", "phone", "", MQTT5)
			for i := range 5 {
				if _, err := alice.SendText(ctxT(t), "bob", fmt.Sprintf("m%d", i)); err != nil {
					t.Fatal(err)
				}
			}
			survivor.rec.waitMsgs(5)
			// (On 3.1.1 the survivor may have been taken over during the
			// loop, before the other gave way.)
			if _, _, after := survivor.rec.snapshot(); pr.p == MQTT5 && after != 1 {
				t.Fatalf("the remaining client reconnected after the other gave way: %d refreshes", after)
			}
			if _, msgs, _ := old.rec.snapshot(); len(msgs) != 0 {
				t.Fatalf("the replaced client handled %q", texts(msgs))
			}
			mu.Lock()
			defer mu.Unlock()
			if len(replaced) != 1 || len(replaced[loser]) != 1 {
				t.Fatalf("OnReplaced: %v, want once, on one client", replaced)
			}
		})
	}
}

// Issue 18 §3: a local store in use by another client fails Login at once,
// naming the cause.
func TestLocalStoreInUse(t *testing.T) {
	s := startServer(t)
	s.users("bob")
	dir := t.TempDir()
	s.login(t, "bob", "phone", dir, MQTT5)
	start := time.Now()
	_, err := Login(ctxT(t), Options{Addr: s.addr, UserID: "bob", UserSig: s.sig(t, "bob"), DeviceID: "phone", Dir: dir, Logger: testLogger()})
	if err == nil || !strings.Contains(err.Error(), "in use by another") {
		t.Fatalf("second Login on one store: %v, want an error naming the other user of the store", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("second Login took %v to fail", d)
	}
}
