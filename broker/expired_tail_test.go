package broker_test

import (
	"testing"
	"time"
)

// A device whose every event after its cursor has expired still gets its
// sync_complete (PROTOCOL §5), carrying the timeline's LastSeq: Seq survives
// expiry, so the device resumes after it, not at the expired events.
func TestSyncCompleteAfterEveryPendingEventExpired(t *testing.T) {
	clock := &testClock{}
	s := startServer(t, serverOpts{clock: clock.Now})
	s.users("alice", "bob")
	alice := s.connect("alice", connectOpts{topics: []string{"im/alice/rsp"}})
	for i := 1; i <= 3; i++ {
		r, _ := alice.request("openim/sendmsg", map[string]any{"To_Account": "bob", "MsgRandom": i, "MsgLifeTime": 60,
			"MsgBody": []any{map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": "gone soon"}}}})
		if r.str("ActionStatus") != "OK" {
			t.Fatal(r)
		}
	}
	clock.Advance(61 * time.Second)
	if n, err := s.store.Sweep(clock.Now(), 0); err != nil || n == 0 {
		t.Fatalf("sweep: %d %v", n, err)
	}
	bob := s.connect("bob", connectOpts{})
	if last := bob.syncComplete(); last != 3 {
		t.Fatalf("sync_complete LastSeq %d, want 3", last)
	}
	// Delivery goes on from there.
	alice.send("bob", 100)
	if e := bob.nextMsg(); e.num("Seq") != 4 {
		t.Fatalf("next event %v, want Seq 4", e)
	}
}
