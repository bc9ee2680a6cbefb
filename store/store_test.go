package store

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

func open(t testing.TB, dir string, o Options) *Store {
	t.Helper()
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Concurrent appenders get gap-free, unique Seqs per user, and commits are
// shared (fewer fsyncs than transactions).
func TestConcurrentAppendsAreGapFree(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	const writers, each = 32, 200
	var wg sync.WaitGroup
	seen := make([]map[uint64]bool, 2)
	for i := range seen {
		seen[i] = map[uint64]bool{}
	}
	var mu sync.Mutex
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				var a, b uint64
				err := s.Update(func(tx *Tx) error {
					var err error
					if a, err = tx.Append("u0", []byte(`"Event":"x"}`)); err != nil {
						return err
					}
					b, err = tx.Append("u1", []byte(`"Event":"x"}`))
					return err
				})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[0][a] || seen[1][b] {
					t.Errorf("duplicate seq %d/%d", a, b)
				}
				seen[0][a], seen[1][b] = true, true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for u, m := range seen {
		for seq := uint64(1); seq <= writers*each; seq++ {
			if !m[seq] {
				t.Fatalf("u%d: seq %d missing", u, seq)
			}
		}
		if last, _ := s.LastSeq(fmt.Sprintf("u%d", u)); last != writers*each {
			t.Fatalf("u%d last %d", u, last)
		}
	}
	if c, n := s.Metrics.Commits.Load(), s.Metrics.Txns.Load(); c >= n {
		t.Fatalf("no group commit: %d commits for %d transactions", c, n)
	}
	evs, err := s.ReadTimeline("u0", 10, 5)
	if err != nil || len(evs) != 5 || evs[0].Seq != 11 || string(evs[0].Data) != `{"Seq":11,"Event":"x"}` {
		t.Fatalf("read: %v %+v", err, evs)
	}
}

// A transaction that fails leaves nothing behind, and the next Seq is the
// one it would have taken.
func TestFailedTransactionLeavesNoTrace(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	boom := errors.New("boom")
	mustAppend := func(user string) uint64 {
		var seq uint64
		if err := s.Update(func(tx *Tx) error {
			var err error
			seq, err = tx.Append(user, []byte(`"Event":"x"}`))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return seq
	}
	mustAppend("a")
	err := s.Update(func(tx *Tx) error {
		tx.Append("a", []byte(`"Event":"x"}`))
		tx.Put([]byte("z/junk"), []byte("v"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err %v", err)
	}
	if v, _ := get(s.db, []byte("z/junk")); v != nil {
		t.Fatal("write of a failed transaction is visible")
	}
	if seq := mustAppend("a"); seq != 2 {
		t.Fatalf("seq after failed txn = %d, want 2", seq)
	}
	// The same for a hot (cached) key: a conversation entry.
	conv := func() *Conversation {
		var c *Conversation
		s.Update(func(tx *Tx) error { var err error; c, err = tx.Conversation("a", "b"); return err })
		return c
	}
	if conv() != nil { // caches "absent"
		t.Fatal("conversation exists")
	}
	s.Update(func(tx *Tx) error {
		tx.PutConversation("a", &Conversation{Peer: "b", Unread: 7})
		return boom
	})
	if c := conv(); c != nil {
		t.Fatalf("failed transaction's conversation visible: %+v", c)
	}
	s.Update(func(tx *Tx) error { return tx.PutConversation("a", &Conversation{Peer: "b", Unread: 3}) })
	if c := conv(); c == nil || c.Unread != 3 {
		t.Fatalf("conversation %+v", c)
	}
	if c, _ := s.GetConversation("a", "b"); c == nil || c.Unread != 3 {
		t.Fatalf("stored conversation %+v", c)
	}
}

// Seqs continue after a reopen; the cursor's high-water mark never moves back.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	for i := 0; i < 3; i++ {
		s.Update(func(tx *Tx) error { _, err := tx.Append("bob", []byte(`"Event":"x"}`)); return err })
	}
	if _, err := s.ImportAccount(Account{UserID: "bob", Nick: "Bob"}); err != nil {
		t.Fatal(err)
	}
	s.SetCursor("bob", "bob:phone", 3)
	s.SetCursor("bob", "bob:laptop", 1)
	s.Close()

	s = open(t, dir, Options{})
	defer s.Close()
	if last, _ := s.LastSeq("bob"); last != 3 {
		t.Fatalf("last %d", last)
	}
	var seq uint64
	s.Update(func(tx *Tx) error { var err error; seq, err = tx.Append("bob", []byte(`"Event":"x"}`)); return err })
	if seq != 4 {
		t.Fatalf("seq after reopen %d", seq)
	}
	if hw, _ := s.HighWater("bob"); hw != 3 {
		t.Fatalf("high water %d", hw)
	}
	if c, seen, _ := s.Cursor("bob", "bob:laptop"); !seen || c != 1 {
		t.Fatalf("cursor %d %v", c, seen)
	}
	if _, seen, _ := s.Cursor("bob", "bob:tablet"); seen {
		t.Fatal("unseen device reported seen")
	}
	if a, err := s.GetAccount("bob"); err != nil || a.Nick != "Bob" {
		t.Fatalf("account %+v %v", a, err)
	}
	if ok, _ := s.AccountExists("carol"); ok {
		t.Fatal("carol exists")
	}
}

// Identical resends in one commit group still de-duplicate: the second sees
// the first's record through the group's indexed batch.
func TestResentWithinGroup(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	var wg sync.WaitGroup
	keys := make([]string, 20)
	for i := range keys {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s.Update(func(tx *Tx) error {
				if prev, err := tx.Resent(SendID{From: "a", To: "b", Random: 1, MsgSeq: 2, HasMsgSeq: true}); err != nil || prev != nil {
					if prev != nil {
						keys[i] = prev.MsgKey
					}
					return err
				}
				if _, err := tx.Append("b", []byte(`"Event":"x"}`)); err != nil {
					return err
				}
				keys[i] = fmt.Sprint("k", i)
				return tx.RememberSent(SendID{From: "a", To: "b", Random: 1, MsgSeq: 2, HasMsgSeq: true}, Sent{MsgKey: keys[i]})
			})
		}(i)
	}
	wg.Wait()
	for _, k := range keys {
		if k != keys[0] {
			t.Fatalf("resends got different keys: %v", keys)
		}
	}
	if last, _ := s.LastSeq("b"); last != 1 {
		t.Fatalf("stored %d times", last)
	}
}

// BenchmarkAppend measures durable appends from concurrent writers (group
// commit): each op is one fsynced transaction appending to two timelines.
func BenchmarkAppend(b *testing.B) {
	benchTx(b, func(tx *Tx, u string) error {
		tx.Append(u, []byte(`"Event":"msg","MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hello"}}]}`))
		_, err := tx.Append(u+"x", []byte(`"Event":"msg"}`))
		return err
	})
}

// benchTx runs op in one transaction per iteration, from 64 concurrent
// writers, each with its own user u.
func benchTx(b *testing.B, op func(tx *Tx, u string) error) {
	s := open(b, b.TempDir(), Options{})
	defer s.Close()
	b.SetParallelism(64)
	var n sync.Mutex
	i := 0
	b.RunParallel(func(pb *testing.PB) {
		n.Lock()
		i++
		u := fmt.Sprint("u", i)
		n.Unlock()
		for pb.Next() {
			s.Update(func(tx *Tx) error { return op(tx, u) })
		}
	})
}

// BenchmarkSendDedup is BenchmarkAppend with a send's resend check and
// record: each op looks for a resend (almost never there: the filter
// answers), appends, and records the send.
func BenchmarkSendDedup(b *testing.B) {
	body := []byte(`[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hello"}}]`)
	benchTx(b, func(tx *Tx, u string) error {
		id := SendID{From: u, To: u + "x", Random: rand.Uint32(), Body: BodyHash(body)}
		if prev, err := tx.Resent(id); err != nil || prev != nil {
			return err
		}
		seq, err := tx.Append(u+"x", []byte(`"Event":"msg","MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hello"}}]}`))
		if err != nil {
			return err
		}
		return tx.RememberSent(id, Sent{MsgKey: "123_456_1764230400", MsgTime: 1764230400, Seq: seq})
	})
}
