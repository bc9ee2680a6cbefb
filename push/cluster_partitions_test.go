package push_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/cluster"
	"github.com/duet-im/duet/internal/clustertest"
	"github.com/duet-im/duet/internal/server"
	"github.com/duet-im/duet/internal/wait"
	"github.com/duet-im/duet/push"
	"github.com/duet-im/duet/store"
)

// TestClusterPushPartitions: offline push with several partitions
// (docs/cluster.md §14.2, §10.1). The recipient's push queue is in the
// recipient's partition and is worked by that partition's owner, not by
// the sender's: each message to an offline device is pushed once, by the
// owner of the recipient's partition; when that owner leaves, the node
// that takes the partition sends what was queued and not settled, and
// nothing twice; a recall takes back a notification the old owner showed
// (its record is in the recipient's partition) and one the new owner
// showed.
func TestClusterPushPartitions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	const P = 6
	c := &pushCluster{t: t, apns: push.NewAPNsFake(t)}
	c.cfgs = clustertest.Configs(t, 3)
	for i := range c.cfgs {
		c.cfgs[i].Push = push.Config{Grace: 20 * time.Millisecond, RetryBase: 50 * time.Millisecond, APNs: c.apns.Config()}
		c.cfgs[i].PushHTTPClient = c.apns.Client()
		c.cfgs[i].Cluster.Partitions, c.cfgs[i].Cluster.RebalanceDelay = P, time.Second
	}
	c.srvs = clustertest.New(t, c.cfgs)
	clustertest.StartAll(t, c.srvs)
	clustertest.WaitServing(t, c.srvs)
	owner := clustertest.Owners(t, c.srvs, P)

	// alice (the sender) and bob (the recipient) are in partitions of
	// different nodes x and y; the devices are on the third node z.
	users := clustertest.Users(2, P, func(p int) int { return owner[p] })
	alice, bob := users[0], users[1]
	x, y := owner[cluster.Partition(alice, P)], owner[cluster.Partition(bob, P)]
	z := 3 - x - y
	for _, u := range []string{alice, bob} {
		if _, err := c.srvs[owner[cluster.Partition(u, P)]].Store().ImportAccount(store.Account{UserID: u}); err != nil {
			t.Fatal(err)
		}
	}
	clustertest.Settle(t, c.srvs)
	c.offlineWithToken(z, bob, "phone", bobToken)
	c.tokens(bob, bobToken)
	al := c.login(z, alice, "pc")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	keys := map[string]string{} // body → MsgKey
	sendText := func(text string) {
		t.Helper()
		k, err := al.SendText(ctx, bob, text)
		if err != nil {
			t.Fatalf("send %q: %v", text, err)
		}
		keys[text] = k
	}
	for i := 1; i <= 3; i++ {
		sendText(fmt.Sprint("hello ", i))
	}
	got := c.settled(3)
	bodies(t, got, "hello 1", "hello 2", "hello 3")
	for _, g := range got {
		if g.Token != bobToken || g.Title != alice || g.Background {
			t.Fatalf("pushed %+v; want an alert from %s to bob's token", g, alice)
		}
	}
	// Sent by the owner of bob's partition, and by no other node.
	for i, s := range c.srvs {
		want := int64(0)
		if i == y {
			want = 3
		}
		if n := s.Pusher().Metrics().Vendor("apns").Sent(); n != want {
			t.Fatalf("node %d sent %d (x=%d, y=%d, z=%d); want %d", i, n, x, y, z, want)
		}
	}

	// Two pushes in flight (the vendor holds them unanswered) when the
	// owner of bob's partition leaves: the node that takes the partition
	// sends both again (at least once), and once each.
	c.apns.Hold()
	sendText("in flight 1")
	sendText("in flight 2")
	wait.For(t, 20*time.Second, 5*time.Millisecond, func() error {
		if n := c.apns.Arrived.Load(); n < 5 {
			return fmt.Errorf("%d requests arrived, want 5", n)
		}
		return nil
	})
	// Every view of bob's partition has them queued.
	wait.For(t, 10*time.Second, 5*time.Millisecond, func() error {
		for i, s := range c.srvs {
			if q, err := s.Store().Partition(cluster.Partition(bob, P)).QueuedPushes(0, 10); err != nil || len(q) != 2 {
				return fmt.Errorf("node %d's view of bob's queue: %d entries (%v)", i, len(q), err)
			}
		}
		return nil
	})
	left := time.Now()
	c.srvs[y].Close()
	c.srvs[y] = nil
	survivors := []*server.Server{c.srvs[x], c.srvs[z]}
	ny := []int{x, z}[clustertest.OwnerOf(t, survivors, cluster.Partition(bob, P))]
	wait.For(t, 30*time.Second, 5*time.Millisecond, func() error {
		if n := c.apns.Arrived.Load(); n < 7 {
			return fmt.Errorf("%d requests arrived, want 7: the new owner has not sent both", n)
		}
		return nil
	})
	t.Logf("owner of bob's partition: node %d, then node %d; its queue sent again %v after the owner left",
		y, ny, time.Since(left).Round(time.Millisecond))
	c.apns.Release()
	got = c.settled(5)
	bodies(t, got, "hello 1", "hello 2", "hello 3", "in flight 1", "in flight 2")
	if n := c.srvs[ny].Pusher().Metrics().Vendor("apns").Sent(); n != 2 {
		t.Fatalf("the new owner sent %d; want 2", n)
	}

	// Recalls: "hello 1" was shown by the node that left (the record is in
	// bob's partition), "in flight 1" by the new owner.
	for i, text := range []string{"hello 1", "in flight 1"} {
		if err := al.Withdraw(ctx, bob, keys[text]); err != nil {
			t.Fatalf("recall %q: %v", text, err)
		}
		got = c.settled(6 + i)
		if g := got[5+i]; !g.Background || g.Withdraw != keys[text] || g.Token != bobToken {
			t.Fatalf("after the recall of %q the vendor got %+v; want a background update withdrawing %s", text, g, keys[text])
		}
	}
}

// bodies requires the alerts of got to be want, each once, in any order.
func bodies(t *testing.T, got []push.APNsPush, want ...string) {
	t.Helper()
	var b []string
	for _, g := range got {
		if !g.Background {
			b = append(b, g.Body)
		}
	}
	slices.Sort(b)
	want = slices.Clone(want)
	slices.Sort(want)
	if !slices.Equal(b, want) {
		t.Fatalf("alerts %q; want %q, each once", b, want)
	}
}
