package store

import (
	"slices"
	"testing"
)

// A store written before the rh/ and rs/ indexes existed holds blacklist
// entries and requests without their reverse entries. Opening it fills the
// indexes in, once, before the writer serves (not in a transaction homed
// at one user: docs/cluster.md §11.2), so what other users hold about a
// deleted account goes too, the counters follow, and a home's decisions
// read from its reverse indexes (HasSentRequest) are right.
func TestWipeRelationsFillsOldIndexes(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	if v, err := get(s.db, relIndexKey); err != nil || v == nil {
		t.Fatalf("a new store is not marked as indexed: %q %v", v, err)
	}
	err := s.Update(func(tx *Tx) error {
		// As the old PutBlocked and PutRequest wrote them, in a store
		// never migrated.
		tx.Put(blockedKey("alice", "zed"), []byte(`{"AddTime":1}`))
		tx.Put(relCountsKey("alice"), []byte(`{"Blacklist":1,"BlackSeq":1}`))
		tx.Put(requestKey("bob", "zed"), []byte(`{"AddType":"Add_Type_Both","AddTime":1}`))
		tx.Put(relCountsKey("bob"), []byte(`{"Pending":1}`))
		tx.Delete(relIndexKey)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir, Options{})
	defer s.Close()
	err = s.Update(func(tx *Tx) error {
		if sent, err := tx.HasSentRequest("zed", "bob"); err != nil || !sent {
			t.Errorf("after Open, HasSentRequest(zed, bob) = %v %v", sent, err)
		}
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
