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

	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// StartApplier starts partition p's consumer. onError (may be nil) hears
// apply failures, which are retried. ctx bounds only the start; the consumer
// runs until Stop.
func StartApplier(ctx context.Context, js jetstream.JetStream, node string, p int, view View, onError func(p int, err error)) (*Applier, error) {
	run, cancel := context.WithCancel(context.Background())
	a := &Applier{js: js, p: p, node: node, view: view, onError: onError, cancel: cancel, done: make(chan struct{})}
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
		// out of order.
		if err := waitApplied(ctx, a.view, seq-1, nil); err != nil {
			return
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
