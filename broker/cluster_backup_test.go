package broker_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/duet-im/duet/internal/cluster"
	"github.com/duet-im/duet/internal/clustertest"
	srvpkg "github.com/duet-im/duet/internal/server"
	"github.com/duet-im/duet/internal/wait"
)

// startClusterToGrow is startCluster of three nodes (adjust, when given,
// changes each one's settings) and grow, which starts a fourth with the
// same settings, its own name, data and route listener, and routes that
// name the running nodes and itself: a node added to the cluster.
func startClusterToGrow(t *testing.T, adjust func(*srvpkg.Config)) ([]*testServer, func() *testServer) {
	t.Helper()
	cfgs := clustertest.Configs(t, 3)
	for i := range cfgs {
		cfgs[i].Secret, cfgs[i].SDKAppID = testKey, testAppID
		if adjust != nil {
			adjust(&cfgs[i])
		}
	}
	extra := clustertest.Configs(t, 1)[0]
	n3 := cfgs[0]
	n3.Data, n3.Log = extra.Data, extra.Log.With("node", 3)
	n3.Cluster.Node, n3.Cluster.Listen = "n3", extra.Cluster.Listen
	n3.Cluster.Routes = append(append([]string(nil), cfgs[0].Cluster.Routes...), extra.Cluster.Routes...)
	srvs := clustertest.New(t, cfgs)
	clustertest.StartAll(t, srvs)
	var nodes []*testServer
	for i, srv := range srvs {
		nodes = append(nodes, clusterNode(t, cfgs[i].Data, srv))
	}
	return nodes, func() *testServer {
		added := clustertest.New(t, []srvpkg.Config{n3})[0]
		if err := added.Start(); err != nil {
			t.Fatal(err)
		}
		return clusterNode(t, n3.Data, added)
	}
}

// restoreObjects lists the restore objects in duet-snapshots.
func restoreObjects(t *testing.T, node *testServer) []string {
	t.Helper()
	js := node.srv.ClusterNode().JetStream()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	obs, err := js.ObjectStore(ctx, cluster.BucketSnapshots)
	if err != nil {
		t.Fatal(err)
	}
	infos, err := obs.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		t.Fatal(err)
	}
	var names []string
	for _, i := range infos {
		if strings.HasPrefix(i.Name, "restore-") {
			names = append(names, i.Name)
		}
	}
	return names
}

// metricOf is the value of one sample line ("name{labels}") of a node's
// /metrics, "" when it has none.
func metricOf(t *testing.T, node *testServer, sample string) string {
	t.Helper()
	resp, err := http.Get("http://" + node.srv.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			return v
		}
	}
	return ""
}

// backupOf takes a backup through node's GET /cluster/backup.
func backupOf(t *testing.T, node *testServer) []byte {
	t.Helper()
	resp, err := http.Get("http://" + node.srv.HTTPAddr() + "/cluster/backup")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /cluster/backup: %s %v %s", resp.Status, err, raw)
	}
	return raw
}

// restoreInto posts a backup to node's POST /cluster/restore.
func restoreInto(t *testing.T, node *testServer, backup []byte) (int, string) {
	t.Helper()
	resp, err := http.Post("http://"+node.srv.HTTPAddr()+"/cluster/restore", "application/x-tar", bytes.NewReader(backup))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

// tarFiles reads an archive's files in order.
func tarFiles(t *testing.T, b []byte) (names []string, data map[string][]byte) {
	t.Helper()
	data = map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names, data
		}
		if err != nil {
			t.Fatal(err)
		}
		raw, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		data[h.Name] = raw
	}
}

func tarOf(t *testing.T, names []string, data map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o600, Size: int64(len(data[n]))}); err != nil {
			t.Fatal(err)
		}
		tw.Write(data[n])
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// A cluster's backup, taken through one node's HTTP listener, restored
// into a new cluster: every node of it serves the same timelines,
// friends and conversation lists; a device resumes from its restored
// cursor (nothing replayed) and the next message continues the
// timeline's Seq. A restore is refused with a backup whose file does not
// match its digest, with another number of partitions, and into a
// cluster that holds data; both routes answer only loopback clients. The
// restored cluster's owner goes on snapshotting and trimming its log, and
// a node that joins after the restore builds the restored state.
func TestClusterBackupRestore(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two three-node clusters")
	}
	src := startCluster(t, 3)
	o := clustertest.Owner(t, servers(src))
	a, b := src[(o+1)%3], src[(o+2)%3]
	src[o].users("alice", "bob")
	clustertest.Settle(t, servers(src))
	alice := a.connect("alice", connectOpts{})
	bob := b.connect("bob", connectOpts{clientID: "bob:phone"})
	alice.drainToSync()
	bob.drainToSync()
	relOK(t, alice, "sns/friend_add", map[string]any{"AddFriendItem": []any{friendItem("bob")}})
	for i := 1; i <= 5; i++ {
		alice.send("bob", i)
		bob.nextMsg() // acknowledged: bob:phone's cursor moves
	}
	last, err := src[o].store.LastSeq("bob")
	if err != nil || last < 5 { // the friend request is on bob's timeline too
		t.Fatalf("bob's last Seq %d (%v), want 5 or more", last, err)
	}
	// The cursor is the cluster's (KV), as any node reads it.
	wait.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		if c, _, err := a.store.Cursor("bob", "bob:phone"); err != nil || c != last {
			return fmt.Errorf("bob:phone's cursor %d (%v), want %d", c, err, last)
		}
		return nil
	})
	alice.close()
	bob.close()
	clustertest.Settle(t, servers(src))
	backup := backupOf(t, a) // not the owner: any node's view is the log's

	names, files := tarFiles(t, backup)
	if strings.Join(names, ",") != "manifest.json,p00,cursors.jsonl" {
		t.Fatalf("backup files: %v", names)
	}
	var m cluster.Manifest
	if err := json.Unmarshal(files["manifest.json"], &m); err != nil || m.Partitions != 1 || m.Cluster != "test" || m.Parts[0].Seq < src[o].store.Applied() || m.Parts[0].Size != int64(len(files["p00"])) {
		t.Fatalf("manifest %+v (%v); owner applied %d", m, err, src[o].store.Applied())
	}
	if !strings.Contains(string(files["cursors.jsonl"]), `"device":"bob:phone"`) {
		t.Fatalf("cursors: %s", files["cursors.jsonl"])
	}

	dst, grow := startClusterToGrow(t, func(c *srvpkg.Config) { c.Cluster.SnapshotEntries = 10 })
	do := clustertest.Owner(t, servers(dst))
	x := dst[(do+1)%3]

	// Refused: a file that does not match the manifest (nothing is left
	// in the cluster), and another P.
	corrupt := map[string][]byte{}
	for k, v := range files {
		corrupt[k] = v
	}
	p00 := bytes.Clone(files["p00"])
	p00[len(p00)/2] ^= 0xff
	corrupt["p00"] = p00
	if code, body := restoreInto(t, x, tarOf(t, names, corrupt)); code != http.StatusUnprocessableEntity || !strings.Contains(body, "p00 has SHA-256") {
		t.Fatalf("a corrupt backup: %d %s", code, body)
	}
	twoP := map[string][]byte{"p00": files["p00"], "p01": files["p00"], "cursors.jsonl": files["cursors.jsonl"]}
	m2 := m
	m2.Partitions = 2
	m2.Parts = append([]cluster.BackupPart{}, m.Parts[0], m.Parts[0])
	m2.Parts[1].Partition, m2.Parts[1].Name = 1, "p01"
	twoP["manifest.json"], _ = json.Marshal(m2)
	if code, body := restoreInto(t, x, tarOf(t, []string{"manifest.json", "p00", "p01", "cursors.jsonl"}, twoP)); code != http.StatusConflict || !strings.Contains(body, "the backup has 2 partitions, this cluster 1") {
		t.Fatalf("a backup of two partitions: %d %s", code, body)
	}
	// Loopback only, as POST /cluster/remove.
	for _, r := range []*http.Request{
		httptest.NewRequest("GET", "/cluster/backup", nil),
		httptest.NewRequest("POST", "/cluster/restore", bytes.NewReader(backup)),
	} {
		r.RemoteAddr = "192.0.2.7:40000"
		rec := httptest.NewRecorder()
		x.srv.Handler().ServeHTTP(rec, r)
		if rec.Code != http.StatusNotFound {
			t.Fatalf("%s %s from a remote address: %d", r.Method, r.URL.Path, rec.Code)
		}
	}

	code, body := restoreInto(t, x, backup)
	var restored cluster.Restored
	if code != http.StatusOK || json.Unmarshal([]byte(body), &restored) != nil || len(restored.Partitions) != 1 || restored.Cursors == 0 {
		t.Fatalf("restore: %d %s", code, body)
	}
	if rp := restored.Partitions[0]; rp.BackupSeq != m.Parts[0].Seq || x.store.Applied() < rp.Seq {
		t.Fatalf("restored %+v; the backup's manifest %+v; the restoring node's view at %d", rp, m.Parts[0], x.store.Applied())
	}
	// A node that joins now replays the log, the restore entry included.
	dst = append(dst, grow())
	sameTimelines(t, dst, "alice", "bob")
	for i, n := range dst {
		for _, u := range []string{"alice", "bob"} {
			want, _ := a.store.ReadTimeline(u, 0, 1000)
			got, err := n.store.ReadTimeline(u, 0, 1000)
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("node %d: %s's timeline after the restore: %d events, the source's %d (%v)", i, u, len(got), len(want), err)
			}
			wf, _ := a.store.Friends(u)
			gf, _ := n.store.Friends(u)
			wc, _ := a.store.Conversations(u)
			gc, _ := n.store.Conversations(u)
			if !reflect.DeepEqual(gf, wf) || !reflect.DeepEqual(gc, wc) || len(gc) == 0 {
				t.Fatalf("node %d: %s's friends %v / conversations %v after the restore; the source's %v / %v", i, u, gf, gc, wf, wc)
			}
		}
	}
	// Into a cluster that holds data: refused.
	if code, body := restoreInto(t, dst[do], backup); code != http.StatusConflict || !strings.Contains(body, "a backup is restored only into a new, empty cluster") {
		t.Fatalf("a second restore: %d %s", code, body)
	}

	// bob:phone resumes from its restored cursor on any node: nothing is
	// replayed; alice's next message continues bob's timeline.
	do = clustertest.Owner(t, servers(dst))
	bob = dst[(do+2)%3].connect("bob", connectOpts{clientID: "bob:phone"})
	if got := bob.syncComplete(); got != int64(last) {
		t.Fatalf("bob:phone's sync_complete LastSeq %d, want %d with nothing replayed", got, last)
	}
	alice = dst[(do+1)%3].connect("alice", connectOpts{})
	alice.drainToSync()
	for i := 6; i <= 20; i++ {
		sendRetrying(t, alice, "bob", i)
		if e := bob.nextMsg(); e.num("Seq") != int64(last)+int64(i-5) || e.str("From_Account") != "alice" {
			t.Fatalf("bob got %v after the restore, want alice's message with Seq %d", e, int64(last)+int64(i-5))
		}
	}
	sameTimelines(t, dst, "alice", "bob")

	// The owner snapshots (every 10 entries here) and trims the log past
	// the restore entry; the next backup then deletes the restore object,
	// which no node needs any more. The restored state is in the backup.
	if objs := restoreObjects(t, x); len(objs) != 1 {
		t.Fatalf("restore objects after the restore: %v", objs)
	}
	wait.For(t, 30*time.Second, 50*time.Millisecond, func() error {
		if f, _ := strconv.ParseUint(metricOf(t, dst[do], `duet_cluster_log_first_sequence{partition="0"}`), 10, 64); f <= restored.Partitions[0].Seq {
			return fmt.Errorf("the log starts at %d, the restore entry is %d", f, restored.Partitions[0].Seq)
		}
		return nil
	})
	again := backupOf(t, x)
	if objs := restoreObjects(t, x); len(objs) != 0 {
		t.Fatalf("restore objects after the log was trimmed past the restore: %v", objs)
	}
	// The node that joined after the restore comes back with its view
	// wiped: the log no longer has the restore entry, so it rebuilds from
	// the owner's snapshot of the restored view.
	dst[3].srv.Close()
	if err := os.RemoveAll(filepath.Join(dst[3].dir, "store")); err != nil {
		t.Fatal(err)
	}
	dst[3] = grow()
	if n, _ := strconv.ParseFloat(metricOf(t, dst[3], `duet_cluster_rebuilds_total{partition="0"}`), 64); n < 1 {
		t.Fatalf("the node back with a wiped view reports %v rebuilds", n)
	}
	sameTimelines(t, dst, "alice", "bob")
	_, files2 := tarFiles(t, again)
	if len(files2["p00"]) <= len(files["p00"]) {
		t.Fatalf("a backup after 15 more messages is %d bytes, the first %d", len(files2["p00"]), len(files["p00"]))
	}
}
