package main

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/cluster"
	"github.com/duet-im/duet/internal/clustertest"
	"github.com/duet-im/duet/internal/server"
	"github.com/duet-im/duet/internal/wait"
	"github.com/duet-im/duet/store"
)

// A single node's data seeds a new cluster of six partitions (docs/cluster.md
// §19, "From one node to a cluster"): `duet cluster seed` asks the node
// for the cluster's P and splits the store by the user each key belongs
// to. Every user's timeline, conversations, friends and history then read
// on every node as they read on the single node, and the next messages
// across partitions are delivered with the next Seqs.
func TestClusterSeedPartitions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	dir, single := startSingleNode(t)
	const P = 6
	// Three users of three partitions.
	users := clustertest.Users(3, P, func(p int) int { return p })
	cfg := Config{SDKAppID: clustertest.SDKAppID, Secret: clustertest.Secret}
	var list []any
	for _, u := range users {
		list = append(list, map[string]any{"UserID": u})
	}
	if r := restAdmin(t, cfg, single.HTTPAddr(), "im_open_login_svc/multiaccount_import", map[string]any{"AccountList": list}); r["ErrorCode"] != float64(0) {
		t.Fatalf("accounts: %v", r)
	}
	send := func(addr, from, to string, random int) {
		t.Helper()
		r := restAdmin(t, cfg, addr, "openim/sendmsg", map[string]any{
			"SyncOtherMachine": 1, "From_Account": from, "To_Account": to, "MsgRandom": random,
			"MsgBody": []any{map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": fmt.Sprint("m", random)}}},
		})
		if r["ErrorCode"] != float64(0) {
			t.Fatalf("sendmsg %s → %s: %v", from, to, r)
		}
	}
	for i := 1; i <= 3; i++ {
		for j, from := range users {
			send(single.HTTPAddr(), from, users[(j+1)%3], 10*i+j)
		}
	}
	if r := restAdmin(t, cfg, single.HTTPAddr(), "sns/friend_import", map[string]any{"From_Account": users[0],
		"AddFriendItem": []any{map[string]any{"To_Account": users[1], "AddSource": "AddSource_Type_Seed"}}}); r["ErrorCode"] != float64(0) {
		t.Fatalf("friend_import: %v", r)
	}
	// What every user's data reads as on the single node.
	type data struct {
		Timeline []store.Event
		Convs    []store.Conversation
		Friends  []store.FriendEntry
		History  map[string][]*store.Message
	}
	read := func(st *store.Store, u string) (data, error) {
		var d data
		var err error
		if d.Timeline, err = st.ReadTimeline(u, 0, 1000); err != nil {
			return d, err
		}
		if d.Convs, err = st.Conversations(u); err != nil {
			return d, err
		}
		if d.Friends, err = st.Friends(u); err != nil {
			return d, err
		}
		d.History = map[string][]*store.Message{}
		for _, peer := range users {
			if d.History[peer], _, err = st.History(store.HistoryQuery{A: u, B: peer, MaxTime: math.MaxInt32, Max: 1000}); err != nil {
				return d, err
			}
		}
		return d, nil
	}
	want := map[string]data{}
	for _, u := range users {
		var err error
		if want[u], err = read(single.Store(), u); err != nil || len(want[u].Timeline) < 6 {
			t.Fatalf("%s on the single node: %d events, %v", u, len(want[u].Timeline), err)
		}
	}
	if err := single.Close(); err != nil {
		t.Fatal(err)
	}
	// duet backup writes the same split for a cluster of P.
	file := filepath.Join(t.TempDir(), "six.tar")
	if out, errOut, code := duetRun(t, "backup", "--data", dir, "--out", file, "--partitions", fmt.Sprint(P)); code != 0 || !strings.Contains(out, "6 partition(s)") {
		t.Fatalf("duet backup --partitions %d: exit %d: %s %s", P, code, out, errOut)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	m, err := cluster.ReadBackup(f, cluster.BackupReader{})
	f.Close()
	if err != nil || m.Partitions != P || m.Source != "single node" {
		t.Fatalf("duet backup --partitions %d: %+v, %v", P, m, err)
	}

	cfgs := clustertest.Configs(t, 3)
	for i := range cfgs {
		cfgs[i].Cluster.Partitions, cfgs[i].Cluster.RebalanceDelay = P, time.Second
	}
	srvs := clustertest.New(t, cfgs)
	clustertest.StartAll(t, srvs)
	clustertest.WaitServing(t, srvs)
	out, errOut, code := duetRun(t, "cluster", "seed", "--from", dir, "--http", srvs[1].HTTPAddr())
	if code != 0 || !strings.Contains(out, fmt.Sprintf("partition %d restored", P-1)) {
		t.Fatalf("duet cluster seed: exit %d: %s %s", code, out, errOut)
	}
	wait.For(t, 20*time.Second, 20*time.Millisecond, func() error {
		for i, srv := range srvs {
			for _, u := range users {
				got, err := read(srv.Store(), u)
				if err != nil || !reflect.DeepEqual(got, want[u]) {
					return fmt.Errorf("node %d: %s's data after the seed: %d events, %d conversations, %d friends (%v); the single node's %d, %d, %d",
						i, u, len(got.Timeline), len(got.Convs), len(got.Friends), err, len(want[u].Timeline), len(want[u].Convs), len(want[u].Friends))
				}
			}
		}
		return nil
	})
	// The next messages, across partitions, land on both sides with the
	// next Seqs, on every node.
	send(srvs[2].HTTPAddr(), users[0], users[1], 1000)
	send(srvs[0].HTTPAddr(), users[2], users[0], 1001)
	wait.For(t, 20*time.Second, 20*time.Millisecond, func() error {
		for i, srv := range srvs {
			for j, u := range users {
				// users[0] sent one and got one; the others one each.
				more := uint64(1)
				if j == 0 {
					more = 2
				}
				if last, err := srv.Store().LastSeq(u); err != nil || last != uint64(len(want[u].Timeline))+more {
					return fmt.Errorf("node %d: %s's last Seq %d (%v), want %d", i, u, last, err, uint64(len(want[u].Timeline))+more)
				}
			}
		}
		return nil
	})
}

// startSingleNode starts a single node (no media) with its data in a new
// directory, for a seed: the test stops it.
func startSingleNode(t *testing.T) (string, *server.Server) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "single")
	single, err := server.New(server.Config{
		Data: dir, Secret: clustertest.Secret, SDKAppID: clustertest.SDKAppID, MQTT: "127.0.0.1:0", HTTP: "127.0.0.1:0",
		NoMedia: true, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := single.Start(); err != nil {
		single.Close()
		t.Fatal(err)
	}
	return dir, single
}
