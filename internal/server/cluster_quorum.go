package server

import (
	"cmp"
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/duet-im/duet/internal/cluster"
)

// A node cut off from the cluster's quorum stops serving (docs/cluster.md
// §17, "A node is partitioned away"): once it has reached fewer than a
// quorum of the cluster's JetStream servers for --lease-ttl
// (cluster.Node.Reach, cluster.QuorumTracker say how that is found), it
// closes its devices' connections (MQTT 5 DISCONNECT 0x9C "use another
// server", as a drain does) and refuses new ones with CONNACK "server
// unavailable" (0x88; 3.1.1 return code 3), its /healthz answers 503 "no
// quorum: …", /cluster lists it "no quorum", and it gives up its leases
// and takes none. Its devices move to the majority, where the data is.
// When it reaches a quorum again it serves again by itself — unlike a
// drain, which the operator ends — once its view has applied the log as
// it then is (as at a join). Draining and being cut off are independent.

// quorumCheck is how often a node looks at its routes.
const quorumCheck = 200 * time.Millisecond

// noQuorumReason is the reason of the CONNACK a cut-off node refuses
// devices with (MQTT 5), and of the DISCONNECT it closes them with.
const noQuorumReason = "no quorum: this node is cut off from the cluster, connect to another node"

// quorumState is a node's part in quorum loss.
type quorumState struct {
	lost      atomic.Bool
	reason    atomic.Pointer[string] // /healthz's reason while lost
	lostTotal atomic.Uint64          // times the node found itself cut off
	servers   atomic.Int64           // JetStream servers reached at the last check, itself included
	quorum    atomic.Int64           // a quorum of them

	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// lostReason is /healthz's reason while the node is cut off, else "".
func (q *quorumState) lostReason() string {
	if !q.lost.Load() {
		return ""
	}
	if r := q.reason.Load(); r != nil {
		return *r
	}
	return "no quorum"
}

func (q *quorumState) setReason(r string) { q.reason.Store(&r) }

// stopWatch ends watchQuorum's loop.
func (q *quorumState) stopWatch() {
	q.once.Do(func() {
		if q.cancel != nil {
			q.cancel()
			<-q.done
		}
	})
}

// watchQuorum looks at the node's routes every quorumCheck, from the
// moment it serves until it closes. With an external NATS cluster (--nats)
// a node has no routes of its own to look at, and does nothing.
func (s *Server) watchQuorum() {
	cp := s.cluster
	if _, ok := cp.node.Reach(); !ok {
		return
	}
	q := &cp.quorum
	ctx, cancel := context.WithCancel(context.Background())
	q.cancel, q.done = cancel, make(chan struct{})
	// The lease TTL, as cluster.Config's default: by then this node's
	// leases are past their local validity, and the majority's nodes are
	// about to take them.
	t := cluster.QuorumTracker{Grace: cmp.Or(cp.cfg.LeaseTTL, 5*time.Second)}
	go func() {
		defer close(q.done)
		tick := time.NewTicker(quorumCheck)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			r, _ := cp.node.Reach()
			q.servers.Store(int64(r.Servers))
			q.quorum.Store(int64(r.Quorum))
			cut := t.Observe(time.Now(), r.OK())
			switch {
			case cut && !q.lost.Load():
				s.loseQuorum(r)
			case !cut && q.lost.Load():
				s.regainQuorum(ctx)
			}
		}
	}()
}

// loseQuorum stops serving: logins are refused from here on, so a device
// closed below does not come back to this node.
func (s *Server) loseQuorum(r cluster.Reach) {
	cp := s.cluster
	q := &cp.quorum
	q.setReason("no quorum: " + r.String())
	q.lost.Store(true)
	q.lostTotal.Add(1)
	cp.join.CutOff(true)
	n := s.disconnectDevices(noQuorumReason)
	led := cp.node.StepDown()
	cp.log.Warn("cluster: cut off from the quorum; devices disconnected, leases given up",
		"servers", r.Servers, "quorum", r.Quorum, "devices", n, "stream leaderships given up", led)
}

// regainQuorum serves again once the view has applied the log as it is now
// (as at a join: a view that missed the majority's writes must not serve
// devices). It gives up, and is called again at the next check, if the
// quorum is lost again meanwhile.
func (s *Server) regainQuorum(ctx context.Context) {
	cp := s.cluster
	q := &cp.quorum
	q.setReason("no quorum: reached again, catching up with the log")
	ctx, cancel := context.WithTimeout(ctx, joinTimeout)
	defer cancel()
	var last []uint64
	for {
		if r, _ := cp.node.Reach(); !r.OK() {
			return
		}
		// Not from a leader of this node's that the majority has not yet
		// deposed (cluster.Node.Current); the stream's leader may also
		// still be being elected.
		if cp.node.Current() {
			c, ccancel := context.WithTimeout(ctx, 2*time.Second)
			ends, err := cp.logEnds(c)
			ccancel()
			if err == nil {
				last = ends
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(quorumCheck):
		}
	}
	if err := waitViews(ctx, s.store, last); err != nil {
		return
	}
	cp.join.CutOff(false)
	q.lost.Store(false)
	cp.log.Info("cluster: reaches the quorum again; serving", "applied", s.store.Applied())
}
