package server_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/duet-im/duet/clients/sdk"
	"github.com/duet-im/duet/internal/clustertest"
	"github.com/duet-im/duet/internal/server"
	"github.com/duet-im/duet/internal/wait"
)

// quorumMetrics fails unless the node at httpAddr says it reaches the
// quorum and never lost it.
func quorumMetrics(t *testing.T, httpAddr string, wantLost float64) {
	t.Helper()
	_, body := get(t, httpAddr, "/metrics")
	if v, ok := metric(body, "duet_cluster_quorum_lost_total"); !ok || v != wantLost {
		t.Errorf("%s: duet_cluster_quorum_lost_total %v (%v), want %v", httpAddr, v, ok, wantLost)
	}
	if v, ok := metric(body, "duet_cluster_quorum"); !ok || v != 1 {
		t.Errorf("%s: duet_cluster_quorum %v (%v), want 1", httpAddr, v, ok)
	}
}

// splitCluster is a three-node cluster whose routes go through proxies
// (clustertest.Netsplit): k owns the data, x and y are the others.
type splitCluster struct {
	split   *clustertest.Split
	srvs    []*server.Server
	k, x, y int
	ttl     time.Duration
}

// startSplit starts a splitCluster, every node serving, with users
// imported and in every view.
func startSplit(t *testing.T, users ...string) splitCluster {
	t.Helper()
	cfgs := clustertest.Configs(t, 3)
	sc := splitCluster{split: clustertest.Netsplit(t, cfgs)}
	sc.srvs = clustertest.New(t, cfgs)
	clustertest.StartAll(t, sc.srvs)
	sc.k = clustertest.Owner(t, sc.srvs)
	clustertest.WaitServing(t, sc.srvs)
	sc.x, sc.y, sc.ttl = (sc.k+1)%3, (sc.k+2)%3, cfgs[sc.k].Cluster.LeaseTTL
	restImport(t, sc.srvs[sc.x].HTTPAddr(), users...)
	clustertest.Settle(t, sc.srvs)
	return sc
}

// refused fails unless MQTT 5 and 3.1.1 logins at addr are refused with
// "server unavailable" (CONNACK 0x88 with a reason that says why, return
// code 3).
func refused(t *testing.T, addr, user, why string) {
	t.Helper()
	if _, _, ack, err := connect5(t, addr, user); err == nil || ack == nil || ack.ReasonCode != 0x88 ||
		ack.Properties == nil || !strings.Contains(ack.Properties.ReasonString, why) {
		t.Errorf("MQTT 5 login at %s: %v %+v, want CONNACK 0x88 server unavailable, %s", addr, err, ack, why)
	}
	if _, _, code := connect311(t, addr, user); code != 3 {
		t.Errorf("MQTT 3.1.1 login at %s: return code %d, want 3 server unavailable", addr, code)
	}
}

// inbox records what an SDK client is given, in order.
type inbox struct {
	mu   sync.Mutex
	seqs []uint64
	text []string
}

func (b *inbox) add(m *sdk.Message) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seqs = append(b.seqs, m.Seq)
	b.text = append(b.text, m.Text())
}

func (b *inbox) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.text)
}

// A node cut off from the other two by a network split (its routes go
// through proxies that close them and refuse new ones) stops serving once
// that has lasted the lease TTL: its MQTT 5 device gets DISCONNECT 0x9C
// and its 3.1.1 device is disconnected, new logins are refused with
// CONNACK 0x88 / return code 3, /healthz is 503 "no quorum" and /cluster
// lists it "no quorum". An SDK client listing the cut node first moves to
// the majority and gets every message sent to it across the split, each
// once, in Seq order with no gap. The majority's devices stay connected
// and its nodes never count a quorum loss. Restored, the cut node serves
// again by itself, with a view that has applied everything the majority
// wrote meanwhile; drained by the operator while cut off, it stays
// drained until undrained.
func TestClusterQuorumLost(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	// Cut off the owner: the majority also has to take the data over.
	sc := startSplit(t, "bob", "carol", "dave", "erin", "frank", "gina")
	split, srvs, k, x, y, ttl := sc.split, sc.srvs, sc.k, sc.x, sc.y, sc.ttl

	// Devices on the node to cut off.
	_, gone5, _, err := connect5(t, srvs[k].Addr("tcp"), "carol")
	if err != nil {
		t.Fatalf("MQTT 5 login on node %d: %v", k, err)
	}
	_, lost311, code := connect311(t, srvs[k].Addr("tcp"), "dave")
	if code != 0 {
		t.Fatalf("MQTT 3.1.1 login on node %d: return code %d", k, code)
	}
	login := func(user string, addrs []string, got *inbox) *sdk.Client {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := sdk.Login(ctx, sdk.Options{
			Addrs: addrs, UserID: user, UserSig: userSig(t, user), DeviceID: "phone", Dir: t.TempDir(),
			RequestTimeout: 3 * time.Second, MinBackoff: 20 * time.Millisecond, MaxBackoff: 300 * time.Millisecond,
			Listeners: sdk.Listeners{OnNewMessage: got.add},
		})
		if err != nil {
			t.Fatalf("login %s: %v", user, err)
		}
		t.Cleanup(func() { c.Logout() })
		return c
	}
	erinGot := &inbox{}
	login("erin", []string{srvs[k].Addr("tcp"), srvs[x].Addr("tcp"), srvs[y].Addr("tcp")}, erinGot)
	// Devices on the majority.
	_, majority5, _, err := connect5(t, srvs[x].Addr("tcp"), "frank")
	if err != nil {
		t.Fatalf("MQTT 5 login on node %d: %v", x, err)
	}
	_, majority311, code := connect311(t, srvs[y].Addr("tcp"), "gina")
	if code != 0 {
		t.Fatalf("MQTT 3.1.1 login on node %d: return code %d", y, code)
	}
	bob := login("bob", []string{srvs[x].Addr("tcp")}, &inbox{})
	send := func(i int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := bob.SendText(ctx, "erin", fmt.Sprint("m", i)); err != nil {
			t.Fatalf("bob's send m%d: %v", i, err)
		}
	}
	const before, total = 3, 12
	for i := range before {
		send(i)
	}
	wait.For(t, 10*time.Second, 5*time.Millisecond, func() error {
		if n := erinGot.count(); n < before {
			return fmt.Errorf("erin got %d of %d messages before the split", n, before)
		}
		return nil
	})

	cut := time.Now()
	split.Isolate(k)
	// bob goes on sending to erin through the majority meanwhile.
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := before; i < total; i++ {
			send(i)
		}
	}()
	var took time.Duration
	select {
	case d := <-gone5:
		took = time.Since(cut)
		if d.ReasonCode != 0x9C {
			t.Errorf("MQTT 5 device's DISCONNECT: 0x%02x, want 0x9C use another server", d.ReasonCode)
		}
		if d.Properties == nil || !strings.Contains(d.Properties.ReasonString, "no quorum") {
			t.Errorf("MQTT 5 DISCONNECT reason %+v, want it to say no quorum", d.Properties)
		}
	case <-time.After(ttl + 20*time.Second):
		t.Fatalf("the MQTT 5 device on the cut-off node %d is still connected %v after the split", k, ttl+20*time.Second)
	}
	t.Logf("node %d cut off: its devices were disconnected %v after the split (lease TTL %v)", k, took.Round(time.Millisecond), ttl)
	select {
	case <-lost311:
	case <-time.After(5 * time.Second):
		t.Error("the MQTT 3.1.1 device on the cut-off node was not disconnected")
	}
	refused(t, srvs[k].Addr("tcp"), "carol", "no quorum")
	if code, body := get(t, srvs[k].HTTPAddr(), "/healthz"); code != 503 || !strings.Contains(body, `"reason":"no quorum`) {
		t.Errorf("/healthz on the cut-off node: %d %s, want 503 no quorum", code, body)
	}
	// It gives its lease up (its writer stopped at the lease's local
	// deadline already); the release cannot reach the lease bucket, and
	// waits out its renewal in flight.
	wait.For(t, ttl+5*time.Second, 10*time.Millisecond, func() error {
		if n := nodeState(t, srvs[k].HTTPAddr(), fmt.Sprint("n", k)); n.State != "no quorum" || len(n.Owned) != 0 || srvs[k].Store().Owns() {
			return fmt.Errorf("/cluster on the cut-off node: %+v, want no quorum, owning nothing", n)
		}
		return nil
	})
	_, body := get(t, srvs[k].HTTPAddr(), "/metrics")
	if v, _ := metric(body, "duet_cluster_quorum_lost_total"); v != 1 {
		t.Errorf("cut-off node: duet_cluster_quorum_lost_total %v, want 1", v)
	}
	if v, ok := metric(body, "duet_cluster_quorum"); !ok || v != 0 {
		t.Errorf("cut-off node: duet_cluster_quorum %v (%v), want 0", v, ok)
	}

	// erin's SDK moves to the majority and gets every message.
	<-sent
	wait.For(t, 30*time.Second, 10*time.Millisecond, func() error {
		if n := erinGot.count(); n < total {
			return fmt.Errorf("erin got %d of %d messages", n, total)
		}
		return nil
	})
	erinGot.mu.Lock()
	var want []string
	for i := range total {
		want = append(want, fmt.Sprint("m", i))
	}
	if !slices.Equal(erinGot.text, want) {
		t.Errorf("erin got %q, want %q", erinGot.text, want)
	}
	for i := 1; i < len(erinGot.seqs); i++ {
		if erinGot.seqs[i] != erinGot.seqs[i-1]+1 {
			t.Errorf("erin's Seqs %v: a gap or a repeat", erinGot.seqs)
			break
		}
	}
	erinGot.mu.Unlock()

	// The majority was not disrupted.
	majorityKept := func() {
		t.Helper()
		select {
		case d := <-majority5:
			t.Errorf("the majority's MQTT 5 device was disconnected: %+v", d)
		case <-majority311:
			t.Error("the majority's MQTT 3.1.1 device was disconnected")
		default:
		}
		for _, i := range []int{x, y} {
			quorumMetrics(t, srvs[i].HTTPAddr(), 0)
		}
	}
	majorityKept()
	for _, i := range []int{x, y} {
		if code, body := get(t, srvs[i].HTTPAddr(), "/healthz"); code != 200 {
			t.Errorf("/healthz on majority node %d: %d %s", i, code, body)
		}
	}

	// The operator drains the cut-off node meanwhile: draining and being
	// cut off are independent, and it stays drained once restored.
	drain(t, srvs[k].HTTPAddr(), "/cluster/drain")

	// Restored: the cut-off node reaches the quorum again once its view
	// has what the majority wrote.
	wrote := max(srvs[x].Store().Applied(), srvs[y].Store().Applied())
	healed := time.Now()
	split.Heal()
	wait.For(t, 60*time.Second, 10*time.Millisecond, func() error {
		_, body := get(t, srvs[k].HTTPAddr(), "/metrics")
		if v, _ := metric(body, "duet_cluster_quorum"); v != 1 {
			return fmt.Errorf("node %d: duet_cluster_quorum %v", k, v)
		}
		return nil
	})
	t.Logf("node %d reaches the quorum again %v after the split healed", k, time.Since(healed).Round(time.Millisecond))
	if got := srvs[k].Store().Applied(); got < wrote {
		t.Errorf("node %d serves with a view at %d, the majority wrote up to %d", k, got, wrote)
	}
	if code, body := get(t, srvs[k].HTTPAddr(), "/healthz"); code != 503 || !strings.Contains(body, `"reason":"draining"`) {
		t.Errorf("/healthz on the restored, drained node: %d %s, want 503 draining", code, body)
	}
	refused(t, srvs[k].Addr("tcp"), "carol", "draining")
	// Undrained, it serves.
	drain(t, srvs[k].HTTPAddr(), "/cluster/undrain")
	if code, body := get(t, srvs[k].HTTPAddr(), "/healthz"); code != 200 {
		t.Errorf("/healthz on the restored node: %d %s", code, body)
	}
	if _, _, _, err := connect5(t, srvs[k].Addr("tcp"), "carol"); err != nil {
		t.Errorf("MQTT 5 login on the restored node: %v", err)
	}
	if _, _, code := connect311(t, srvs[k].Addr("tcp"), "dave"); code != 0 {
		t.Errorf("MQTT 3.1.1 login on the restored node: return code %d", code)
	}
	if n := nodeState(t, srvs[k].HTTPAddr(), fmt.Sprint("n", k)); n.State != "serving" {
		t.Errorf("/cluster on the restored node: %+v, want serving", n)
	}
	quorumMetrics(t, srvs[k].HTTPAddr(), 1)
	// Writes through it reach the owner, and its view has the history.
	chat(t, []*server.Server{srvs[k]}, []string{"bob", "erin"}, 100, 2)
	clustertest.Settle(t, srvs)
	sameViews(t, srvs, x, []string{"bob", "erin"})
	// The heal did not disrupt the majority's devices either.
	majorityKept()
}

// No false positive: when a node dies (its routes gone at once, as after
// SIGKILL, so it hands none of its Raft leaderships over), the two others
// keep their devices and serve on, through the Raft elections and the
// takeover its death sets off, and never count a quorum loss.
func TestClusterQuorumKept(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	sc := startSplit(t, "alice", "bob", "carol", "dave")
	split, srvs, k, x, y, ttl := sc.split, sc.srvs, sc.k, sc.x, sc.y, sc.ttl
	_, gone5, _, err := connect5(t, srvs[x].Addr("tcp"), "carol")
	if err != nil {
		t.Fatal(err)
	}
	_, lost311, code := connect311(t, srvs[y].Addr("tcp"), "dave")
	if code != 0 {
		t.Fatalf("MQTT 3.1.1 login: return code %d", code)
	}

	killed := time.Now()
	split.Isolate(k)
	srvs[k].Close()
	// Well past the point where a false positive would have fired (the
	// lease TTL), through the elections (4–9 s) and the takeover, the
	// devices stay.
	window := ttl + 10*time.Second
	wait.For(t, window+10*time.Second, 50*time.Millisecond, func() error {
		select {
		case d := <-gone5:
			t.Fatalf("node %d's MQTT 5 device was disconnected %v after node %d died: %+v", x, time.Since(killed), k, d)
		case <-lost311:
			t.Fatalf("node %d's MQTT 3.1.1 device was disconnected %v after node %d died", y, time.Since(killed), k)
		default:
		}
		if d := time.Since(killed); d < window {
			return fmt.Errorf("%v since the kill", d)
		}
		return nil
	})
	for _, i := range []int{x, y} {
		quorumMetrics(t, srvs[i].HTTPAddr(), 0)
	}
	chat(t, []*server.Server{srvs[x], srvs[y]}, []string{"alice", "bob"}, 0, 4)
	for _, i := range []int{x, y} {
		if code, body := get(t, srvs[i].HTTPAddr(), "/healthz"); code != 200 {
			t.Errorf("/healthz on node %d: %d %s", i, code, body)
		}
	}
}
