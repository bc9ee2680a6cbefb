package store

import (
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/wait"
)

// The filter never forgets a key of the last DedupWindow (no false
// negatives), answers "absent" for nearly every other key, and drops what
// is older than two generations.
func TestDedupFilter(t *testing.T) {
	t0 := time.Unix(1764230400, 0)
	f := newDedupFilter(t0, dedupFilterBits)
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
			return tx.RememberSent(SendID{From: "a", To: "b", Random: uint32(i), HasMsgSeq: true}, Sent{MsgKey: fmt.Sprint("k", i)})
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, Options{})
	defer s.Close()
	wait.Until(t, 10*time.Second, "the filter to finish loading", s.dedup.ready.Load)
	var found, missing atomic.Int64
	for i := range 100 {
		if err := s.Update(func(tx *Tx) error {
			prev, err := tx.Resent(SendID{From: "a", To: "b", Random: uint32(i), HasMsgSeq: true})
			if prev != nil && prev.MsgKey == fmt.Sprint("k", i) {
				found.Add(1)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if err := s.Update(func(tx *Tx) error {
			prev, err := tx.Resent(SendID{From: "a", To: "b", Random: uint32(i), MsgSeq: 1, HasMsgSeq: true})
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

// Sends without MsgSeq that reuse a MsgRandom: the shared record holds the
// latest, the ones it replaced stay findable by body for their own window,
// and an expiry entry of a replaced record never deletes its successor —
// also across a restart, when the filter is rebuilt from the stored records.
func TestResendRecordsOfReusedRandom(t *testing.T) {
	dir := t.TempDir()
	var now atomic.Int64
	now.Store(time.Unix(1764230400, 0).UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	s := open(t, dir, Options{Clock: clock})
	defer func() { s.Close() }()
	// send stores body as a new message, named body and step, unless it
	// is a resend; it returns the MsgKey the sender is told.
	send := func(body string, step int) string {
		t.Helper()
		id := SendID{From: "a", To: "b", Random: 1287657, Body: BodyHash([]byte(body))}
		var key string
		if err := s.Update(func(tx *Tx) error {
			prev, err := tx.Resent(id)
			if err != nil || prev != nil {
				if prev != nil {
					key = prev.MsgKey
				}
				return err
			}
			key = fmt.Sprint(body, step)
			return tx.RememberSent(id, Sent{MsgKey: key})
		}); err != nil {
			t.Fatal(err)
		}
		return key
	}
	// From t0: X0 lives until t0+24h, Y2 until t0+25h, Z4 until t0+27h.
	steps := []struct {
		after   time.Duration
		restart bool
		body    string // "": run the retention sweep
		want    string
	}{
		{0, false, "X", "X0"},
		{300 * time.Millisecond, false, "Y", "X0"}, // the same second: any body
		{time.Hour, false, "Y", "Y2"},
		{time.Hour, false, "X", "X0"}, // replaced, found by its body
		{time.Hour, true, "Z", "Z4"},
		{time.Hour, true, "Y", "Y2"},
		{time.Hour, false, "X", "X0"},
		{19*time.Hour + time.Second, false, "", ""}, // t0+24h: X0's window ends
		{0, false, "Z", "Z4"},
		{0, false, "Y", "Y2"},
		{time.Second, false, "X", "X10"}, // a new message now
		{0, true, "", ""},
		{time.Second, false, "X", "X10"},
		{0, false, "Y", "Y2"},
		{time.Second, false, "Z", "Z4"},
	}
	for i, st := range steps {
		now.Add(int64(st.after))
		if st.restart {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = open(t, dir, Options{Clock: clock})
		}
		if st.body == "" {
			// The retention sweep, as the store's loop runs it.
			if _, err := s.Sweep(clock(), 0); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if got := send(st.body, i); got != st.want {
			t.Fatalf("step %d: %s answered as %q, want %q", i, st.body, got, st.want)
		}
	}
}

// BenchmarkResendCheck is the CPU a new message's resend check and record
// cost the writer, without the commits (one transaction per 1000 sends,
// never committed): the filter's answer, the body hash and the record.
func BenchmarkResendCheck(b *testing.B) {
	s := open(b, b.TempDir(), Options{})
	defer s.Close()
	body := []byte(`[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hello"}}]`)
	s.dedup.ready.Store(true)
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(1000, b.N-done)
		done += n
		tx := &Tx{s: s, group: s.db.NewIndexedBatch()}
		func() error {
			for range n {
				id := SendID{From: "alice", To: "bob", Random: rand.Uint32(), Body: BodyHash(body)}
				if prev, err := tx.Resent(id); err != nil || prev != nil {
					continue
				}
				tx.RememberSent(id, Sent{MsgKey: "123_456_1764230400", MsgTime: 1764230400, Seq: 5})
			}
			return nil
		}()
		tx.group.Close()
	}
}
