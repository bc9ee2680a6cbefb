package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/duet-im/duet/internal/wait"
)

// A takeover does not depend on the new owner's consumer: when the old
// owner's server stops answering, the consumer it served is silent until
// JetStream recreates it (a back-off of up to 10 s per attempt), and the
// fence must not wait for it. Here the new owner's consumer is stopped
// before the old owner's last entries, which its view has not applied: the
// fence reads them from the stream's leader, applies them in order, and
// fences after them (CI saw takeovers fail for 20 s in "fence" while the
// log had a leader).
func TestTakeoverWithoutConsumer(t *testing.T) {
	nodes := startNodes(t, 3)
	cfg := testConfig(1)
	// The leases here are held by hand and end by deletion or release, never
	// by expiry: a long TTL keeps a slow, loaded run (-race on two cores)
	// from finding a lease past its local validity (TTL - 1 s after the
	// last renewal) in the middle of a write ("lease not valid").
	cfg.LeaseTTL = 10 * time.Second
	setupAll(t, nodes, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	views, appliers, kv := handoverParts(ctx, t, nodes[:2])
	kvA, kvB := kv[0], kv[1]
	leaseA, logA := own(ctx, t, kvA, appliers[0], "n1", cfg.LeaseTTL)
	if _, err := write(t, logA, views[0], "a0"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, 5*time.Millisecond, func() error {
		if got, want := views[1].Applied(), logA.Last(); got != want {
			return fmt.Errorf("B's view at %d, the log at %d", got, want)
		}
		return nil
	})
	// B's consumer goes silent; A writes on.
	appliers[1].Stop()
	var want []string
	for i := 1; i <= 5; i++ {
		if _, err := write(t, logA, views[0], fmt.Sprint("a", i)); err != nil {
			t.Fatal(err)
		}
	}
	last := logA.Last()
	if err := leaseA.Release(ctx); err != nil {
		t.Fatal(err)
	}
	logA.Close()

	leaseB, err := Acquire(ctx, kvB, 0, "n2", cfg.LeaseTTL)
	if err != nil {
		t.Fatal(err)
	}
	defer leaseB.Release(context.Background())
	// The consumer's applier still owns the mutex and the view: Own runs
	// on it although its consumer is stopped.
	octx, ocancel := context.WithTimeout(ctx, 5*time.Second)
	defer ocancel()
	logB, err := appliers[1].Own(octx, leaseB, fenceEntry)
	if err != nil {
		t.Fatalf("takeover with a silent consumer: %v", err)
	}
	if got := logB.Last(); got != last+1 {
		t.Errorf("B's fence at %d; want it right after A's last entry %d", got, last)
	}
	for _, m := range readLog(t, nodes[2].js, 0) {
		want = append(want, string(m.Data))
	}
	seqs, data, dupes, gaps := views[1].snapshot()
	if len(gaps) > 0 || dupes > 0 || fmt.Sprint(data) != fmt.Sprint(want) {
		t.Errorf("B's view: %v (seqs %v, %d dupes, gaps %v); want the log %v", data, seqs, dupes, gaps, want)
	}
}

// handoverParts starts partition 0's applier with a test view on each of
// nodes and opens each node's lease bucket: the parts of a test that hands
// the partition from one node to another by hand.
func handoverParts(ctx context.Context, t *testing.T, nodes []*Node) ([]*testView, []*Applier, []jetstream.KeyValue) {
	t.Helper()
	views := make([]*testView, len(nodes))
	appliers := make([]*Applier, len(nodes))
	kvs := make([]jetstream.KeyValue, len(nodes))
	for i, nd := range nodes {
		views[i] = &testView{}
		a, err := StartApplier(ctx, nd.js, nd.name, 0, views[i], nil)
		if err != nil {
			t.Fatal(err)
		}
		appliers[i] = a
		t.Cleanup(func() { appliers[i].Stop() })
		if kvs[i], err = nd.js.KeyValue(ctx, BucketLeases); err != nil {
			t.Fatal(err)
		}
	}
	return views, appliers, kvs
}

// own takes partition 0 for node through applier: its lease, then the
// fenced log.
func own(ctx context.Context, t *testing.T, kv jetstream.KeyValue, applier *Applier, node string, ttl time.Duration) (*Lease, *Log) {
	t.Helper()
	lease, err := Acquire(ctx, kv, 0, node, ttl)
	if err != nil {
		t.Fatal(err)
	}
	log, err := applier.Own(ctx, lease, fenceEntry)
	if err != nil {
		t.Fatal(err)
	}
	return lease, log
}
