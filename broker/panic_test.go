package broker_test

import (
	"context"
	"testing"

	"github.com/duet-im/duet/command"
)

// A handler that panics answers 91000 and the server keeps serving: the
// same connection sends on, and a new one logs in (issue 13; before, a
// panic in a request over MQTT ended the process).
func TestHandlerPanic(t *testing.T) {
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			s := startServer(t, serverOpts{})
			s.svc.Register("test/panic", func(_ context.Context, _ *command.Caller, body []byte) (any, error) {
				return []int{}[len(body)], nil // index out of range: a real bug's panic
			})
			s.users("alice", "bob")
			alice := s.connect("alice", connectOpts{v5: v.v5})
			alice.syncComplete()
			r, pr := alice.request("test/panic", map[string]any{})
			if r.num("ErrorCode") != command.CodeInternal || r.str("ActionStatus") != "FAIL" {
				t.Fatalf("reply %v, want 91000", r)
			}
			if pr.err != nil {
				t.Fatalf("PUBACK: %v", pr.err)
			}
			alice.send("bob", 1)
			bob := s.connect("bob", connectOpts{v5: v.v5})
			if last := bob.drainToSync(); last != 1 {
				t.Fatalf("bob's timeline ends at %d, want 1 (alice's message)", last)
			}
		})
	}
}
