package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/duet-im/duet/internal/freeport"
)

// testView is a partition's view recording entries in the order applied. It
// ignores entries at or below Applied (the View contract), counts such calls
// for non-fence entries as duplicates, and records gaps.
type testView struct {
	mu      sync.Mutex
	applied uint64
	seqs    []uint64
	data    []string
	dupes   int
	gaps    []string
}

func (v *testView) Applied() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.applied
}

func (v *testView) Apply(seq uint64, e []byte) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if seq <= v.applied {
		if !strings.HasPrefix(string(e), "fence") {
			v.dupes++
		}
		return nil
	}
	if seq != v.applied+1 {
		v.gaps = append(v.gaps, fmt.Sprintf("applied %d after %d", seq, v.applied))
	}
	v.applied = seq
	v.seqs = append(v.seqs, seq)
	v.data = append(v.data, string(e))
	return nil
}

func (v *testView) snapshot() (seqs []uint64, data []string, dupes int, gaps []string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.seqs), slices.Clone(v.data), v.dupes, slices.Clone(v.gaps)
}

// fenceEntry is the test's fence encoding: any non-empty bytes do.
func fenceEntry() []byte { return []byte("fence") }

// freeAddrs picks n loopback ports for route listeners.
func freeAddrs(t *testing.T, n int) []string { return freeport.Addrs(t, n) }

// startNodes starts n embedded nodes routed to each other (the same route
// list on every node, own address included) and waits until JetStream
// answers on each.
func startNodes(t *testing.T, n int) []*Node {
	t.Helper()
	addrs := freeAddrs(t, n)
	routes := make([]string, n)
	for i, a := range addrs {
		routes[i] = "nats://" + a
	}
	nodes := make([]*Node, n)
	for i := range nodes {
		nd, err := Start(NodeOptions{
			Name: fmt.Sprintf("n%d", i+1), ClusterName: "duet-test", RouteListen: addrs[i],
			Routes: routes, StoreDir: t.TempDir(), Sync: "always", Secret: "s3cret", Replicas: 3,
		})
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = nd
		t.Cleanup(nd.Shutdown)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, nd := range nodes {
		if err := nd.Ready(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return nodes
}

func testConfig(p int) Config {
	return Config{Partitions: p, Replicas: 3, LeaseTTL: 2 * time.Second, NodeTTL: 15 * time.Second}
}

// setupAll runs Setup on every node at once: concurrent creators.
func setupAll(t *testing.T, nodes []*Node, cfg Config) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, nd := range nodes {
		wg.Go(func() { errs[i] = Setup(ctx, nd.js, cfg) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Setup on %s: %v", nodes[i].name, err)
		}
	}
}

func TestPartitionNames(t *testing.T) {
	for _, c := range []struct {
		p                      int
		stream, subject, lease string
	}{{0, "DUET_P00", "duet.p.00", "p00"}, {7, "DUET_P07", "duet.p.07", "p07"}, {63, "DUET_P63", "duet.p.63", "p63"}} {
		if StreamName(c.p) != c.stream || Subject(c.p) != c.subject || LeaseKey(c.p) != c.lease {
			t.Errorf("partition %d: %s %s %s", c.p, StreamName(c.p), Subject(c.p), LeaseKey(c.p))
		}
	}
	// FNV-1a 32 test vectors: "" is the offset basis 0x811c9dc5, "a" is 0xe40c292c.
	if Partition("", 1<<16) != 0x9dc5 || Partition("a", 1<<16) != 0x292c {
		t.Errorf("fnv1a32 mod 65536: %#x %#x", Partition("", 1<<16), Partition("a", 1<<16))
	}
	seen := map[int]bool{}
	for i := range 1000 {
		p := Partition(fmt.Sprintf("user%d", i), 64)
		if p < 0 || p >= 64 {
			t.Fatalf("partition %d out of range", p)
		}
		seen[p] = true
	}
	if len(seen) != 64 {
		t.Errorf("1000 users hit %d of 64 partitions", len(seen))
	}
	if Partition("Alice", 64) == Partition("alice", 64) && Partition("Bob", 64) == Partition("bob", 64) {
		t.Error("partition folds case")
	}
	for _, c := range []struct {
		v  string
		ok bool
	}{{"2.15.3", true}, {"2.12.0", true}, {"2.12.0-beta.1", true}, {"2.11.9", false}, {"1.9", false}, {"3.0.0", true}, {"x", false}} {
		if versionAtLeast(c.v, minServer) != c.ok {
			t.Errorf("versionAtLeast(%q) = %v", c.v, !c.ok)
		}
	}
}

func TestThreeNodes(t *testing.T) {
	nodes := startNodes(t, 3)
	leaders := 0
	for _, nd := range nodes {
		if !nd.srv.JetStreamIsClustered() {
			t.Errorf("%s: JetStream not clustered", nd.name)
		}
		if nd.srv.JetStreamIsLeader() {
			leaders++
		}
	}
	if leaders != 1 {
		t.Errorf("%d meta leaders, want 1", leaders)
	}
	setupAll(t, nodes, testConfig(1))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var names []string
	for name := range nodes[1].js.StreamNames(ctx).Name() {
		names = append(names, name)
	}
	if n := slices.Index(names, "DUET_P00"); n < 0 || slices.Index(names[n+1:], "DUET_P00") >= 0 {
		t.Fatalf("streams %v: want DUET_P00 once", names)
	}
	for _, nd := range nodes {
		s, err := nd.js.Stream(ctx, "DUET_P00")
		if err != nil {
			t.Fatal(err)
		}
		info := s.CachedInfo()
		c := info.Config
		if c.Replicas != 3 || c.Storage != jetstream.FileStorage || !c.DenyDelete || c.Discard != jetstream.DiscardNew ||
			c.MaxMsgSize != MaxPayload || c.MaxMsgs != -1 || c.MaxBytes != -1 || c.MaxAge != 0 {
			t.Errorf("%s sees stream config %+v", nd.name, c)
		}
		if info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Errorf("%s sees cluster info %+v: want a leader and 2 replicas", nd.name, info.Cluster)
		}
	}
	kv, err := nodes[0].js.KeyValue(ctx, BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != 2*time.Second || st.LimitMarkerTTL() != markerTTL {
		t.Errorf("leases bucket TTL %v marker TTL %v", st.TTL(), st.LimitMarkerTTL())
	}

	// A node started with another P refuses, naming both values.
	other := testConfig(2)
	_, err = Join(ctx, nodes[2], JoinOptions{Config: other, FenceEntry: fenceEntry, View: func(int) View { return &testView{} }})
	if !errors.Is(err, ErrConfigMismatch) || !strings.Contains(err.Error(), "--partitions 1") || !strings.Contains(err.Error(), "--partitions 2") {
		t.Fatalf("Join with another P: %v", err)
	}
	if _, err := nodes[2].js.Stream(ctx, "DUET_P01"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("refused node created DUET_P01: %v", err)
	}
}
