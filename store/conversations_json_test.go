package store

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
)

// appendJSON writes exactly what encoding/json writes.
func TestConversationJSON(t *testing.T) {
	peers := []string{"bob", "", "a.b-c_d@e", `quo"te`, `back\slash`, "<tag>&", "tab\there", "ünï", "\x00\x1f", "\xff"}
	r := rand.New(rand.NewPCG(1, 2))
	pick := func() int64 {
		switch r.IntN(4) {
		case 0:
			return 0
		case 1:
			return -r.Int64()
		}
		return r.Int64()
	}
	for i := 0; i < 2000; i++ {
		c := Conversation{
			Peer: peers[r.IntN(len(peers))], MsgTime: pick(), Unread: int(pick() % 1000),
			ReadTime: pick(), Expire: pick(), ClearedAt: pick(), Deleted: r.IntN(2) == 0, Top: r.IntN(2) == 0,
		}
		if r.IntN(2) == 0 {
			c.LastMsgKey = "7_123_1764230400"
		}
		want, err := json.Marshal(&c)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.appendJSON(nil); string(got) != string(want) {
			t.Fatalf("appendJSON:\n got %s\nwant %s", got, want)
		}
	}
}

// A conversation read from the writer's cache is the caller's to change:
// changing it does not change what the next reader sees.
func TestConversationCacheCopies(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	if err := s.Update(func(tx *Tx) error {
		return tx.PutConversation("alice", &Conversation{Peer: "bob", MsgTime: 10, Unread: 1})
	}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.Update(func(tx *Tx) error {
			c, err := tx.Conversation("alice", "bob")
			if err != nil || c == nil || c.Unread != 1 {
				t.Fatalf("read %+v, %v", c, err)
			}
			c.Unread = 99 // not written back
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Update(func(tx *Tx) error {
		return tx.Touch("alice", "bob", &Message{MsgTime: 20, MsgKey: "1_1_20"}, true, false, 100, 20)
	}); err != nil {
		t.Fatal(err)
	}
	list, err := s.Conversations("alice")
	if err != nil || len(list) != 1 || list[0].Unread != 2 || list[0].MsgTime != 20 {
		t.Fatalf("after a touch: %+v, %v", list, err)
	}
}
