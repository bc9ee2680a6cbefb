package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
)

// objects is a restore source over named byte slices; cut, when set, ends
// every read of an object after that many bytes with an error (a node
// that stops, a connection that drops, mid-load).
type objects struct {
	m   map[string][]byte
	cut int
}

func (o *objects) open(name string) (io.ReadCloser, error) {
	b, ok := o.m[name]
	if !ok {
		return nil, errors.New("no such object")
	}
	var r io.Reader = bytes.NewReader(b)
	if o.cut > 0 {
		r = io.MultiReader(io.LimitReader(r, int64(o.cut)), errReader{})
	}
	return io.NopCloser(r), nil
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection lost") }

func hexDigest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// A restore entry replaces an empty view's state by a backup's snapshot,
// taken by another log at another sequence: the view is then at the
// entry's own sequence, holds what the backup's view held, continues with
// the log after the entry, and its user's next Seq follows the restored
// timeline. A restore entry whose object does not match its digest, or
// whose load is cut short (the node stops), leaves a view that reports 0
// applied and, reopened, holds none of the log's keys: it is replayed,
// never served half-loaded.
func TestRestoreEntry(t *testing.T) {
	// The backup: an old cluster's view, snapshotted at its own sequence.
	old := newMemLog()
	src := openView(t, nil)
	old.follow(t, src)
	old.takeOver(t, src, "old")
	workload(t, src, 1)
	caughtUp(t, old, src)
	taken, snap := snapshotOf(t, src)
	if empty, err := src.Empty(); err != nil || empty {
		t.Fatalf("a written view reports empty: %v %v", empty, err)
	}

	defer func(n int) { loadBatchBytes = n }(loadBatchBytes)
	loadBatchBytes = 1 << 10 // several batches: a cut load has written some

	objs := &objects{m: map[string][]byte{"restore-p00": snap}}
	l := newMemLog()
	dir := t.TempDir()
	v := open(t, dir, Options{Replicated: true})
	v.SetRestoreSource(objs.open)
	w := l.takeOver(t, v, "new")
	if empty, err := v.Empty(); err != nil || !empty {
		t.Fatalf("a view with only a fence applied is not empty: %v %v", empty, err)
	}
	v.Disown() // the restore entry fences the owner (docs/cluster.md §19)

	// A wrong digest: refused before the load's last batch.
	bad := RestoreEntry(Restore{Object: "restore-p00", SHA256: strings.Repeat("0", 64), Seq: taken})
	seq, err := l.append(bad, w.last)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Apply(seq, bad); err == nil || !errors.Is(err, ErrBadSnapshot) || !strings.Contains(err.Error(), "SHA-256") {
		t.Fatalf("a restore entry with a wrong digest applied: %v", err)
	}
	if v.Applied() != 0 {
		t.Fatalf("applied %d after a refused restore, want 0 (the view is rebuilt)", v.Applied())
	}

	// The good entry, in a fresh log, cut short: the node "stops" mid-load.
	l = newMemLog()
	if _, err := l.append(FenceEntry("new"), 0); err != nil {
		t.Fatal(err)
	}
	good := RestoreEntry(Restore{Object: "restore-p00", SHA256: hexDigest(snap), Seq: taken})
	if seq, err = l.append(good, 1); err != nil {
		t.Fatal(err)
	}
	objs.cut = len(snap) / 2
	if err := v.Apply(seq, good); err == nil {
		t.Fatal("a restore cut short applied")
	}
	if v.Applied() != 0 {
		t.Fatalf("applied %d after a cut restore, want 0", v.Applied())
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	v = open(t, dir, Options{Replicated: true})
	defer v.Close()
	v.SetRestoreSource(objs.open)
	if v.Applied() != 0 {
		t.Fatalf("reopened at %d after a cut restore, want 0", v.Applied())
	}
	if empty, err := v.Empty(); err != nil || !empty {
		t.Fatalf("reopened after a cut restore, the view holds some of the log's keys (empty %v, %v)", empty, err)
	}

	// Replayed from the start, whole this time.
	objs.cut = 0
	l.applyRange(t, v, 1, l.last())
	if v.Applied() != seq {
		t.Fatalf("applied %d after the restore entry %d", v.Applied(), seq)
	}
	// The same data as the backup's view, but at the new log's sequence.
	if got, want := dumpReplicated(t, v), dumpReplicated(t, src); !mapsEqual(got, want) {
		t.Fatalf("restored view: %d keys, the backup's view %d", len(got), len(want))
	}
	if n, _ := v.LastSeq("u0"); n != 50 {
		t.Fatalf("LastSeq(u0) after the restore = %d, want 50", n)
	}
	// The log goes on after the entry; a later owner's writes continue
	// the restored timelines gap-free.
	w = &writer{l: l, last: l.last()}
	if err := v.Own(w); err != nil {
		t.Fatal(err)
	}
	if err := v.Update(func(tx *Tx) error {
		s, err := tx.AppendFrom("u0", "dev", []byte(`"Event":"msg"}`))
		if err == nil && s != 51 {
			t.Errorf("the next Seq of u0 after the restore is %d, want 51", s)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := v.AccountExists("acct1"); !ok {
		t.Fatal("the restored view does not know acct1")
	}
	// A restore entry already applied is skipped on redelivery.
	if err := v.Apply(seq, good); err != nil {
		t.Fatal(err)
	}
}

// dumpReplicated is a store's keys and values but its local ones (cursor
// caches, marks).
func dumpReplicated(t *testing.T, s *Store) map[string]string {
	t.Helper()
	m := map[string]string{}
	it, err := s.db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		if !localKey(it.Key()) {
			m[string(it.Key())] = string(it.Value())
		}
	}
	return m
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// A single node's store exports the same snapshot format at sequence 0,
// and its device cursors: the seed of a cluster and a single node's
// backup (docs/cluster.md §19).
func TestExportSingleNode(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	if _, err := s.ImportAccount(Account{UserID: "ann"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetCursor("ann", "phone", 3); err != nil {
		t.Fatal(err)
	}
	var seq uint64 = 99
	var buf bytes.Buffer
	if err := s.Export(func(s uint64, r io.Reader) error {
		seq = s
		_, err := io.Copy(&buf, r)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if seq != 0 || !bytes.Contains(buf.Bytes(), []byte("a/ann")) || bytes.Contains(buf.Bytes(), []byte("c/ann")) {
		t.Fatalf("export at %d: %q", seq, buf.Bytes())
	}
	var got []string
	err := s.ExportCursors(func(u, d string, seq uint64) error {
		got = append(got, u+"/"+d+"="+string(rune('0'+seq)))
		return nil
	}, func(u string, seq uint64) error {
		got = append(got, u+"="+string(rune('0'+seq)))
		return nil
	})
	if err != nil || strings.Join(got, ",") != "ann/phone=3,ann=3" {
		t.Fatalf("cursors %v, %v", got, err)
	}
	// Loaded into a view by a restore entry.
	v := openView(t, nil)
	v.SetRestoreSource((&objects{m: map[string][]byte{"o": buf.Bytes()}}).open)
	if err := v.Apply(1, RestoreEntry(Restore{Object: "o", SHA256: hexDigest(buf.Bytes()), Seq: 0})); err != nil {
		t.Fatal(err)
	}
	if ok, _ := v.AccountExists("ann"); !ok || v.Applied() != 1 {
		t.Fatalf("the view after restoring a single node's export: ann %v, applied %d", ok, v.Applied())
	}
}
