package broker_test

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/duet-im/duet/internal/clustertest"
	"github.com/duet-im/duet/internal/freeport"
	srvpkg "github.com/duet-im/duet/internal/server"
)

// startExternalNATS runs an operator's NATS cluster: n nats-servers with
// JetStream on loopback routes, as `--nats` expects to find one
// (docs/cluster.md §15.1). It returns their client URLs.
func startExternalNATS(t *testing.T, n int) []string {
	t.Helper()
	addrs := freeport.Addrs(t, n)
	var routes []string
	for _, a := range addrs {
		routes = append(routes, "nats://"+a)
	}
	urls := make([]string, n)
	srvs := make([]*natsserver.Server, n)
	for i := range srvs {
		s, err := natsserver.NewServer(&natsserver.Options{
			ServerName: fmt.Sprint("ext", i), Host: "127.0.0.1", Port: natsserver.RANDOM_PORT,
			JetStream: true, StoreDir: t.TempDir(), SyncAlways: true, NoLog: true, NoSigs: true,
			Cluster: natsserver.ClusterOpts{Name: "operators", Host: "127.0.0.1", Port: port(t, addrs[i])},
			Routes:  natsserver.RoutesFromStr(strings.Join(routes, ",")),
		})
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		t.Cleanup(s.Shutdown)
		srvs[i] = s
	}
	for i, s := range srvs {
		if !s.ReadyForConnections(20 * time.Second) {
			t.Fatalf("external nats-server %d not ready", i)
		}
		urls[i] = s.ClientURL()
	}
	return urls
}

func port(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Duet nodes on an external NATS cluster (`--nats`), embedding none: they
// form one service as with the embedded servers — users on different
// nodes chat both ways with gap-free timelines on every node, and when the
// owner leaves another node takes the data and the chat goes on.
func TestClusterExternalNATS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nats-servers and three nodes")
	}
	urls := startExternalNATS(t, 3)
	nodes := startCluster(t, 3, func(c *srvpkg.Config) {
		c.Cluster.NATS = urls
		c.Cluster.Routes, c.Cluster.Listen, c.Cluster.Secret = nil, "", ""
	})
	for i, n := range nodes {
		if n.srv.ClusterNode().Server() != nil {
			t.Fatalf("node %d embeds a NATS server with --nats", i)
		}
	}
	o := clustertest.Owner(t, servers(nodes))
	a, b := nodes[(o+1)%3], nodes[(o+2)%3]
	nodes[o].users("alice", "bob")
	clustertest.Settle(t, servers(nodes))
	alice := a.connect("alice", connectOpts{})
	bob := b.connect("bob", connectOpts{v5: true})
	alice.syncComplete()
	bob.syncComplete()
	for i := 1; i <= 3; i++ {
		alice.send("bob", i)
		if e := bob.nextMsg(); e.num("Seq") != int64(2*i-1) || e.str("From_Account") != "alice" {
			t.Fatalf("bob got %v; want alice's message %d with Seq %d", e, i, 2*i-1)
		}
		bob.send("alice", 100+i)
		if e := alice.nextMsg(); e.str("From_Account") != "bob" {
			t.Fatalf("alice got %v; want bob's reply", e)
		}
	}
	sameTimelines(t, nodes, "alice", "bob")

	nodes[o].stop()
	survivors := []*testServer{a, b}
	clustertest.Owner(t, servers(survivors))
	for i := 4; i <= 6; i++ {
		sendRetrying(t, alice, "bob", i)
		if e := bob.nextMsg(); e.num("Seq") != int64(2*i-1) {
			t.Fatalf("after the owner left bob got %v; want Seq %d", e, 2*i-1)
		}
		bob.send("alice", 100+i)
		alice.nextMsg()
	}
	sameTimelines(t, survivors, "alice", "bob")
}
