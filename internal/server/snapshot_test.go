package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/clustertest"
	"github.com/duet-im/duet/internal/server"
	"github.com/duet-im/duet/internal/wait"
	"github.com/duet-im/duet/usersig"
)

// restAdmin runs one REST command as the App admin on a node and returns
// its reply; an ErrorCode other than 0 fails the test.
func restAdmin(t *testing.T, httpAddr, command string, body any) map[string]any {
	t.Helper()
	sig, err := usersig.Gen(clustertest.SDKAppID, clustertest.Secret, "administrator", 3600, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(body)
	u := fmt.Sprintf("http://%s/v4/%s?sdkappid=%d&identifier=administrator&usersig=%s&random=1&contenttype=json",
		httpAddr, command, clustertest.SDKAppID, url.QueryEscape(sig))
	resp, err := http.Post(u, "application/json", bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out["ErrorCode"] != float64(0) {
		t.Fatalf("%s through %s: %v %v", command, httpAddr, err, out)
	}
	return out
}

// chat sends n messages between users[i%len] and users[(i+1)%len] through
// the nodes in turn, numbered from first.
func chat(t *testing.T, srvs []*server.Server, users []string, first, n int) {
	t.Helper()
	for i := first; i < first+n; i++ {
		s := srvs[i%len(srvs)]
		if s == nil {
			s = srvs[(i+1)%len(srvs)]
		}
		restAdmin(t, s.HTTPAddr(), "openim/sendmsg", map[string]any{
			"SyncOtherMachine": 1, "From_Account": users[i%len(users)], "To_Account": users[(i+1)%len(users)],
			"MsgRandom": i + 1, "MsgBody": []any{map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": fmt.Sprint("m", i)}}},
		})
	}
}

// roam is the history of a–b as admin_getroammsg answers it on a node.
func roam(t *testing.T, s *server.Server, a, b string) []any {
	t.Helper()
	out := restAdmin(t, s.HTTPAddr(), "openim/admin_getroammsg", map[string]any{
		"Operator_Account": a, "Peer_Account": b, "MaxCnt": 100, "MinTime": 0, "MaxTime": time.Now().Unix() + 60,
	})
	list, _ := out["MsgList"].([]any)
	return list
}

// views fails unless every running node's view has the same timelines of
// users, and the same history of each pair, as node ref.
func sameViews(t *testing.T, srvs []*server.Server, ref int, users []string) {
	t.Helper()
	for _, u := range users {
		want, err := srvs[ref].Store().ReadTimeline(u, 0, 1000)
		if err != nil || len(want) == 0 {
			t.Fatalf("node %d: timeline of %s: %d events, %v", ref, u, len(want), err)
		}
		for i, s := range srvs {
			if s == nil || i == ref {
				continue
			}
			got, err := s.Store().ReadTimeline(u, 0, 1000)
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("node %d: timeline of %s differs from node %d's: %d events against %d (%v)", i, u, ref, len(got), len(want), err)
			}
		}
	}
	for i := range users {
		a, b := users[i], users[(i+1)%len(users)]
		want := roam(t, srvs[ref], a, b)
		if len(want) == 0 {
			t.Fatalf("node %d: no history of %s–%s", ref, a, b)
		}
		for j, s := range srvs {
			if s != nil && j != ref && !reflect.DeepEqual(roam(t, s, a, b), want) {
				t.Fatalf("node %d: history of %s–%s differs from node %d's", j, a, b, ref)
			}
		}
	}
}

// logFirst is a node's duet_cluster_log_first_sequence of partition 0.
func logFirst(t *testing.T, s *server.Server) float64 {
	t.Helper()
	_, body := get(t, s.HTTPAddr(), "/metrics")
	v, _ := metric(body, `duet_cluster_log_first_sequence{partition="0"}`)
	return v
}

func snapshotConfigs(t *testing.T) []server.Config {
	cfgs := clustertest.Configs(t, 3)
	for i := range cfgs {
		cfgs[i].Cluster.SnapshotEntries = 10
	}
	return cfgs
}

// With a small snapshot interval, the log's first sequence moves forward
// as users chat (the log is trimmed behind the owner's snapshots), every
// node shows the snapshot and the trimmed log in /metrics, and every
// node's view still holds the same timelines and histories.
func TestClusterSnapshotsTrimTheLog(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	srvs := clustertest.New(t, snapshotConfigs(t))
	clustertest.StartAll(t, srvs)
	o := clustertest.Owner(t, srvs)
	users := []string{"ann", "ben", "cat", "dan"}
	restImport(t, srvs[0].HTTPAddr(), users...)
	chat(t, srvs, users, 0, 40)

	wait.For(t, 30*time.Second, 100*time.Millisecond, func() error {
		for i, s := range srvs {
			_, body := get(t, s.HTTPAddr(), "/metrics")
			first, _ := metric(body, `duet_cluster_log_first_sequence{partition="0"}`)
			seq, _ := metric(body, `duet_cluster_snapshot_sequence{partition="0"}`)
			at, _ := metric(body, `duet_cluster_snapshot_timestamp_seconds{partition="0"}`)
			if first <= 10 || seq < first-1 || at < float64(time.Now().Add(-time.Minute).Unix()) {
				return fmt.Errorf("node %d: log first sequence %v, snapshot at %v written %v", i, first, seq, at)
			}
		}
		return nil
	})
	_, body := get(t, srvs[o].HTTPAddr(), "/metrics")
	if n, _ := metric(body, `duet_cluster_snapshots_total{partition="0"}`); n < 1 {
		t.Errorf("the owner reports %v snapshots written", n)
	}
	chat(t, srvs, users, 40, 8)
	clustertest.Settle(t, srvs)
	sameViews(t, srvs, o, users)
}

// A node whose data directory is wiped while it is down comes back after
// the log was trimmed past everything it had: it rebuilds its view from
// the snapshot before it serves, then replays the log after it, and
// answers for the messages sent before and while it was away.
func TestClusterWipedNodeRebuildsFromSnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	cfgs := snapshotConfigs(t)
	srvs := clustertest.New(t, cfgs)
	clustertest.StartAll(t, srvs)
	o := clustertest.Owner(t, srvs)
	users := []string{"ann", "ben", "cat", "dan"}
	restImport(t, srvs[o].HTTPAddr(), users...)
	chat(t, srvs, users, 0, 20)
	clustertest.Settle(t, srvs)

	k := (o + 1) % 3
	srvs[k].Close()
	srvs[k] = nil
	if err := os.RemoveAll(cfgs[k].Data); err != nil {
		t.Fatal(err)
	}
	up := []*server.Server{srvs[o], srvs[(o+2)%3]}
	chat(t, up, users, 20, 30)
	// Trimmed past all the node had (it had about 25 entries).
	wait.For(t, 30*time.Second, 100*time.Millisecond, func() error {
		if first := logFirst(t, srvs[o]); first <= 30 {
			return fmt.Errorf("log first sequence %v", first)
		}
		return nil
	})

	back := clustertest.New(t, cfgs[k:k+1])[0]
	if err := back.Start(); err != nil {
		t.Fatal(err)
	}
	srvs[k] = back
	_, body := get(t, back.HTTPAddr(), "/metrics")
	if n, _ := metric(body, `duet_cluster_rebuilds_total{partition="0"}`); n != 1 {
		t.Fatalf("the wiped node reports %v rebuilds; want 1", n)
	}
	if code, body := get(t, back.HTTPAddr(), "/healthz"); code != 200 {
		t.Fatalf("the rebuilt node's /healthz: %d %s", code, body)
	}
	clustertest.Settle(t, srvs)
	sameViews(t, srvs, o, users)
	// Every message, from before the node went away and from while it was
	// away, is in the history the rebuilt node serves.
	total := 0
	for i := range users {
		total += len(roam(t, back, users[i], users[(i+1)%len(users)]))
	}
	if total != 50 {
		t.Fatalf("the rebuilt node serves %d of the 50 messages", total)
	}
	// And it follows the log like the others.
	chat(t, srvs, users, 50, 4)
	clustertest.Settle(t, srvs)
	sameViews(t, srvs, o, users)
}
