package store

import (
	"bytes"
	"encoding/binary"
	"io"
	"math"
	"reflect"
	"testing"

	"github.com/cockroachdb/pebble"
)

// A single node's store split into four partitions (the seed of a
// cluster: ExportPartition, each partition's snapshot loaded into its
// store) reads, through the partitioned front, as it read on the single
// node, for every user and every kind of data; and each key is where the
// cluster itself would have written it: the time index once, with the
// sender's copy; a reference to another partition's event stored whole;
// the push queue with its recipient; expiry entries naming only keys of
// their partition.
func TestExportPartitionSplitsByUser(t *testing.T) {
	single := open(t, t.TempDir(), Options{})
	defer single.Close()
	place := map[string]int{"alice": 0, "bob": 1, "carol": 2, "dave": 0, "erin": 3}
	of := func(u string) int { return place[u] }
	users := []string{"alice", "bob", "carol", "dave", "erin"}
	for _, u := range users {
		if _, err := single.ImportAccount(Account{UserID: u}); err != nil {
			t.Fatal(err)
		}
	}
	recalled, _ := send(t, single, "alice", "bob", 1, "hi bob")
	send(t, single, "bob", "alice", 2, "hi alice")
	send(t, single, "carol", "alice", 3, "hi from carol")
	send(t, single, "alice", "dave", 4, "same partition")
	send(t, single, "dave", "alice", 5, "same partition back")
	send(t, single, "erin", "bob", 6, "hi from erin")
	send(t, single, "alice", "carol", 7, "hi carol")
	now := single.Now().Unix()
	ev := []byte(`"Event":"msg","MsgKey":"` + recalled.MsgKey + `","MsgFlagBits":1}`)
	err := single.UpdateFor("alice", func(tx *Tx) error {
		for _, u := range [][2]string{{"bob", "alice"}, {"alice", "bob"}} {
			if err := tx.ChangeCopy(u[0], u[1], recalled.MsgKey, CopyChange{Flags: 1, Event: ev, Uncount: true}); err != nil {
				return err
			}
		}
		for _, f := range [][2]string{{"alice", "bob"}, {"bob", "alice"}} {
			if _, err := tx.PutFriend(f[0], f[1], &Friend{AddTime: now, AddSource: "AddSource_Type_Test"}); err != nil {
				return err
			}
		}
		if _, err := tx.PutBlocked("carol", "alice", now); err != nil {
			return err
		}
		return tx.PutRequest("erin", &FriendRequest{From: "dave", AddType: "Add_Type_Both", AddTime: now})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := single.SetPushToken(PushToken{User: "bob", Device: "phone", Vendor: "apns", Token: "tok-bob", Updated: now}); err != nil {
		t.Fatal(err)
	}
	if _, err := single.EnqueuePushes([][]byte{[]byte(`{"User":"bob","Device":"phone","Vendor":"apns"}`)}); err != nil {
		t.Fatal(err)
	}

	front, err := OpenPartitions(t.TempDir(), 4, of, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer front.Close()
	for p := range 4 {
		if err := single.ExportPartition(p, of, func(seq uint64, r io.Reader) error {
			return front.Partition(p).LoadSnapshot(seq, r)
		}); err != nil {
			t.Fatalf("partition %d: %v", p, err)
		}
	}

	same := func(what string, read func(s *Store) (any, error)) {
		t.Helper()
		want, err1 := read(single)
		got, err2 := read(front)
		if err1 != nil || err2 != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: split %+v (%v), single node %+v (%v)", what, got, err2, want, err1)
		}
	}
	for _, u := range users {
		same(u+"'s timeline", func(s *Store) (any, error) { return s.ReadTimeline(u, 0, 100) })
		same(u+"'s last Seq", func(s *Store) (any, error) { return s.LastSeq(u) })
		same(u+"'s account", func(s *Store) (any, error) { return s.GetAccount(u) })
		same(u+"'s conversations", func(s *Store) (any, error) { return s.Conversations(u) })
		same(u+"'s friends", func(s *Store) (any, error) { return s.Friends(u) })
		same(u+"'s friended-by", func(s *Store) (any, error) { return s.FriendedBy(u) })
		same(u+"'s blacklist", func(s *Store) (any, error) { return s.Blacklist(u) })
		same(u+"'s requests", func(s *Store) (any, error) { return s.FriendRequests(u) })
		same(u+"'s counters", func(s *Store) (any, error) { return s.RelCounts(u) })
		same(u+"'s push tokens", func(s *Store) (any, error) { return s.PushTokens(u) })
		for _, peer := range users {
			q := HistoryQuery{A: u, B: peer, MaxTime: math.MaxInt32, Max: 100}
			same(u+"'s history with "+peer, func(s *Store) (any, error) { m, _, err := s.History(q); return m, err })
		}
	}
	if m, err := front.GetMessage("bob", "alice", recalled.MsgKey); err != nil || m.MsgFlagBits != 1 {
		t.Fatalf("bob's copy of the recalled message: %+v, %v", m, err)
	}

	// Where the keys are.
	count := func(s *Store, prefix string) int {
		n := 0
		it, _ := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte(prefix), UpperBound: prefixEnd([]byte(prefix))})
		for ok := it.First(); ok; ok = it.Next() {
			n++
		}
		it.Close()
		return n
	}
	sum := func(prefix string) int {
		n := 0
		for p := range 4 {
			n += count(front.Partition(p), prefix)
		}
		return n
	}
	if got, want := sum("m/"), count(single, "m/"); got != want || want != 7 {
		t.Errorf("time index: %d keys in the partitions, %d on the single node; want each once", got, want)
	}
	if got, want := sum("h/"), 2*count(single, "h/")-2; got != want {
		// Two messages are within partition 0 (alice and dave): one copy each.
		t.Errorf("history records: %d in the partitions; want %d (each side's copy)", got, want)
	}
	if q, _ := front.Partition(1).QueuedPushes(0, 10); len(q) != 1 {
		t.Errorf("bob's partition's push queue: %v", q)
	}
	for p := range 4 {
		ps := front.Partition(p)
		if p != 1 {
			if q, _ := ps.QueuedPushes(0, 10); len(q) != 0 {
				t.Errorf("partition %d's push queue: %v", p, q)
			}
		}
		// No timeline value refers to another partition's event, and every
		// key an expiry entry names is this partition's.
		it, _ := ps.db.NewIter(nil)
		for ok := it.First(); ok; ok = it.Next() {
			k, v := it.Key(), it.Value()
			switch {
			case bytes.HasPrefix(k, []byte("t/")) && isEventRef(v):
				_, n := binary.Uvarint(v[1:])
				if of(string(v[1+n:])) != p {
					t.Errorf("partition %d: %q refers to %s's timeline", p, k, v[1+n:])
				}
			case bytes.HasPrefix(k, []byte("m/")):
				h, _ := get(ps.db, v)
				if m, err := decodeMessage(h); err != nil || of(m.From) != p {
					t.Errorf("partition %d: time index %q of a message %+v (%v): not its sender's", p, k, m, err)
				}
			case bytes.HasPrefix(k, []byte("e/")):
				keys := [][]byte{k[len("e/")+8:]}
				for r := v; len(r) > 0; {
					n, m := binary.Uvarint(r)
					keys = append(keys, r[m:m+int(n)])
					r = r[m+int(n):]
				}
				for _, x := range keys {
					if xv, _ := get(ps.db, x); xv == nil {
						t.Errorf("partition %d: expiry entry %q names %q, which it does not hold", p, k, x)
					}
				}
			}
		}
		it.Close()
	}
	// alice → dave stays a reference (one partition); alice → bob is whole
	// in alice's partition.
	refs := 0
	it, _ := front.Partition(0).db.NewIter(&pebble.IterOptions{LowerBound: []byte("t/"), UpperBound: prefixEnd([]byte("t/"))})
	for ok := it.First(); ok; ok = it.Next() {
		if isEventRef(it.Value()) {
			refs++
		}
	}
	it.Close()
	if refs != 2 {
		t.Errorf("partition 0 keeps %d timeline references; want 2 (the sends between alice and dave)", refs)
	}

	// A key no rule names fails the split rather than vanish.
	if err := single.Update(func(tx *Tx) error { tx.Put([]byte("qq/unknown"), []byte("1")); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := single.ExportPartition(0, of, func(uint64, io.Reader) error { return nil }); err == nil {
		t.Error("a key without a rule was split without a word")
	}
}
