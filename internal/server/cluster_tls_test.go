package server_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/cluster"
	"github.com/duet-im/duet/internal/clustertest"
	"github.com/duet-im/duet/internal/freeport"
	"github.com/duet-im/duet/internal/server"
	natsserver "github.com/nats-io/nats-server/v2/server"
)

// routeINFO opens a TLS connection to a route listener with probe's
// certificate and reads the INFO line it sends after the handshake: the
// listener speaks TLS from the first byte (a route does the handshake
// before INFO), and the INFO says whether it verifies the peer.
func routeINFO(t *testing.T, addr string, probe cluster.TLSFiles) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(probe.Cert, probe.Key)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(probe.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool})
	if err != nil {
		t.Fatalf("route listener %s: %v", addr, err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("route listener %s: %v", addr, err)
	}
	return line
}

// routes is how many routes the node's embedded server has, to which
// peers.
func routes(t *testing.T, s *natsserver.Server) (int, []string) {
	t.Helper()
	rz, err := s.Routez(nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range rz.Routes {
		names = append(names, r.RemoteName)
	}
	return rz.NumRoutes, names
}

// tlsConfigs are three nodes' configs with route TLS, each node with its
// certificate from one CA.
func tlsConfigs(t *testing.T) (*clustertest.PKI, []server.Config) {
	t.Helper()
	pki := clustertest.NewPKI(t, "duet-test")
	cfgs := clustertest.Configs(t, 3)
	for i := range cfgs {
		cfgs[i].Cluster.TLS = pki.Node(t, cfgs[i].Cluster.Node)
	}
	return pki, cfgs
}

// Three nodes with route TLS form a cluster and serve: a message sent
// through one node is in the history another node answers; the route
// listeners speak TLS and verify the peer (INFO tls_required and
// tls_verify after a handshake), so the routes the nodes have are TLS
// routes.
func TestClusterRouteTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	pki, cfgs := tlsConfigs(t)
	probe := pki.Node(t, "probe")
	srvs := clustertest.New(t, cfgs)
	clustertest.StartAll(t, srvs)
	clustertest.WaitServing(t, srvs)

	for i, s := range srvs {
		info := routeINFO(t, cfgs[i].Cluster.Listen, probe)
		if !strings.Contains(info, `"tls_required":true`) || !strings.Contains(info, `"tls_verify":true`) {
			t.Errorf("node %d's route listener: %s, want tls_required and tls_verify", i, info)
		}
		// Every route needs TLS, so a route at all is a TLS route.
		if n, names := routes(t, s.ClusterNode().Server()); n < 2 {
			t.Errorf("node %d has routes to %v, want both peers", i, names)
		}
	}

	users := []string{"tls-a", "tls-b"}
	restImport(t, srvs[0].HTTPAddr(), users...)
	chat(t, srvs, users, 0, 3)
	clustertest.Settle(t, srvs)
	if got := roam(t, srvs[2], "tls-a", "tls-b"); len(got) != 3 {
		t.Fatalf("history on node 2: %d messages, want 3: %v", len(got), got)
	}
}

// A machine with the route password but a certificate from another CA
// gets no route: the TLS handshake fails both ways, the cluster's nodes
// never list it, and its own JetStream never becomes ready, which is how
// it fails (a Duet node's Start then fails after its join timeout,
// "JetStream not ready").
func TestClusterRouteTLSRefusesStranger(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	_, cfgs := tlsConfigs(t)
	srvs := clustertest.New(t, cfgs)
	clustertest.StartAll(t, srvs)

	listen := freeport.Addr(t)
	stranger, err := cluster.Start(cluster.NodeOptions{
		Name: "stranger", ClusterName: cfgs[0].Cluster.Name, RouteListen: listen,
		Routes: append([]string{"nats://" + listen}, cfgs[0].Cluster.Routes...), StoreDir: t.TempDir(),
		Sync: "always", Secret: cfgs[0].Cluster.Secret, Replicas: 3,
		TLS: clustertest.NewPKI(t, "other").Node(t, "stranger"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stranger.Shutdown)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := stranger.Ready(ctx); err == nil {
		t.Fatal("the stranger's JetStream is ready: it joined the cluster")
	}
	if n, names := routes(t, stranger.Server()); n != 0 {
		t.Errorf("the stranger has routes to %v", names)
	}
	// After those 5 s of the stranger soliciting, the members have
	// routes to each other only.
	for i, s := range srvs {
		n, names := routes(t, s.ClusterNode().Server())
		if n < 2 {
			t.Errorf("node %d has routes to %v, want both peers", i, names)
		}
		for _, n := range names {
			if n == "stranger" {
				t.Errorf("node %d has a route to the stranger", i)
			}
		}
	}
}

// Route TLS settings are all three or none, and readable, matching and
// signed by the CA; anything else is refused by New, naming the setting.
func TestClusterRouteTLSRefusals(t *testing.T) {
	pki := clustertest.NewPKI(t, "duet-test")
	good := pki.Node(t, "n0")
	other := clustertest.NewPKI(t, "other").Node(t, "n0")
	junk := filepath.Join(t.TempDir(), "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		tls  cluster.TLSFiles
		want string
	}{
		{"cert only", cluster.TLSFiles{Cert: good.Cert}, "cluster-tls-key is missing"},
		{"no ca", cluster.TLSFiles{Cert: good.Cert, Key: good.Key}, "cluster-tls-ca is missing"},
		{"no cert", cluster.TLSFiles{Key: good.Key, CA: good.CA}, "cluster-tls-cert is missing"},
		{"missing file", cluster.TLSFiles{Cert: good.Cert + ".gone", Key: good.Key, CA: good.CA}, "cluster-tls-cert"},
		{"key of another cert", cluster.TLSFiles{Cert: good.Cert, Key: other.Key, CA: good.CA}, "cluster-tls-key"},
		{"ca not pem", cluster.TLSFiles{Cert: good.Cert, Key: good.Key, CA: junk}, "cluster-tls-ca"},
		{"ca unreadable", cluster.TLSFiles{Cert: good.Cert, Key: good.Key, CA: junk + ".gone"}, "cluster-tls-ca"},
		{"cert of another CA", cluster.TLSFiles{Cert: other.Cert, Key: other.Key, CA: good.CA}, "not signed by cluster-tls-ca"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := clustertest.Configs(t, 1)[0]
			cfg.Cluster.Replicas = 1
			cfg.Cluster.TLS = tc.tls
			s, err := server.New(cfg)
			if err == nil {
				s.Close()
				t.Fatalf("New accepted %+v", tc.tls)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want it to say %q", err, tc.want)
			}
		})
	}
}
