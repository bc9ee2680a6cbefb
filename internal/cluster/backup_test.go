package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// testBackup writes a backup of two partitions whose snapshots are the
// given texts, with one cursor.
func testBackup(t *testing.T, parts ...string) ([]byte, Manifest) {
	t.Helper()
	var buf bytes.Buffer
	m, err := WriteBackup(context.Background(), &buf, t.TempDir(), BackupSource{
		Manifest: Manifest{Cluster: "c", Source: "cluster", Partitions: len(parts), SnapshotFormat: 1},
		Cursors: func(_ context.Context, put func(CursorRecord) error) error {
			return put(CursorRecord{User: "ann@x", Device: "ann:phone", Seq: 7})
		},
		Snapshot: func(_ context.Context, p int, put func(uint64, io.Reader) error) error {
			return put(uint64(10+p), strings.NewReader(parts[p]))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), m
}

// A backup reads back file by file, checked against its manifest; a file
// changed or cut short is refused by name, as is an archive that ends
// early, and a reader of a changed file fails at its end (so an object
// store's Put of it fails too).
func TestBackupArchive(t *testing.T) {
	b, m := testBackup(t, "snapshot zero", "snapshot one")
	if m.Parts[1].Seq != 11 || m.Parts[1].Name != "p01" || m.Parts[1].Size != int64(len("snapshot one")) || m.Cursors.Size == 0 {
		t.Fatalf("manifest %+v", m)
	}
	var got []string
	var cursors string
	rm, err := ReadBackup(bytes.NewReader(b), BackupReader{
		Part: func(p BackupPart, r io.Reader) error {
			raw, err := io.ReadAll(r)
			got = append(got, string(raw))
			return err
		},
		Cursors: func(r io.Reader) error {
			raw, err := io.ReadAll(r)
			cursors = string(raw)
			return err
		},
	})
	if err != nil || strings.Join(got, "|") != "snapshot zero|snapshot one" || rm.Partitions != 2 {
		t.Fatalf("read back: %v %q %+v", err, got, rm)
	}
	if cursors != `{"user":"ann@x","device":"ann:phone","seq":7}`+"\n" {
		t.Fatalf("cursors %q", cursors)
	}

	// One byte of p01 changed (the tar's own checks do not cover data).
	bad := bytes.Replace(b, []byte("snapshot one"), []byte("snapshot 0ne"), 1)
	var readErr error
	_, err = ReadBackup(bytes.NewReader(bad), BackupReader{Part: func(p BackupPart, r io.Reader) error {
		_, readErr = io.ReadAll(r)
		return readErr
	}})
	if !errors.Is(err, ErrBadBackup) || !strings.Contains(err.Error(), "p01 has SHA-256") || !errors.Is(readErr, ErrBadBackup) {
		t.Fatalf("a changed file: %v (its reader: %v)", err, readErr)
	}
	// Cut short.
	if _, err := ReadBackup(bytes.NewReader(b[:len(b)/2]), BackupReader{}); err == nil {
		t.Fatalf("a truncated archive read: %v", err)
	}
	// Not a backup.
	if _, err := ReadBackup(strings.NewReader("hello"), BackupReader{}); !errors.Is(err, ErrBadBackup) {
		t.Fatalf("not a backup: %v", err)
	}
}

// The backup's wait for this node's view is bounded, and says where the
// view and the log are.
func TestBackupWaitIsBounded(t *testing.T) {
	v := &testView{applied: 3}
	start := time.Now()
	err := waitApplied(context.Background(), v, 5, 50*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "applied 3 of the log's 5 entries") || time.Since(start) > 5*time.Second {
		t.Fatalf("waitApplied: %v after %v", err, time.Since(start))
	}
	if err := waitApplied(context.Background(), v, 3, time.Millisecond); err != nil {
		t.Fatal(err)
	}
}

// Cursor keys of KV read back as the records they were written from.
func TestParseCursorKey(t *testing.T) {
	for _, r := range []CursorRecord{{User: "ann@x.com", Device: "ann:phone/1"}, {User: "bob", HighWater: true}} {
		k := cursorKey(r.User, r.Device)
		if r.HighWater {
			k = highWaterKey(r.User)
		}
		if got, ok := parseCursorKey(k); !ok || got != r {
			t.Fatalf("%s: %+v %v, want %+v", k, got, ok, r)
		}
	}
	if _, ok := parseCursorKey("w.ready!"); ok {
		t.Fatal("a foreign key parsed")
	}
}

// A restore's cursors go into duet-cursors with many puts in flight, new
// keys created in one request, existing ones raised and never lowered;
// the first failure stops the rest and is returned.
func TestPutAllCursors(t *testing.T) {
	nodes := startNodes(t, 3)
	cur := NewCursors(nodes[0], 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cur.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	// One device already has a cursor beyond the backup's; one behind.
	if err := cur.SetCursor("u0", "d0", 500); err != nil {
		t.Fatal(err)
	}
	if err := cur.SetCursor("u1", "d1", 1); err != nil {
		t.Fatal(err)
	}
	const users = 1000
	var recs []CursorRecord
	for i := range users {
		u := fmt.Sprint("u", i)
		recs = append(recs, CursorRecord{User: u, Device: fmt.Sprint("d", i), Seq: uint64(i + 10)},
			CursorRecord{User: u, HighWater: true, Seq: uint64(i + 10)})
	}
	i := 0
	start := time.Now()
	n, err := cur.PutAll(ctx, func() (CursorRecord, bool, error) {
		if i == len(recs) {
			return CursorRecord{}, false, nil
		}
		i++
		return recs[i-1], true, nil
	})
	took := time.Since(start)
	if err != nil || n != len(recs) {
		t.Fatalf("PutAll: %d of %d put, %v", n, len(recs), err)
	}
	t.Logf("%d cursor records put in %v (%.0f/s)", n, took, float64(n)/took.Seconds())
	for i := range users {
		u := fmt.Sprint("u", i)
		want := uint64(i + 10)
		if i == 0 {
			want = 500 // never lowered
		}
		if c, seen, err := cur.Cursor(u, fmt.Sprint("d", i)); err != nil || !seen || c != want {
			t.Fatalf("cursor of %s = %d, %v, %v; want %d", u, c, seen, err, want)
		}
		if hw, err := cur.HighWater(u); err != nil || hw < uint64(i+10) {
			t.Fatalf("high water of %s = %d, %v", u, hw, err)
		}
	}
	// A failing source stops the puts and is returned.
	bad := errors.New("bad line")
	k := 0
	_, err = cur.PutAll(ctx, func() (CursorRecord, bool, error) {
		if k++; k > 10 {
			return CursorRecord{}, false, bad
		}
		return recs[k], true, nil
	})
	if !errors.Is(err, bad) {
		t.Fatalf("PutAll with a failing source: %v", err)
	}
}
