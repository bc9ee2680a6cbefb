package store

import (
	"sync/atomic"
	"testing"
	"time"
)

// A user's last Seq comes from their timeline's last key while it has
// events, and from s/ once retention deleted them: across restarts, after
// every event expired, and after new events pass an old s/, Seq never
// restarts or moves back.
func TestLastSeqAcrossExpiryAndRestart(t *testing.T) {
	dir := t.TempDir()
	var off atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(off.Load())) }
	reopen := func(s *Store) *Store {
		t.Helper()
		if s != nil {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}
		return open(t, dir, Options{Clock: clock})
	}
	appendN := func(s *Store, user string, n int, expire time.Duration) uint64 {
		t.Helper()
		var seq uint64
		for range n {
			if err := s.Update(func(tx *Tx) error {
				var err error
				if expire > 0 {
					seq, err = tx.AppendUntil(user, []byte(`"Event":"x"}`), tx.Now().Add(expire))
				} else {
					seq, err = tx.Append(user, []byte(`"Event":"x"}`))
				}
				return err
			}); err != nil {
				t.Fatal(err)
			}
		}
		return seq
	}
	want := func(s *Store, user string, seq uint64, when string) {
		t.Helper()
		if got, err := s.LastSeq(user); err != nil || got != seq {
			t.Fatalf("%s: LastSeq(%s) = %d, %v; want %d", when, user, got, err, seq)
		}
	}

	s := reopen(nil)
	appendN(s, "u", 3, time.Minute)
	appendN(s, "v", 2, 0)
	s = reopen(s)
	want(s, "u", 3, "after a restart")
	want(s, "v", 2, "after a restart")

	off.Store(int64(2 * time.Minute))
	if n, err := s.Sweep(clock(), 0); err != nil || n == 0 {
		t.Fatalf("sweep: %d, %v", n, err)
	}
	if evs, _ := s.ReadTimeline("u", 0, 10); len(evs) != 0 {
		t.Fatalf("%d of u's events survived the sweep", len(evs))
	}
	s = reopen(s)
	want(s, "u", 3, "every event expired, then a restart")
	if seq := appendN(s, "u", 1, 0); seq != 4 {
		t.Fatalf("the next Seq after expiry is %d, want 4", seq)
	}
	appendN(s, "u", 2, 0)
	s = reopen(s)
	want(s, "u", 6, "new events past an old s/, then a restart")
	want(s, "v", 2, "untouched by the sweep")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// A MsgKey names its history key; anything else names none.
func TestHistoryKeyOf(t *testing.T) {
	for _, tc := range []struct {
		msgKey string
		ok     bool
	}{
		{"7_123_1764230400", true},
		{"0_0_0", true},
		{"4294967295_4294967295_1764230400", true},
		{"4294967296_1_1764230400", false}, // MsgSeq is 32 bits
		{"1_4294967296_1764230400", false}, // so is MsgRandom
		{"1_2_-3", false},
		{"1_2", false},
		{"1_2_3_4", false},
		{"a_2_3", false},
		{"", false},
	} {
		got := historyKeyOf("bob", "alice", tc.msgKey)
		if (got != nil) != tc.ok {
			t.Fatalf("%q: key %v, want one: %v", tc.msgKey, got, tc.ok)
		}
	}
	// Either side of the conversation names the same key.
	if a, b := historyKeyOf("bob", "alice", "7_123_1764230400"), historyKeyOf("alice", "bob", "7_123_1764230400"); string(a) != string(b) || string(a) != string(historyKey("alice", "bob", 1764230400, 7, 123)) {
		t.Fatalf("keys differ: %x %x", a, b)
	}
}
