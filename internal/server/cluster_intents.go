package server

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/duet-im/duet/store"
)

// intentPump runs, on the owner of each partition, what the other
// partitions' logs owe it: the intents of their transactions for its
// users (docs/cluster.md §11.3, store/intents.go). It is woken when this
// node's view of any partition applies an entry with intents for a
// partition (store.Options.OnIntents), and when this node takes a
// partition over (what the last owner had not run yet); the store's
// inbox mark makes every run exactly-once, so a wake too many costs a
// scan. The owner of each source partition trims what the targets ran.
type intentPump struct {
	s    *Server
	n    int
	wake []chan struct{}
	done chan struct{}
	wg   sync.WaitGroup
}

// trimEvery is how often an owner deletes the outbox records its targets
// have run: they are small and harmless until then.
const trimEvery = 10 * time.Second

func newIntentPump(s *Server, n int) *intentPump {
	p := &intentPump{s: s, n: n, done: make(chan struct{})}
	for range n {
		p.wake = append(p.wake, make(chan struct{}, 1))
	}
	return p
}

// start runs the pump; s.store is open.
func (p *intentPump) start() {
	p.wg.Add(p.n + 1)
	for t := range p.n {
		go p.run(t)
	}
	go p.trim()
}

func (p *intentPump) stop() {
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	p.wg.Wait()
}

// owed is store.Options.OnIntents: it must not block.
func (p *intentPump) owed(targets []int) {
	for _, t := range targets {
		p.kick(t)
	}
}

func (p *intentPump) kick(t int) {
	select {
	case p.wake[t] <- struct{}{}:
	default: // a run is due already and will see the new records
	}
}

// run executes partition t's intents while this node owns t.
func (p *intentPump) run(t int) {
	defer p.wg.Done()
	dst := p.s.store.Partition(t)
	in := newInbox(t, p.n, func(src int) error {
		_, err := dst.Receive(p.s.store.Partition(src))
		return err
	})
	in.log = p.s.log
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	for {
		select {
		case <-p.wake[t]:
		case <-retry.C:
		case <-p.done:
			retry.Stop()
			return
		}
		if !dst.Owns() {
			continue
		}
		if at := in.run(time.Now()); !at.IsZero() {
			retry.Reset(time.Until(at))
		}
	}
}

// Backoff of a source whose intents fail: from the first to the longest
// wait between two tries.
const (
	intentRetryFirst = 200 * time.Millisecond
	intentRetryMax   = 10 * time.Second
)

// inbox is one target partition's side of the pump: it runs what each
// source owes it. A source whose intents fail (the transaction failed
// whole: nothing ran, the records stay in the source's view) is tried
// again after a backoff, and the other sources go on meanwhile: their
// intents are independent of it, only one source's own order matters
// (§11.3). A failure that lasts, such as an intent of a newer build that
// this one cannot run, thus holds back one source, not every partition's
// messages to this one, and logs once per backoff, not five times a
// second.
type inbox struct {
	t       int
	receive func(src int) error // runs what src owes t
	log     *slog.Logger        // nil: quiet
	backoff []time.Duration     // per source: the current wait, 0 while it runs
	retryAt []time.Time         // per source: not tried before
}

func newInbox(t, n int, receive func(src int) error) *inbox {
	return &inbox{t: t, receive: receive, backoff: make([]time.Duration, n), retryAt: make([]time.Time, n)}
}

// run tries every source not in its backoff and returns when to try
// again (zero: when woken). It stops at the first error saying this node
// no longer owns t or the store closed.
func (in *inbox) run(now time.Time) (next time.Time) {
	for src := range in.backoff {
		if src == in.t {
			continue
		}
		if now.Before(in.retryAt[src]) {
			next = earliest(next, in.retryAt[src])
			continue
		}
		err := in.receive(src)
		if errors.Is(err, store.ErrNotOwner) || errors.Is(err, store.ErrClosed) {
			return time.Time{}
		}
		if err != nil {
			in.backoff[src] = min(max(2*in.backoff[src], intentRetryFirst), intentRetryMax)
			in.retryAt[src] = now.Add(in.backoff[src])
			next = earliest(next, in.retryAt[src])
			if in.log != nil {
				in.log.Warn("cluster: running intents", "partition", in.t, "from", src, "error", err, "retry_in", in.backoff[src])
			}
			continue
		}
		if in.backoff[src] != 0 && in.log != nil {
			in.log.Info("cluster: running intents again", "partition", in.t, "from", src)
		}
		in.backoff[src], in.retryAt[src] = 0, time.Time{}
	}
	return next
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

// trim deletes, in each partition this node owns, the outbox records
// the targets have run.
func (p *intentPump) trim() {
	defer p.wg.Done()
	tick := time.NewTicker(trimEvery)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-p.done:
			return
		}
		for src := range p.n {
			s := p.s.store.Partition(src)
			if !s.Owns() {
				continue
			}
			for t := range p.n {
				if t == src {
					continue
				}
				if err := s.TrimOutbox(p.s.store.Partition(t)); err != nil && !errors.Is(err, store.ErrNotOwner) && !errors.Is(err, store.ErrClosed) {
					p.s.log.Warn("cluster: trimming intents", "partition", src, "for", t, "error", err)
				}
			}
		}
	}
}
