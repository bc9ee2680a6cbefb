package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/cluster"
	"github.com/duet-im/duet/internal/clustertest"
	"github.com/duet-im/duet/internal/wait"
)

// A single node's data moves into a new cluster with `duet cluster seed`
// (docs/cluster.md §19, "From one node to a cluster"): refused while the
// single node runs; once it is stopped, `duet backup` writes its backup
// and `duet cluster seed` restores it through a cluster node. A real MQTT
// client then logs in on a cluster node and gets its history; a device
// the single node knew resumes from its cursor there, and the next
// message continues the timeline. Seeding a cluster that holds data is
// refused.
func TestClusterSeed(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	dir, single := startSingleNode(t)
	cfg := Config{SDKAppID: clustertest.SDKAppID, Secret: clustertest.Secret}
	if r := restAdmin(t, cfg, single.HTTPAddr(), "im_open_login_svc/multiaccount_import", map[string]any{"AccountList": []any{map[string]any{"UserID": "alice"}, map[string]any{"UserID": "bob"}}}); r["ErrorCode"] != float64(0) {
		t.Fatalf("accounts: %v", r)
	}
	const n = 6
	for i := 1; i <= n; i++ {
		r := restAdmin(t, cfg, single.HTTPAddr(), "openim/sendmsg", map[string]any{
			"SyncOtherMachine": 1, "From_Account": "alice", "To_Account": "bob", "MsgRandom": i,
			"MsgBody": []any{map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": fmt.Sprint("m", i)}}},
		})
		if r["ErrorCode"] != float64(0) {
			t.Fatalf("sendmsg: %v", r)
		}
	}
	phone, err := crashDevice(single.Addr("tcp"), clustertest.Secret, "bob", "phone", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := readTimeline(t, phone, "bob", false); len(got) != n+1 {
		t.Fatalf("bob:phone on the single node: %d events, want %d and sync_complete", len(got), n)
	}
	wait.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		if c, _, _ := single.Store().Cursor("bob", "bob:phone"); c != n {
			return fmt.Errorf("bob:phone's cursor %d, want %d", c, n)
		}
		return nil
	})
	phone.Disconnect(0)

	// The single node runs: refused, naming the directory's holder.
	for _, args := range [][]string{
		{"cluster", "seed", "--from", dir, "--http", "127.0.0.1:1"},
		{"backup", "--data", dir, "--out", filepath.Join(t.TempDir(), "b.tar")},
	} {
		if _, errOut, code := duetRun(t, args...); code == 0 || !strings.Contains(errOut, "in use by") || !strings.Contains(errOut, "stop it first") {
			t.Fatalf("duet %q with the single node running: exit %d, %s", args, code, errOut)
		}
	}
	if err := single.Close(); err != nil {
		t.Fatal(err)
	}

	// duet backup of the stopped node: a whole backup, of one partition.
	file := filepath.Join(t.TempDir(), "single.tar")
	if out, errOut, code := duetRun(t, "backup", "--data", dir, "--out", file); code != 0 || !strings.Contains(out, "backup of single node") {
		t.Fatalf("duet backup: exit %d: %s %s", code, out, errOut)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	m, err := cluster.ReadBackup(f, cluster.BackupReader{})
	f.Close()
	if err != nil || m.Partitions != 1 || m.Source != "single node" || m.Cursors.Size == 0 {
		t.Fatalf("the single node's backup: %+v, %v", m, err)
	}
	if _, err := os.Stat(file + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("%s.tmp left behind: %v", file, err)
	}

	srvs := clustertest.Start(t, 3)
	o := clustertest.Owner(t, srvs)
	// Through the owner: the restore entry fences the node's own tenure.
	node := srvs[o]
	out, errOut, code := duetRun(t, "cluster", "seed", "--from", dir, "--http", node.HTTPAddr())
	if code != 0 || !strings.Contains(out, "partition 0 restored") || !strings.Contains(out, "2 device cursors restored") {
		t.Fatalf("duet cluster seed: exit %d: %s %s", code, out, errOut)
	}
	clustertest.Settle(t, srvs)

	// A new device of alice on a node that does not own the data gets her
	// history (her copies of what she sent).
	o = clustertest.Owner(t, srvs)
	laptop, err := crashDevice(srvs[(o+2)%3].Addr("tcp"), clustertest.Secret, "alice", "laptop", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer laptop.Disconnect(0)
	evs := readTimeline(t, laptop, "alice", false)
	if len(evs) != n+1 || evs[n]["LastSeq"] != float64(n) {
		t.Fatalf("alice's new device on the cluster: %v", evs)
	}
	for i, e := range evs[:n] {
		if e["Seq"] != float64(i+1) || e["To_Account"] != "bob" {
			t.Fatalf("alice's event %d on the cluster: %v", i+1, e)
		}
	}
	// bob:phone resumes from its cursor: nothing replayed.
	phone, err = crashDevice(node.Addr("tcp"), clustertest.Secret, "bob", "phone", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer phone.Disconnect(0)
	events, err := subscribeTimeline(phone, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if got := readSubscribed(t, phone, events, "bob", false); len(got) != 1 || got[0]["LastSeq"] != float64(n) {
		t.Fatalf("bob:phone after the seed: %v, want sync_complete at %d alone", got, n)
	}
	if tok := laptop.Publish("im/alice/req/openim/sendmsg", 1, false, `{"To_Account":"bob","MsgRandom":99,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"after"}}]}`); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	select {
	case e := <-events:
		if e["Seq"] != float64(n+1) || e["From_Account"] != "alice" {
			t.Fatalf("bob got %v, want alice's message with Seq %d", e, n+1)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("bob got nothing after the seed")
	}

	// duet cluster backup of the seeded cluster; duet cluster restore of it
	// into the same cluster, which holds data now, is refused.
	file2 := filepath.Join(t.TempDir(), "cluster.tar")
	if out, errOut, code := duetRun(t, "cluster", "backup", "--http", node.HTTPAddr(), "--out", file2); code != 0 || !strings.Contains(out, "backup of cluster test") {
		t.Fatalf("duet cluster backup: exit %d: %s %s", code, out, errOut)
	}
	if f, err = os.Open(file2); err != nil {
		t.Fatal(err)
	}
	m2, err := cluster.ReadBackup(f, cluster.BackupReader{})
	f.Close()
	if err != nil || m2.Cluster != "test" || m2.Parts[0].Seq < srvs[o].Store().Applied()-1 {
		t.Fatalf("the cluster's backup: %+v, %v", m2, err)
	}
	if _, errOut, code := duetRun(t, "cluster", "restore", file2, "--http", node.HTTPAddr()); code == 0 || !strings.Contains(errOut, "new, empty cluster") {
		t.Fatalf("duet cluster restore into a cluster with data: exit %d, %s", code, errOut)
	}
	// A backup that fails leaves no file.
	single2 := filepath.Join(t.TempDir(), "none.tar")
	if _, _, code := duetRun(t, "cluster", "backup", "--http", "127.0.0.1:1", "--out", single2); code == 0 {
		t.Fatal("a backup from no node succeeded")
	}
	if _, err := os.Stat(single2); !os.IsNotExist(err) {
		t.Fatalf("a failed backup left %s: %v", single2, err)
	}

	// A cluster that holds data is not seeded again.
	if _, errOut, code := duetRun(t, "cluster", "seed", "--from", dir, "--http", node.HTTPAddr()); code == 0 || !strings.Contains(errOut, "409") || !strings.Contains(errOut, "new, empty cluster") {
		t.Fatalf("a second seed: exit %d, %s", code, errOut)
	}
}
