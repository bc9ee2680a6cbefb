package server

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/hooks"
	"github.com/duet-im/duet/internal/cluster"
	"github.com/duet-im/duet/store"
	"github.com/nats-io/nats.go"
)

// Cluster mode (docs/cluster.md). A node embeds a NATS server (or uses an
// external NATS cluster), opens its store as a view of the partition log,
// and puts a router in front of the command layer and a broadcast in
// front of its devices. What changes in the assembly, in order:
//
//	New:   the NATS node starts (its JetStream directory is {data}/nats)
//	       before the store, which opens as Replicated; the transports get
//	       the router as their executor; the command layer and the pusher
//	       get the cluster's devices (live events, kicks and presence on
//	       every node).
//	Start: the node joins — every partition's log is applied to the view
//	       until it is at the log's end, then the owner loop may take
//	       partitions — before any listener opens.
//	Close: after the listeners, the node leaves (releasing its leases, so
//	       another node takes over at once rather than after the lease
//	       expires), then the store closes, then the NATS node stops.
//
// This first build runs one partition (P = 1): one node at a time owns
// every user's data and runs every write; each node serves its own
// devices and reads from its own view.

// ClusterConfig is cluster mode's settings; zero (no Name, no NATS) is a
// single node.
type ClusterConfig struct {
	Name      string           // --cluster-name
	Node      string           // --node: this node's name
	Listen    string           // --cluster-listen: the embedded NATS server's route listener
	Routes    []string         // --cluster-routes
	Secret    string           // --cluster-secret: the routes' password
	TLS       cluster.TLSFiles // --cluster-tls-cert, -key, -ca: mutual TLS on the routes
	Sync      string           // --cluster-sync: "always" or an interval
	Replicas  int              // --replicas
	LeaseTTL  time.Duration
	NATS      []string // --nats: an external NATS cluster instead of an embedded server
	NATSCreds string   // --nats-creds

	// --snapshot-entries, --snapshot-interval: how often the owner
	// snapshots its view and trims the log (docs/cluster.md §10.3); 0:
	// the defaults, 100,000 entries and 6 h.
	SnapshotEntries  int
	SnapshotInterval time.Duration

	// JoinTimeout bounds Start's wait for the cluster; 0: joinTimeout
	// (tests of a node that cannot join shorten it).
	JoinTimeout time.Duration
	// Advertise is the route address gossiped to the other nodes when not
	// Listen (--cluster-advertise; cluster.NodeOptions.Advertise).
	Advertise string

	// Partitions is P (--partitions, docs/cluster.md §5); 0 means one.
	// With several, a transaction's writes for users of other partitions
	// run there as intents (store/intents.go).
	Partitions int
	// RebalanceDelay is how long a node above its share of partitions
	// waits before it gives one up (cluster.Config); 0: 30 s.
	RebalanceDelay time.Duration
}

// partitions is P.
func (c ClusterConfig) partitions() int { return max(c.Partitions, 1) }

// On reports whether this is cluster mode.
func (c ClusterConfig) On() bool { return c.Name != "" || len(c.NATS) > 0 }

// heartbeatPeriod is how often a node writes its duet-nodes heartbeat
// (NodeTTL / 3 by default): after it, every node that was up is in the
// live set.
const heartbeatPeriod = 5 * time.Second

// joinTimeout bounds Start's wait for the cluster (JetStream's meta leader,
// the shared objects, the view's catch-up).
const joinTimeout = 2 * time.Minute

type clusterParts struct {
	cfg     ClusterConfig
	log     *slog.Logger
	node    *cluster.Node
	join    *cluster.Cluster
	routers []*cluster.Router // one per partition
	pump    *intentPump       // several partitions: runs the intents this node's partitions are owed
	devices *cluster.Devices
	cursors *cluster.Cursors

	// state is stateJoining, stateCatchingUp or stateServing
	// (cluster_status.go); join is read by others only once state says
	// it is set.
	state     atomic.Int32
	statusSub *nats.Subscription // answers the other nodes' /cluster (cluster_status.go)
	draining  atomic.Bool        // cluster_drain.go: no leases, no devices, /healthz 503
	quorum    quorumState        // cluster_quorum.go: cut off from the cluster's quorum, the same by itself
}

// checkCluster refuses what a cluster cannot do (yet) before anything
// starts, naming the setting.
func checkCluster(cfg Config) error {
	c := cfg.Cluster
	if !c.On() {
		return nil
	}
	if len(c.NATS) > 0 && (len(c.Routes) > 0 || c.Listen != "") {
		return errors.New("nats (an external NATS cluster) excludes cluster-routes and cluster-listen (an embedded one)")
	}
	if len(c.NATS) > 0 && c.TLS.On() {
		return errors.New("cluster-tls-* secure the embedded NATS server's routes; with nats (an external NATS cluster) the routes are that cluster's to secure")
	}
	// Partial settings, unreadable files, a key that does not match its
	// certificate or a certificate the CA did not sign are refused here,
	// before anything starts, rather than as a node that never joins.
	if _, err := c.TLS.Config(); err != nil {
		return err
	}
	if cfg.Secret == "" {
		// A generated secret.key would differ on every node: a UserSig
		// signed for one would be refused by the others.
		return errors.New("cluster mode needs --secret: every node signs and checks UserSigs with the same key")
	}
	if !cfg.NoMedia && cfg.S3Endpoint == "" {
		// Every node serves every download and the owner, whichever node
		// it is, commits every upload: the objects must be where all of
		// them reach.
		return errors.New("cluster mode needs a shared S3 (--s3-endpoint): the embedded S3 gateway keeps media on one node's disk")
	}
	if !cfg.NoMedia && cfg.MediaURL == "" {
		// Links in messages are made by whichever node owns the data when
		// the upload is committed, and checked by the owner when they are
		// sent: they must not name one node.
		return errors.New("cluster mode needs --media-url, the same on every node: download links in messages must not name one node (e.g. a load balancer in front of the nodes' HTTP listeners)")
	}
	return nil
}

// startClusterNode starts this node's NATS part.
func startClusterNode(cfg Config, log *slog.Logger) (*clusterParts, error) {
	c := cfg.Cluster
	cp := &clusterParts{cfg: c, log: log}
	var err error
	if len(c.NATS) > 0 {
		cp.node, err = cluster.Connect(c.Node, c.NATS, c.NATSCreds)
	} else {
		cp.node, err = cluster.Start(cluster.NodeOptions{
			Name: c.Node, ClusterName: c.Name, RouteListen: c.Listen, Routes: c.Routes,
			StoreDir: filepath.Join(cfg.Data, "nats"), Sync: c.Sync, Secret: c.Secret, Replicas: c.Replicas,
			TLS: c.TLS, Advertise: c.Advertise,
		})
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	return cp, nil
}

// joinCluster starts the broadcasts, joins, and waits until the view has
// applied the log as it was when the node joined.
func (s *Server) joinCluster() error {
	cp := s.cluster
	if err := cp.devices.Start(); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if err := s.serveStatus(); err != nil {
		return err
	}
	timeout := cmp.Or(cp.cfg.JoinTimeout, joinTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ready := make(chan struct{})
	go cp.warnRouteTLS(ready)
	err := cp.node.Ready(ctx)
	close(ready)
	if err != nil {
		// A cluster whose nodes disagree on route TLS never forms, and
		// nothing but nats-server's handshake errors would say why.
		if len(cp.cfg.NATS) == 0 {
			if why := cluster.ProbeRouteTLS(cp.cfg.Routes, cp.cfg.Listen, cp.cfg.TLS.On(), 5*time.Second); why != "" {
				return fmt.Errorf("cluster: JetStream not ready after %v: %s", timeout, why)
			}
		}
		return fmt.Errorf("cluster: JetStream not ready: %w", err)
	}
	name := cp.node.Name()
	if cp.pump != nil {
		cp.pump.start()
	}
	j, err := cluster.Join(ctx, cp.node, cluster.JoinOptions{
		Config: cluster.Config{
			Partitions: cp.cfg.partitions(), Replicas: cp.cfg.Replicas, LeaseTTL: cp.cfg.LeaseTTL,
			SnapshotEntries: uint64(max(cp.cfg.SnapshotEntries, 0)), SnapshotInterval: cp.cfg.SnapshotInterval,
			Settings: s.agreeSettings(), Node: name, Log: cp.log, RebalanceDelay: cp.cfg.RebalanceDelay,
		},
		FenceEntry: func() []byte { return store.FenceEntry(name) },
		View:       func(p int) cluster.View { return s.store.Partition(p) },
		OnOwn: func(p int, l *cluster.Log) {
			if err := s.store.Partition(p).Own(l); err != nil {
				cp.log.Error("cluster: taking the store", "partition", p, "error", err)
				return
			}
			// Before the first command: this node's command caches may
			// date from an earlier tenure.
			s.svc.ForgetCaches()
			if err := cp.routers[p].Serve(); err != nil {
				cp.log.Error("cluster: serving forwarded commands", "partition", p, "error", err)
			}
			if cp.pump != nil {
				// What the partition is owed from the others' logs, before
				// and during the last owner's tenure (§11.3).
				cp.pump.kick(p)
			}
			// The partition's push queue is its owner's to work
			// (docs/cluster.md §14.2).
			s.push.OwnPartition(p)
			cp.log.Info("cluster: this node owns the data now", "partition", p)
		},
		OnLose: func(p int, err error) {
			s.push.DisownPartition(p)
			cp.routers[p].Stop()
			s.store.Partition(p).Disown()
			cp.log.Warn("cluster: this node no longer owns the data", "partition", p, "reason", err)
		},
		OnError: func(p int, err error) {
			cp.log.Warn("cluster", "partition", p, "error", err)
		},
	})
	if err != nil {
		return fmt.Errorf("cluster: joining: %w", err)
	}
	cp.join = j
	// A presence question ends when every live node has answered, not
	// after its 250 ms bound: the pusher asks once per device it plans and
	// once more when the notification falls due, one after the other. The
	// live set is known only once the other nodes' heartbeats have reached
	// this node's watcher, a moment after they start (as /cluster found):
	// until one heartbeat period has passed, wait also for as many answers
	// as the routes name, or a device connected to a node not yet seen
	// would be taken for offline (and pushed).
	joined := time.Now()
	cp.devices.Nodes = func() int {
		n := len(j.Nodes())
		if time.Since(joined) < heartbeatPeriod {
			n = max(n, len(cp.cfg.Routes))
		}
		return n
	}
	for p, r := range cp.routers {
		r.Owner = func() string { return j.Holder(p) }
		r.Refresh = func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			j.RefreshHolder(ctx, p)
		}
	}
	if err := cp.cursors.Ready(ctx); err != nil {
		return fmt.Errorf("cluster: device cursors: %w", err)
	}
	cp.state.Store(stateCatchingUp)
	// Serve devices from a view at the log's end as of now, not from one
	// still replaying (docs/cluster.md §10.4, "catching up").
	ends, err := cp.logEnds(ctx)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if err := waitViews(ctx, s.store, ends); err != nil {
		return fmt.Errorf("cluster: %w (in %v)", err, joinTimeout)
	}
	cp.state.Store(stateServing)
	s.watchQuorum() // cluster_quorum.go
	return nil
}

// warnRouteTLS logs a route TLS mismatch (cluster.ProbeRouteTLS) while the
// node waits for JetStream, every 30 s from 10 s on, rather than only when
// the join times out.
func (cp *clusterParts) warnRouteTLS(ready <-chan struct{}) {
	if len(cp.cfg.NATS) > 0 {
		return
	}
	wait := 10 * time.Second
	for {
		select {
		case <-ready:
			return
		case <-time.After(wait):
		}
		if why := cluster.ProbeRouteTLS(cp.cfg.Routes, cp.cfg.Listen, cp.cfg.TLS.On(), 5*time.Second); why != "" {
			cp.log.Warn("cluster: JetStream not ready yet: " + why)
		}
		wait = 30 * time.Second
	}
}

// logEnds is every partition's last log sequence as JetStream has it now.
func (cp *clusterParts) logEnds(ctx context.Context) ([]uint64, error) {
	ends := make([]uint64, cp.cfg.partitions())
	for p := range ends {
		var err error
		if ends[p], err = cp.logEnd(ctx, p); err != nil {
			return nil, err
		}
	}
	return ends, nil
}

// logEnd is partition p's last log sequence as JetStream has it now.
func (cp *clusterParts) logEnd(ctx context.Context, p int) (uint64, error) {
	stream, err := cp.node.JetStream().Stream(ctx, cluster.StreamName(p))
	if err != nil {
		return 0, err
	}
	return stream.CachedInfo().State.LastSeq, nil
}

// waitViews waits until this node's view of every partition of st has
// applied its log up to ends (logEnds).
func waitViews(ctx context.Context, st *store.Store, ends []uint64) error {
	for p, last := range ends {
		if err := st.Partition(p).WaitApplied(ctx, last); err != nil {
			return fmt.Errorf("the view of partition %d applied %d of the log's %d entries: %w", p, st.Partition(p).Applied(), last, err)
		}
	}
	return nil
}

// clusterAccounts is what login asks about users on a cluster node: the
// local view answers whether an account exists; an account that
// --auto-accounts creates is created by the owner, through the command
// layer like any write, and is in this node's view when the answer comes
// (the router's read-your-writes).
type clusterAccounts struct {
	st   *store.Store
	exec command.Executor
	cp   *clusterParts
}

func (c clusterAccounts) AccountExists(user string) (bool, error) {
	if why := c.cp.unavailable(); why != "" {
		// CONNACK "server unavailable": the device moves to another node
		// (cluster_drain.go, cluster_quorum.go).
		return false, hooks.Unavailable(why)
	}
	return c.st.AccountExists(user)
}

func (c clusterAccounts) ImportAccount(a store.Account) (bool, error) {
	body, err := json.Marshal(map[string]string{"UserID": a.UserID, "Nick": a.Nick, "FaceUrl": a.FaceURL})
	if err != nil {
		return false, err
	}
	admin := &command.Caller{UserID: "administrator", Admin: true, Transport: command.REST}
	r := c.exec.Exec(context.Background(), admin, "im_open_login_svc/account_import", body)
	if r.Err != nil {
		return false, r.Err
	}
	return true, nil
}

// close leaves the cluster: broadcasts stop, the leases are released.
// The NATS node stops in shutdown, after the store has closed.
func (cp *clusterParts) close() {
	if cp == nil {
		return
	}
	if cp.devices != nil {
		cp.devices.Stop()
	}
	if cp.statusSub != nil {
		_ = cp.statusSub.Unsubscribe()
	}
	cp.quorum.stopWatch()
	if cp.join != nil {
		cp.join.Close()
	}
	for _, r := range cp.routers {
		r.Stop()
	}
	if cp.pump != nil {
		cp.pump.stop()
	}
}

func (cp *clusterParts) shutdown() {
	if cp != nil && cp.node != nil {
		cp.node.Shutdown()
	}
}
