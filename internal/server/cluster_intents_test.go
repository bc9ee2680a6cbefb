package server

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/duet-im/duet/store"
)

// TestInboxFailingSource: a source whose intents fail is tried again
// after a doubling backoff, and the sources after it in the loop still run
// every time (before, the first failure ended the loop, so one stuck source
// held back every partition numbered after it).
func TestInboxFailingSource(t *testing.T) {
	const n = 4
	failing := map[int]error{1: errors.New("store: intents of partition 1 entry 7: unknown intent op 99")}
	var tried []int
	in := newInbox(0, n, func(src int) error {
		tried = append(tried, src)
		return failing[src]
	})
	now := time.Unix(1_800_000_000, 0)
	for i, step := range []struct {
		after     time.Duration // since the previous step
		wantTried string
		wantNext  time.Duration // from this step's now; 0: none due
	}{
		{0, "[1 2 3]", 200 * time.Millisecond},
		{100 * time.Millisecond, "[2 3]", 100 * time.Millisecond}, // a wake: 1 waits
		{100 * time.Millisecond, "[1 2 3]", 400 * time.Millisecond},
		{400 * time.Millisecond, "[1 2 3]", 800 * time.Millisecond},
		{800 * time.Millisecond, "[1 2 3]", 1600 * time.Millisecond},
	} {
		now = now.Add(step.after)
		tried = nil
		next := in.run(now)
		if fmt.Sprint(tried) != step.wantTried {
			t.Errorf("step %d: tried %v, want %s", i, tried, step.wantTried)
		}
		if got := next.Sub(now); next.IsZero() || got != step.wantNext {
			t.Errorf("step %d: next try in %v (zero %v), want %v", i, got, next.IsZero(), step.wantNext)
		}
	}
	// The backoff stops growing at its bound.
	for range 10 {
		now = now.Add(intentRetryMax)
		in.run(now)
	}
	if got := in.run(now.Add(intentRetryMax)).Sub(now.Add(intentRetryMax)); got != intentRetryMax {
		t.Errorf("backoff %v, want the bound %v", got, intentRetryMax)
	}
	// Once it runs, the source is tried on every wake again.
	delete(failing, 1)
	now = now.Add(2 * intentRetryMax)
	if next := in.run(now); !next.IsZero() {
		t.Errorf("next try at %v with nothing failing", next)
	}
	tried = nil
	if in.run(now.Add(time.Millisecond)); fmt.Sprint(tried) != "[1 2 3]" {
		t.Errorf("after recovering: tried %v, want [1 2 3]", tried)
	}
}

// TestInboxStopsWhenNotOwner: losing t (or the store closing) ends a run
// at once; the new owner runs the rest.
func TestInboxStopsWhenNotOwner(t *testing.T) {
	for _, stop := range []error{store.ErrNotOwner, store.ErrClosed} {
		var tried []int
		in := newInbox(2, 4, func(src int) error {
			tried = append(tried, src)
			if src == 1 {
				return fmt.Errorf("receive: %w", stop)
			}
			return nil
		})
		if next := in.run(time.Now()); !next.IsZero() || fmt.Sprint(tried) != "[0 1]" {
			t.Errorf("%v: tried %v, next %v; want [0 1] and no retry", stop, tried, next)
		}
	}
}
