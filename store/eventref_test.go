package store

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The sender's copy of a message is stored as a reference to the
// recipient's: reads give the full event with the sender's Seq, a rewrite
// of either copy shows, and a copy whose target is gone is gone too.
func TestEventCopies(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	tail := []byte(`"Event":"msg","From_Account":"alice","To_Account":"bob","MsgBody":[]}`)
	var bobSeq, aliceSeq uint64
	if err := s.Update(func(tx *Tx) error {
		// Give alice a different Seq from bob's.
		if _, err := tx.Append("alice", []byte(`"Event":"x"}`)); err != nil {
			return err
		}
		var err error
		if bobSeq, err = tx.Append("bob", tail); err != nil {
			return err
		}
		if aliceSeq, err = tx.AppendCopy("alice", "alice:phone", tail, "bob", bobSeq); err != nil {
			return err
		}
		if app := tx.app[len(tx.app)-1]; app.Origin != "alice:phone" || string(app.Data) != `{"Seq":2,`+string(tail) {
			t.Errorf("committed event %+v", app)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	read := func(user string, after uint64) []Event {
		t.Helper()
		evs, err := s.ReadTimeline(user, after, 10)
		if err != nil {
			t.Fatal(err)
		}
		return evs
	}
	if evs := read("alice", 1); len(evs) != 1 || evs[0].Seq != aliceSeq || string(evs[0].Data) != `{"Seq":2,`+string(tail) {
		t.Fatalf("alice's copy: %+v", evs)
	}
	raw, _ := get(s.db, timelineKey("alice", aliceSeq))
	if !isEventRef(raw) {
		t.Fatalf("alice's copy is stored in full: %s", raw)
	}

	// A recall rewrites bob's copy: alice's reads follow (her own copy is
	// rewritten too in practice, which stores it in full).
	if err := s.Update(func(tx *Tx) error {
		return tx.RewriteEvent("bob", bobSeq, []byte(`"Event":"msg","MsgFlagBits":8}`))
	}); err != nil {
		t.Fatal(err)
	}
	if evs := read("alice", 1); len(evs) != 1 || !strings.Contains(string(evs[0].Data), `"MsgFlagBits":8`) || !strings.HasPrefix(string(evs[0].Data), `{"Seq":2,`) {
		t.Fatalf("alice's copy after bob's was rewritten: %+v", evs)
	}
	if err := s.Update(func(tx *Tx) error {
		return tx.RewriteEvent("alice", aliceSeq, []byte(`"Event":"msg","MsgFlagBits":8,"Own":1}`))
	}); err != nil {
		t.Fatal(err)
	}
	if evs := read("alice", 1); len(evs) != 1 || !strings.Contains(string(evs[0].Data), `"Own":1`) {
		t.Fatalf("alice's rewritten copy: %+v", evs)
	}

	// A reference whose target has gone (retention) is gone too.
	var carolSeq uint64
	if err := s.Update(func(tx *Tx) error {
		dSeq, err := tx.AppendUntil("dave", tail, tx.Now().Add(time.Minute))
		if err != nil {
			return err
		}
		carolSeq, err = tx.AppendCopy("carol", "", tail, "dave", dSeq)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sweep(time.Now().Add(2*time.Minute), 0); err != nil {
		t.Fatal(err)
	}
	if evs := read("carol", 0); len(evs) != 0 {
		t.Fatalf("carol's copy outlived dave's: %+v (Seq %d)", evs, carolSeq)
	}
}

// OnCommit hears of a group's events before LastSeq shows them: delivery
// relies on it to know whose device sent an event before a pump can find
// the event by Seq.
func TestOnCommitBeforeLastSeq(t *testing.T) {
	var s *Store
	var violations, calls atomic.Int64
	s = open(t, t.TempDir(), Options{OnCommit: func(evs []Appended) {
		calls.Add(1)
		for _, e := range evs {
			if last, _ := s.LastSeq(e.User); last >= e.Seq {
				violations.Add(1)
			}
		}
	}})
	defer s.Close()
	for i := 0; i < 50; i++ {
		var seq uint64
		if err := s.Update(func(tx *Tx) error {
			var err error
			seq, err = tx.Append("u", []byte(`"Event":"x"}`))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		// And once Update has returned, LastSeq does show it.
		if last, _ := s.LastSeq("u"); last != seq {
			t.Fatalf("LastSeq %d after Update appended %d", last, seq)
		}
	}
	if calls.Load() == 0 || violations.Load() != 0 {
		t.Fatalf("%d of %d commits showed their Seqs before OnCommit", violations.Load(), calls.Load())
	}
}
