package push_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/duet-im/duet/clients/sdk"
	"github.com/duet-im/duet/internal/clustertest"
	"github.com/duet-im/duet/internal/server"
	"github.com/duet-im/duet/internal/wait"
	"github.com/duet-im/duet/push"
	"github.com/duet-im/duet/store"
	"github.com/duet-im/duet/usersig"
)

// Offline push in cluster mode (docs/cluster.md §14.2, docs/push.md "In a
// cluster"): three nodes in this process (internal/clustertest), devices
// that are real MQTT clients (clients/sdk), and a local APNs endpoint that
// checks each request as Apple documents it (APNsFake). Devices and
// senders sit on nodes that do not own the data, so every command is
// forwarded and every answer comes from the views.

type pushCluster struct {
	t    *testing.T
	cfgs []server.Config
	srvs []*server.Server
	o    int // the owner's index
	apns *push.APNsFake
}

func startPushCluster(t *testing.T, grace time.Duration) *pushCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	c := &pushCluster{t: t, apns: push.NewAPNsFake(t)}
	c.cfgs = clustertest.Configs(t, 3)
	for i := range c.cfgs {
		c.cfgs[i].Push = push.Config{Grace: grace, RetryBase: 50 * time.Millisecond, APNs: c.apns.Config()}
		c.cfgs[i].PushHTTPClient = c.apns.Client()
	}
	c.srvs = clustertest.New(t, c.cfgs)
	clustertest.StartAll(t, c.srvs)
	c.o = clustertest.Owner(t, c.srvs)
	for _, u := range []string{"alice", "bob", "carol"} {
		if _, err := c.srvs[c.o].Store().ImportAccount(store.Account{UserID: u}); err != nil {
			t.Fatal(err)
		}
	}
	clustertest.Settle(t, c.srvs)
	return c
}

// other is the i-th node that does not own the data (i = 1, 2).
func (c *pushCluster) other(i int) int { return (c.o + i) % len(c.srvs) }

func (c *pushCluster) login(node int, user, device string) *sdk.Client {
	c.t.Helper()
	sig, err := usersig.Gen(clustertest.SDKAppID, clustertest.Secret, user, 3600, time.Now())
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl, err := sdk.Login(ctx, sdk.Options{Addr: c.srvs[node].Addr("tcp"), UserID: user, UserSig: sig, DeviceID: device,
		Dir: c.t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		c.t.Fatalf("%s on node %d: %v", user, node, err)
	}
	c.t.Cleanup(func() { cl.Logout() })
	return cl
}

// connected reports whether user's device is connected to any live node.
func (c *pushCluster) connected(user, device string) bool {
	for _, s := range c.srvs {
		if s != nil && s.Broker().Devices.Connected(user, user+":"+device) {
			return true
		}
	}
	return false
}

// offlineWithToken registers token for user's device from node and logs
// the device out.
func (c *pushCluster) offlineWithToken(node int, user, device, token string) {
	c.t.Helper()
	d := c.login(node, user, device)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.SetPushToken(ctx, "apns", token, ""); err != nil {
		c.t.Fatalf("%s set_token on node %d: %v", user, node, err)
	}
	d.Logout()
	wait.For(c.t, 10*time.Second, 5*time.Millisecond, func() error {
		if c.connected(user, device) {
			return fmt.Errorf("%s:%s still connected", user, device)
		}
		return nil
	})
}

func (c *pushCluster) send(from *sdk.Client, to, text string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := from.SendText(ctx, to, text); err != nil {
		c.t.Fatalf("send to %s: %v", to, err)
	}
}

// settled waits until the vendor has accepted at least n notifications and
// no node has a push queued — neither in memory nor in its view of the
// queue — then requires exactly n: a node that sent a copy would have
// shown by then.
func (c *pushCluster) settled(n int) []push.APNsPush {
	c.t.Helper()
	wait.For(c.t, 20*time.Second, 10*time.Millisecond, func() error {
		if got := len(c.apns.Received()); got < n {
			return fmt.Errorf("%d notifications, want %d", got, n)
		}
		for i, s := range c.srvs {
			if s == nil {
				continue
			}
			if p := s.Pusher().Pending(); p != 0 {
				return fmt.Errorf("node %d has %d pushes pending", i, p)
			}
			for part := range s.Store().Partitions() {
				if q, err := s.Store().Partition(part).QueuedPushes(0, 10); err != nil || len(q) != 0 {
					return fmt.Errorf("node %d's view of partition %d's queue: %d entries (%v)", i, part, len(q), err)
				}
			}
		}
		return nil
	})
	got := c.apns.Received()
	if len(got) != n {
		c.t.Fatalf("%d notifications, want exactly %d: %+v", len(got), n, got)
	}
	return got
}

// tokens waits until every live node's view lists want as user's tokens.
func (c *pushCluster) tokens(user string, want ...string) {
	c.t.Helper()
	wait.For(c.t, 10*time.Second, 5*time.Millisecond, func() error {
		for i, s := range c.srvs {
			if s == nil {
				continue
			}
			toks, err := s.Store().PushTokens(user)
			if err != nil {
				return err
			}
			var got []string
			for _, tk := range toks {
				got = append(got, tk.Token)
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				return fmt.Errorf("node %d lists %s's tokens %v, want %v", i, user, got, want)
			}
		}
		return nil
	})
}

func (c *pushCluster) rest(node int, command string, body any) map[string]any {
	c.t.Helper()
	sig, err := usersig.Gen(clustertest.SDKAppID, clustertest.Secret, "administrator", 3600, time.Now())
	if err != nil {
		c.t.Fatal(err)
	}
	b, _ := json.Marshal(body)
	url := fmt.Sprintf("http://%s/v4/%s?sdkappid=%d&identifier=administrator&usersig=%s&random=1&contenttype=json",
		c.srvs[node].HTTPAddr(), command, clustertest.SDKAppID, sig)
	resp, err := http.Post(url, "application/json", strings.NewReader(string(b)))
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		c.t.Fatal(err)
	}
	return m
}

var (
	bobToken   = strings.Repeat("b0", 32)
	carolToken = strings.Repeat("c0", 32)
	carolNew   = strings.Repeat("c1", 32)
)

// TestClusterPush: tokens registered and removed from devices on any node
// are every node's; a message sent on one node to a user whose device
// is offline is pushed once — by the owner, not once per node; a device
// connected to a node that does not own the data is not pushed; a dead
// token (410) and a kick remove tokens on every node.
func TestClusterPush(t *testing.T) {
	c := startPushCluster(t, 50*time.Millisecond)
	a, b := c.other(1), c.other(2)

	// Every node first learns that bob has no token (the store remembers
	// users without one); a registration forwarded from node a must undo
	// that everywhere.
	c.tokens("bob")
	c.offlineWithToken(a, "bob", "phone", bobToken)
	c.tokens("bob", bobToken)

	alice := c.login(b, "alice", "pc")
	c.send(alice, "bob", "hello 1")
	got := c.settled(1)
	if got[0].Token != bobToken || got[0].Title != "alice" || got[0].Body != "hello 1" {
		t.Fatalf("pushed %+v, want bob's token, alice, hello 1", got[0])
	}

	t.Run("online on another node", func(t *testing.T) {
		// bob's phone connects to node b, neither the owner nor the node it
		// registered on; carol, offline with a token, is the marker: her
		// message is planned after bob's, so once hers is sent and nothing
		// is pending, bob's was decided.
		c.offlineWithToken(a, "carol", "phone", carolToken)
		bob := c.login(b, "bob", "phone")
		wait.For(t, 10*time.Second, 5*time.Millisecond, func() error {
			if !c.connected("bob", "phone") {
				return fmt.Errorf("bob's phone is not connected yet")
			}
			return nil
		})
		c.send(alice, "bob", "hello 2")
		c.send(alice, "carol", "marker")
		got := c.settled(2)
		if got[1].Token != carolToken || got[1].Body != "marker" {
			t.Fatalf("pushed %+v; want only carol's marker after bob's first", got)
		}
		// delete_token, forwarded from node b, removes it on every node.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := bob.DeletePushToken(ctx); err != nil {
			t.Fatal(err)
		}
		c.tokens("bob")
	})

	t.Run("dead token", func(t *testing.T) {
		// Apple, "Handling notification responses from APNs": 410
		// Unregistered. The owner removes the token, and every node's view
		// loses it.
		c.apns.Dead(carolToken)
		c.send(alice, "carol", "to a dead token")
		wait.For(t, 20*time.Second, 10*time.Millisecond, func() error {
			if n := c.srvs[c.o].Pusher().Metrics().Vendor("apns").TokensRemoved(); n != 1 {
				return fmt.Errorf("%d tokens removed", n)
			}
			return nil
		})
		c.tokens("carol")
		c.settled(2)
	})

	t.Run("kick", func(t *testing.T) {
		// A kick sent to node b runs on the owner (forwarded), through the
		// pusher's Kicker: carol's tokens go on every node, and her device
		// on node a is disconnected.
		carol := c.login(a, "carol", "phone")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := carol.SetPushToken(ctx, "apns", carolNew, ""); err != nil {
			t.Fatal(err)
		}
		c.tokens("carol", carolNew)
		if !c.connected("carol", "phone") {
			t.Fatal("carol's phone is not connected")
		}
		if r := c.rest(b, "im_open_login_svc/kick", map[string]any{"UserID": "carol"}); r["ErrorCode"] != float64(0) {
			t.Fatalf("kick: %v", r)
		}
		c.tokens("carol")
		wait.For(t, 10*time.Second, 5*time.Millisecond, func() error {
			if c.connected("carol", "phone") {
				return fmt.Errorf("carol's phone still connected after the kick")
			}
			return nil
		})
	})
}

// TestClusterPushTakeover: a push in flight when its owner leaves is sent
// by the node that takes over (at least once: the vendor never answered
// the first attempt), and a node that starts again while it is queued
// does not send it too.
func TestClusterPushTakeover(t *testing.T) {
	c := startPushCluster(t, 20*time.Millisecond)
	a, b := c.other(1), c.other(2)
	c.offlineWithToken(a, "bob", "phone", bobToken)
	alice := c.login(b, "alice", "pc")

	c.apns.Hold()
	c.send(alice, "bob", "in flight")
	wait.For(t, 20*time.Second, 5*time.Millisecond, func() error {
		if c.apns.Arrived.Load() < 1 {
			return fmt.Errorf("the owner has not sent yet")
		}
		return nil
	})
	// Every view has the queued push.
	wait.For(t, 10*time.Second, 5*time.Millisecond, func() error {
		for i, s := range c.srvs {
			if q, err := s.Store().QueuedPushes(0, 10); err != nil || len(q) != 1 {
				return fmt.Errorf("node %d's view of the queue: %d entries (%v)", i, len(q), err)
			}
		}
		return nil
	})

	// The owner leaves with the request unanswered (its send is abandoned,
	// the push stays queued); one of the others takes over and sends it —
	// still held by the vendor.
	old := c.o
	c.srvs[old].Close()
	c.srvs[old] = nil
	c.o = []int{a, b}[clustertest.Owner(t, []*server.Server{c.srvs[a], c.srvs[b]})]
	wait.For(t, 20*time.Second, 5*time.Millisecond, func() error {
		if c.apns.Arrived.Load() < 2 {
			return fmt.Errorf("the new owner has not sent yet")
		}
		return nil
	})

	// The old node starts again (as a node that does not own the data)
	// with the push still in its view of the queue: it must not send it.
	srv, err := server.New(c.cfgs[old])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	c.srvs[old] = srv

	c.apns.Release()
	got := c.settled(1)
	if got[0].Token != bobToken || got[0].Body != "in flight" {
		t.Fatalf("pushed %+v", got)
	}
	if c.srvs[old].Store().Owns() {
		t.Fatal("the restarted node owns the data")
	}
}

// TestClusterPushAcknowledgedElsewhere: a push waiting out its grace is
// dropped when the device, meanwhile, connected to another node, received
// the message and left again: the owner reads the device's cursor from the
// cluster's (docs/cluster.md §13.2), not from its own devices.
func TestClusterPushAcknowledgedElsewhere(t *testing.T) {
	c := startPushCluster(t, 3*time.Second)
	a, b := c.other(1), c.other(2)
	c.offlineWithToken(a, "bob", "phone", bobToken)
	alice := c.login(a, "alice", "pc")
	c.send(alice, "bob", "read elsewhere")
	var due time.Time
	wait.For(t, 10*time.Second, 5*time.Millisecond, func() error {
		q, err := c.srvs[c.o].Store().QueuedPushes(0, 10)
		if err != nil || len(q) != 1 {
			return fmt.Errorf("%d queued (%v)", len(q), err)
		}
		var n push.Notification
		if err := json.Unmarshal(q[0].Data, &n); err != nil {
			return err
		}
		due = time.UnixMilli(n.Due)
		return nil
	})

	bob := c.login(b, "bob", "phone")
	// The SDK acknowledges what it stored, in batches: wait for node b to
	// have the acknowledgement, which it writes to the shared cursors when
	// the device leaves.
	wait.For(t, 10*time.Second, 5*time.Millisecond, func() error {
		if last, err := bob.LastSeq(); err != nil || last < 1 {
			return fmt.Errorf("bob's phone holds Seq %d (%v)", last, err)
		}
		if n := c.srvs[b].Broker().Devices.Metrics.Acked.Load(); n < 1 {
			return fmt.Errorf("node b has %d acknowledgements", n)
		}
		return nil
	})
	bob.Logout()
	wait.For(t, 10*time.Second, 5*time.Millisecond, func() error {
		if c.connected("bob", "phone") {
			return fmt.Errorf("bob's phone still connected")
		}
		if cur, _, err := c.srvs[c.o].Store().Cursor("bob", "bob:phone"); err != nil || cur < 1 {
			return fmt.Errorf("the owner reads bob's phone's cursor as %d (%v)", cur, err)
		}
		return nil
	})
	if time.Now().After(due) {
		t.Skipf("the device came and went in more than the grace period (%v): the cursor was not what decided", 3*time.Second)
	}
	m := c.srvs[c.o].Pusher().Metrics().Vendor("apns")
	wait.For(t, 20*time.Second, 10*time.Millisecond, func() error {
		if m.Cancelled() != 1 {
			return fmt.Errorf("%d cancelled", m.Cancelled())
		}
		return nil
	})
	c.settled(0)
}

// TestClusterPushRecallAfterTakeover: a notification the owner showed is
// taken back (a background update naming the message) when its message is
// recalled after another node took the data: what was shown travels with
// the data, not in the memory of the node that sent it.
func TestClusterPushRecallAfterTakeover(t *testing.T) {
	c := startPushCluster(t, 20*time.Millisecond)
	a, b := c.other(1), c.other(2)
	c.offlineWithToken(a, "bob", "phone", bobToken)
	alice := c.login(b, "alice", "pc")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	key, err := alice.SendText(ctx, "bob", "take this back")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.settled(1); got[0].Body != "take this back" || got[0].Background {
		t.Fatalf("pushed %+v", got)
	}
	// The owner leaves; one of the others takes the data.
	old := c.o
	c.srvs[old].Close()
	c.srvs[old] = nil
	c.o = []int{a, b}[clustertest.Owner(t, []*server.Server{c.srvs[a], c.srvs[b]})]

	if err := alice.Withdraw(ctx, "bob", key); err != nil {
		t.Fatalf("recall: %v", err)
	}
	got := c.settled(2)
	if !got[1].Background || got[1].Withdraw != key || got[1].Token != bobToken {
		t.Fatalf("after the recall the vendor got %+v; want a background update withdrawing %s", got[1], key)
	}
}
