package store

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// The filter never forgets a key of the last DedupWindow (no false
// negatives), answers "absent" for nearly every other key, and drops what
// is older than two generations.
func TestDedupFilter(t *testing.T) {
	t0 := time.Unix(1764230400, 0)
	f := newDedupFilter(t0)
	f.cur = newBloomGen(1 << 20) // 128 KiB: about 100,000 keys at 1%
	const n = 50000
	for i := range n {
		f.add([]byte(fmt.Sprint("d/in-", i)), t0)
	}
	if f.absent([]byte("d/in-1"), t0) {
		t.Fatal("answered before the stored records were loaded")
	}
	f.ready.Store(true)
	for i := range n {
		if f.absent([]byte(fmt.Sprint("d/in-", i)), t0) {
			t.Fatalf("key %d forgotten", i)
		}
	}
	fp := 0
	for i := range n {
		if !f.absent([]byte(fmt.Sprint("d/out-", i)), t0) {
			fp++
		}
	}
	if rate := float64(fp) / n; rate > 0.02 {
		t.Fatalf("false-positive rate %.3f at half capacity", rate)
	}

	// A day later the keys move to the previous generation and stay found.
	day := t0.Add(DedupWindow)
	f.add([]byte("d/day2"), day)
	if f.absent([]byte("d/in-7"), day) || f.absent([]byte("d/day2"), day) {
		t.Fatal("a key of the last two generations was forgotten at the rotation")
	}
	// Another day: the first day's keys are gone, the second's remain.
	later := day.Add(DedupWindow)
	if f.absent([]byte("d/day2"), later) {
		t.Fatal("the previous generation was dropped too early")
	}
	gone := 0
	for i := range 1000 {
		if f.absent([]byte(fmt.Sprint("d/in-", i)), later) {
			gone++
		}
	}
	if gone < 990 {
		t.Fatalf("only %d of 1000 two-day-old keys left the filter", gone)
	}
}

// Records written before a restart are loaded into the filter, so a resend
// after the restart is still recognised.
func TestDedupFilterLoadsStoredRecords(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	for i := range 100 {
		if err := s.Update(func(tx *Tx) error {
			return tx.RememberSent("a", "b", uint32(i), 0, Sent{MsgKey: fmt.Sprint("k", i)})
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, Options{})
	defer s.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !s.dedup.ready.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the filter never finished loading")
		}
		time.Sleep(time.Millisecond)
	}
	var found, missing atomic.Int64
	for i := range 100 {
		if err := s.Update(func(tx *Tx) error {
			prev, err := tx.Resent("a", "b", uint32(i), 0)
			if prev != nil && prev.MsgKey == fmt.Sprint("k", i) {
				found.Add(1)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if err := s.Update(func(tx *Tx) error {
			prev, err := tx.Resent("a", "b", uint32(i), 1)
			if prev == nil {
				missing.Add(1)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if found.Load() != 100 || missing.Load() != 100 {
		t.Fatalf("after a restart: %d of 100 resends recognised, %d of 100 new sends taken as new", found.Load(), missing.Load())
	}
}
