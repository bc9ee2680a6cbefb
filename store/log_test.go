package store

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/logcapture"
	"github.com/duet-im/duet/internal/wait"
)

// memLog is a log in memory with JetStream's expected-last-sequence rule:
// an append lands only if the writer's record of the last sequence is the
// log's. The cluster package's tests run the same store code against real
// JetStream; this one tests the store's side of the contract alone.
type memLog struct {
	mu      sync.Mutex
	entries [][]byte
	grew    chan struct{} // closed and replaced on every append
}

func newMemLog() *memLog { return &memLog{grew: make(chan struct{})} }

var errWrongLast = errors.New("wrong last sequence")

func (l *memLog) append(e []byte, expect uint64) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if uint64(len(l.entries)) != expect {
		return 0, errWrongLast
	}
	l.entries = append(l.entries, bytes.Clone(e))
	close(l.grew)
	l.grew = make(chan struct{})
	return uint64(len(l.entries)), nil
}

func (l *memLog) last() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return uint64(len(l.entries))
}

// at returns entry seq, waiting for it, or nil once stop is closed.
func (l *memLog) at(seq uint64, stop <-chan struct{}) []byte {
	for {
		l.mu.Lock()
		if uint64(len(l.entries)) >= seq {
			e := l.entries[seq-1]
			l.mu.Unlock()
			return e
		}
		grew := l.grew
		l.mu.Unlock()
		select {
		case <-grew:
		case <-stop:
			return nil
		}
	}
}

// writer is one owner's handle: it keeps its own record of the last
// sequence, as the cluster's log does (docs/cluster.md §9.2 step 4).
type writer struct {
	l    *memLog
	last uint64
}

func (w *writer) Append(e []byte) (uint64, error) {
	seq, err := w.l.append(e, w.last)
	if err == nil {
		w.last = seq
	}
	return seq, err
}

// takeOver fences the log for v (§8.2): wait until v has applied the log's
// end, append a fence, apply it, and make v the owner.
func (l *memLog) takeOver(t *testing.T, v *Store, note string) *writer {
	t.Helper()
	for {
		end := l.last()
		wait.For(t, 5*time.Second, time.Millisecond, func() error {
			if v.Applied() < end {
				return fmt.Errorf("view at %d, log at %d", v.Applied(), end)
			}
			return nil
		})
		seq, err := l.append(FenceEntry(note), end)
		if errors.Is(err, errWrongLast) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Apply(seq, FenceEntry(note)); err != nil {
			t.Fatal(err)
		}
		w := &writer{l: l, last: seq}
		if err := v.Own(w); err != nil {
			t.Fatal(err)
		}
		return w
	}
}

// follow applies the log to v in order until the test ends, as each node's
// consumer does.
func (l *memLog) follow(t *testing.T, v *Store) {
	stop := make(chan struct{})
	done := make(chan struct{})
	t.Cleanup(func() { close(stop); <-done })
	go func() {
		defer close(done)
		for seq := v.Applied() + 1; ; seq++ {
			e := l.at(seq, stop)
			if e == nil {
				return
			}
			if err := v.Apply(seq, e); err != nil {
				if !errors.Is(err, ErrClosed) {
					t.Errorf("apply %d: %v", seq, err)
				}
				return
			}
		}
	}()
}

func openView(t *testing.T, onCommit func([]Appended)) *Store {
	t.Helper()
	s := open(t, t.TempDir(), Options{Replicated: true, OnCommit: onCommit})
	t.Cleanup(func() { s.Close() })
	return s
}

// workload writes through the owner what the command layer writes for
// users: timelines, accounts, kicks, push tokens and resend records.
func workload(t *testing.T, s *Store, round int) {
	t.Helper()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 25; j++ {
				id := SendID{From: fmt.Sprint("u", i), To: fmt.Sprint("u", (i+1)%8), Random: uint32(round*1000 + j), MsgSeq: 1, HasMsgSeq: true}
				err := s.Update(func(tx *Tx) error {
					if prev, err := tx.Resent(id); err != nil || prev != nil {
						return err
					}
					seq, err := tx.AppendFrom(id.To, "dev", []byte(`"Event":"msg"}`))
					if err != nil {
						return err
					}
					if _, err := tx.AppendCopy(id.From, "dev", []byte(`"Event":"msg"}`), id.To, seq); err != nil {
						return err
					}
					return tx.RememberSent(id, Sent{MsgKey: fmt.Sprint(round, "-", i, "-", j)})
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}(i)
	}
	wg.Wait()
	if _, err := s.ImportAccount(Account{UserID: fmt.Sprint("acct", round)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Kick(fmt.Sprint("kicked", round)); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPushToken(PushToken{User: "u1", Device: "phone", Vendor: "fcm", Token: fmt.Sprint("tok", round)}); err != nil {
		t.Fatal(err)
	}
}

// sameData fails unless a and b hold the same keys and values, apart from
// the node-local device cursors (c/, w/).
func sameData(t *testing.T, a, b *Store) {
	t.Helper()
	dump := func(s *Store) map[string]string {
		m := map[string]string{}
		it, err := s.db.NewIter(nil)
		if err != nil {
			t.Fatal(err)
		}
		defer it.Close()
		for ok := it.First(); ok; ok = it.Next() {
			k := it.Key()
			if bytes.HasPrefix(k, []byte("c/")) || bytes.HasPrefix(k, []byte("w/")) {
				continue
			}
			m[string(k)] = string(it.Value())
		}
		return m
	}
	da, db := dump(a), dump(b)
	if len(da) != len(db) {
		t.Fatalf("views differ: %d keys against %d", len(da), len(db))
	}
	for k, v := range da {
		if db[k] != v {
			t.Fatalf("views differ at %q: %q against %q", k, v, db[k])
		}
	}
}

func caughtUp(t *testing.T, l *memLog, views ...*Store) {
	t.Helper()
	wait.For(t, 10*time.Second, time.Millisecond, func() error {
		for i, v := range views {
			if v.Applied() != l.last() {
				return fmt.Errorf("view %d at %d, log at %d", i, v.Applied(), l.last())
			}
		}
		return nil
	})
}

// An owner's writes reach every view through the log, and every view ends
// with the same data, the same Seqs and the same answers from its caches;
// each view hears of every appended event once, in log order.
func TestReplicatedViewsAgree(t *testing.T) {
	l := newMemLog()
	type heard struct {
		mu   sync.Mutex
		seqs map[string][]uint64
	}
	listen := func(h *heard) func([]Appended) {
		h.seqs = map[string][]uint64{}
		return func(as []Appended) {
			h.mu.Lock()
			defer h.mu.Unlock()
			for _, a := range as {
				h.seqs[a.User] = append(h.seqs[a.User], a.Seq)
			}
		}
	}
	var ha, hb, hc heard
	a := openView(t, listen(&ha))
	b := openView(t, listen(&hb))
	c := openView(t, listen(&hc))
	// b and c start answering from their caches before anything is
	// written, so an apply that left a cache stale would show below.
	for _, v := range []*Store{b, c} {
		if ok, _ := v.AccountExists("acct1"); ok {
			t.Fatal("account exists before import")
		}
		if !v.KickedAt("kicked1").IsZero() {
			t.Fatal("kicked before any kick")
		}
		if n, _ := v.LastSeq("u1"); n != 0 {
			t.Fatal("timeline not empty")
		}
	}
	l.follow(t, a) // the owner's own consumer races its writer
	l.follow(t, b)
	l.follow(t, c)
	l.takeOver(t, a, "a")
	workload(t, a, 1)
	caughtUp(t, l, a, b, c)

	// A deletion reaches the views' caches too: each of them has just
	// cached the account as existing.
	for _, v := range []*Store{b, c} {
		if ok, _ := v.AccountExists("acct1"); !ok {
			t.Fatal("imported account unknown to a view")
		}
	}
	if _, err := a.DeleteAccounts([]string{"acct1"}, nil); err != nil {
		t.Fatal(err)
	}
	caughtUp(t, l, a, b, c)

	sameData(t, a, b)
	sameData(t, a, c)
	for _, v := range []*Store{b, c} {
		if ok, _ := v.AccountExists("acct1"); ok {
			t.Fatal("a view still knows a deleted account")
		}
		for i := 0; i < 8; i++ {
			u := fmt.Sprint("u", i)
			want, _ := a.LastSeq(u)
			if got, _ := v.LastSeq(u); got != want || want != 50 {
				t.Fatalf("LastSeq(%s) = %d on a view, %d on the owner; want 50", u, got, want)
			}
		}
		if v.KickedAt("kicked1").IsZero() {
			t.Fatal("kick unknown to a view")
		}
		if ts, err := v.PushTokens("u1"); err != nil || len(ts) != 1 {
			t.Fatalf("push tokens on a view: %v %v", ts, err)
		}
		evs, err := v.ReadTimeline("u0", 0, 100)
		if err != nil || len(evs) != 50 {
			t.Fatalf("timeline on a view: %d events, %v", len(evs), err)
		}
	}
	for name, h := range map[string]*heard{"owner": &ha, "b": &hb, "c": &hc} {
		h.mu.Lock()
		for u, seqs := range h.seqs {
			for i, s := range seqs {
				if s != uint64(i+1) {
					t.Fatalf("%s heard %s's events as %v", name, u, seqs)
				}
			}
			if len(seqs) != 50 {
				t.Fatalf("%s heard %d of %s's 50 events", name, len(seqs), u)
			}
		}
		h.mu.Unlock()
	}
}

// Ownership moves: the new owner fences the log and continues every
// timeline without a gap; the deposed owner's next group is refused by the
// log, fails its callers with ErrNotOwner and leaves no trace, and the old
// owner's view then follows the new owner's writes.
func TestReplicatedHandover(t *testing.T) {
	l := newMemLog()
	a, b := openView(t, nil), openView(t, nil)
	l.follow(t, b)
	l.takeOver(t, a, "a")
	workload(t, a, 1)

	// b takes over while a still believes it owns (a paused owner whose
	// lease ran out): the fence, not a's good manners, stops a.
	l.takeOver(t, b, "b")
	before := l.last()
	err := a.Update(func(tx *Tx) error {
		_, err := tx.Append("u0", []byte(`"Event":"late"}`))
		return err
	})
	if !errors.Is(err, ErrNotOwner) {
		t.Fatalf("deposed owner's write: %v; want ErrNotOwner", err)
	}
	if l.last() != before {
		t.Fatal("a deposed owner's entry reached the log")
	}
	if n, _ := a.LastSeq("u0"); n != 50 {
		t.Fatalf("refused write moved a's LastSeq to %d", n)
	}
	a.Disown()
	l.follow(t, a)

	workload(t, b, 2)
	caughtUp(t, l, a, b)
	sameData(t, a, b)
	for i := 0; i < 8; i++ {
		evs, err := b.ReadTimeline(fmt.Sprint("u", i), 0, 1000)
		if err != nil || len(evs) != 100 {
			t.Fatalf("u%d: %d events, %v", i, len(evs), err)
		}
		for j, e := range evs {
			if e.Seq != uint64(j+1) {
				t.Fatalf("u%d: Seq %d at %d: gap or repeat across the handover", i, e.Seq, j)
			}
		}
	}
	// A resend of a message the old owner stored is still recognised by
	// the new owner (its resend filter learnt the record from the log).
	id := SendID{From: "u0", To: "u1", Random: 1000, MsgSeq: 1, HasMsgSeq: true}
	var prev *Sent
	if err := b.Update(func(tx *Tx) (err error) { prev, err = tx.Resent(id); return err }); err != nil || prev == nil || prev.MsgKey != "1-0-0" {
		t.Fatalf("resend of an old owner's message: %+v %v", prev, err)
	}
}

// A node that owns the log a second time does not trust what it cached in
// its first tenure: the hot keys (conversation entries) changed meanwhile
// by another owner's writes, which reached it by Apply.
func TestReplicatedSecondTenure(t *testing.T) {
	l := newMemLog()
	a, b := openView(t, nil), openView(t, nil)
	unread := func(s *Store, set int) (was int) {
		t.Helper()
		err := s.Update(func(tx *Tx) error {
			c, err := tx.Conversation("u0", "u1")
			if err != nil {
				return err
			}
			if c == nil {
				c = &Conversation{Peer: "u1"}
			}
			was, c.Unread = c.Unread, set
			return tx.PutConversation("u0", c)
		})
		if err != nil {
			t.Fatal(err)
		}
		return was
	}
	l.follow(t, b)
	l.takeOver(t, a, "a")
	unread(a, 1)
	unread(a, 2) // a's hot cache now holds the entry
	a.Disown()
	l.follow(t, a)
	l.takeOver(t, b, "b")
	if was := unread(b, 3); was != 2 {
		t.Fatalf("b read %d", was)
	}
	b.Disown()
	l.takeOver(t, a, "a again")
	if was := unread(a, 4); was != 3 {
		t.Fatalf("a's second tenure read %d from its first tenure's cache; want 3", was)
	}
}

// A replicated store that does not own its log writes nothing.
func TestReplicatedNotOwner(t *testing.T) {
	v := openView(t, nil)
	err := v.Update(func(tx *Tx) error {
		_, err := tx.Append("u", []byte(`"Event":"x"}`))
		return err
	})
	if !errors.Is(err, ErrNotOwner) {
		t.Fatalf("Update without ownership: %v", err)
	}
	if n, _ := v.LastSeq("u"); n != 0 {
		t.Fatal("a refused write left a Seq")
	}
}

// When the owner's consumer applies its own entry before the writer gets
// the log's answer, the view is written once and OnCommit hears the events
// once.
func TestReplicatedOwnEntryAppliedFirst(t *testing.T) {
	var heard atomic.Int64
	v := openView(t, func(as []Appended) { heard.Add(int64(len(as))) })
	l := newMemLog()
	w := l.takeOver(t, v, "v")
	if err := v.Own(racingLog{w: w, v: v}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := v.Update(func(tx *Tx) error {
			_, err := tx.Append("u", []byte(`"Event":"x"}`))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if n := heard.Load(); n != 3 {
		t.Fatalf("OnCommit heard %d events; want 3", n)
	}
	if evs, _ := v.ReadTimeline("u", 0, 10); len(evs) != 3 || v.Applied() != l.last() {
		t.Fatalf("%d events, applied %d of %d", len(evs), v.Applied(), l.last())
	}
}

// racingLog applies each entry to its view before answering the writer.
type racingLog struct {
	w *writer
	v *Store
}

func (r racingLog) Append(e []byte) (uint64, error) {
	seq, err := r.w.Append(e)
	if err == nil {
		err = r.v.Apply(seq, e)
	}
	return seq, err
}

// A data directory is either a single node's or a cluster view's; opening
// it as the other is refused with a message that says which it is.
func TestOpenModeMismatch(t *testing.T) {
	single := t.TempDir()
	s := open(t, single, Options{})
	if _, err := s.ImportAccount(Account{UserID: "a"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(single, Options{Replicated: true}); err == nil || !bytes.Contains([]byte(err.Error()), []byte("single node")) {
		t.Fatalf("single node's data opened as a view: %v", err)
	}

	view := t.TempDir()
	v := open(t, view, Options{Replicated: true})
	if err := v.Apply(1, FenceEntry("x")); err != nil {
		t.Fatal(err)
	}
	v.Close()
	if _, err := Open(view, Options{}); err == nil || !bytes.Contains([]byte(err.Error()), []byte("cluster node")) {
		t.Fatalf("a view opened as a single node: %v", err)
	}
	v = open(t, view, Options{Replicated: true})
	defer v.Close()
	if v.Applied() != 1 {
		t.Fatalf("applied mark after reopen: %d", v.Applied())
	}
}

// Malformed entries are refused with an error, never applied in part.
func TestApplyRefusesMalformedEntries(t *testing.T) {
	v := openView(t, nil)
	good := encodeEntry(nil, []Appended{{User: "u", Seq: 1, Data: []byte(`{"Seq":1}`)}}, nil)
	for _, e := range [][]byte{nil, {1}, {2, 't'}, {1, 'q'}, good[:len(good)-1], append(bytes.Clone(good), 0)} {
		if err := v.Apply(1, e); err == nil {
			t.Fatalf("entry %x applied", e)
		}
	}
	if v.Applied() != 0 {
		t.Fatal("a refused entry moved the applied mark")
	}
}

func FuzzDecodeEntry(f *testing.F) {
	f.Add(FenceEntry("node"))
	f.Add(encodeEntry([]byte("repr"), []Appended{{User: "u", Seq: 7, Data: []byte("{}"), Origin: "d", Rewritten: true}}, nil))
	f.Add(encodeEntry([]byte("repr"), nil, []intent{{part: 3, user: "bob", op: opAppend, args: []byte("x")}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEntry(b)
		if err != nil || e.kind != entryTx {
			return
		}
		// What decodes survives a re-encoding unchanged.
		again, err := decodeEntry(encodeEntry(e.repr, e.appended, e.intents))
		if err != nil || !bytes.Equal(again.repr, e.repr) || fmt.Sprint(again.appended) != fmt.Sprint(e.appended) || fmt.Sprint(again.intents) != fmt.Sprint(e.intents) {
			t.Fatalf("%x: %+v re-decodes as %+v, %v", b, e, again, err)
		}
	})
}

// Media starts before a cluster node owns anything (internal/server's
// order), and a replicated store's log was only ever written by code that
// keeps media references: preparing lifetimes is a no-op there, not a
// write refused with ErrNotOwner that stops the node from starting (found
// by TestClusterCrash: `duet serve` in cluster mode with --s3-endpoint
// exited with "media: store: this node does not own the log; retry").
func TestPrepareMediaLifetimesOnAView(t *testing.T) {
	v := openView(t, nil)
	if err := v.PrepareMediaLifetimes(time.Now()); err != nil {
		t.Fatalf("a view that owns nothing: %v", err)
	}
}

// failingLog refuses every append while fail is set, as the cluster's log
// does while its partition has no leader or the lease has lapsed.
type failingLog struct {
	w    *writer
	fail atomic.Bool
}

func (f *failingLog) Append(e []byte) (uint64, error) {
	if f.fail.Load() {
		return 0, errors.New("cluster: partition lease not valid")
	}
	return f.w.Append(e)
}

// A run of failed appends is one warning (then one per appendWarnEvery with
// the count), and one line when appends succeed again: a failover under
// load had written a warning per group, hundreds a second.
func TestAppendFailuresLoggedOnce(t *testing.T) {
	logger, logs := logcapture.New(slog.LevelInfo)
	v := open(t, t.TempDir(), Options{Replicated: true, Logger: logger})
	t.Cleanup(func() { v.Close() })
	l := newMemLog()
	fl := &failingLog{w: l.takeOver(t, v, "v")}
	if err := v.Own(fl); err != nil {
		t.Fatal(err)
	}
	send := func() error {
		return v.Update(func(tx *Tx) error {
			_, err := tx.Append("u", []byte(`"Event":"x"}`))
			return err
		})
	}
	fl.fail.Store(true)
	for i := 0; i < 50; i++ {
		if err := send(); err == nil {
			t.Fatal("an append the log refused was acknowledged")
		}
	}
	fl.fail.Store(false)
	if err := send(); err != nil {
		t.Fatal(err)
	}
	warned := logs.Matching("store: log append failed")
	again := logs.Matching("store: log appends succeed again", "failed_in_a_row=50")
	if len(warned) != 1 || len(again) != 1 {
		t.Errorf("%d warnings and %d recoveries logged for 50 failed appends, want 1 and 1:\n%s", len(warned), len(again), logs)
	}
	if n, _ := v.LastSeq("u"); n != 1 {
		t.Errorf("LastSeq %d after 50 refused appends and one acknowledged", n)
	}
}
