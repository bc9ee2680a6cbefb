package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/clustertest"
	"github.com/duet-im/duet/internal/server"
	"github.com/duet-im/duet/internal/wait"
	"github.com/duet-im/duet/usersig"
)

// get fetches path from an HTTP listener (host:port or a URL's origin).
func get(t *testing.T, base, path string) (int, string) {
	t.Helper()
	if !strings.HasPrefix(base, "http") {
		base = "http://" + base
	}
	resp, err := http.Get(base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// metric is the value of one sample line of /metrics ("name" or
// `name{labels}`), and whether it is there.
func metric(body, sample string) (float64, bool) {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

// A single node's /metrics has no cluster metrics and no /cluster page;
// its /healthz is ok as before.
func TestSingleNodeHasNoClusterState(t *testing.T) {
	srv, err := server.New(server.Config{
		Data: t.TempDir(), Secret: "server-test", MQTT: "127.0.0.1:0", HTTP: "127.0.0.1:0", SDKAppID: 1400000000,
		NoMedia: true, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	code, body := get(t, srv.HTTPAddr(), "/metrics")
	if code != 200 || !strings.Contains(body, "duet_store_commits_total") {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	if strings.Contains(body, "duet_cluster_") {
		t.Errorf("a single node exports cluster metrics:\n%s", body)
	}
	if code, body := get(t, srv.HTTPAddr(), "/healthz"); code != 200 || body != `{"status":"ok"}` {
		t.Errorf("/healthz: %d %s", code, body)
	}
	if code, _ := get(t, srv.HTTPAddr(), "/cluster"); code != http.StatusNotFound {
		t.Errorf("/cluster on a single node: %d, want 404", code)
	}
}

// restImport imports accounts through a node's REST API as the App admin.
func restImport(t *testing.T, httpAddr string, users ...string) {
	t.Helper()
	sig, err := usersig.Gen(clustertest.SDKAppID, clustertest.Secret, "administrator", 3600, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var accounts []map[string]string
	for _, u := range users {
		accounts = append(accounts, map[string]string{"UserID": u})
	}
	raw, _ := json.Marshal(map[string]any{"AccountList": accounts})
	u := fmt.Sprintf("http://%s/v4/im_open_login_svc/multiaccount_import?sdkappid=%d&identifier=administrator&usersig=%s&random=1&contenttype=json",
		httpAddr, clustertest.SDKAppID, url.QueryEscape(sig))
	resp, err := http.Post(u, "application/json", bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ ErrorCode int }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.ErrorCode != 0 {
		t.Fatalf("multiaccount_import through %s: %v %+v", httpAddr, err, out)
	}
}

// A cluster node's /healthz fails until it has joined and its view has
// caught up, then is ok; its /metrics and /cluster show who owns the
// partition, every node's view and the router's forwards; when the owner
// leaves, both show the new owner and two nodes.
func TestClusterStateIsVisible(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	srvs := clustertest.New(t, clustertest.Configs(t, 3))

	// Before Start: not joined. The handler is served by the test itself
	// (the node's own listener opens only once Start is done).
	early := httptest.NewServer(srvs[0].Handler())
	defer early.Close()
	code, body := get(t, early.URL, "/healthz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "joining") {
		t.Fatalf("/healthz before Start: %d %s, want 503 joining", code, body)
	}

	// While the nodes start, /healthz goes from 503 (joining, catching
	// up) to ok, never back.
	var (
		mu       sync.Mutex
		answers  []string
		starting atomic.Bool
	)
	starting.Store(true)
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for starting.Load() {
			resp, err := http.Get(early.URL + "/healthz")
			if err != nil {
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			mu.Lock()
			answers = append(answers, fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(b)))
			mu.Unlock()
			time.Sleep(time.Millisecond) // a sample a millisecond, not a busy loop beside the starting nodes
		}
	}()
	clustertest.StartAll(t, srvs)
	starting.Store(false)
	<-polled
	ok := false
	for _, a := range answers {
		switch {
		case strings.HasPrefix(a, "200 "):
			ok = true
		case ok:
			t.Errorf("/healthz failed again after it was ok: %q", answers)
		case !strings.Contains(a, "joining") && !strings.Contains(a, "catching up"):
			t.Errorf("/healthz while starting: %q, want joining or catching up", a)
		}
	}
	if len(answers) > 0 {
		t.Logf("/healthz while starting: %d answers, the first %q, the last %q", len(answers), answers[0], answers[len(answers)-1])
	}
	for i, s := range srvs {
		if code, body := get(t, s.HTTPAddr(), "/healthz"); code != 200 || body != `{"status":"ok"}` {
			t.Errorf("node %d /healthz after Start: %d %s", i, code, body)
		}
	}

	// A write through a node that does not own the data is forwarded.
	o := clustertest.Owner(t, srvs)
	fwd := (o + 1) % 3
	restImport(t, srvs[fwd].HTTPAddr(), "alice", "bob")
	last := srvs[o].Store().Applied()
	wait.For(t, 10*time.Second, 5*time.Millisecond, func() error {
		for i, s := range srvs {
			if got := s.Store().Applied(); got < last {
				return fmt.Errorf("node %d applied %d of %d", i, got, last)
			}
		}
		return nil
	})

	// Nodes learn of each other from heartbeats (duet-nodes, refreshed
	// every few seconds): wait until each counts all three.
	began := time.Now()
	wait.For(t, 20*time.Second, 20*time.Millisecond, func() error {
		for i, s := range srvs {
			_, body := get(t, s.HTTPAddr(), "/metrics")
			if v, _ := metric(body, "duet_cluster_nodes"); v != 3 {
				return fmt.Errorf("node %d: duet_cluster_nodes %v, want 3", i, v)
			}
		}
		return nil
	})
	t.Logf("every node counted three live nodes after %v", time.Since(began).Round(time.Millisecond))
	for i, s := range srvs {
		_, body := get(t, s.HTTPAddr(), "/metrics")
		want := map[string]func(float64) bool{
			`duet_cluster_partition_owned{partition="0"}`:   func(v float64) bool { return v == map[bool]float64{true: 1}[i == o] },
			`duet_cluster_apply_lag_entries{partition="0"}`: func(v float64) bool { return v == 0 },
			`duet_cluster_view_applied_sequence`:            func(v float64) bool { return v == float64(last) && last > 0 },
			`duet_cluster_nodes`:                            func(v float64) bool { return v == 3 },
			`duet_cluster_lease_changes_total`:              func(v float64) bool { return v >= 1 },
			`duet_cluster_forwarded_total`:                  func(v float64) bool { return (v >= 1) == (i == fwd) },
			`duet_cluster_served_total`:                     func(v float64) bool { return (v >= 1) == (i == o) },
			`duet_cluster_stale_reads_total`:                func(v float64) bool { return v >= 0 },
			`duet_cluster_no_owner_waits_total`:             func(v float64) bool { return v >= 0 },
		}
		for sample, check := range want {
			v, found := metric(body, sample)
			if !found {
				t.Errorf("node %d (owner %d, forwarder %d): /metrics has no %s", i, o, fwd, sample)
			} else if !check(v) {
				t.Errorf("node %d (owner %d, forwarder %d): %s %v", i, o, fwd, sample, v)
			}
		}
	}

	// /cluster on any node lists every node, the owner and each view.
	name := func(i int) string { return fmt.Sprint("n", i) }
	status := func(i int) server.ClusterStatus {
		t.Helper()
		code, body := get(t, srvs[i].HTTPAddr(), "/cluster")
		var cs server.ClusterStatus
		if err := json.Unmarshal([]byte(body), &cs); code != 200 || err != nil {
			t.Fatalf("/cluster on node %d: %d %v\n%s", i, code, err, body)
		}
		return cs
	}
	cs := status(fwd)
	if cs.Cluster != "test" || cs.Node != name(fwd) || cs.Partitions != 1 || cs.Replicas != 3 || cs.Sync != "always" {
		t.Errorf("/cluster header: %+v", cs)
	}
	if len(cs.Owners) != 1 || cs.Owners[0].Owner != name(o) {
		t.Errorf("/cluster owners %+v, want partition 0 owned by %s", cs.Owners, name(o))
	}
	if len(cs.Nodes) != 3 {
		t.Fatalf("/cluster nodes: %+v, want 3", cs.Nodes)
	}
	for i, n := range cs.Nodes {
		wantOwned := []int{}
		if i == o {
			wantOwned = []int{0}
		}
		if n.Node != name(i) || n.State != "serving" || n.Reason != "" || n.Applied != last ||
			fmt.Sprint(n.Owned) != fmt.Sprint(wantOwned) || fmt.Sprint(n.Lag) != "[0]" || fmt.Sprint(n.Views) != fmt.Sprintf("[%d]", last) {
			t.Errorf("/cluster node %d: %+v, want %s serving, applied %d, owning %v, lag [0], views [%d]", i, n, name(i), last, wantOwned, last)
		}
	}

	// The owner leaves; the survivors see two nodes and a new owner.
	srvs[o].Close()
	rest := []int{(o + 1) % 3, (o + 2) % 3}
	wait.For(t, 20*time.Second, 20*time.Millisecond, func() error {
		cs := status(rest[0])
		if len(cs.Nodes) != 2 || len(cs.Owners) != 1 || (cs.Owners[0].Owner != name(rest[0]) && cs.Owners[0].Owner != name(rest[1])) {
			return fmt.Errorf("/cluster after the owner left: nodes %+v owners %+v", cs.Nodes, cs.Owners)
		}
		_, body := get(t, srvs[rest[0]].HTTPAddr(), "/metrics")
		if v, _ := metric(body, "duet_cluster_nodes"); v != 2 {
			return fmt.Errorf("duet_cluster_nodes %v, want 2", v)
		}
		return nil
	})
}
