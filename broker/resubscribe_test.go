package broker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/wait"
)

// expectOnce reads bob's timeline: Seqs 1..n in order, each once, then one
// sync_complete at n. Then one more event is committed: the next thing the
// device receives must be that event. A second replay (duplicates) or a
// second sync_complete is sent, in Seq order, before it, so this catches
// both without waiting for something not to happen.
func expectOnce(t *testing.T, s *testServer, d *device, n int) {
	t.Helper()
	for want := int64(1); want <= int64(n); want++ {
		e := d.next()
		if e.str("Event") == "sync_complete" || e.num("Seq") != want {
			t.Fatalf("got %v, want Seq %d (each event once, in order)", e, want)
		}
	}
	if last := d.syncComplete(); last != int64(n) {
		t.Fatalf("sync_complete at %d, want %d", last, n)
	}
	appendBacklog(t, s.store, d.user, 1)
	if e := d.next(); e.str("Event") == "sync_complete" || e.num("Seq") != int64(n+1) {
		t.Fatalf("after the replay: %v, want the new event at Seq %d and nothing twice", e, n+1)
	}
}

// Issue 12 §2: a client with a persistent session that subscribes again in
// its on-connect callback (mosquitto_sub -c, paho's documented pattern) gets
// its backlog once: the restored session's subscription starts the replay,
// and the SUBSCRIBE that follows continues it instead of starting over from
// the acknowledged cursor.
func TestResubscribeRestoredSession(t *testing.T) {
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			s := startServer(t, serverOpts{})
			s.users("alice", "bob")
			o := connectOpts{v5: v.v5, clientID: "bob:phone", session: true}
			first := s.connect("bob", o)
			first.syncComplete()
			first.close()
			// A backlog larger than the window, so the replay is still
			// running when the SUBSCRIBE arrives.
			const n = 300
			appendBacklog(t, s.store, "bob", n)
			bob := s.connect("bob", o)
			if !bob.sessionPresent {
				t.Fatal("the session was not restored (CONNACK Session Present 0)")
			}
			expectOnce(t, s, bob, n)
		})
	}
}

// Issue 12 §2: overlapping or repeated timeline filters on one connection
// (im/{me}/# twice, or im/{me}/# and im/{me}/in in two SUBSCRIBEs) deliver
// each event once, with one sync_complete.
func TestResubscribeOverlappingFilters(t *testing.T) {
	filters := [][2]string{
		{"im/bob/#", "im/bob/#"},
		{"im/bob/#", "im/bob/in"},
		{"im/bob/in", "im/bob/#"},
		{"im/bob/in", "im/bob/+"},
	}
	for _, v := range versions {
		for _, f := range filters {
			t.Run(fmt.Sprintf("%s/%s+%s", v.name, f[0], f[1]), func(t *testing.T) {
				s := startServer(t, serverOpts{})
				s.users("alice", "bob")
				const n = 300
				appendBacklog(t, s.store, "bob", n)
				bob := s.connect("bob", connectOpts{v5: v.v5, noSub: true})
				for _, filter := range f {
					if code := bob.subscribeCode(filter); code >= 0x80 {
						t.Fatalf("subscribe %s refused 0x%02x", filter, code)
					}
				}
				expectOnce(t, s, bob, n)
			})
		}
	}
}

// A SUBSCRIBE after the replay ended sends nothing again: no event twice and
// no second sync_complete. openim/sync stays the way to ask for a replay.
func TestResubscribeAfterSyncComplete(t *testing.T) {
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			s := startServer(t, serverOpts{})
			s.users("alice", "bob")
			appendBacklog(t, s.store, "bob", 5)
			bob := s.connect("bob", connectOpts{v5: v.v5})
			if last := bob.drainToSync(); last != 5 {
				t.Fatalf("sync_complete at %d", last)
			}
			// Wait until the cursor has every event, so a restart from
			// it would send nothing again but its sync_complete.
			// (Cursors are flushed every second.)
			wait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
				if c, _, _ := s.store.Cursor("bob", "bob:dev"); c != 5 {
					return fmt.Errorf("cursor %d", c)
				}
				return nil
			})
			if code := bob.subscribeCode("im/bob/#"); code >= 0x80 {
				t.Fatalf("refused 0x%02x", code)
			}
			appendBacklog(t, s.store, "bob", 1)
			if e := bob.next(); e.num("Seq") != 6 {
				t.Fatalf("after a second SUBSCRIBE: %v, want Seq 6", e)
			}
			// The explicit replay still works, and ends with its own
			// sync_complete.
			r, _ := bob.request("openim/sync", map[string]any{"FromSeq": 4})
			if r.str("ActionStatus") != "OK" {
				t.Fatalf("sync: %v", r)
			}
			for want := int64(5); want <= 6; want++ {
				if e := bob.next(); e.num("Seq") != want {
					t.Fatalf("openim/sync replayed %v, want Seq %d", e, want)
				}
			}
			if last := bob.syncComplete(); last != 6 {
				t.Fatalf("sync_complete at %d", last)
			}
		})
	}
}
