package server

import (
	"errors"
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
	for {
		select {
		case <-p.wake[t]:
		case <-p.done:
			return
		}
		dst := p.s.store.Partition(t)
		if !dst.Owns() {
			continue
		}
		for src := range p.n {
			if src == t {
				continue
			}
			_, err := dst.Receive(p.s.store.Partition(src))
			if errors.Is(err, store.ErrNotOwner) || errors.Is(err, store.ErrClosed) {
				break
			}
			if err != nil {
				// Nothing ran (the transaction failed whole): try again
				// soon; the records stay in the source's view.
				p.s.log.Warn("cluster: running intents", "partition", t, "from", src, "error", err)
				time.AfterFunc(200*time.Millisecond, func() { p.kick(t) })
				break
			}
		}
	}
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
