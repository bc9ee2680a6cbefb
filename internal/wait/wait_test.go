package wait

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// fakeT records a failure instead of ending the test, so the helpers'
// failing side can be checked.
type fakeT struct {
	testing.TB
	failed atomic.Bool
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(string, ...any) {
	f.failed.Store(true)
	panic(f)
}
func (f *fakeT) Fatal(...any) {
	f.failed.Store(true)
	panic(f)
}

func run(ft *fakeT, fn func()) {
	defer func() {
		if v := recover(); v != nil && v != ft {
			panic(v)
		}
	}()
	fn()
}

func TestHelpers(t *testing.T) {
	cases := []struct {
		name     string
		fn       func(tb testing.TB, calls *atomic.Int32)
		wantFail bool
	}{
		{"For met on the third call", func(tb testing.TB, n *atomic.Int32) {
			For(tb, time.Second, time.Millisecond, func() error {
				if n.Add(1) < 3 {
					return errors.New("not yet")
				}
				return nil
			})
		}, false},
		{"For never met", func(tb testing.TB, n *atomic.Int32) {
			For(tb, 20*time.Millisecond, time.Millisecond, func() error { n.Add(1); return errors.New("never") })
		}, true},
		{"Until met", func(tb testing.TB, n *atomic.Int32) {
			Until(tb, time.Second, "three calls", func() bool { return n.Add(1) >= 3 })
		}, false},
		{"Until never met", func(tb testing.TB, n *atomic.Int32) {
			Until(tb, 20*time.Millisecond, "never", func() bool { n.Add(1); return false })
		}, true},
		{"Quiet stays quiet", func(tb testing.TB, n *atomic.Int32) {
			Quiet(tb, 10*time.Millisecond, time.Millisecond, func() error { n.Add(1); return nil })
		}, false},
		{"Quiet interrupted", func(tb testing.TB, n *atomic.Int32) {
			Quiet(tb, time.Second, time.Millisecond, func() error {
				if n.Add(1) == 2 {
					return errors.New("something happened")
				}
				return nil
			})
		}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ft := &fakeT{TB: t}
			var n atomic.Int32
			run(ft, func() { tc.fn(ft, &n) })
			if ft.failed.Load() != tc.wantFail {
				t.Fatalf("failed = %v, want %v (after %d calls)", ft.failed.Load(), tc.wantFail, n.Load())
			}
			if n.Load() == 0 {
				t.Fatal("the condition was never checked")
			}
		})
	}
}
