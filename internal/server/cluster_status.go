package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/duet-im/duet/internal/cluster"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// Cluster state made visible (docs/cluster.md §18): the duet_cluster_
// metrics, the /cluster page that `duet cluster status` prints, and what
// /healthz says of a node that has not joined or whose view is behind.

// A cluster node's state, in the order Start goes through them.
const (
	stateJoining    int32 = iota // the NATS node is up; Join has not returned
	stateCatchingUp              // joined; the view applies the log as it was at the join
	stateServing                 // the view reached that point: devices and REST are let in
)

var stateNames = [...]string{stateJoining: "joining", stateCatchingUp: "catching up", stateServing: "serving"}

// maxServingLag is how far (in entries) a serving node's view may fall
// behind a partition's log before /healthz calls it catching up again
// (docs/cluster.md §10.4).
const maxServingLag = 1000

// statusSubject is where every node answers a request for its NodeStatus,
// so that any node's /cluster can list them all.
const statusSubject = "duet.status"

// statusWait bounds how long /cluster waits for the other nodes' answers.
const statusWait = time.Second

// ClusterStatus is the /cluster page: the cluster as the node that
// answered sees it.
type ClusterStatus struct {
	Cluster    string            `json:"cluster"`
	Node       string            `json:"node"` // the node that answered
	Partitions int               `json:"partitions"`
	Replicas   int               `json:"replicas"`
	Sync       string            `json:"sync"` // --cluster-sync ("" with an external NATS)
	Nodes      []NodeStatus      `json:"nodes"`
	Owners     []PartitionStatus `json:"owners"`
}

// NodeStatus is one node's own account of itself.
type NodeStatus struct {
	Node    string   `json:"node"`
	State   string   `json:"state"`            // joining, catching up, serving; "no answer" for a live node that did not answer
	Reason  string   `json:"reason,omitempty"` // why a node is not healthy (its /healthz reason)
	Version string   `json:"version,omitempty"`
	Owned   []int    `json:"owned"`   // partitions it owns
	Applied uint64   `json:"applied"` // the log sequence its view has applied (summed over partitions)
	Views   []uint64 `json:"views"`   // per partition: the log sequence its view has applied
	Lag     []uint64 `json:"lag"`     // per partition: the log's last sequence as it last saw it minus what its view applied
}

// PartitionStatus is a partition's lease holder: the node that says it
// owns it, else as the answering node's lease watcher last saw it ("" free,
// "?" taken by a node it has not heard of yet).
type PartitionStatus struct {
	Partition int    `json:"partition"`
	Owner     string `json:"owner"`
}

// serveStatus answers the other nodes' /cluster requests with this
// node's status.
func (s *Server) serveStatus() error {
	cp := s.cluster
	sub, err := cp.node.Conn().Subscribe(statusSubject, func(m *nats.Msg) {
		if data, err := json.Marshal(s.nodeStatus()); err == nil {
			_ = m.Respond(data)
		}
	})
	if err != nil {
		return fmt.Errorf("cluster: status subscription: %w", err)
	}
	cp.statusSub = sub
	return nil
}

// nodeStatus is this node's status.
func (s *Server) nodeStatus() NodeStatus {
	cp := s.cluster
	ns := NodeStatus{Node: cp.node.Name(), Version: s.cfg.Version, Owned: []int{}, Lag: []uint64{}, Views: []uint64{}}
	if s.store != nil {
		ns.Applied = s.store.Applied()
	}
	state := cp.state.Load()
	ns.State = stateNames[state]
	if state == stateServing && cp.draining.Load() {
		ns.State = "draining" // cluster_drain.go
	} else if state == stateServing && cp.quorum.lost.Load() {
		ns.State = "no quorum" // cluster_quorum.go
	}
	if state >= stateCatchingUp {
		ns.Owned = cp.join.Owned()
		for p := range cp.join.Partitions() {
			ns.Lag = append(ns.Lag, cp.join.Lag(p))
			if s.store != nil {
				ns.Views = append(ns.Views, s.store.Partition(p).Applied())
			}
		}
	}
	ns.Reason = s.clusterUnhealthy()
	return ns
}

// clusterUnhealthy is why this cluster node should not be sent devices
// (docs/cluster.md §10.4, §17), or "" when it may.
func (s *Server) clusterUnhealthy() string {
	cp := s.cluster
	switch cp.state.Load() {
	case stateJoining:
		return "joining the cluster"
	case stateCatchingUp:
		return "catching up: the view is applying the log"
	}
	if cp.draining.Load() {
		return "draining" // cluster_drain.go: load balancers move away
	}
	if why := cp.quorum.lostReason(); why != "" {
		return why // cluster_quorum.go
	}
	if st := cp.node.Conn().Status(); st != nats.CONNECTED {
		return "no connection to NATS (" + st.String() + ")"
	}
	for p := range cp.join.Partitions() {
		if cp.join.Applier(p).Rebuilding() {
			return fmt.Sprintf("catching up: partition %d's view is being rebuilt from its snapshot", p)
		}
		if lag := cp.join.Lag(p); lag > maxServingLag {
			return fmt.Sprintf("catching up: partition %d's view is %d entries behind its log", p, lag)
		}
	}
	return ""
}

// clusterStatus collects every live node's status: this node's own, and
// the others' answers on statusSubject within statusWait.
func (s *Server) clusterStatus() ClusterStatus {
	cp := s.cluster
	self := s.nodeStatus()
	cs := ClusterStatus{
		Cluster: cp.cfg.Name, Node: self.Node, Partitions: cp.cfg.partitions(), Replicas: cp.cfg.Replicas,
		Sync: cp.cfg.Sync, Nodes: []NodeStatus{self}, Owners: []PartitionStatus{},
	}
	if len(cp.cfg.NATS) > 0 {
		cs.Sync = "" // the external servers' own setting
	}
	var live []string
	if cp.state.Load() >= stateCatchingUp {
		live = cp.join.Nodes()
		for p, h := range cp.join.Holders() {
			cs.Owners = append(cs.Owners, PartitionStatus{Partition: p, Owner: h})
		}
	}
	seen := map[string]bool{self.Node: true}
	// Wait for every node known live, and for as many as the routes name:
	// a node's heartbeat can reach this node's watcher a while after the
	// node answers (found by TestClusterStatusCommand: a node that was
	// serving left out of the table).
	want := max(len(live), len(cp.cfg.Routes))
	missing := func() bool {
		for _, n := range live {
			if !seen[n] {
				return true
			}
		}
		return len(seen) < want
	}
	nc := cp.node.Conn()
	inbox := nc.NewRespInbox()
	if sub, err := nc.SubscribeSync(inbox); err == nil {
		defer sub.Unsubscribe()
		if err := nc.PublishRequest(statusSubject, inbox, nil); err == nil {
			// Every live node answers at once; stop as soon as each has
			// (a node that died since its last heartbeat never does).
			deadline := time.Now().Add(statusWait)
			for missing() || len(live) == 0 {
				m, err := sub.NextMsg(time.Until(deadline))
				if err != nil {
					break
				}
				var ns NodeStatus
				if json.Unmarshal(m.Data, &ns) != nil || seen[ns.Node] {
					continue
				}
				seen[ns.Node] = true
				cs.Nodes = append(cs.Nodes, ns)
			}
		}
	}
	for _, n := range live {
		if !seen[n] {
			cs.Nodes = append(cs.Nodes, NodeStatus{Node: n, State: "no answer", Owned: []int{}, Lag: []uint64{}})
		}
	}
	claimedOwners(cs.Owners, cs.Nodes)
	slices.SortFunc(cs.Nodes, func(a, b NodeStatus) int { return strings.Compare(a.Node, b.Node) })
	return cs
}

// claimedOwners corrects owners, as this node's lease watcher saw them,
// with what the nodes say they own: a node's own account is fresher than
// the watcher, which can lag by seconds after a node leaves (its consumer
// may have been on that node's server; CI saw the new owner's own page name
// nobody for 20 s). The watcher's holder stays when no node claims the
// partition, or when it is one of two claimants (an owner paused past its
// lease still claims it).
func claimedOwners(owners []PartitionStatus, nodes []NodeStatus) {
	claims := map[int][]string{}
	for _, n := range nodes {
		for _, p := range n.Owned {
			claims[p] = append(claims[p], n.Node)
		}
	}
	for i, o := range owners {
		if c := claims[o.Partition]; len(c) > 0 && !slices.Contains(c, o.Owner) {
			owners[i].Owner = c[0]
		}
	}
}

// clusterPage is GET /cluster.
func (s *Server) clusterPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(s.clusterStatus())
}

// clusterMetrics registers the duet_cluster_ metrics (docs/cluster.md
// §18.1); only a cluster node has them.
func (s *Server) clusterMetrics(reg *prometheus.Registry) {
	cp := s.cluster
	joined := func() bool { return cp.state.Load() >= stateCatchingUp }
	opts := func(name, help string, labels prometheus.Labels) prometheus.Opts {
		return prometheus.Opts{Namespace: "duet", Subsystem: "cluster", Name: name, Help: help, ConstLabels: labels}
	}
	counter := func(o prometheus.Opts, f func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts(o), f))
	}
	gauge := func(o prometheus.Opts, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts(o), f))
	}
	for p := range cp.cfg.partitions() {
		label := prometheus.Labels{"partition": strconv.Itoa(p)}
		gauge(opts("partition_owned", "1 when this node owns the partition (holds its lease and runs its writer), else 0.", label), func() float64 {
			if joined() && cp.join.Log(p) != nil {
				return 1
			}
			return 0
		})
		gauge(opts("apply_lag_entries", "The partition's log last sequence as this node last saw it, minus what its view applied.", label), func() float64 {
			if !joined() {
				return 0
			}
			return float64(cp.join.Lag(p))
		})
		snap := func(f func(cluster.SnapshotInfo) float64) func() float64 {
			return func() float64 {
				if !joined() {
					return 0
				}
				return f(cp.join.Snapshot(p))
			}
		}
		gauge(opts("snapshot_sequence", "The log sequence of the partition's latest snapshot as this node last saw it (0: none); the log is trimmed up to it (docs/cluster.md §10.3).", label),
			snap(func(i cluster.SnapshotInfo) float64 { return float64(i.Seq) }))
		gauge(opts("snapshot_timestamp_seconds", "When the partition's latest snapshot was written, Unix seconds (0: none).", label),
			snap(func(i cluster.SnapshotInfo) float64 {
				if i.At.IsZero() {
					return 0
				}
				return float64(i.At.UnixNano()) / 1e9
			}))
		gauge(opts("log_first_sequence", "The partition's log's first sequence as this node last read it: entries before it were trimmed.", label),
			snap(func(i cluster.SnapshotInfo) float64 { return float64(i.FirstSeq) }))
		counter(opts("snapshots_total", "Snapshots of the partition this node wrote as its owner.", label),
			snap(func(i cluster.SnapshotInfo) float64 { return float64(i.Written) }))
		counter(opts("rebuilds_total", "Times this node rebuilt its view of the partition from a snapshot (it was behind the log's first entry).", label),
			snap(func(i cluster.SnapshotInfo) float64 { return float64(i.Rebuilds) }))
	}
	gauge(opts("view_applied_sequence", "The log sequence this node's view has applied.", nil), func() float64 { return float64(s.store.Applied()) })
	gauge(opts("nodes", "Live nodes seen in duet-nodes, this one included.", nil), func() float64 {
		if !joined() {
			return 0
		}
		return float64(len(cp.join.Nodes()))
	})
	counter(opts("lease_changes_total", "Partition lease changes (taken, released, expired) this node has seen.", nil), func() float64 {
		if !joined() {
			return 0
		}
		return float64(cp.join.LeaseChanges())
	})
	q := &cp.quorum // cluster_quorum.go
	gauge(opts("quorum", "1 while this node reaches a quorum of the cluster's JetStream servers and serves; 0 while it is cut off (docs/cluster.md §17).", nil), func() float64 {
		if q.lost.Load() {
			return 0
		}
		return 1
	})
	gauge(opts("reachable_servers", "JetStream servers this node had a route to at its last check, itself included.", nil), func() float64 { return float64(q.servers.Load()) })
	counter(opts("quorum_lost_total", "Times this node found itself cut off from the cluster's quorum and stopped serving.", nil), func() float64 { return float64(q.lostTotal.Load()) })
	sum := func(f func(*cluster.Router) *atomic.Int64) func() float64 {
		return func() float64 {
			var n int64
			for _, r := range cp.routers {
				n += f(r).Load()
			}
			return float64(n)
		}
	}
	counter(opts("forwarded_total", "Commands this node forwarded to the owner of their partition.", nil), sum(func(r *cluster.Router) *atomic.Int64 { return &r.Forwarded }))
	counter(opts("served_total", "Forwarded commands this node ran as the owner.", nil), sum(func(r *cluster.Router) *atomic.Int64 { return &r.Served }))
	counter(opts("stale_reads_total", "Replies given before this node's view had caught up with the owner's write (docs/cluster.md §12.3).", nil), sum(func(r *cluster.Router) *atomic.Int64 { return &r.StaleReads }))
	counter(opts("no_owner_waits_total", "Forwards that found no owner at first and waited for one.", nil), sum(func(r *cluster.Router) *atomic.Int64 { return &r.NoOwnerWait }))
}
