package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
)

// snapshotOf takes v's snapshot into memory.
func snapshotOf(t *testing.T, v *Store) (uint64, []byte) {
	t.Helper()
	var seq uint64
	var buf bytes.Buffer
	err := v.Snapshot(func(s uint64, r io.Reader) error {
		seq = s
		_, err := io.Copy(&buf, r)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return seq, buf.Bytes()
}

// applyRange applies the log's entries from..to to v, as a consumer does.
func (l *memLog) applyRange(t *testing.T, v *Store, from, to uint64) {
	t.Helper()
	for seq := from; seq <= to; seq++ {
		if err := v.Apply(seq, l.at(seq, nil)); err != nil {
			t.Fatalf("apply %d: %v", seq, err)
		}
	}
}

// A view rebuilt from a snapshot and the log after it ends exactly as a
// view that replayed the whole log (docs/cluster.md §10.4): the same keys
// and values, the same answers from its caches — including a view that
// had applied part of the log, cached what it read, and kept its own
// device cursors, which are not the log's and survive the rebuild.
func TestSnapshotLoadThenReplayEqualsFullReplay(t *testing.T) {
	l := newMemLog()
	owner, full, behind := openView(t, nil), openView(t, nil), openView(t, nil)
	l.follow(t, owner)
	l.follow(t, full)
	l.takeOver(t, owner, "owner")
	workload(t, owner, 1)
	caughtUp(t, l, owner, full)

	// behind applies the log so far, then falls behind: it caches an
	// account and a Seq that the log changes after it stopped.
	l.applyRange(t, behind, 1, l.last())
	if ok, _ := behind.AccountExists("acct1"); !ok {
		t.Fatal("behind does not know acct1")
	}
	if n, _ := behind.LastSeq("u1"); n != 50 {
		t.Fatalf("behind: LastSeq(u1) = %d, want 50", n)
	}
	if err := behind.SetCursor("u1", "tablet", 7); err != nil {
		t.Fatal(err)
	}
	if err := owner.SetCursor("u2", "phone", 9); err != nil {
		t.Fatal(err)
	}

	workload(t, owner, 2)
	if _, err := owner.DeleteAccounts([]string{"acct1"}, nil); err != nil {
		t.Fatal(err)
	}
	caughtUp(t, l, owner, full)
	seq, snap := snapshotOf(t, owner)
	if seq != l.last() {
		t.Fatalf("snapshot at %d, log at %d", seq, l.last())
	}
	if bytes.Contains(snap, []byte("c/u2")) || bytes.Contains(snap, []byte("w/u2")) {
		t.Fatal("the snapshot carries the owner's node-local cursor cache")
	}
	workload(t, owner, 3) // after the snapshot: replayed on top of it
	caughtUp(t, l, owner, full)

	if err := behind.LoadSnapshot(seq, bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if got := behind.Applied(); got != seq {
		t.Fatalf("applied %d after the load, want %d", got, seq)
	}
	l.applyRange(t, behind, seq+1, l.last())

	sameData(t, full, behind)
	sameData(t, owner, behind)
	if ok, _ := behind.AccountExists("acct1"); ok {
		t.Fatal("the rebuilt view still knows an account deleted after it fell behind")
	}
	for i := range 8 {
		u := fmt.Sprint("u", i)
		want, _ := full.LastSeq(u)
		if got, _ := behind.LastSeq(u); got != want || want != 150 {
			t.Fatalf("LastSeq(%s) = %d rebuilt, %d replayed; want 150", u, got, want)
		}
	}
	if !behind.KickedAt("kicked2").Equal(full.KickedAt("kicked2")) || behind.KickedAt("kicked3").IsZero() {
		t.Fatal("kicks differ after the rebuild")
	}
	evs, err := behind.ReadTimeline("u0", 0, 1000)
	if err != nil || len(evs) != 150 {
		t.Fatalf("timeline after the rebuild: %d events, %v", len(evs), err)
	}
	if seq, seen, _ := behind.Cursor("u1", "tablet"); seq != 7 || !seen {
		t.Fatalf("the node's own cursor after the rebuild: %d %v, want 7", seq, seen)
	}
	if _, seen, _ := behind.Cursor("u2", "phone"); seen {
		t.Fatal("the owner's node-local cursor reached another view")
	}
}

// A load cut short leaves a view that says it has applied nothing and,
// reopened, holds none of the log's keys (half of one state and half of
// another is never served), but still its own cursors.
func TestSnapshotLoadInterrupted(t *testing.T) {
	l := newMemLog()
	owner := openView(t, nil)
	l.follow(t, owner)
	l.takeOver(t, owner, "owner")
	workload(t, owner, 1)
	caughtUp(t, l, owner)
	seq, snap := snapshotOf(t, owner)

	// Small batches: the half that arrives is written before the load fails.
	defer func(n int) { loadBatchBytes = n }(loadBatchBytes)
	loadBatchBytes = 1 << 10

	dir := t.TempDir()
	v := open(t, dir, Options{Replicated: true})
	l.applyRange(t, v, 1, 3)
	if err := v.SetCursor("u1", "tablet", 7); err != nil {
		t.Fatal(err)
	}
	err := v.LoadSnapshot(seq, bytes.NewReader(snap[:len(snap)/2]))
	if !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("a truncated snapshot loaded: %v", err)
	}
	if v.Applied() != 0 {
		t.Fatalf("applied %d after a failed load, want 0", v.Applied())
	}
	if err := v.LoadSnapshot(seq+1, bytes.NewReader(snap)); !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("a snapshot announced at the wrong seq loaded: %v", err)
	}
	// Loaded half-way: closed before the end.
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	v = open(t, dir, Options{Replicated: true})
	defer v.Close()
	if v.Applied() != 0 {
		t.Fatalf("reopened at %d, want 0", v.Applied())
	}
	it, err := v.db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		if !localKey(it.Key()) {
			t.Errorf("key %q left after an interrupted rebuild", it.Key())
		}
	}
	it.Close()
	if seq, _, _ := v.Cursor("u1", "tablet"); seq != 7 {
		t.Fatalf("cursor %d after an interrupted rebuild, want 7", seq)
	}
	if err := v.LoadSnapshot(seq, bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	sameData(t, owner, v)
}
