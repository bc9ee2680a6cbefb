package cluster

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/internal/wait"
	"github.com/duet-im/duet/store"
)

// runNATS starts a plain nats-server on a loopback port and connects to it
// twice (two nodes' connections).
func runNATS(t *testing.T) (a, b *nats.Conn) {
	t.Helper()
	s, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(s.Shutdown)
	conn := func() *nats.Conn {
		nc, err := nats.Connect(s.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	return conn(), conn()
}

// ownedStore is a single node's store whose ownership the test decides.
type ownedStore struct {
	*store.Store
	owns atomic.Bool
}

func (o *ownedStore) Owns() bool { return o.owns.Load() }

func newService(t *testing.T) (*command.Service, *ownedStore) {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return command.New(command.DefaultConfig(), st, nil), &ownedStore{Store: st}
}

// A command sent to a node that does not own the data runs on the owner,
// and its client gets the reply byte for byte as the owner would have
// given it: results, errors with their code and ErrorInfo, and
// batchsendmsg's partial status.
func TestForwardedReplies(t *testing.T) {
	ncA, ncB := runNATS(t)
	svcA, viewA := newService(t)
	viewA.owns.Store(true)
	owner := NewRouter(ncA, "a", svcA, viewA, 0, nil)
	if err := owner.Serve(); err != nil {
		t.Fatal(err)
	}
	_, viewB := newService(t) // never runs anything: B owns nothing
	remote := NewRouter(ncB, "b", failingExecutor{t}, viewB, 0, nil)
	remote.Owner = func() string { return "a" }

	admin := &command.Caller{UserID: "administrator", Admin: true, Transport: command.REST}
	for _, u := range []string{"alice", "bob"} {
		if r := remote.Exec(context.Background(), admin, "im_open_login_svc/account_import", fmt.Appendf(nil, `{"UserID":%q,"Nick":"<%s> & co"}`, u, u)); r.Err != nil {
			t.Fatalf("import %s through the remote node: %v", u, r.Err)
		}
	}
	cases := []struct {
		caller *command.Caller
		name   string
		body   string
	}{
		{admin, "im_open_login_svc/account_check", `{"CheckItem":[{"UserID":"alice"},{"UserID":"nobody"}]}`},
		{admin, "profile/portrait_get", `{"To_Account":["alice"],"TagList":["Tag_Profile_IM_Nick"]}`},
		{admin, "openim/sendmsg", `{"From_Account":"alice","To_Account":"bob","MsgRandom":7,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"<b>hi</b>"}}]}`},
		{admin, "openim/sendmsg", `{"From_Account":"alice","To_Account":"bob","MsgRandom":"x"}`},
		{admin, "openim/batchsendmsg", `{"From_Account":"alice","To_Account":["bob","nobody"],"MsgRandom":8,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]}`},
		{&command.Caller{UserID: "alice", Device: "phone"}, "openim/admin_getroammsg", `{"From_Account":"alice","To_Account":"bob","MaxCnt":10,"MinTime":0,"MaxTime":4000000000,"ReqId":"q1"}`},
		{&command.Caller{UserID: "alice", Device: "phone"}, "openim/sendmsg", `{"To_Account":"bob","MsgRandom":9,"ReqId":17,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]}`},
		{&command.Caller{UserID: "alice", Device: "phone"}, "openim/sendmsg", `{"To_Account":"bob","MsgRandom":"9","ReqId":"bad"}`},
		{admin, "no/such_command", `{}`},
		{admin, "openim/sendmsg", "\xff"},
	}
	for _, c := range cases {
		viewA.owns.Store(true)
		gotReply := remote.Exec(context.Background(), c.caller, c.name, []byte(c.body))
		wantReply := svcA.Exec(context.Background(), c.caller, c.name, []byte(c.body))
		got, want := gotReply.Encode("ReqId", gotReply.ReqID), wantReply.Encode("ReqId", wantReply.ReqID)
		// (A send's local run is a resend of the same MsgRandom: its reply
		// repeats the first run's MsgKey and MsgTime.)
		if string(got) != string(want) {
			t.Errorf("%s %s:\nforwarded %s\nlocal     %s", c.name, c.body, got, want)
		}
	}
	if n := owner.Served.Load(); n < int64(len(cases)) {
		t.Fatalf("the owner served %d commands", n)
	}
}

// failingExecutor is the executor of a node that must not run commands.
type failingExecutor struct{ t *testing.T }

func (f failingExecutor) Exec(_ context.Context, _ *command.Caller, name string, _ []byte) command.Reply {
	f.t.Errorf("%s ran on a node that does not own the data", name)
	return command.Reply{}
}

// A node that has lost ownership does not run what is sent to it: the
// requester retries until the new owner serves, and the command runs once.
func TestForwardWaitsForAnOwner(t *testing.T) {
	ncA, ncB := runNATS(t)
	var runs atomic.Int64
	counting := executorFunc(func(ctx context.Context, c *command.Caller, name string, body []byte) command.Reply {
		runs.Add(1)
		return command.Reply{Result: map[string]int{"Runs": int(runs.Load())}}
	})
	_, viewA := newService(t)
	_, viewB := newService(t)
	old := NewRouter(ncA, "a", counting, viewA, 0, nil) // deposed: subscribed, no longer owns
	if err := old.Serve(); err != nil {
		t.Fatal(err)
	}
	remote := NewRouter(ncB, "b", failingExecutor{t}, viewB, 0, nil)
	remote.Owner = func() string { return "a" }

	done := make(chan command.Reply)
	go func() { done <- remote.Exec(context.Background(), &command.Caller{UserID: "u"}, "x/y", []byte(`{}`)) }()
	wait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if remote.NoOwnerWait.Load() == 0 {
			return fmt.Errorf("the requester has not met the deposed owner yet")
		}
		return nil
	})
	old.Stop()
	viewA.owns.Store(true) // the new owner (same node, for the test) takes over
	if err := old.Serve(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.Err != nil || runs.Load() != 1 {
		t.Fatalf("reply %+v after %d runs; want one run", r, runs.Load())
	}
	if got := string(r.Encode()); got != `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","Runs":1}` {
		t.Fatalf("reply %s", got)
	}
}

// A request goes to the node that holds the lease, and to no other: a
// deposed owner that is paused (SIGSTOP) still has its subscription, and a
// request sent to it would wait for the forward timeout (found by
// TestClusterFencing, when requests went to a queue group of both).
func TestForwardGoesToTheLeaseHolder(t *testing.T) {
	ncA, ncB := runNATS(t)
	paused, err := ncA.SubscribeSync(CommandSubject(0) + ".a") // never answers
	if err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int64
	counting := executorFunc(func(ctx context.Context, c *command.Caller, name string, body []byte) command.Reply {
		runs.Add(1)
		return command.Reply{Result: map[string]int{"Runs": 1}}
	})
	_, viewOwner := newService(t)
	viewOwner.owns.Store(true)
	owner := NewRouter(ncA, "c", counting, viewOwner, 0, nil)
	if err := owner.Serve(); err != nil {
		t.Fatal(err)
	}
	_, viewB := newService(t)
	remote := NewRouter(ncB, "b", failingExecutor{t}, viewB, 0, nil)
	remote.Owner = func() string { return "c" }
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r := remote.Exec(ctx, &command.Caller{UserID: "u"}, "x/y", []byte(`{}`))
		cancel()
		if r.Err != nil {
			t.Fatalf("request %d: %v", i, r.Err)
		}
	}
	if n, _, _ := paused.Pending(); n != 0 || runs.Load() != 20 {
		t.Fatalf("the paused ex-owner got %d requests, the owner ran %d of 20", n, runs.Load())
	}
}

type executorFunc func(ctx context.Context, c *command.Caller, name string, body []byte) command.Reply

func (f executorFunc) Exec(ctx context.Context, c *command.Caller, name string, body []byte) command.Reply {
	return f(ctx, c, name, body)
}

// recordingDevices is one node's broker as far as broadcasts go.
type recordingDevices struct {
	mu     sync.Mutex
	live   []string
	kicked []string
	online map[string]int
}

func (r *recordingDevices) Live(user string, payload []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.live = append(r.live, user+":"+string(payload))
}
func (r *recordingDevices) Resync(string, string, uint64, func(uint64)) error { return nil }
func (r *recordingDevices) Kick(user string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.kicked = append(r.kicked, user)
}
func (r *recordingDevices) Online(user string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.online[user]
}
func (r *recordingDevices) Connected(user, client string) bool { return r.Online(user) > 0 }

// Live events and kicks reach the devices of every node; presence counts
// the devices of every node.
func TestBroadcastDevices(t *testing.T) {
	ncA, ncB := runNATS(t)
	la := &recordingDevices{online: map[string]int{"u": 1}}
	lb := &recordingDevices{online: map[string]int{"u": 2, "v": 1}}
	a, b := NewDevices(ncA, la, nil), NewDevices(ncB, lb, nil)
	for _, d := range []*Devices{a, b} {
		d.Nodes = func() int { return 2 }
		if err := d.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.Stop)
	}
	a.Live("u", []byte("typing"))
	b.Kick("v")
	wait.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		for _, l := range []*recordingDevices{la, lb} {
			l.mu.Lock()
			live, kicked := slices.Clone(l.live), slices.Clone(l.kicked)
			l.mu.Unlock()
			if !slices.Equal(live, []string{"u:typing"}) || !slices.Equal(kicked, []string{"v"}) {
				return fmt.Errorf("a node saw live %v, kicks %v", live, kicked)
			}
		}
		return nil
	})
	if n := a.Online("u"); n != 3 {
		t.Fatalf("Online(u) = %d on a; want 3", n)
	}
	if !a.Connected("v", "c") || a.Connected("w", "c") {
		t.Fatal("Connected does not see the other node's devices")
	}
}

// A refusal the router makes itself (no node serves the data yet, or the
// owner did not answer) carries the request's ReqId like every other
// reply: over MQTT 3.1.1 the client matches its answer by it, and without
// it waits for an answer that never comes (found by TestClusterCrash: the
// senders whose owner was killed never saw their 20005).
func TestForwardRefusalCarriesReqID(t *testing.T) {
	_, nc := runNATS(t)
	_, view := newService(t) // owns nothing, and no node serves
	remote := NewRouter(nc, "b", failingExecutor{t}, view, 0, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	r := remote.Exec(ctx, &command.Caller{UserID: "alice", Device: "phone"}, "openim/sendmsg", []byte(`{"ReqId":"r1","To_Account":"bob"}`))
	if r.Err == nil || r.Err.Code != command.CodeRetry {
		t.Fatalf("reply %s; want 20005", r.Encode())
	}
	if r.ReqID != "r1" {
		t.Fatalf("reply %s carries ReqId %q; want r1", r.Encode("ReqId", r.ReqID), r.ReqID)
	}
}
