package usercache

import (
	"fmt"
	"testing"
)

func newer(old, v uint64) bool { return v > old }

// A reader that found an older answer on disk must not put it back after a
// writer's newer answer was dropped from the cache: a deleted account
// would exist again, a kick be forgotten, a Seq handed out twice.
func TestCacheFillAfterDropIsNotKept(t *testing.T) {
	c := New[uint64](4)
	gen := c.Begin()  // a reader begins, reads 5 from disk...
	c.Set("alice", 6) // ...the writer commits 6...
	for i := range 4 {
		c.Set(fmt.Sprint("u", i), 1) // ...and alice is dropped
	}
	if _, ok := c.Get("alice"); ok {
		// The drop takes a random quarter; make sure of it.
		c.Forget("alice")
	}
	if got := c.Fill("alice", 5, gen, newer); got != 5 {
		t.Fatalf("fill returned %d, want the reader's own 5", got)
	}
	if v, ok := c.Get("alice"); ok {
		t.Fatalf("stale fill kept: alice = %d", v)
	}
	// Without a drop in between, a fill is kept, and never moves back.
	gen = c.Begin()
	if got := c.Fill("bob", 3, gen, newer); got != 3 {
		t.Fatalf("fill(bob) = %d", got)
	}
	if got := c.Fill("bob", 2, c.Begin(), newer); got != 3 {
		t.Fatalf("fill(bob, 2) over 3 = %d, want 3", got)
	}
	if got := c.Fill("bob", 4, c.Begin(), newer); got != 4 {
		t.Fatalf("fill(bob, 4) over 3 = %d, want 4", got)
	}
}

// However many users pass through, the cache holds at most its bound, and
// what it holds is what was last set for each.
func TestBound(t *testing.T) {
	c := New[int](100)
	for i := range 10_000 {
		c.Set(fmt.Sprint("u", i), i)
		if n := c.Len(); n > 100 {
			t.Fatalf("after %d users: %d cached, bound 100", i+1, n)
		}
	}
	for i := range 10_000 {
		if v, ok := c.Get(fmt.Sprint("u", i)); ok && v != i {
			t.Fatalf("u%d = %d", i, v)
		}
	}
	// A fill begun before a Forget is not kept.
	gen := c.Begin()
	c.Forget("x")
	c.Fill("x", 1, gen, nil)
	if _, ok := c.Get("x"); ok {
		t.Fatal("a fill begun before Forget was kept")
	}
}
