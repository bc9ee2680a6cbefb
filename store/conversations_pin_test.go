package store

import (
	"testing"
	"time"
)

// A pin is kept with the conversation entry: across a restart, and across
// new messages; when the entry leaves the list (its last message expired)
// the pin goes with it, and the next message brings the entry back
// unpinned. The list's cap evicts unpinned entries before pinned ones.
func TestPinnedConversation(t *testing.T) {
	dir := t.TempDir()
	now := time.Unix(1_764_230_400, 0)
	clock := func() time.Time { return now }
	s := open(t, dir, Options{Clock: clock})
	touch := func(peer string, at, expire int64, limit int) {
		t.Helper()
		m := &Message{MsgTime: at, MsgKey: "1_1_" + peer, Expire: expire}
		if err := s.Update(func(tx *Tx) error { return tx.Touch("alice", peer, m, false, false, limit, now.Unix()) }); err != nil {
			t.Fatal(err)
		}
	}
	pin := func(peer string) {
		t.Helper()
		if err := s.Update(func(tx *Tx) error {
			c, err := tx.Conversation("alice", peer)
			if err != nil || c == nil {
				t.Fatalf("no entry for %s: %v", peer, err)
			}
			c.Top = true
			return tx.PutConversation("alice", c)
		}); err != nil {
			t.Fatal(err)
		}
	}
	top := func(peer string) (listed, pinned bool) {
		t.Helper()
		list, err := s.Conversations("alice")
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range list {
			if c.Peer == peer {
				return true, c.Top
			}
		}
		return false, false
	}
	t0 := now.Unix()
	touch("bob", t0, t0+60, 3)
	pin("bob")
	s.Close()
	s = open(t, dir, Options{Clock: clock})
	defer func() { s.Close() }()
	if l, p := top("bob"); !l || !p {
		t.Fatalf("after restart: listed %v pinned %v, want a pinned entry", l, p)
	}
	touch("bob", t0+1, t0+60, 3)
	if _, p := top("bob"); !p {
		t.Fatal("a new message unpinned the conversation")
	}

	now = now.Add(2 * time.Minute) // bob's last message has expired
	if l, _ := top("bob"); l {
		t.Fatal("a conversation whose last message expired is still listed")
	}
	touch("bob", now.Unix(), 0, 3)
	if l, p := top("bob"); !l || p {
		t.Fatalf("back after expiry: listed %v pinned %v, want listed and not pinned", l, p)
	}

	// Cap 3: carol (pinned, oldest), dave, erin; frank evicts dave, not carol.
	pin("bob")
	touch("carol", now.Unix()-30, 0, 3)
	pin("carol")
	touch("dave", now.Unix()-20, 0, 3)
	touch("frank", now.Unix()+1, 0, 3)
	for peer, want := range map[string]bool{"bob": true, "carol": true, "dave": false, "frank": true} {
		if l, _ := top(peer); l != want {
			t.Errorf("%s listed %v, want %v", peer, l, want)
		}
	}
}
