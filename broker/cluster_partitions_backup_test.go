package broker_test

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/cluster"
	"github.com/duet-im/duet/internal/clustertest"
	srvpkg "github.com/duet-im/duet/internal/server"
	"github.com/duet-im/duet/internal/wait"
	"github.com/duet-im/duet/store"
)

// sameUserData fails unless every user's timeline, conversations,
// friends and history with each other user read the same on every node of
// got as on node want.
func sameUserData(t *testing.T, want *testServer, got []*testServer, users ...string) {
	t.Helper()
	wait.For(t, 20*time.Second, 20*time.Millisecond, func() error {
		for i, n := range got {
			for _, u := range users {
				wt, _ := want.store.ReadTimeline(u, 0, 10000)
				gt, err := n.store.ReadTimeline(u, 0, 10000)
				if err != nil || !reflect.DeepEqual(gt, wt) || len(gt) == 0 {
					return fmt.Errorf("node %d: %s's timeline has %d events, the source's %d (%v)", i, u, len(gt), len(wt), err)
				}
				wc, _ := want.store.Conversations(u)
				gc, err := n.store.Conversations(u)
				if err != nil || !reflect.DeepEqual(gc, wc) || len(gc) == 0 {
					return fmt.Errorf("node %d: %s's conversations %+v (%v), the source's %+v", i, u, gc, err, wc)
				}
				wf, _ := want.store.Friends(u)
				gf, err := n.store.Friends(u)
				if err != nil || !reflect.DeepEqual(gf, wf) {
					return fmt.Errorf("node %d: %s's friends %+v (%v), the source's %+v", i, u, gf, err, wf)
				}
				for _, peer := range users {
					if peer == u {
						continue
					}
					q := store.HistoryQuery{A: u, B: peer, MaxTime: math.MaxInt32, Max: 1000}
					wh, _, _ := want.store.History(q)
					gh, _, err := n.store.History(q)
					if err != nil || !reflect.DeepEqual(gh, wh) {
						return fmt.Errorf("node %d: %s's history with %s has %d messages (%v), the source's %d", i, u, peer, len(gh), err, len(wh))
					}
				}
			}
		}
		return nil
	})
}

// A backup of a cluster of six partitions, whose users chat across
// partitions (each send an intent of the sender's partition for the
// recipient's), restored into a new cluster of six: every user's
// timeline, conversations, friends and history there are the source's,
// and messages sent after the restore across partitions are delivered.
// That last part needs the restored logs to continue numbering above the
// inbox marks other partitions hold for them (docs/cluster.md §19, "The
// numbering rule"): a log numbered from its new cluster's start would
// have its intents skipped by a recipient partition whose mark is
// higher.
func TestClusterPartitionsBackupRestore(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two three-node clusters")
	}
	const P = 6
	six := func(c *srvpkg.Config) {
		c.Cluster.Partitions, c.Cluster.RebalanceDelay = P, time.Second
	}
	src := startCluster(t, 3, six)
	clustertest.Owners(t, servers(src), P)
	// Three users in three partitions.
	users := clustertest.Users(3, P, func(p int) int { return p })
	alice, bob, carol := users[0], users[1], users[2]
	for _, u := range users {
		// On the partition's owner at the time (balance may still move it).
		wait.For(t, 20*time.Second, 20*time.Millisecond, func() error {
			for _, n := range src {
				if n.store.Partition(cluster.Partition(u, P)).Owns() {
					_, err := n.store.ImportAccount(store.Account{UserID: u})
					return err
				}
			}
			return fmt.Errorf("%s's partition has no owner", u)
		})
	}
	clustertest.Settle(t, servers(src))
	da := src[0].connect(alice, connectOpts{})
	db := src[1].connect(bob, connectOpts{clientID: bob + ":phone"})
	dc := src[2].connect(carol, connectOpts{})
	for _, d := range []*device{da, db, dc} {
		d.drainToSync()
	}
	relOK(t, da, "sns/friend_add", map[string]any{"AddFriendItem": []any{friendItem(bob)}})
	nextOf(db, "friend_request")
	for i := 1; i <= 5; i++ {
		da.send(bob, i)
		nextOf(db, "msg")
		db.send(alice, 100+i)
		nextOf(da, "msg")
		dc.send(alice, 200+i)
		nextOf(da, "msg")
		da.send(carol, 300+i)
		nextOf(dc, "msg")
	}
	for _, d := range []*device{da, db, dc} {
		d.close()
	}
	clustertest.Settle(t, servers(src))
	sameTimelines(t, src, users...)
	backup := backupOf(t, src[1])
	names, files := tarFiles(t, backup)
	if len(names) != P+2 {
		t.Fatalf("backup files: %v", names)
	}
	var m cluster.Manifest
	if err := json.Unmarshal(files["manifest.json"], &m); err != nil || m.Partitions != P || len(m.Parts) != P {
		t.Fatalf("manifest %s (%v)", files["manifest.json"], err)
	}
	// bob's partition ran alice's intents: its mark for hers is in the
	// manifest, as far as her log's entries go.
	pa, pb := cluster.Partition(alice, P), cluster.Partition(bob, P)
	if mark := m.Parts[pb].Inbox[pa]; mark == 0 || mark > m.Parts[pa].Seq {
		t.Fatalf("manifest: partition %d's inbox mark for %d is %d (its log at %d): %s", pb, pa, mark, m.Parts[pa].Seq, files["manifest.json"])
	}
	lastBob, _ := src[0].store.LastSeq(bob)
	lastAlice, _ := src[0].store.LastSeq(alice)

	dst := startCluster(t, 3, six)
	clustertest.Owners(t, servers(dst), P)
	code, body := restoreInto(t, dst[2], backup)
	var restored cluster.Restored
	if code != http.StatusOK || json.Unmarshal([]byte(body), &restored) != nil || len(restored.Partitions) != P {
		t.Fatalf("restore: %d %s", code, body)
	}
	for _, rp := range restored.Partitions {
		// The numbering rule: above the partition's own snapshot and every
		// other partition's mark for it.
		need := m.Parts[rp.Partition].Seq
		for _, part := range m.Parts {
			need = max(need, part.Inbox[rp.Partition])
		}
		if rp.Seq <= need {
			t.Fatalf("partition %d restored at %d; the backup needs its log above %d", rp.Partition, rp.Seq, need)
		}
	}
	sameUserData(t, src[0], dst, users...)

	// After the restore: messages across partitions, every way, are
	// delivered, each with the recipient's next Seq.
	clustertest.Owners(t, servers(dst), P)
	da = dst[0].connect(alice, connectOpts{})
	db = dst[1].connect(bob, connectOpts{clientID: bob + ":phone"})
	dc = dst[2].connect(carol, connectOpts{})
	for _, d := range []*device{da, db, dc} {
		d.drainToSync()
	}
	for i := 1; i <= 3; i++ {
		sendRetrying(t, da, bob, 1000+i)
		if e := nextOf(db, "msg"); e.num("MsgRandom") != int64(1000+i) || e.num("Seq") != int64(lastBob)+int64(i) {
			t.Fatalf("after the restore bob got %v; want alice's message %d with Seq %d", e, 1000+i, int(lastBob)+i)
		}
		sendRetrying(t, dc, alice, 2000+i)
		if e := nextOf(da, "msg"); e.num("MsgRandom") != int64(2000+i) {
			t.Fatalf("after the restore alice got %v; want carol's message %d", e, 2000+i)
		}
	}
	sameTimelines(t, dst, users...)
	// alice sent three and got three: on every node, her Seqs continue.
	for i, n := range dst {
		if got, _ := n.store.LastSeq(alice); got != lastAlice+6 {
			t.Fatalf("node %d: alice's last Seq after the restore %d, want %d", i, got, lastAlice+6)
		}
	}
}
