package cluster

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// View is one partition's materialised state on this node (the store).
// Apply must be safe to call while the store's writer applies its own groups:
// the two meet only when ownership changes hands.
type View interface {
	Applied() uint64                      // highest log sequence applied (0: none)
	Apply(seq uint64, entry []byte) error // apply a committed entry; entries at or below Applied() are ignored by the view
}

// Applier is partition p's consumer on this node (§10.2): an ordered
// consumer from View.Applied()+1 that applies, in log order, every entry this
// node's writer did not write and apply itself.
type Applier struct {
	js      jetstream.JetStream
	p       int
	node    string
	view    View
	onError func(p int, err error)

	log       atomic.Pointer[Log] // the owner's log while this node owns p
	applyMu   sync.Mutex          // an entry's check and apply, against a takeover's catch-up (Log.catchUp)
	seen      atomic.Uint64       // the log's last sequence as the consumer last saw it
	pos       atomic.Uint64       // the last sequence the consumer handled (applied or skipped)
	fencedCnt atomic.Uint64

	rb         *rebuilder // nil: the view is never rebuilt from a snapshot
	rebuilding atomic.Bool

	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// rebuilder is what an applier needs to rebuild its view (§10.4).
type rebuilder struct {
	obs        jetstream.ObjectStore
	partitions int
	rebuilt    func(p int, seq uint64) // hears each rebuild
}

// StartApplier starts partition p's consumer. onError (may be nil) hears
// apply failures, which are retried. ctx bounds only the start; the consumer
// runs until Stop.
func StartApplier(ctx context.Context, js jetstream.JetStream, node string, p int, view View, onError func(p int, err error)) (*Applier, error) {
	return startApplier(ctx, js, node, p, view, onError, nil)
}

// startApplier is StartApplier with rebuilds: a view behind the log's
// first entry is first rebuilt from the snapshot (within ctx), and again
// whenever the consumer finds the entries it needs purged.
func startApplier(ctx context.Context, js jetstream.JetStream, node string, p int, view View, onError func(p int, err error), rb *rebuilder) (*Applier, error) {
	run, cancel := context.WithCancel(context.Background())
	a := &Applier{js: js, p: p, node: node, view: view, onError: onError, rb: rb, cancel: cancel, done: make(chan struct{})}
	wireRestore(view, rb) // restore entries' objects (backup.go)
	if err := retry(ctx, "rebuilding the view of "+StreamName(p), func(c context.Context) error {
		_, err := a.catchUp(c)
		if err != nil {
			a.report(err)
		}
		return err
	}); err != nil {
		cancel()
		return nil, err
	}
	it, err := a.consume(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	go a.run(run, it)
	return a, nil
}

// consume opens an ordered consumer from the view's next sequence. Entries
// at or below what this node's writer already applied are skipped by handle,
// so starting from the view (not from the writer's last) is always safe.
func (a *Applier) consume(ctx context.Context) (jetstream.MessagesContext, error) {
	var it jetstream.MessagesContext
	err := retry(ctx, "consumer of "+StreamName(a.p), func(c context.Context) error {
		cons, err := a.js.OrderedConsumer(c, StreamName(a.p), jetstream.OrderedConsumerConfig{
			DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:   a.view.Applied() + 1,
		})
		if err != nil {
			return err
		}
		// Short heartbeats: a consumer whose server died is noticed and
		// recreated within about two heartbeats, not after the default's
		// much longer silence.
		it, err = cons.Messages(jetstream.PullExpiry(10*time.Second), jetstream.PullHeartbeat(time.Second))
		return err
	})
	return it, err
}

// Stop ends the consumer and waits for it.
func (a *Applier) Stop() {
	a.once.Do(a.cancel)
	<-a.done
}

// Lag is the log's last sequence as last seen minus what the view applied:
// the apply lag metric of §18.1.
func (a *Applier) Lag() uint64 {
	seen, applied := a.seen.Load(), a.view.Applied()
	if seen <= applied {
		return 0
	}
	return seen - applied
}

// Rebuilding reports a view being loaded from its snapshot (§10.4).
func (a *Applier) Rebuilding() bool { return a.rebuilding.Load() }

// Position is the last log sequence the consumer has handled: applied, or
// skipped as this node's writer's own.
func (a *Applier) Position() uint64 { return a.pos.Load() }

// Fences counts the times this node's log of p was found fenced by the
// consumer (another writer's entry after the writer's last).
func (a *Applier) Fences() uint64 { return a.fencedCnt.Load() }

func (a *Applier) run(ctx context.Context, it jetstream.MessagesContext) {
	defer close(a.done)
	var mu sync.Mutex // guards it against the stopper below
	go func() {
		<-ctx.Done()
		mu.Lock()
		it.Stop()
		mu.Unlock()
	}()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// The ordered consumer recreates itself on gaps and missed
			// heartbeats; when it gives up (or its iterator closes under
			// it), start a new one from the view.
			a.report(fmt.Errorf("consumer of %s: %w; restarting it", StreamName(a.p), err))
			mu.Lock()
			it.Stop()
			mu.Unlock()
			nit, err := a.consume(ctx)
			if err != nil {
				return // ctx ended
			}
			mu.Lock()
			it = nit
			mu.Unlock()
			if ctx.Err() != nil {
				nit.Stop()
				return
			}
			continue
		}
		md, err := m.Metadata()
		if err != nil {
			a.report(err)
			continue
		}
		seq := md.Sequence.Stream
		a.seen.Store(seq + md.NumPending)
		a.handle(ctx, seq, m.Data())
		a.pos.Store(seq)
	}
}

func (a *Applier) report(err error) {
	if a.onError != nil {
		a.onError(a.p, err)
	}
}

// handle decides what one delivered entry means (§9.2, last paragraph).
func (a *Applier) handle(ctx context.Context, seq uint64, data []byte) {
	for {
		if seq <= a.view.Applied() {
			return
		}
		if l := a.log.Load(); l != nil {
			skip, wait, fenced := l.observe(seq)
			if skip {
				return
			}
			if wait != nil {
				// An Append is in flight: this may be its entry. Wait for its
				// outcome, then look again.
				select {
				case <-wait:
					continue
				case <-ctx.Done():
					return
				}
			}
			// Another writer appended: the log is fenced (observe killed it),
			// and this entry is applied like any other node's.
			if fenced {
				a.fencedCnt.Add(1)
			}
		}
		// The writer may still be applying its own last group: never apply
		// out of order. Or the entries before seq were purged (this node
		// was not among the live ones when the log was trimmed): rebuild.
		if err := a.waitPrevious(ctx, seq); err != nil {
			return
		}
		if seq <= a.view.Applied() {
			return // the rebuilt view has it
		}
		for {
			a.applyMu.Lock()
			var err error
			if seq > a.view.Applied() {
				err = a.view.Apply(seq, data)
			}
			a.applyMu.Unlock()
			if err == nil {
				return
			}
			a.report(fmt.Errorf("apply %d of %s: %w", seq, StreamName(a.p), err))
			if !sleepCtx(ctx, 100*time.Millisecond) {
				return
			}
		}
	}
}

// gapCheck is how long the consumer waits for the entry before the one it
// holds before it asks whether the log still has it.
const gapCheck = time.Second

// waitPrevious waits until the view has applied seq-1; when that takes
// gapCheck and the log no longer has the entries in between, it rebuilds
// the view from the snapshot.
func (a *Applier) waitPrevious(ctx context.Context, seq uint64) error {
	every, since := time.Millisecond, time.Now()
	for a.view.Applied() < seq-1 {
		if a.rb != nil && a.log.Load() == nil && time.Since(since) >= gapCheck {
			if _, err := a.catchUp(ctx); err != nil {
				a.report(err)
			}
			every, since = time.Millisecond, time.Now()
			continue
		}
		if !sleepCtx(ctx, every) {
			return ctx.Err()
		}
		every = min(2*every, 20*time.Millisecond)
	}
	return nil
}

// catchUp rebuilds the view from the partition's snapshot if it is behind
// the log's first entry (§10.4); it reports whether it did.
func (a *Applier) catchUp(ctx context.Context) (bool, error) {
	sv, ok := a.view.(SnapshotView)
	if a.rb == nil || !ok {
		return false, nil
	}
	first, err := firstSeq(ctx, a.js, a.p)
	if err != nil {
		return false, err
	}
	if !behind(a.view.Applied(), first) {
		return false, nil
	}
	a.rebuilding.Store(true)
	seq, err := rebuild(ctx, a.rb.obs, a.p, a.rb.partitions, sv, first)
	a.rebuilding.Store(false)
	if err != nil {
		return false, fmt.Errorf("the view of %s is at %d, the log starts at %d: %w", StreamName(a.p), a.view.Applied(), first, err)
	}
	if a.rb.rebuilt != nil {
		a.rb.rebuilt(a.p, seq)
	}
	return true, nil
}

// observe is the consumer's check of an entry at seq against the writer's own
// record: at or below last it was this writer's (skip); above last while an
// Append is in flight it may be that Append's (wait); above last with nothing
// in flight another writer has written: the log dies with ErrFenced.
func (l *Log) observe(seq uint64) (skip bool, wait <-chan struct{}, fenced bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if seq <= l.last {
		return true, nil, false
	}
	if l.inflight != nil {
		return false, l.inflight, false
	}
	fenced = l.dead == nil
	l.die(ErrFenced)
	return false, nil, fenced
}

// Own makes this node the writer of partition p under lease: it fences the
// log (§8.2), and from then on the consumer skips what the returned log
// appends. fenceEntry builds the fence entry (the store's encoding).
func (a *Applier) Own(ctx context.Context, lease *Lease, fenceEntry func() []byte) (*Log, error) {
	s, err := a.js.Stream(ctx, StreamName(a.p))
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithCancel(context.Background())
	l := &Log{
		js: a.js, stream: s, p: a.p, node: a.node, lease: lease, view: a.view, applyMu: &a.applyMu,
		ctx: lctx, cancel: cancel, deadCh: make(chan struct{}),
	}
	if err := l.fence(ctx, fenceEntry); err != nil {
		l.Close()
		return nil, fmt.Errorf("fence %s: %w", StreamName(a.p), err)
	}
	a.log.Store(l)
	return l, nil
}

// Disown stops skipping for l (after the writer stopped using it): from now
// on the consumer applies every entry.
func (a *Applier) Disown(l *Log) {
	a.log.CompareAndSwap(l, nil)
}
