package cluster

import (
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/wait"
	"github.com/duet-im/duet/store"
	"github.com/nats-io/nats.go/jetstream"
)

// gatedView is a node's real store as its partition's view, whose Apply
// the test can hold: the node stays live (it sends heartbeats) while its
// view falls behind.
type gatedView struct {
	*store.Store
	mu       sync.Mutex
	gate     chan struct{} // non-nil: Apply waits until it is closed
	loadGate chan struct{} // non-nil: LoadSnapshot waits until it is closed
	stop     chan struct{} // closed when the test ends
}

// pass waits at the gate *g, if there is one.
func (v *gatedView) pass(g *chan struct{}) error {
	v.mu.Lock()
	ch := *g
	v.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-v.stop:
		return store.ErrClosed
	}
}

func (v *gatedView) LoadSnapshot(seq uint64, r io.Reader) error {
	if err := v.pass(&v.loadGate); err != nil {
		return err
	}
	return v.Store.LoadSnapshot(seq, r)
}

func (v *gatedView) hold() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.gate == nil {
		v.gate = make(chan struct{})
	}
}

func (v *gatedView) release() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.gate != nil {
		close(v.gate)
		v.gate = nil
	}
}

func (v *gatedView) Apply(seq uint64, e []byte) error {
	if err := v.pass(&v.gate); err != nil {
		return err
	}
	return v.Store.Apply(seq, e)
}

// storeMember is a node joined with its real store as partition 0's view.
type storeMember struct {
	member
	view *gatedView
}

// joinStores joins every node with a store of its own (as
// internal/server does: the store owns while the node holds the lease).
func joinStores(t *testing.T, nodes []*Node, cfg Config) []*storeMember {
	t.Helper()
	ms := make([]*storeMember, len(nodes))
	for i, nd := range nodes {
		st, err := store.Open(t.TempDir(), store.Options{Replicated: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		ms[i] = &storeMember{member: member{node: nd}, view: &gatedView{Store: st, stop: make(chan struct{})}}
	}
	cs := joinEach(t, nodes, func(i int) JoinOptions { return storeOptions(t, cfg, ms[i]) })
	for i, c := range cs {
		ms[i].c = c
		// Cleanups run last first: the gate opens, then the node leaves.
		t.Cleanup(func() { close(ms[i].view.stop) })
	}
	return ms
}

// storeOptions joins m with its store as the view, as internal/server
// does: the store owns while the node holds the lease.
func storeOptions(t *testing.T, cfg Config, m *storeMember) JoinOptions {
	v := m.view
	return JoinOptions{
		Config: cfg, FenceEntry: func() []byte { return store.FenceEntry(m.node.name) },
		View: func(int) View { return v },
		OnOwn: func(_ int, l *Log) {
			if err := v.Own(l); err != nil {
				t.Error(err)
			}
		},
		OnLose: func(int, error) { v.Disown() },
	}
}

// ownerAndOther waits for the owner of partition 0 among ms and returns
// it with another member.
func ownerAndOther(t *testing.T, ms []*storeMember) (owner, other *storeMember) {
	t.Helper()
	plain := make([]*member, len(ms))
	for i, m := range ms {
		plain[i] = &m.member
	}
	o := ownerOf(t, plain, 0, 20*time.Second)
	for _, m := range ms {
		if &m.member == o {
			owner = m
		} else if other == nil {
			other = m
		}
	}
	wait.Until(t, 10*time.Second, "the owner's store to own", owner.view.Owns)
	return owner, other
}

func snapshotConfig() Config {
	cfg := testConfig(1)
	cfg.NodeTTL = 3 * time.Second // a heartbeat, with the applied marks, every second
	cfg.SnapshotEntries = 20
	cfg.SnapshotInterval = time.Hour
	return cfg
}

// importAccounts writes n accounts through the owner, one log entry each.
func importAccounts(t *testing.T, owner *storeMember, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if _, err := owner.view.ImportAccount(store.Account{UserID: fmt.Sprint("u", i)}); err != nil {
			t.Fatalf("import u%d: %v", i, err)
		}
	}
}

func logFirst(t *testing.T, nd *Node) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	first, err := firstSeq(ctx, nd.js, 0)
	if err != nil {
		t.Fatal(err)
	}
	return first
}

// sameAccounts fails unless every view has applied as far as the owner and
// has accounts u0 … u{n-1}.
func sameAccounts(t *testing.T, owner *storeMember, ms []*storeMember, n int) {
	t.Helper()
	want := owner.view.Applied()
	wait.For(t, 30*time.Second, 10*time.Millisecond, func() error {
		for _, m := range ms {
			if got := m.view.Applied(); got < want {
				return fmt.Errorf("%s applied %d of %d", m.node.name, got, want)
			}
		}
		return nil
	})
	for _, m := range ms {
		for i := range n {
			if _, err := m.view.GetAccount(fmt.Sprint("u", i)); err != nil {
				t.Fatalf("%s: account u%d: %v", m.node.name, i, err)
			}
		}
	}
}

// withHeldView starts three nodes with stores, writes accounts u0 … u9,
// and holds the view of a node that does not own the data.
func withHeldView(t *testing.T) (ms []*storeMember, owner, held *storeMember) {
	t.Helper()
	ms = joinStores(t, startNodes(t, 3), snapshotConfig())
	owner, held = ownerAndOther(t, ms)
	importAccounts(t, owner, 0, 10)
	sameAccounts(t, owner, ms, 10)
	held.view.hold()
	return ms, owner, held
}

// The owner snapshots its view and trims the log, but never past an entry
// a live node has yet to apply: a node whose view is held (it still sends
// heartbeats) keeps the log from its mark on, however many snapshots
// follow; once it catches up, the trim moves on (docs/cluster.md §10.3).
func TestTrimKeepsWhatALiveNodeNeeds(t *testing.T) {
	ms, owner, lag := withHeldView(t)
	L := lag.view.Applied()

	importAccounts(t, owner, 10, 60)
	wait.For(t, 30*time.Second, 50*time.Millisecond, func() error {
		if s := owner.c.Snapshot(0); s.Written == 0 || s.Seq <= L {
			return fmt.Errorf("no snapshot past the held node's mark %d yet: %+v", L, s)
		}
		if first := logFirst(t, owner.node); first != L+1 {
			return fmt.Errorf("log starts at %d; want the held node's mark %d + 1", first, L)
		}
		return nil
	})
	// Two more snapshots: the trim after the first of them has run once
	// the second is written.
	for i := range 2 {
		w := owner.c.Snapshot(0).Written
		importAccounts(t, owner, 70+20*i, 20)
		wait.Until(t, 30*time.Second, "another snapshot", func() bool { return owner.c.Snapshot(0).Written > w })
	}
	if first := logFirst(t, owner.node); first != L+1 {
		t.Fatalf("log starts at %d after more snapshots; the held node needs %d", first, L+1)
	}
	if lag.view.Applied() != L {
		t.Fatalf("the held view moved: %d, held at %d", lag.view.Applied(), L)
	}

	lag.view.release()
	sameAccounts(t, owner, ms, 110)
	wait.For(t, 30*time.Second, 50*time.Millisecond, func() error {
		if first := logFirst(t, owner.node); first <= L+1 {
			return fmt.Errorf("log still starts at %d once every node caught up", first)
		}
		return nil
	})
	if n := lag.c.Snapshot(0).Rebuilds; n != 0 {
		t.Fatalf("a node kept live by its heartbeat rebuilt %d times", n)
	}
}

// A live node whose entries were purged all the same (an owner that did
// not see its heartbeat: it had expired, or had not reached the owner yet)
// finds the gap in its consumer and rebuilds from the snapshot, then
// carries on applying the log (docs/cluster.md §10.4).
func TestRebuildWhenPurgedPastAView(t *testing.T) {
	ms, owner, lag := withHeldView(t)
	// More entries than the held consumer has fetched ahead (a pull
	// fetches up to 500): the gap must be in the log, not in its buffer.
	importAccounts(t, owner, 10, 700)
	w := owner.c.Snapshot(0).Written
	importAccounts(t, owner, 710, 20)
	wait.Until(t, 30*time.Second, "a snapshot of the last writes", func() bool { return owner.c.Snapshot(0).Written > w })
	S := owner.c.Snapshot(0).Seq
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := owner.node.js.Stream(ctx, StreamName(0))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSequence(S+1)); err != nil {
		t.Fatal(err)
	}
	if first := logFirst(t, owner.node); first != S+1 || lag.view.Applied()+1 >= first {
		t.Fatalf("log starts at %d, the held view is at %d: no gap", first, lag.view.Applied())
	}
	importAccounts(t, owner, 730, 10)

	// The rebuild shows while it runs (/healthz's "catching up").
	loading := make(chan struct{})
	lag.view.mu.Lock()
	lag.view.loadGate = loading
	lag.view.mu.Unlock()
	lag.view.release()
	wait.Until(t, 30*time.Second, "the consumer to start rebuilding", lag.c.Applier(0).Rebuilding)
	close(loading)
	sameAccounts(t, owner, ms, 740)
	if lag.c.Applier(0).Rebuilding() {
		t.Fatal("still rebuilding after the view caught up")
	}
	if n := lag.c.Snapshot(0).Rebuilds; n != 1 {
		t.Fatalf("the node rebuilt %d times; want 1", n)
	}
	// The rebuilt view carries on with the log like the others.
	importAccounts(t, owner, 740, 5)
	sameAccounts(t, owner, ms, 745)
}

// A node whose view is behind the log's first entry when it joins loads
// the snapshot before its consumer starts: a new node with an empty view,
// and a node that left and comes back with the view it had, whose entries
// were trimmed meanwhile. Join returns with each view at the snapshot or
// beyond, and the views then agree.
func TestJoinRebuildsABehindView(t *testing.T) {
	nodes := startNodes(t, 3)
	ms := joinStores(t, nodes[:2], snapshotConfig())
	owner, away := ownerAndOther(t, ms)
	importAccounts(t, owner, 0, 10)
	sameAccounts(t, owner, ms, 10)
	away.c.Close() // leaves: its heartbeat goes, and with it its hold on the log
	L := away.view.Applied()

	importAccounts(t, owner, 10, 50)
	wait.For(t, 30*time.Second, 50*time.Millisecond, func() error {
		if first := logFirst(t, owner.node); first <= L+1 {
			return fmt.Errorf("the log starts at %d; the node that left is at %d", first, L)
		}
		return nil
	})
	late := joinStores(t, nodes[2:], snapshotConfig())[0]
	if got := late.c.Snapshot(0).Rebuilds; got != 1 {
		t.Fatalf("the new node rebuilt %d times; want 1", got)
	}
	away.c = joinEach(t, []*Node{away.node}, func(int) JoinOptions { return storeOptions(t, snapshotConfig(), away) })[0]
	if got := away.c.Snapshot(0).Rebuilds; got != 1 {
		t.Fatalf("the node that came back rebuilt %d times; want 1", got)
	}
	importAccounts(t, owner, 60, 5)
	sameAccounts(t, owner, []*storeMember{owner, away, late}, 65)
}
