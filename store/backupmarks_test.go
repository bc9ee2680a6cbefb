package store

import (
	"bytes"
	"io"
	"reflect"
	"sync"
	"testing"
)

// What a backup of several partitions needs from the store: each
// partition's inbox marks (the manifest records them; a restore numbers
// each log above them), the empty snapshot a restore bridges a log's
// jump with, and a loaded snapshot's outbox records announced to their
// targets (a send in the sender's file that the recipient's file had not
// run is run after the restore, not at the sender's next send).
func TestBackupMarksAndLoadedOutbox(t *testing.T) {
	p := newPartitions(t, 2, map[string]int{"alice": 0, "bob": 1})
	send(t, p.owners[0], "alice", "bob", 1, "ran")
	p.drain(t)
	marks, err := p.owners[1].InboxMarks()
	if err != nil || len(marks) != 1 || marks[0] != p.owners[0].Applied() {
		t.Fatalf("bob's partition's inbox marks %v (%v); alice's log at %d", marks, err, p.owners[0].Applied())
	}
	if m, _ := p.owners[0].InboxMarks(); len(m) != 0 {
		t.Fatalf("alice's partition ran nothing, its marks %v", m)
	}
	// A second send whose intent bob's partition has not run: alice's
	// snapshot holds its outbox record.
	send(t, p.owners[0], "alice", "bob", 2, "pending")
	var snap []byte
	if err := p.owners[0].Snapshot(func(_ uint64, r io.Reader) error {
		var err error
		snap, err = io.ReadAll(r)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	seq := p.owners[0].Applied()

	var mu sync.Mutex
	var told []int
	fresh := open(t, t.TempDir(), Options{Replicated: true, Partition: 0, PartitionOf: p.of, OnIntents: func(ts []int) {
		mu.Lock()
		told = append(told, ts...)
		mu.Unlock()
	}})
	defer fresh.Close()
	if err := fresh.LoadSnapshot(seq, bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !reflect.DeepEqual(told, []int{1}) {
		t.Fatalf("loading a snapshot with an outbox record for partition 1 told OnIntents %v", told)
	}

	// The bridge: an empty view at any sequence.
	empty := open(t, t.TempDir(), Options{Replicated: true})
	defer empty.Close()
	if err := empty.LoadSnapshot(41, bytes.NewReader(EmptySnapshot(41))); err != nil || empty.Applied() != 41 {
		t.Fatalf("the empty snapshot at 41: %v, applied %d", err, empty.Applied())
	}
	if ok, err := empty.Empty(); !ok || err != nil {
		t.Fatalf("a view loaded from the empty snapshot is not empty: %v", err)
	}
}
