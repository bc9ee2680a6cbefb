// Package cluster is Duet's NATS JetStream side of a multi-node deployment
// (docs/cluster.md): the embedded nats-server of each node, the partition
// streams and KV buckets, partition leases, the partition log an owner's
// writer commits through, and the per-partition consumers that apply every
// log to this node's view. The store is reached only through the View
// interface and the Log type; entries are opaque bytes here.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MaxPayload is the largest message the embedded server accepts and the
// largest entry a partition stream stores: one group is one message, and the
// store caps a group at 8 MiB (docs/cluster.md §7).
const MaxPayload = 8 << 20

// readyTimeout bounds the embedded server's start. It recovers JetStream's
// streams from disk before it listens, which takes longer than a few
// seconds for a large store or a loaded machine (10 s failed under CI's
// load); the node's join is bounded by the same figure (joinTimeout).
const readyTimeout = 2 * time.Minute

// routeUser is the route user name; the password is NodeOptions.Secret.
const routeUser = "duet"

// localUser is the user of the embedded server's loopback client listener.
const localUser = "duet-local"

// systemUser is the embedded server's system-account user (RemovePeer).
const systemUser = "duet-system"

// nodeName restricts node names to what a KV key, a NATS server name and the
// Duet-Group header can all carry without encoding.
var nodeName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// NodeOptions configure the embedded NATS server of one node (§15.2).
type NodeOptions struct {
	Name        string   // --node: this node's name, also the NATS server name
	ClusterName string   // --cluster-name
	RouteListen string   // --cluster-listen, host:port of the route listener
	Routes      []string // --cluster-routes: nats://host:port of every node (own may be listed)
	StoreDir    string   // JetStream's directory ({data}/nats)
	Sync        string   // --cluster-sync: "always" (default) or an interval such as "2m"
	Secret      string   // --cluster-secret: route password (required, also with TLS: defence in depth)
	TLS         TLSFiles // --cluster-tls-*: mutual TLS on the routes (optional)
	Replicas    int      // --replicas; checked here only to refuse a cluster too small to hold them
	// Advertise is the route address this node gives the others in
	// gossip (host:port), when not RouteListen. No flag yet: tests that
	// put routes through proxies (clustertest.Netsplit) use it so that
	// gossip does not lead the nodes around the proxies.
	Advertise string
}

// Node is this process's connection to JetStream: an embedded server with an
// in-process connection, or a connection to an external NATS cluster.
type Node struct {
	name string
	srv  *server.Server // nil with Connect
	nc   *nats.Conn
	js   jetstream.JetStream

	sysPass string // systemUser's password; "" with Connect
}

// syncOption parses --cluster-sync.
func syncOption(s string) (always bool, interval time.Duration, err error) {
	if s == "" || s == "always" {
		return true, 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return false, 0, fmt.Errorf("cluster sync %q: want \"always\" or a positive duration such as 2m", s)
	}
	return false, d, nil
}

// Start runs the embedded nats-server of this node with JetStream and no
// client listener, and connects to it in process.
func Start(o NodeOptions) (*Node, error) {
	if !nodeName.MatchString(o.Name) {
		return nil, fmt.Errorf("node name %q: want 1-64 of [A-Za-z0-9_-]", o.Name)
	}
	if o.ClusterName == "" {
		return nil, errors.New("cluster name is required")
	}
	if o.StoreDir == "" {
		return nil, errors.New("JetStream store directory is required")
	}
	if o.Secret == "" {
		// Kept with route TLS too (§15.2): a leaked password alone does not
		// let a machine in, and neither does a certificate alone.
		return nil, errors.New("cluster secret is required")
	}
	tlsConfig, err := o.TLS.Config()
	if err != nil {
		return nil, err
	}
	always, interval, err := syncOption(o.Sync)
	if err != nil {
		return nil, err
	}
	host, portStr, err := net.SplitHostPort(o.RouteListen)
	if err != nil {
		return nil, fmt.Errorf("cluster listen %q: %v", o.RouteListen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 {
		return nil, fmt.Errorf("cluster listen %q: want host:port with a port number", o.RouteListen)
	}
	if o.Replicas > 0 && len(o.Routes) > 0 && o.Replicas > len(o.Routes) {
		return nil, fmt.Errorf("replicas %d need at least %d nodes; cluster routes list %d", o.Replicas, o.Replicas, len(o.Routes))
	}
	routes := make([]*url.URL, 0, len(o.Routes))
	for _, r := range o.Routes {
		u, err := url.Parse(strings.TrimSpace(r))
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("cluster route %q: want nats://host:port", r)
		}
		u.User = url.UserPassword(routeUser, o.Secret)
		routes = append(routes, u)
	}
	// A client listener is needed after all: nats-server 2.15.3 starts its
	// route accept loop only once the client accept loop has run, and
	// DontListen skips that loop, so routes never come up. The listener is
	// on loopback, on a random port, with a per-process random password;
	// Duet itself connects in process.
	local := make([]byte, 24)
	if _, err := rand.Read(local); err != nil {
		return nil, err
	}
	localPass := hex.EncodeToString(local)
	// A second in-process user, in the system account: removing a node
	// from JetStream's meta group ($JS.API.SERVER.REMOVE, RemovePeer) is a
	// system request. Users of the global and system accounts only keep
	// JetStream on the global account, where Duet's streams are.
	sysSecret := make([]byte, 24)
	if _, err := rand.Read(sysSecret); err != nil {
		return nil, err
	}
	sysPass := hex.EncodeToString(sysSecret)
	sysAcc := server.NewAccount(server.DEFAULT_SYSTEM_ACCOUNT)
	opts := &server.Options{
		ServerName:    o.Name,
		Host:          "127.0.0.1",
		Port:          server.RANDOM_PORT,
		Accounts:      []*server.Account{sysAcc},
		SystemAccount: server.DEFAULT_SYSTEM_ACCOUNT,
		Users: []*server.User{
			{Username: localUser, Password: localPass},
			{Username: systemUser, Password: sysPass, Account: sysAcc},
		},
		JetStream:    true,
		StoreDir:     o.StoreDir,
		SyncAlways:   always,
		SyncInterval: interval,
		MaxPayload:   MaxPayload,
		NoSigs:       true,
		NoLog:        true,
		Cluster: server.ClusterOpts{
			Name:     o.ClusterName,
			Host:     host,
			Port:     port,
			Username: routeUser,
			Password: o.Secret,
			// With a TLS config the server requires TLS on every route,
			// accepted or solicited, so nats:// route URLs stay as they
			// are (route.go createRoute). TLSTimeout bounds the handshake.
			TLSConfig:  tlsConfig,
			TLSTimeout: 5,
			Advertise:  o.Advertise,
			// Route pings stay nats-server's (quorum.go says why).
		},
		Routes: routes,
	}
	// A route port that cannot be bound is not an error nats-server
	// reports (without a logger it only never becomes ready): find it out
	// here, at once, instead of after readyTimeout.
	if l, err := net.Listen("tcp", o.RouteListen); err != nil {
		return nil, fmt.Errorf("cluster listen %s: %w", o.RouteListen, err)
	} else {
		l.Close()
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(readyTimeout) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded NATS server %s did not start (route listener %s)", o.Name, o.RouteListen)
	}
	nc, err := nats.Connect("", nats.InProcessServer(srv), nats.UserInfo(localUser, localPass), nats.Name("duet-"+o.Name), nats.MaxReconnects(-1))
	if err != nil {
		srv.Shutdown()
		return nil, fmt.Errorf("in-process connection: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		srv.Shutdown()
		return nil, err
	}
	return &Node{name: o.Name, srv: srv, nc: nc, js: js, sysPass: sysPass}, nil
}

// minServer is the oldest nats-server Duet accepts (§15.2: the design was
// checked against 2.12+ semantics of expected-last-sequence and KV markers).
var minServer = [3]int{2, 12, 0}

// Connect uses an external NATS cluster (--nats, --nats-creds) as node name.
// It refuses a server older than 2.12, naming its version.
func Connect(name string, urls []string, creds string) (*Node, error) {
	if !nodeName.MatchString(name) {
		return nil, fmt.Errorf("node name %q: want 1-64 of [A-Za-z0-9_-]", name)
	}
	opts := []nats.Option{nats.Name("duet-" + name), nats.MaxReconnects(-1)}
	if creds != "" {
		opts = append(opts, nats.UserCredentials(creds))
	}
	nc, err := nats.Connect(strings.Join(urls, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("NATS %s: %w", strings.Join(urls, ","), err)
	}
	if v := nc.ConnectedServerVersion(); !versionAtLeast(v, minServer) {
		nc.Close()
		return nil, fmt.Errorf("NATS server %s runs version %q; Duet needs nats-server %d.%d or later", nc.ConnectedServerName(), v, minServer[0], minServer[1])
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &Node{name: name, nc: nc, js: js}, nil
}

// versionAtLeast compares a server version string such as "2.15.3" or
// "2.12.0-beta.1" with min.
func versionAtLeast(v string, min [3]int) bool {
	core, _, _ := strings.Cut(v, "-")
	parts := strings.Split(core, ".")
	if len(parts) < 2 {
		return false
	}
	for i := 0; i < 3; i++ {
		n := 0
		if i < len(parts) {
			var err error
			if n, err = strconv.Atoi(parts[i]); err != nil {
				return false
			}
		}
		if n != min[i] {
			return n > min[i]
		}
	}
	return true
}

// Name is this node's name.
func (n *Node) Name() string { return n.name }

// JetStream is the node's JetStream context.
func (n *Node) JetStream() jetstream.JetStream { return n.js }

// Conn is the node's NATS connection (core NATS subjects of §6).
func (n *Node) Conn() *nats.Conn { return n.nc }

// Server is the embedded server, nil for an external cluster.
func (n *Node) Server() *server.Server { return n.srv }

// Ready waits until JetStream answers in the cluster: a meta leader is
// elected and the account's JetStream is usable. Stream creation (Setup)
// retries on its own while peers are still joining.
func (n *Node) Ready(ctx context.Context) error {
	var last error
	for {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := n.js.AccountInfo(c)
		cancel()
		if err == nil {
			return nil
		}
		last = err
		if !sleepCtx(ctx, 50*time.Millisecond) {
			return fmt.Errorf("JetStream not ready on node %s: %v", n.name, last)
		}
	}
}

// Shutdown closes the connection and stops the embedded server. Leases are
// not released here (Owner.Close does that first).
func (n *Node) Shutdown() {
	n.nc.Close()
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
	}
}

// sleepCtx waits d or until ctx ends; it reports whether ctx is still live.
// Used for retry back-off inside the package, not to synchronise tests.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
