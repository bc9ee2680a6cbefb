package store

import (
	"errors"
	"testing"
	"time"
)

// An Update that read "not closed" just before Close, and reaches the queue
// only after the writer drained it for the last time, returns ErrClosed
// instead of waiting forever for a writer that has gone.
//
// The interleaving is a window of a few instructions, so the test recreates
// it: after Close it clears the closed flag, which is what such a caller
// saw, and calls Update. Both arms of Update's select are then ready, so
// without the fix about every other call hangs.
func TestUpdateRacingCloseReturns(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.closed = false
	s.mu.Unlock()
	for i := 0; i < 64; i++ {
		res := make(chan error, 1)
		go func() {
			res <- s.Update(func(tx *Tx) error { return nil })
		}()
		select {
		case err := <-res:
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("call %d: Update after the writer stopped = %v, want ErrClosed", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("call %d: Update waits forever once the writer has stopped", i)
		}
	}
}
