package store

import (
	"slices"
	"testing"
)

// A store written before the rh/ and rs/ indexes existed holds blacklist
// entries and requests without their reverse entries. The first account
// deletion fills the indexes in, so what other users hold about the
// deleted account goes too, and the counters follow.
func TestWipeRelationsFillsOldIndexes(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	err := s.Update(func(tx *Tx) error {
		// As the old PutBlocked and PutRequest wrote them.
		tx.Put(blockedKey("alice", "zed"), []byte(`{"AddTime":1}`))
		tx.Put(relCountsKey("alice"), []byte(`{"Blacklist":1,"BlackSeq":1}`))
		tx.Put(requestKey("bob", "zed"), []byte(`{"AddType":"Add_Type_Both","AddTime":1}`))
		tx.Put(relCountsKey("bob"), []byte(`{"Pending":1}`))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var changed []string
	if err := s.Update(func(tx *Tx) error { changed, err = tx.WipeRelations("zed"); return err }); err != nil {
		t.Fatal(err)
	}
	if bl, _ := s.Blacklist("alice"); len(bl) != 0 {
		t.Fatalf("alice's blacklist: %v", bl)
	}
	if rq, _ := s.FriendRequests("bob"); len(rq) != 0 {
		t.Fatalf("bob's requests: %v", rq)
	}
	if c, _ := s.RelCounts("alice"); c.Blacklist != 0 || c.BlackSeq != 2 {
		t.Fatalf("alice's counters: %+v", c)
	}
	if c, _ := s.RelCounts("bob"); c.Pending != 0 {
		t.Fatalf("bob's counters: %+v", c)
	}
	if !slices.Contains(changed, "alice") || !slices.Contains(changed, "bob") {
		t.Fatalf("changed users %v lack alice and bob", changed)
	}
	// No reverse entry outlives its record.
	for _, p := range []string{"rh/", "rs/"} {
		if err := s.scan([]byte(p), func(rest, _ []byte) error { t.Errorf("left %s%q", p, rest); return nil }); err != nil {
			t.Fatal(err)
		}
	}
}
