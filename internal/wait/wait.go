// Package wait holds the polling helpers every test package of Duet uses to
// wait for what another goroutine, connection or process does: a condition
// checked until a deadline, never a sleep standing in for synchronisation.
package wait

import (
	"testing"
	"time"
)

// For polls f every `every` until it returns nil. When total has passed it
// fails the test with f's last error.
func For(t testing.TB, total, every time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if !time.Now().Before(deadline) {
			break
		}
		time.Sleep(every)
	}
	t.Fatalf("condition not met after %v: %v", total, err)
}

// Until polls the condition f (every millisecond at first, backing off to
// 20 ms) until it holds; after total it fails the test naming what it
// waited for.
func Until(t testing.TB, total time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(total)
	every := time.Millisecond
	for !f() {
		if !time.Now().Before(deadline) {
			t.Fatalf("timed out after %v waiting for %s", total, what)
		}
		time.Sleep(every)
		every = min(2*every, 20*time.Millisecond)
	}
}

// Quiet checks f every `every` for the whole window and fails at once when
// it reports something: for tests whose point is that nothing happens.
func Quiet(t testing.TB, window, every time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(window)
	for time.Now().Before(deadline) {
		if err := f(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(every)
	}
	if err := f(); err != nil {
		t.Fatal(err)
	}
}
