package server_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/internal/cluster"
	"github.com/duet-im/duet/internal/clustertest"
	"github.com/duet-im/duet/internal/freeport"
	"github.com/duet-im/duet/internal/server"
	"github.com/duet-im/duet/internal/wait"
)

// startNode builds and starts a node from cfg, and returns Start's error
// (the node is closed at the end of the test).
func startNode(t *testing.T, cfg server.Config) (*server.Server, error) {
	t.Helper()
	s, err := server.New(cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Start(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// recordedConfig is KV duet-cluster "config" as node s reads it.
func recordedConfig(t *testing.T, s *server.Server) (rec struct {
	Partitions int               `json:"partitions"`
	Replicas   int               `json:"replicas"`
	Settings   map[string]string `json:"settings"`
	By         string            `json:"by"`
}) {
	t.Helper()
	// Tried again until it answers: right after a node's Close the bucket
	// may be electing a leader (a loaded run saw one read time out).
	var v []byte
	wait.For(t, 30*time.Second, 50*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		kv, err := s.ClusterNode().JetStream().KeyValue(ctx, cluster.BucketCluster)
		if err != nil {
			return err
		}
		e, err := kv.Get(ctx, "config")
		if err != nil {
			return err
		}
		v = e.Value()
		return nil
	})
	if err := json.Unmarshal(v, &rec); err != nil {
		t.Fatalf("config %s: %v", v, err)
	}
	return rec
}

// A node whose settings that must agree (docs/cluster.md §15.3) differ
// from the running cluster's is refused at start, the message naming the
// setting and both values (never the secret); a node with route TLS
// joining nodes without it is refused after its join timeout with a
// message that says so; a record written by an older build (partitions
// and replicas only) is accepted and completed; the node with the
// cluster's settings is accepted again.
func TestClusterSettingsMustAgree(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	cfgs := clustertest.Configs(t, 3)
	srvs := clustertest.New(t, cfgs)
	clustertest.StartAll(t, srvs)
	clustertest.WaitServing(t, srvs)
	srvs[2].Close() // node 2 is started again below with other settings

	rec := recordedConfig(t, srvs[0])
	if rec.Partitions != 1 || rec.Replicas != 3 || rec.Settings["--friends-only"] != "false" ||
		rec.Settings["--sdkappid"] != "1400000000" || rec.Settings["route TLS (--cluster-tls-*)"] != "off" {
		t.Fatalf("recorded config: %+v", rec)
	}
	if s := rec.Settings["--secret"]; s == "" || strings.Contains(s, clustertest.Secret) {
		t.Fatalf("recorded --secret %q: want a hash", s)
	}

	for _, tc := range []struct {
		name   string
		change func(*server.Config)
		want   string
	}{
		{"sdkappid", func(c *server.Config) { c.SDKAppID = 1400000001 },
			"the cluster runs with --sdkappid 1400000000; this node has --sdkappid 1400000001"},
		{"secret", func(c *server.Config) { c.Secret = "another-usersig-key" }, "--secret differs from the cluster's"},
		{"admins", func(c *server.Config) { c.Admins = []string{"root", "administrator"} },
			"the cluster runs with --admins administrator; this node has --admins administrator,root"},
		{"auto-accounts", func(c *server.Config) { c.AutoAccounts = true },
			"the cluster runs with --auto-accounts false; this node has --auto-accounts true"},
		{"friends-only", func(c *server.Config) { c.FriendsOnly = true },
			"the cluster runs with --friends-only false; this node has --friends-only true"},
		{"blacklist-check-error", func(c *server.Config) { c.BlacklistErr = true },
			"the cluster runs with --blacklist-check-error false; this node has --blacklist-check-error true"},
		{"max-lifetime", func(c *server.Config) { c.MaxLifeTime = 24 * time.Hour },
			"the cluster runs with --max-lifetime 168h0m0s; this node has --max-lifetime 24h0m0s"},
		{"recall-window", func(c *server.Config) { c.RecallWindow = time.Hour },
			"the cluster runs with --recall-window 2m0s; this node has --recall-window 1h0m0s"},
		{"max-contacts", func(c *server.Config) { c.MaxContacts = 500 },
			"the cluster runs with --max-contacts 100; this node has --max-contacts 500"},
		{"callback-failure", func(c *server.Config) { c.CallbackRefuse = true },
			"the cluster runs with --callback-failure deliver; this node has --callback-failure refuse"},
		// The command layer's settings as in effect: a test's Command hook
		// counts as the flag would.
		{"friends-only by hook", func(c *server.Config) { c.Command = func(cc *command.Config) { cc.FriendCheck = true } },
			"--friends-only true"},
		{"two at once", func(c *server.Config) { c.FriendsOnly, c.MaxContacts = true, 7 },
			"--friends-only true; the cluster runs with --max-contacts 100; this node has --max-contacts 7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := cfgs[2]
			tc.change(&cfg)
			_, err := startNode(t, cfg)
			if err == nil {
				t.Fatal("the node started")
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) || !strings.Contains(msg, "running: n0, n1") {
				t.Fatalf("Start: %v\nwant it to say %q and which nodes run", err, tc.want)
			}
			if strings.Contains(msg, cfg.Secret) || strings.Contains(msg, clustertest.Secret) {
				t.Fatalf("Start's error shows the secret: %v", err)
			}
		})
	}

	// Route TLS on a node joining nodes without it: the cluster never
	// forms for it, and its join fails naming the cause.
	t.Run("route TLS on the new node only", func(t *testing.T) {
		cfg := cfgs[2]
		cfg.Data = t.TempDir()
		cfg.Cluster.Listen = freeport.Addr(t)
		cfg.Cluster.Node = "n3"
		cfg.Cluster.Routes = append([]string{"nats://" + cfg.Cluster.Listen}, cfgs[0].Cluster.Routes[:2]...)
		cfg.Cluster.TLS = clustertest.NewPKI(t, "duet-test").Node(t, "n3")
		cfg.Cluster.JoinTimeout = 3 * time.Second
		_, err := startNode(t, cfg)
		if err == nil {
			t.Fatal("the node started")
		}
		want := "this node has route TLS on (--cluster-tls-cert, --cluster-tls-key, --cluster-tls-ca) but the node at "
		if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), cfgs[0].Cluster.Listen) {
			t.Fatalf("Start: %v\nwant %q naming %s", err, want, cfgs[0].Cluster.Listen)
		}
	})

	// A record from a build before the settings: accepted, and completed
	// by the node that reads it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := srvs[0].ClusterNode().JetStream().KeyValue(ctx, cluster.BucketCluster)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "config", []byte(`{"partitions":1,"replicas":3}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := startNode(t, cfgs[2]); err != nil {
		t.Fatalf("node 2 with the cluster's settings and an old-style record: %v", err)
	}
	after := recordedConfig(t, srvs[0])
	if after.Partitions != 1 || after.Replicas != 3 || after.By != "n2" || len(after.Settings) != len(rec.Settings) {
		t.Fatalf("record after node 2 completed it: %+v, want the settings of %+v", after, rec)
	}
	for k, v := range rec.Settings {
		if after.Settings[k] != v {
			t.Errorf("completed record: %s = %q, want %q", k, after.Settings[k], v)
		}
	}
}

// A node without route TLS joining nodes with it is refused after its
// join timeout with a message that says so.
func TestClusterRouteTLSMismatch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	_, cfgs := tlsConfigs(t)
	srvs := clustertest.New(t, cfgs)
	clustertest.StartAll(t, srvs)

	cfg := clustertest.Configs(t, 1)[0]
	cfg.Cluster.Node = "n3"
	cfg.Cluster.Routes = append([]string{"nats://" + cfg.Cluster.Listen}, cfgs[0].Cluster.Routes...)
	cfg.Cluster.JoinTimeout = 3 * time.Second
	_, err := startNode(t, cfg)
	if err == nil {
		t.Fatal("the node started")
	}
	want := "this node has route TLS off but the node at "
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "check that every node has --cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca") {
		t.Fatalf("Start: %v\nwant %q", err, want)
	}
	for _, c := range cfgs {
		if !strings.Contains(err.Error(), c.Cluster.Listen) {
			t.Errorf("Start: %v\nwant it to name %s", err, c.Cluster.Listen)
		}
	}
}
