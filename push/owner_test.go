package push

import (
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/wait"
	"github.com/duet-im/duet/store"
)

// TestReplicatedQueueFollowsOwnership: a cluster node's pusher
// (Options.Replicated) works the durable queue only between Own and
// Disown. Before Own it sends nothing, even of what its view of the store
// holds; Own loads what the previous owner left; Disown forgets it all —
// a send in flight still finishes but is not settled, so the next tenure
// sends it again (at least once), as after a restart.
func TestReplicatedQueueFollowsOwnership(t *testing.T) {
	mi := newFakeMi(t)
	mi.blocked = make(chan struct{})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(t.TempDir(), store.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Options{Store: st, Log: log, Replicated: true,
		Config: Config{Grace: time.Millisecond, RetryBase: time.Millisecond, Xiaomi: &XiaomiConfig{AppSecret: "s", PackageName: "p", Endpoint: mi.URL}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(); st.Close() })
	queued := func() int {
		q, err := st.QueuedPushes(0, 10)
		if err != nil {
			t.Fatal(err)
		}
		return len(q)
	}
	// What a previous owner queued and never settled.
	n, _ := json.Marshal(&Notification{User: "bob", Device: "bob:p", Vendor: "xiaomi", Token: "rid", Seq: 1, MsgKey: "k0",
		From: "alice", Title: "alice", Body: "left behind", Due: time.Now().UnixMilli()})
	if _, err := st.EnqueuePushes([][]byte{n}); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if p.Pending() != 0 {
		t.Fatalf("a node that does not own the data has %d pushes pending", p.Pending())
	}

	m := p.Metrics().Vendor("xiaomi")
	p.Own()
	p.Own() // a second Own in the same tenure loads nothing twice
	wait.Until(t, 10*time.Second, "the request in flight", func() bool { return mi.arrived.Load() == 1 })
	if p.Pending() != 1 || p.metrics.queued.Load() != 1 {
		t.Fatalf("%d pending (duet_push_queued %d) after Own, want the 1 left behind", p.Pending(), p.metrics.queued.Load())
	}

	// Ownership lost while the vendor holds the request: the node forgets
	// the queue; the send finishes, but only the next owner may settle it.
	p.Disown()
	if p.Pending() != 0 || p.metrics.queued.Load() != 0 {
		t.Fatalf("%d pending (duet_push_queued %d) after Disown", p.Pending(), p.metrics.queued.Load())
	}
	close(mi.blocked)
	wait.Until(t, 10*time.Second, "the held send answered", func() bool { return m.Sent() == 1 })
	if q := queued(); q != 1 {
		t.Fatalf("the durable queue has %d entries after a disowned send, want 1 (for the next owner)", q)
	}

	// The next tenure sends it again and settles it.
	p.Own()
	wait.Until(t, 10*time.Second, "resent and settled", func() bool {
		return m.Sent() == 2 && p.Pending() == 0 && p.metrics.queued.Load() == 0 && queued() == 0
	})
	if got := mi.sent(); len(got) != 2 || got[1].Get("description") != "left behind" {
		t.Fatalf("sent %v", got)
	}
}
