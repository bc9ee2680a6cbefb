package broker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/cluster"
	"github.com/duet-im/duet/internal/clustertest"
	srvpkg "github.com/duet-im/duet/internal/server"
	"github.com/duet-im/duet/internal/wait"
)

// With several partitions (docs/cluster.md §5, §11) users' data has
// several owners. alice and bob live in partitions owned by two different
// nodes, and their devices are on the other nodes: every send is
// forwarded to the sender's owner, commits there, and reaches the
// recipient's partition as an intent, which its owner runs once with the
// recipient's own Seqs. Every node's views end the same; a recipient's
// owner that leaves is replaced, and what it had not run is run by the
// next one.
func TestClusterPartitionsChat(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	const P = 6
	nodes := startCluster(t, 3, func(c *srvpkg.Config) {
		c.Cluster.Partitions, c.Cluster.RebalanceDelay = P, time.Second
		c.BlacklistErr = true
	})
	srvs := servers(nodes)
	clustertest.WaitServing(t, srvs)
	// Balanced (target ceil(6/3) = 2 each), every node owns some.
	owner := clustertest.Owners(t, srvs, P)
	// alice's partition is node X's, bob's node Y's; their devices are on
	// the third node Z and on X.
	users := clustertest.Users(2, P, func(p int) int { return owner[p] })
	alice, bob := users[0], users[1]
	x, y := owner[cluster.Partition(alice, P)], owner[cluster.Partition(bob, P)]
	z := 3 - x - y
	nodes[x].users(alice)
	nodes[y].users(bob)
	clustertest.Settle(t, srvs)

	da := nodes[z].connect(alice, connectOpts{})
	db := nodes[x].connect(bob, connectOpts{v5: true})
	da2 := nodes[y].connect(alice, connectOpts{clientID: alice + ":pad"})
	for _, d := range []*device{da, db, da2} {
		if last := d.syncComplete(); last != 0 {
			t.Fatalf("%s: sync_complete LastSeq %d before any message", d.user, last)
		}
	}
	const rounds = 5
	for i := 1; i <= rounds; i++ {
		if r := da.send(bob, i); r.num("Seq") != int64(2*i-1) {
			t.Fatalf("alice's send %d has her Seq %d, want %d", i, r.num("Seq"), 2*i-1)
		}
		if e := db.nextMsg(); e.num("Seq") != int64(2*i-1) || e.str("From_Account") != alice {
			t.Fatalf("bob got %v; want alice's message %d with his Seq %d", e, i, 2*i-1)
		}
		if e := da2.nextMsg(); e.str("To_Account") != bob || e.num("Seq") != int64(2*i-1) {
			t.Fatalf("alice's other device got %v; want her own message with her Seq", e)
		}
		db.send(alice, 100+i)
		if e := da.nextMsg(); e.str("From_Account") != bob || e.num("Seq") != int64(2*i) {
			t.Fatalf("alice got %v; want bob's reply with her Seq %d", e, 2*i)
		}
		da2.nextMsg()
	}
	sameTimelines(t, nodes, alice, bob)
	// Each side's partition holds its copy of every message, with that
	// side's own Seq; the unread count is bob's own.
	for i, n := range nodes {
		cv, err := n.store.GetConversation(bob, alice)
		if err != nil || cv == nil || cv.Unread != rounds {
			t.Fatalf("node %d: bob's conversation with alice %+v, %v; want %d unread", i, cv, err, rounds)
		}
	}

	// Relationships across partitions: alice asks, bob agrees; each side's
	// record ends in its own partition, on every node.
	relOK(t, da, "sns/friend_add", map[string]any{"AddFriendItem": []any{friendItem(bob)}})
	wait.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		for i, n := range nodes {
			if rs, err := n.store.FriendRequests(bob); err != nil || len(rs) != 1 || rs[0].From != alice {
				return fmt.Errorf("node %d: bob's requests %v, %v", i, rs, err)
			}
		}
		return nil
	})
	relOK(t, db, "sns/friend_response", map[string]any{"ResponseFriendItem": []any{
		map[string]any{"To_Account": alice, "ResponseAction": "Response_Action_AgreeAndAdd"}}})
	wait.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		for i, n := range nodes {
			for _, f := range [][2]string{{alice, bob}, {bob, alice}} {
				if rec, err := n.store.GetFriend(f[0], f[1]); err != nil || rec == nil {
					return fmt.Errorf("node %d: %s's friend %s: %v, %v", i, f[0], f[1], rec, err)
				}
			}
		}
		return nil
	})
	// bob blocks alice on his partition's owner: the owner of alice's,
	// which remembered bob's send policy from her sends, forgets it and
	// refuses her next ones (--blacklist-check-error: 20007).
	relOK(t, db, "sns/black_list_add", map[string]any{"To_Account": []string{alice}})
	wait.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		r, _ := da.request("openim/sendmsg", map[string]any{"To_Account": bob, "MsgRandom": 999,
			"MsgBody": []map[string]any{{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": "still there?"}}}})
		if r.num("ErrorCode") != 20007 {
			return fmt.Errorf("alice's send after bob blocked her: %v", r)
		}
		return nil
	})
	relOK(t, db, "sns/black_list_delete", map[string]any{"To_Account": []string{alice}})
	// Refused until alice's owner has forgotten the block.
	wait.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		r, _ := da.request("openim/sendmsg", map[string]any{"To_Account": bob, "MsgRandom": 1000,
			"MsgBody": []map[string]any{{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": "back"}}}})
		if r.str("ActionStatus") != "OK" {
			return fmt.Errorf("alice's send after bob unblocked her: %v", r)
		}
		return nil
	})
	if e := nextOf(db, "msg"); e.num("MsgRandom") != 1000 {
		t.Fatalf("bob got %v after unblocking alice", e)
	}

	// bob's owner leaves; another node takes his partition and runs what
	// alice's partition owes it from then on, without a gap.
	nodes[y].stop()
	da2.close()
	survivors := []*testServer{nodes[x], nodes[z]}
	clustertest.OwnerOf(t, servers(survivors), cluster.Partition(bob, P))
	last, err := nodes[x].store.LastSeq(bob)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		sendRetrying(t, da, bob, 2000+i)
		if e := nextOf(db, "msg"); e.num("Seq") != int64(last)+int64(i) || e.num("MsgRandom") != int64(2000+i) {
			t.Fatalf("after the handover bob got %v; want Seq %d", e, int(last)+i)
		}
	}
	sameTimelines(t, survivors, alice, bob)
}

// nextOf is d's next event named name; events of other names are skipped.
func nextOf(d *device, name string) event {
	d.t.Helper()
	for {
		if e := d.next(); e.str("Event") == name {
			return e
		}
	}
}
