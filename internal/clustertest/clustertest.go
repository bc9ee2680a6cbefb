// Package clustertest starts Duet clusters inside a test process
// (docs/cluster.md §22): n embedded nats-servers on loopback routes, n data
// directories, n nodes assembled by internal/server. Tests of any package
// use it: the nodes are the real thing, not mocks.
package clustertest

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/cluster"
	"github.com/duet-im/duet/internal/freeport"
	"github.com/duet-im/duet/internal/server"
	"github.com/duet-im/duet/internal/wait"
)

// Secret and SDKAppID are what every node of Configs is given.
const (
	Secret   = "clustertest-secret"
	SDKAppID = 1400000000
)

// Configs are n nodes' settings for one cluster on loopback: free route
// ports, a data directory each, MQTT and HTTP on 127.0.0.1:0, no media.
// Tests adjust them before Start.
func Configs(t testing.TB, n int) []server.Config {
	t.Helper()
	routes := make([]string, n)
	urls := make([]string, n)
	for i := range routes {
		routes[i] = freeport.Addr(t)
		urls[i] = "nats://" + routes[i]
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	cfgs := make([]server.Config, n)
	for i := range cfgs {
		cfgs[i] = server.Config{
			Data: t.TempDir(), Secret: Secret, SDKAppID: SDKAppID, MQTT: "127.0.0.1:0", HTTP: "127.0.0.1:0",
			NoMedia: true, Log: log.With("node", i), Version: "clustertest",
			Cluster: server.ClusterConfig{
				Name: "test", Node: fmt.Sprint("n", i), Listen: routes[i], Routes: urls,
				Secret: "route-secret", Sync: "always", Replicas: 3, LeaseTTL: 2 * time.Second,
			},
		}
	}
	return cfgs
}

// New builds a node from each config; they are closed when the test ends.
func New(t testing.TB, cfgs []server.Config) []*server.Server {
	t.Helper()
	srvs := make([]*server.Server, len(cfgs))
	for i, cfg := range cfgs {
		srv, err := server.New(cfg)
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		t.Cleanup(func() { srv.Close() })
		srvs[i] = srv
	}
	return srvs
}

// StartAll starts the nodes together: each Start waits for JetStream,
// which needs a quorum of them.
func StartAll(t testing.TB, srvs []*server.Server) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(srvs))
	for i, s := range srvs {
		wg.Go(func() { errs[i] = s.Start() })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
}

// Start builds and starts an n-node cluster.
func Start(t testing.TB, n int) []*server.Server {
	t.Helper()
	srvs := New(t, Configs(t, n))
	StartAll(t, srvs)
	return srvs
}

// Owner waits for the node that owns the data (P = 1) and returns its index.
func Owner(t testing.TB, srvs []*server.Server) int {
	t.Helper()
	return OwnerOf(t, srvs, 0)
}

// OwnerOf waits for the node that owns partition p and returns its index.
func OwnerOf(t testing.TB, srvs []*server.Server, p int) int {
	t.Helper()
	o := -1
	wait.For(t, 20*time.Second, 10*time.Millisecond, func() error {
		for i, s := range srvs {
			if s.Store().Partition(p).Owns() {
				o = i
				return nil
			}
		}
		return fmt.Errorf("no node owns partition %d", p)
	})
	return o
}

// Owners waits until each of the P partitions has one owner and the
// nodes share them evenly (each owns P/n, rounded down or up: the balance
// of docs/cluster.md §8.3 reached, so no more moves while RebalanceDelay
// is short), and returns each partition's owner.
func Owners(t testing.TB, srvs []*server.Server, P int) []int {
	t.Helper()
	owner := make([]int, P)
	wait.For(t, 30*time.Second, 20*time.Millisecond, func() error {
		count := make([]int, len(srvs))
		for p := range P {
			owner[p] = -1
			for i, s := range srvs {
				if s.Store().Partition(p).Owns() {
					if owner[p] >= 0 {
						return fmt.Errorf("partition %d owned by nodes %d and %d", p, owner[p], i)
					}
					owner[p] = i
				}
			}
			if owner[p] < 0 {
				return fmt.Errorf("partition %d has no owner", p)
			}
			count[owner[p]]++
		}
		for i, n := range count {
			if n < P/len(srvs) || n > (P+len(srvs)-1)/len(srvs) {
				return fmt.Errorf("node %d owns %d partitions (%v)", i, n, owner)
			}
		}
		return nil
	})
	return owner
}

// Users names n users, "user0", "user1", …, each in a partition whose
// key no earlier one's has: with key p → p, users of n partitions; with
// key p → Owners(…)[p], users whose partitions n different nodes own.
func Users(n, P int, key func(p int) int) []string {
	var users []string
	taken := map[int]bool{}
	for i := 0; len(users) < n; i++ {
		u := fmt.Sprint("user", i)
		if k := key(cluster.Partition(u, P)); !taken[k] {
			taken[k] = true
			users = append(users, u)
		}
	}
	return users
}

// Settle waits until every node's view has applied as much of the log as
// the furthest one (the owner's): a login, or a read, on any node then sees
// what was written before.
func Settle(t testing.TB, srvs []*server.Server) {
	t.Helper()
	for p := range srvs[0].Store().Partitions() {
		var want uint64
		for _, s := range srvs {
			want = max(want, s.Store().Partition(p).Applied())
		}
		wait.For(t, 10*time.Second, time.Millisecond, func() error {
			for i, s := range srvs {
				if got := s.Store().Partition(p).Applied(); got < want {
					return fmt.Errorf("node %d applied %d of %d of partition %d", i, got, want, p)
				}
			}
			return nil
		})
	}
}

// WaitServing waits until every node's /cluster lists all of them serving:
// nodes learn of each other from heartbeats, a moment after they start.
func WaitServing(t testing.TB, srvs []*server.Server) {
	t.Helper()
	wait.For(t, 20*time.Second, 20*time.Millisecond, func() error {
		for i, s := range srvs {
			resp, err := http.Get("http://" + s.HTTPAddr() + "/cluster")
			if err != nil {
				return err
			}
			var cs server.ClusterStatus
			err = json.NewDecoder(resp.Body).Decode(&cs)
			resp.Body.Close()
			if err != nil {
				return fmt.Errorf("node %d /cluster: %v", i, err)
			}
			serving := 0
			for _, n := range cs.Nodes {
				if n.State == "serving" {
					serving++
				}
			}
			if serving != len(srvs) {
				return fmt.Errorf("node %d lists %+v, want %d nodes serving", i, cs.Nodes, len(srvs))
			}
		}
		return nil
	})
}
