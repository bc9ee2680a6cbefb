package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/duet-im/duet/internal/wait"
)

// TestTakeoverLeadsLog: a node that takes a partition over leads its log
// once the takeover is done (leader.go), twice in a row and each time from
// a log another node led; its writes then go on. Before, the leader stayed
// where elections had put it, and the kill of that node, owning nothing,
// stopped the partition's writes for an election.
func TestTakeoverLeadsLog(t *testing.T) {
	nodes := startNodes(t, 3)
	cfg := testConfig(1)
	cfg.LeaseTTL = 10 * time.Second // held by hand, released by hand (see TestTakeoverWithoutConsumer)
	setupAll(t, nodes, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	views := make([]*testView, len(nodes))
	appliers := make([]*Applier, len(nodes))
	kvs := make([]jetstream.KeyValue, len(nodes))
	for i, nd := range nodes {
		views[i] = &testView{}
		a, err := StartApplier(ctx, nd.js, nd.name, 0, views[i], func(p int, err error) { t.Logf("%s: %v", nd.name, err) })
		if err != nil {
			t.Fatal(err)
		}
		a.lead = nd.leadLog
		appliers[i] = a
		t.Cleanup(a.Stop)
		if kvs[i], err = nd.js.KeyValue(ctx, BucketLeases); err != nil {
			t.Fatal(err)
		}
	}
	leader := func() string {
		t.Helper()
		var name string
		wait.For(t, 20*time.Second, 20*time.Millisecond, func() error {
			s, err := nodes[0].js.Stream(ctx, StreamName(0))
			if err != nil {
				return err
			}
			info, err := s.Info(ctx)
			if err != nil {
				return err
			}
			if info.Cluster == nil || info.Cluster.Leader == "" {
				return errors.New("no leader")
			}
			for _, r := range info.Cluster.Replicas {
				if !r.Current {
					return fmt.Errorf("replica %s is not current", r.Name)
				}
			}
			name = info.Cluster.Leader
			return nil
		})
		return name
	}
	var prevLease *Lease
	var prevLog *Log
	prev := -1
	for round := 1; round <= 2; round++ {
		led := leader()
		k := 0
		for nodes[k].name == led {
			k++
		}
		if prevLease != nil {
			prevLog.Close()
			appliers[prev].Disown(prevLog)
			if err := prevLease.Release(ctx); err != nil {
				t.Fatal(err)
			}
		}
		// A Create just after the release can read the key from a replica
		// that has not applied the release yet (owner.go, takeOver).
		var lease *Lease
		wait.For(t, 10*time.Second, 20*time.Millisecond, func() (err error) {
			lease, err = Acquire(ctx, kvs[k], 0, nodes[k].name, cfg.LeaseTTL)
			return err
		})
		log, err := appliers[k].Own(ctx, lease, fenceEntry)
		if err != nil {
			t.Fatalf("round %d: %s's takeover: %v", round, nodes[k].name, err)
		}
		if !nodes[k].srv.JetStreamIsStreamLeader("$G", StreamName(0)) {
			t.Errorf("round %d: %s took the partition over from a log %s led, and does not lead it", round, nodes[k].name, led)
		}
		if got := leader(); got != nodes[k].name {
			t.Errorf("round %d: the log's leader is %s, want the new owner %s", round, got, nodes[k].name)
		}
		if _, err := write(t, log, views[k], fmt.Sprint("round ", round)); err != nil {
			t.Fatalf("round %d: %s writes after the move: %v", round, nodes[k].name, err)
		}
		wait.For(t, 10*time.Second, 5*time.Millisecond, func() error {
			for i, v := range views {
				if v.Applied() < log.Last() {
					return fmt.Errorf("view %d at %d of %d", i, v.Applied(), log.Last())
				}
			}
			return nil
		})
		prevLease, prevLog, prev = lease, log, k
	}
	prevLog.Close()
	appliers[prev].Disown(prevLog)
	_ = prevLease.Release(ctx)
}
