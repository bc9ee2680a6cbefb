package cluster

import (
	"context"
	"errors"
	"maps"
	"sync/atomic"
	"time"
)

// Draining (docs/cluster.md §19): an operator moves the work off a node
// without stopping it. The node releases every lease it holds, so the
// others take over at once, and takes none until it is undrained. Its
// heartbeat says it is draining, so the others count it out when they
// work out their share of the partitions (§8.3). The state is the node's
// own, in memory: a restarted node is not draining.

// ErrDraining is the reason OnLose hears for a lease released by Drain.
var ErrDraining = errors.New("cluster: this node is draining")

// drainState is a Cluster's part in draining.
type drainState struct {
	on atomic.Bool
	// nodes are the live nodes whose heartbeat says they drain; guarded
	// by Cluster.mu.
	nodes map[string]bool
}

// note records node's heartbeat (Cluster.mu held).
func (d *drainState) note(node string, draining bool) {
	if !draining {
		delete(d.nodes, node)
		return
	}
	if d.nodes == nil {
		d.nodes = map[string]bool{}
	}
	d.nodes[node] = true
}

// count is how many of live drain (Cluster.mu held).
func (d *drainState) count(live map[string]bool) int {
	n := 0
	for node := range d.nodes {
		if live[node] {
			n++
		}
	}
	return n
}

// Drain makes this node drain (on) or take partitions again (off). Draining,
// it returns once the owner loop has released every lease this node held,
// or when ctx ends.
func (c *Cluster) Drain(ctx context.Context, on bool) error {
	c.drain.on.Store(on)
	// The heartbeat first: the others then count this node out of their
	// targets when its leases come free.
	c.putHeartbeat()
	c.poke()
	for on && len(c.Owned()) > 0 {
		if !sleepCtx(ctx, 10*time.Millisecond) {
			return ctx.Err()
		}
	}
	return nil
}

// Draining reports whether this node drains.
func (c *Cluster) Draining() bool { return c.drain.on.Load() }

// drained releases every lease while this node drains (on the owner loop,
// like every takeover and release) and says whether it does.
func (c *Cluster) drained() bool {
	if !c.drain.on.Load() {
		return false
	}
	c.releaseAll(ErrDraining)
	return true
}

// releaseAll releases every lease this node holds, for reason (drain,
// quorum.go's cut-off), on the owner loop.
func (c *Cluster) releaseAll(reason error) {
	c.mu.Lock()
	held := maps.Clone(c.owned)
	c.mu.Unlock()
	// Each partition stays listed until its release is done (OnLose has
	// run): Drain returns only then.
	for p, o := range held {
		c.release(p, o, reason)
		c.mu.Lock()
		delete(c.owned, p)
		c.mu.Unlock()
	}
}
