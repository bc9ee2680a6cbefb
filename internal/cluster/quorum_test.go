package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/wait"
)

// A node is cut off only after it has reached no quorum for the whole
// grace (the lease TTL), without a single observation with one between;
// one observation with a quorum ends it at once.
func TestQuorumTracker(t *testing.T) {
	const grace = 2 * time.Second
	type obs struct {
		at   time.Duration // since the start
		ok   bool          // a quorum reached
		want bool          // cut off
	}
	cases := []struct {
		name string
		obs  []obs
	}{
		{"always a quorum", []obs{{0, true, false}, {time.Hour, true, false}}},
		{"lost for the grace", []obs{{0, true, false}, {time.Second, false, false}, {2900 * time.Millisecond, false, false}, {3 * time.Second, false, true}, {time.Minute, false, true}}},
		{"a blip within the grace", []obs{{0, false, false}, {1900 * time.Millisecond, false, false}, {2 * time.Second, true, false}, {3 * time.Second, false, false}, {4900 * time.Millisecond, false, false}}},
		{"regained at once", []obs{{0, false, false}, {2 * time.Second, false, true}, {2100 * time.Millisecond, true, false}, {2200 * time.Millisecond, false, false}, {4200 * time.Millisecond, false, true}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			tr := QuorumTracker{Grace: grace}
			for _, o := range tc.obs {
				if got := tr.Observe(start.Add(o.at), o.ok); got != o.want {
					t.Fatalf("at %v (quorum %v): cut off %v, want %v", o.at, o.ok, got, o.want)
				}
			}
		})
	}
}

// Reach's arithmetic: a quorum is reached with at least Quorum servers.
func TestReachOK(t *testing.T) {
	for _, tc := range []struct {
		r    Reach
		want bool
	}{
		{Reach{Servers: 1, Quorum: 2}, false},
		{Reach{Servers: 2, Quorum: 2}, true},
		{Reach{Servers: 3, Quorum: 2}, true},
		{Reach{Servers: 2, Quorum: 3}, false},
		{Reach{Servers: 1, Quorum: 0}, true},
	} {
		if got := tc.r.OK(); got != tc.want {
			t.Errorf("%+v.OK() = %v, want %v", tc.r, got, tc.want)
		}
	}
}

// Reach on real embedded servers: with every route up each node reaches
// all three, a quorum being two (JetStream's meta group of three); a node
// whose two peers are gone reaches only itself.
func TestReach(t *testing.T) {
	nodes := startNodes(t, 3)
	wait.For(t, 20*time.Second, 10*time.Millisecond, func() error {
		for _, n := range nodes {
			if r, ok := n.Reach(); !ok || r != (Reach{Servers: 3, Quorum: 2}) {
				return fmt.Errorf("%s: %+v %v", n.Name(), r, ok)
			}
		}
		return nil
	})
	nodes[1].Shutdown()
	if r, _ := nodes[0].Reach(); !r.OK() {
		t.Errorf("%s with one peer gone: %+v, want a quorum", nodes[0].Name(), r)
	}
	nodes[2].Shutdown()
	wait.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		if r, _ := nodes[0].Reach(); r != (Reach{Servers: 1, Quorum: 2}) || r.OK() {
			return fmt.Errorf("%s alone: %+v", nodes[0].Name(), r)
		}
		return nil
	})
}
