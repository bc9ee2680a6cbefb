package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// JoinOptions wire a node's partitions to its store.
type JoinOptions struct {
	Config
	// FenceEntry builds a fence entry (the store's encoding of §7 "fence").
	FenceEntry func() []byte
	// View is partition p's view on this node.
	View func(p int) View
	// OnOwn hears that this node now owns p: log is fenced and ready for p's
	// writer. Called from the owner loop; it must not block for long.
	OnOwn func(p int, log *Log)
	// OnLose hears that p's writer must stop: the lease was lost or released,
	// or the log was fenced. The log refuses Appends already.
	OnLose func(p int, err error)
	// OnError hears failures that are retried (apply errors, a failed
	// takeover). May be nil.
	OnError func(p int, err error)
}

// Cluster is one node's part in the cluster: every partition's consumer, the
// leases it holds, and the loop that takes free partitions.
type Cluster struct {
	node     *Node
	o        JoinOptions
	leases   jetstream.KeyValue
	nodes    jetstream.KeyValue
	obs      jetstream.ObjectStore // duet-snapshots
	appliers []*Applier
	snaps    snapshots
	started  time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	wake   chan struct{}
	lostCh chan int

	mu      sync.Mutex
	owned   map[int]*owned
	holders map[int]holder // lease holder per partition as last watched; absent or Node "" is free
	live    map[string]bool
	beats   map[string]time.Time // when each live node's heartbeat was last seen
	marks   map[string][]uint64  // each live node's applied mark per partition, from its heartbeat
	changes uint64               // lease changes seen (metric)

	nodesSeen  chan struct{} // closed once the nodes watcher has read the current heartbeats
	aboveSince time.Time     // since when this node owns more than its target (zero: not above)
	releasing  int           // the surplus partition last released, until another node holds it; -1 none
	drain      drainState    // drain.go
	cut        cutOff        // quorum.go
}

// holder is a lease as the watcher last saw it, and when: a holder renews
// every ttl/5, so a lease not seen renewed for a ttl is worth a Create even if
// the watcher missed its expiry (a watcher whose consumer was on a server that
// died is silent until it recovers).
type holder struct {
	node string
	seen time.Time
}

type owned struct {
	lease *Lease
	log   *Log
}

// Join sets up the shared objects (Setup), starts a consumer per partition,
// a heartbeat in duet-nodes, and the owner loop. The node should be Ready.
func Join(ctx context.Context, n *Node, o JoinOptions) (*Cluster, error) {
	if o.FenceEntry == nil || o.View == nil {
		return nil, errors.New("cluster: FenceEntry and View are required")
	}
	if err := o.Config.defaults(); err != nil {
		return nil, err
	}
	if err := Setup(ctx, n.js, o.Config); err != nil {
		return nil, err
	}
	var leases, nodes jetstream.KeyValue
	var obs jetstream.ObjectStore
	if err := retry(ctx, "KV buckets", func(c context.Context) error {
		var err error
		if leases, err = n.js.KeyValue(c, BucketLeases); err != nil {
			return err
		}
		if obs, err = n.js.ObjectStore(c, BucketSnapshots); err != nil {
			return err
		}
		nodes, err = n.js.KeyValue(c, BucketNodes)
		return err
	}); err != nil {
		return nil, err
	}
	cctx, cancel := context.WithCancel(context.Background())
	c := &Cluster{
		node: n, o: o, leases: leases, nodes: nodes, obs: obs, ctx: cctx, cancel: cancel,
		wake: make(chan struct{}, 1), lostCh: make(chan int, MaxPartitions),
		owned: map[int]*owned{}, holders: map[int]holder{}, live: map[string]bool{n.name: true}, beats: map[string]time.Time{},
		marks: map[string][]uint64{}, nodesSeen: make(chan struct{}), releasing: -1, started: time.Now().UTC(),
	}
	// The heartbeat, with this node's applied marks, is in duet-nodes
	// before its consumers start: an owner trimming the log from now on
	// keeps what this node still has to apply (§10.3).
	c.putHeartbeat()
	rb := &rebuilder{obs: obs, partitions: o.Partitions, rebuilt: func(p int, seq uint64) {
		c.snaps.update(p, func(i *SnapshotInfo) { i.Rebuilds++ })
		c.report(p, fmt.Errorf("view rebuilt from snapshot %s at %d (it was behind the log's first entry)", SnapshotName(p), seq))
	}}
	for p := 0; p < o.Partitions; p++ {
		a, err := startApplier(ctx, n.js, n.name, p, o.View(p), o.OnError, rb)
		if err != nil {
			c.stopAppliers()
			cancel()
			return nil, err
		}
		c.appliers = append(c.appliers, a)
	}
	lw, err := WatchLeases(cctx, leases)
	if err != nil {
		c.stopAppliers()
		cancel()
		return nil, err
	}
	nw, err := nodes.WatchAll(cctx)
	if err != nil {
		c.stopAppliers()
		cancel()
		return nil, err
	}
	c.wg.Add(3)
	go c.watchLeases(lw)
	go c.watchNodes(nw)
	go c.loop()
	return c, nil
}

func (c *Cluster) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *Cluster) watchLeases(ch <-chan LeaseHolder) {
	defer c.wg.Done()
	for h := range ch {
		c.mu.Lock()
		c.holders[h.Partition] = holder{node: h.Node, seen: time.Now()}
		c.changes++
		c.mu.Unlock()
		if h.Node == "" {
			c.poke()
		}
	}
}

// watchNodes keeps the set of live nodes from duet-nodes heartbeats; an
// expired heartbeat leaves a marker the watcher sees as a purge.
func (c *Cluster) watchNodes(w jetstream.KeyWatcher) {
	defer c.wg.Done()
	defer func() { _ = w.Stop() }()
	seen := false
	for {
		select {
		case <-c.ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				if !seen {
					seen = true
					close(c.nodesSeen)
				}
				continue
			}
			c.mu.Lock()
			if e.Operation() == jetstream.KeyValuePut {
				c.live[e.Key()] = true
				c.beats[e.Key()] = time.Now()
				var hb heartbeat
				if json.Unmarshal(e.Value(), &hb) == nil {
					c.marks[e.Key()] = hb.Applied
					c.drain.note(e.Key(), hb.Draining)
				} else {
					delete(c.marks, e.Key())
				}
			} else if e.Key() != c.node.name {
				delete(c.live, e.Key())
				delete(c.beats, e.Key())
				delete(c.marks, e.Key())
				c.drain.note(e.Key(), false)
			}
			c.mu.Unlock()
			c.poke()
		}
	}
}

// heartbeat is this node's duet-nodes value (§6).
type heartbeat struct {
	Started time.Time `json:"started"`
	// Applied is the applied mark of each partition's view on the node:
	// an owner trims its log only below the lowest one (§10.3).
	Applied []uint64 `json:"applied"`
	// Draining: the node takes no partition (drain.go).
	Draining bool `json:"draining,omitempty"`
}

func (c *Cluster) loop() {
	defer c.wg.Done()
	tick := time.NewTicker(c.o.LeaseTTL / 5)
	defer tick.Stop()
	c.putHeartbeat()
	// Heartbeats have their own goroutine: a Put that waits (a paused
	// process resuming, a KV election) must not delay a step-down, which
	// this loop makes (found by TestClusterFencing: the resumed old owner
	// answered every write 20005 for 5 s behind a heartbeat).
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		beat := time.NewTicker(c.o.NodeTTL / 3)
		defer beat.Stop()
		for {
			select {
			case <-c.ctx.Done():
				return
			case <-beat.C:
				c.putHeartbeat()
				c.refreshSnapshotInfo()
			}
		}
	}()
	// Count the live nodes before taking anything, so that the first node up
	// does not take every partition only to release most of them later.
	select {
	case <-c.nodesSeen:
	case <-time.After(c.o.NodeTTL / 3):
	case <-c.ctx.Done():
		return
	}
	c.balance()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-tick.C:
			c.balance()
		case <-c.wake:
			c.balance()
		case p := <-c.lostCh:
			c.stepDown(p)
		}
	}
}

func (c *Cluster) putHeartbeat() {
	hb := heartbeat{Started: c.started, Applied: make([]uint64, c.o.Partitions), Draining: c.drain.on.Load()}
	for p := range hb.Applied {
		hb.Applied[p] = c.o.View(p).Applied()
	}
	v, _ := json.Marshal(hb)
	ctx, cancel := context.WithTimeout(c.ctx, c.o.NodeTTL/3)
	defer cancel()
	if _, err := c.nodes.Put(ctx, c.node.name, v); err != nil {
		c.report(-1, fmt.Errorf("heartbeat: %w", err))
	}
}

func (c *Cluster) report(p int, err error) {
	if c.o.OnError != nil {
		c.o.OnError(p, err)
	}
}

// Target is ceil(P / live nodes not draining): how many partitions this
// node aims to own (§8.3). A node counts as live while its heartbeat was
// seen within NodeTTL: the expiry marker of a dead node's heartbeat is not
// seen while the watcher's consumer is being recreated (its server may be
// the dead node's), and the survivors must not wait for it to take the
// dead node's share.
func (c *Cluster) Target() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	live := make(map[string]bool, len(c.live))
	for node := range c.live {
		if b, ok := c.beats[node]; node == c.node.name || (ok && time.Since(b) < c.o.NodeTTL) {
			live[node] = true
		}
	}
	n := max(len(live)-c.drain.count(live), 1)
	return (c.o.Partitions + n - 1) / n
}

// balance takes free partitions, lowest first, until this node owns its
// target, and sheds a surplus (§8.3). Preferring partitions whose stream
// leader is local is not built yet.
func (c *Cluster) balance() {
	if c.drained() || c.cutOffNow() {
		return
	}
	target := c.Target()
	c.shed(target)
	for p := 0; p < c.o.Partitions; p++ {
		c.mu.Lock()
		n, h := len(c.owned), c.holders[p]
		_, mine := c.owned[p]
		c.mu.Unlock()
		if mine || (h.node != "" && time.Since(h.seen) < c.o.LeaseTTL) {
			continue
		}
		// Up to the target, a free partition is taken at once. Beyond it
		// too, once it has been free for half a lease TTL: the nodes below
		// their target had their turn (they are poked when a lease goes),
		// and a partition nobody serves is worse than one node too many
		// (shed gives it back later).
		free := h.seen // the expiry marker seen, or
		switch {
		case h.node != "":
			free = h.seen.Add(c.o.LeaseTTL) // the last renewal seen, plus the TTL
		case free.IsZero():
			free = c.started // never held since this node came
		}
		if n >= target && time.Since(free) < c.o.LeaseTTL/2 {
			continue
		}
		c.takeOver(p)
	}
}

// shed releases one surplus partition, the highest, once this node has been
// above its target for RebalanceDelay and the partition it released last is
// held by another node (§8.3).
func (c *Cluster) shed(target int) {
	c.mu.Lock()
	if len(c.owned) <= target {
		c.aboveSince = time.Time{}
		c.mu.Unlock()
		return
	}
	if c.aboveSince.IsZero() {
		c.aboveSince = time.Now()
	}
	if time.Since(c.aboveSince) < c.o.RebalanceDelay {
		c.mu.Unlock()
		return
	}
	if c.releasing >= 0 {
		if h := c.holders[c.releasing]; h.node == "" || h.node == c.node.name {
			c.mu.Unlock()
			return
		}
	}
	p := -1
	for q := range c.owned {
		p = max(p, q)
	}
	o := c.owned[p]
	delete(c.owned, p)
	c.releasing = p
	c.mu.Unlock()
	c.release(p, o, ErrLeaseReleased)
}

// takeOver acquires p's lease and fences its log.
func (c *Cluster) takeOver(p int) {
	ctx, cancel := context.WithTimeout(c.ctx, c.o.LeaseTTL)
	defer cancel()
	lease, err := Acquire(ctx, c.leases, p, c.node.name, c.o.LeaseTTL)
	if err != nil {
		// ErrLeaseHeld: the key is held after all (the watcher is behind), or
		// the KV's direct read came from a replica that has not yet applied
		// a release. Either way the next tick tries again.
		if !errors.Is(err, ErrLeaseHeld) {
			c.report(p, err)
		}
		return
	}
	log, err := c.appliers[p].Own(ctx, lease, c.o.FenceEntry)
	if err != nil {
		c.report(p, err)
		rctx, rcancel := context.WithTimeout(c.ctx, c.o.LeaseTTL)
		_ = lease.Release(rctx)
		rcancel()
		return
	}
	c.mu.Lock()
	c.owned[p] = &owned{lease: lease, log: log}
	c.holders[p] = holder{node: c.node.name, seen: time.Now()}
	c.mu.Unlock()
	c.wg.Add(1)
	go c.snapshotLoop(p, log)
	go func() {
		select {
		case <-lease.Lost():
		case <-log.Dead():
		case <-c.ctx.Done():
			return
		}
		select {
		case c.lostCh <- p:
		case <-c.ctx.Done():
		}
	}()
	if c.o.OnOwn != nil {
		c.o.OnOwn(p, log)
	}
}

// stepDown ends this node's tenure of p after a lost lease or a fenced log.
func (c *Cluster) stepDown(p int) {
	c.mu.Lock()
	o := c.owned[p]
	delete(c.owned, p)
	c.mu.Unlock()
	if o == nil {
		return
	}
	reason := o.log.Err()
	if reason == nil {
		reason = o.lease.Err()
	}
	c.release(p, o, reason)
}

func (c *Cluster) release(p int, o *owned, reason error) {
	o.log.Close()
	c.appliers[p].Disown(o.log)
	ctx, cancel := context.WithTimeout(context.Background(), c.o.LeaseTTL)
	_ = o.lease.Release(ctx)
	cancel()
	if c.o.OnLose != nil {
		c.o.OnLose(p, reason)
	}
}

// Log is partition p's log while this node owns p, else nil.
func (c *Cluster) Log(p int) *Log {
	c.mu.Lock()
	defer c.mu.Unlock()
	if o := c.owned[p]; o != nil {
		return o.log
	}
	return nil
}

// Owned lists the partitions this node owns.
func (c *Cluster) Owned() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	ps := make([]int, 0, len(c.owned))
	for p := range c.owned {
		ps = append(ps, p)
	}
	sort.Ints(ps)
	return ps
}

// Holders is every partition's lease holder as this node last saw it ("" free).
func (c *Cluster) Holders() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	hs := make([]string, c.o.Partitions)
	for p := range hs {
		hs[p] = c.holders[p].node
	}
	return hs
}

// Holder is the node holding partition p's lease as last watched: "" when
// free, "?" when held by a node not yet known.
func (c *Cluster) Holder(p int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.holders[p].node
}

// RefreshHolder reads partition p's lease from the bucket itself, for a
// caller that found the holder it knew silent: the watcher can lag by
// seconds after a node dies (its consumer may have been on that node).
func (c *Cluster) RefreshHolder(ctx context.Context, p int) {
	node := ""
	e, err := c.leases.Get(ctx, LeaseKey(p))
	switch {
	case err == nil:
		var v leaseValue
		if json.Unmarshal(e.Value(), &v) != nil {
			return
		}
		node = v.Node
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
	default:
		return // no answer: keep what the watcher said
	}
	c.mu.Lock()
	if c.holders[p].node != node {
		c.holders[p] = holder{node: node, seen: time.Now()}
	}
	c.mu.Unlock()
	if node == "" {
		c.poke()
	}
}

// LeaseChanges counts lease changes seen by the watcher (metric).
func (c *Cluster) LeaseChanges() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changes
}

// Lag is partition p's apply lag on this node.
func (c *Cluster) Lag(p int) uint64 { return c.appliers[p].Lag() }

// Applier is partition p's consumer.
func (c *Cluster) Applier(p int) *Applier { return c.appliers[p] }

// Close releases every lease this node holds (OnLose is called for each),
// stops the owner loop and the consumers. The node itself stays up.
func (c *Cluster) Close() {
	c.cancel()
	c.wg.Wait()
	c.mu.Lock()
	held := c.owned
	c.owned = map[int]*owned{}
	c.mu.Unlock()
	for p, o := range held {
		c.release(p, o, ErrLeaseReleased)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_ = c.nodes.Delete(ctx, c.node.name)
	cancel()
	c.stopAppliers()
}

func (c *Cluster) stopAppliers() {
	for _, a := range c.appliers {
		a.Stop()
	}
}
