package cluster

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// A node cut off from the cluster's quorum (docs/cluster.md §17, "A node
// is partitioned away"). Such a node can neither write (its logs and the
// lease bucket need a quorum of their replicas) nor learn of the others'
// writes, so it stops serving: the assembly (internal/server) closes its
// devices' connections and refuses new ones, and this package gives up
// its leases and takes none until it reaches a quorum again.
//
// The signal is the embedded server's routes, not JetStream's answers.
// A node reaches a quorum when it and the servers it has a route to are
// at least a quorum of JetStream's meta group (its cluster size / 2 + 1,
// as nats-server counts it). A node on the majority side of a split, or
// a survivor of a node that died, keeps its routes to the others of the
// majority whatever Raft does meanwhile: a meta or stream leader that
// died leaves its groups leaderless for 4–9 s (raft.go's election
// timeouts), during which JetStream requests fail on every node, and a
// signal built on failed requests would stop the majority's nodes too. A
// node on the minority side loses its routes: at once when the other end
// resets them or the connection fails, or, when the network just goes
// silent, once the routes' pings are unanswered (nats-server's defaults
// for routes: a ping every 30 s, closed at the third unanswered: a minute
// to a minute and a half). It is cut off once that has lasted the lease
// TTL, by when its own leases are past their local validity (§8.1) and
// its writer has stopped by itself.
//
// Shorter route pings (1 s, 3 unanswered) were tried, and left out: they
// also close the routes to a node that is merely paused (SIGSTOP, a long
// GC or VM pause) for a few seconds. When it resumes, its routes form
// anew, and a stream it led answers the new owner's publish from its
// stale state ("wrong last sequence") before the new term reaches it:
// the new owner steps down for nothing (TestClusterFencing failed in two
// runs of two with them, passed in two of two without).

// ErrNoQuorum is the reason OnLose hears for a lease given up because this
// node cannot reach a quorum of the cluster.
var ErrNoQuorum = errors.New("cluster: this node cannot reach a quorum of the cluster")

// Reach is what a node reaches of its JetStream cluster.
type Reach struct {
	Servers int // JetStream servers it has a route to, itself included
	Quorum  int // how many make a quorum of the meta group (0: unknown)
}

// OK reports whether Servers make a quorum.
func (r Reach) OK() bool { return r.Servers >= r.Quorum }

func (r Reach) String() string {
	return fmt.Sprintf("this node reaches %d of the cluster's JetStream servers, a quorum is %d", r.Servers, r.Quorum)
}

// Reach counts the embedded server and the servers it has routes to
// against a quorum of JetStream's meta group. ok is false when the node
// cannot tell: with an external NATS cluster (--nats) the routes are
// another server's.
func (n *Node) Reach() (r Reach, ok bool) {
	if n.srv == nil {
		return Reach{}, false
	}
	r.Servers = 1 + n.srv.NumRemotes()
	// The meta group alone (Jsz would also add up every stream's usage).
	sys := n.srv.SystemAccount()
	if sys == nil {
		return r, true
	}
	rz := n.srv.Raftz(&server.RaftzOptions{AccountFilter: sys.Name, GroupFilter: metaGroup})
	if rz == nil {
		return r, true
	}
	for _, g := range (*rz)[sys.Name] {
		r.Quorum = g.QuorumNeeded
		if r.Quorum == 0 {
			r.Quorum = g.Size/2 + 1
		}
	}
	return r, true // no meta group: JetStream not clustered, the node is its own quorum
}

// metaGroup is the Raft group name of JetStream's meta group (nats-server
// jetstream_cluster.go defaultMetaGroupName).
const metaGroup = "_meta_"

// QuorumTracker turns a node's reach, observed over time, into whether it
// is cut off: from the first observation without a quorum that has lasted
// Grace (the lease TTL), until the first observation with one. Not safe
// for concurrent use.
type QuorumTracker struct {
	Grace time.Duration

	since time.Time // start of the current run of observations without a quorum; zero: the last had one
	lost  bool
}

// Observe records whether the node reaches a quorum at now and returns
// whether it is cut off.
func (t *QuorumTracker) Observe(now time.Time, ok bool) bool {
	if ok {
		t.since, t.lost = time.Time{}, false
		return false
	}
	if t.since.IsZero() {
		t.since = now
	}
	if now.Sub(t.since) >= t.Grace {
		t.lost = true
	}
	return t.lost
}

// cutOff is a Cluster's part in quorum loss.
type cutOff struct{ on atomic.Bool }

// CutOff tells the owner loop whether this node reaches a quorum (off) or
// not (on). Cut off, it gives up every lease it holds and takes none. Its
// writer has stopped already (its leases are past their local validity);
// the release's delete of the lease key cannot reach the bucket, so the
// keys expire and the majority takes them after the TTL, as from a node
// that died.
func (c *Cluster) CutOff(on bool) {
	c.cut.on.Store(on)
	c.poke()
}

// cutOffNow gives up every lease while this node is cut off (on the owner
// loop) and says whether it is.
func (c *Cluster) cutOffNow() bool {
	if !c.cut.on.Load() {
		return false
	}
	c.releaseAll(ErrNoQuorum)
	return true
}

// StepDown gives up the leadership of every stream this node's server
// leads, and returns how many it led. A node cut off from the quorum calls
// it: a leader on the minority side keeps thinking it leads for up to
// 10 s (nats-server raft.go, lostQuorumInterval) and, when the network
// heals before that, answers requests from its stale state until the
// majority's higher term reaches it — a lease renewal of the majority's
// owner answered "wrong revision" by it would end that lease for nothing.
func (n *Node) StepDown() int {
	if n.srv == nil {
		return 0
	}
	info, err := n.srv.Jsz(&server.JSzOptions{Accounts: true, Streams: true})
	if err != nil {
		return 0
	}
	led := 0
	for _, acc := range info.AccountDetails {
		for _, st := range acc.Streams {
			if st.Cluster != nil && st.Cluster.Leader == n.name {
				if n.srv.JetStreamStepdownStream(acc.Name, st.Name) == nil {
					led++
				}
			}
		}
	}
	return led
}

// raftCurrent is how recently a leader must have heard from a quorum of
// its group to be taken for a current one: followers answer its
// heartbeats, sent every second (raft.go hbInterval).
const raftCurrent = 2 * time.Second

// Current reports whether every replicated Raft group of this node's
// server (JetStream's meta group, each stream's) has a current leader: it
// follows a leader, or it leads and has heard from a quorum of its peers
// within raftCurrent. Until then a node back from a split can be answered
// from its own stale state: a member that knows no leader answers stream
// info requests itself (nats-server jetstream_api.go, isLeaderless), and a
// leader the majority has not yet deposed answers everything. A view
// caught up to a log end read then would miss what the majority wrote.
// On the minority side no group can elect a leader, so a leader a
// follower knows is the majority's, or one from before the split that the
// majority still follows.
func (n *Node) Current() bool {
	if n.srv == nil {
		return true
	}
	accounts := []string{server.DEFAULT_GLOBAL_ACCOUNT}
	if sys := n.srv.SystemAccount(); sys != nil {
		accounts = append(accounts, sys.Name)
	}
	for _, acc := range accounts {
		rz := n.srv.Raftz(&server.RaftzOptions{AccountFilter: acc})
		if rz == nil {
			continue
		}
		for _, groups := range *rz {
			for _, g := range groups {
				if g.Size < 2 || g.Observer {
					continue
				}
				switch g.State {
				case server.Follower.String():
					if g.Leader == "" {
						return false
					}
				case server.Leader.String():
					heard := 1 // itself
					for _, p := range g.Peers {
						if d, err := time.ParseDuration(p.LastSeen); err == nil && d < raftCurrent {
							heard++
						}
					}
					if heard < g.QuorumNeeded {
						return false
					}
				default: // a candidate: no leader
					return false
				}
			}
		}
	}
	return true
}
