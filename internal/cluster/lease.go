package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// validityMargin is taken off the lease TTL for the owner's local validity
// (§8.1): it covers clock rate differences between the owner and the server
// that stamps the renewal.
const validityMargin = time.Second

// ErrLeaseHeld is returned by Acquire when another holder has the lease.
var ErrLeaseHeld = errors.New("cluster: partition lease held by another node")

// ErrLeaseLost is the reason a Lease reports when a renewal was refused: the
// key's revision moved, so someone else holds (or held) it.
var ErrLeaseLost = errors.New("cluster: partition lease lost")

// ErrLeaseReleased is the reason of a lease given up by Release.
var ErrLeaseReleased = errors.New("cluster: partition lease released")

// leaseValue is the value of a lease key: who holds it, and since when (which
// makes each tenure's value unique, so an unclear renewal can be recognised).
type leaseValue struct {
	Node     string    `json:"node"`
	Acquired time.Time `json:"acquired"`
}

// Lease is this node's hold on one partition (§8.1): a KV duet-leases key
// created by this node, renewed every ttl/5 with a revision check.
type Lease struct {
	kv    jetstream.KeyValue
	p     int
	key   string
	node  string
	ttl   time.Duration
	value []byte
	epoch uint64

	mu         sync.Mutex
	rev        uint64
	validUntil time.Time // monotonic: sentAt(last successful renewal) + ttl - margin
	reason     error     // why the lease ended; nil while held

	lost chan struct{} // closed when the lease ends (lost or released)
	stop chan struct{}
	done chan struct{}
}

// Acquire creates partition p's lease key for node (§8.1 Acquire). It fails
// with ErrLeaseHeld when the key exists. The revision Create returns is the
// lease's epoch. The lease renews itself until Release or until a renewal is
// refused.
func Acquire(ctx context.Context, kv jetstream.KeyValue, p int, node string, ttl time.Duration) (*Lease, error) {
	value, _ := json.Marshal(leaseValue{Node: node, Acquired: time.Now().UTC()})
	sent := time.Now()
	rev, err := kv.Create(ctx, LeaseKey(p), value)
	// A Create over an expiry marker that loses a race to another node is
	// refused with a bare wrong-last-sequence error, not ErrKeyExists.
	if errors.Is(err, jetstream.ErrKeyExists) || wrongLastSeq(err) {
		return nil, fmt.Errorf("%w: %s", ErrLeaseHeld, LeaseKey(p))
	}
	if err != nil {
		return nil, fmt.Errorf("lease %s: %w", LeaseKey(p), err)
	}
	l := &Lease{
		kv: kv, p: p, key: LeaseKey(p), node: node, ttl: ttl, value: value, epoch: rev,
		rev: rev, validUntil: sent.Add(ttl - validityMargin),
		lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{}),
	}
	go l.renew()
	return l, nil
}

// Partition is the lease's partition.
func (l *Lease) Partition() int { return l.p }

// Epoch is the revision of the Create that took the lease.
func (l *Lease) Epoch() uint64 { return l.epoch }

// Valid reports whether the holder may publish now: the lease has not ended
// and now < sentAt(last successful renewal) + ttl - 1 s on the monotonic
// clock (§8.1).
func (l *Lease) Valid() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reason == nil && time.Now().Before(l.validUntil)
}

// ValidUntil is the end of the current local validity.
func (l *Lease) ValidUntil() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.validUntil
}

// Lost is closed when the lease ends; Err then says why.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Err is nil while the lease is held, else ErrLeaseLost or ErrLeaseReleased.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reason
}

func (l *Lease) end(reason error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reason == nil {
		l.reason = reason
		close(l.lost)
	}
}

// renew updates the key every ttl/5. A refused update (the revision moved)
// ends the lease at once; other failures (no KV leader, a timeout) are
// retried at the next tick while the local validity runs out on its own.
func (l *Lease) renew() {
	defer close(l.done)
	t := time.NewTicker(l.ttl / 5)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-l.lost:
			return
		case <-t.C:
		}
		l.mu.Lock()
		rev := l.rev
		l.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), l.ttl)
		sent := time.Now()
		nrev, err := l.kv.Update(ctx, l.key, l.value, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			// An earlier renewal whose reply was lost may have landed: then the
			// key still holds this tenure's value, and the lease is still ours.
			nrev, err = l.adopt(ctx)
		}
		cancel()
		switch {
		case err == nil:
			l.mu.Lock()
			l.rev = nrev
			if v := sent.Add(l.ttl - validityMargin); v.After(l.validUntil) {
				l.validUntil = v
			}
			l.mu.Unlock()
		case errors.Is(err, ErrLeaseLost):
			l.end(ErrLeaseLost)
			return
		}
	}
}

// adopt checks, after a refused renewal, whether the key still carries this
// tenure's value; it returns the key's revision if so, else ErrLeaseLost.
func (l *Lease) adopt(ctx context.Context) (uint64, error) {
	e, err := l.kv.Get(ctx, l.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return 0, ErrLeaseLost
	}
	if err != nil {
		return 0, err
	}
	if e.Operation() != jetstream.KeyValuePut || string(e.Value()) != string(l.value) {
		return 0, ErrLeaseLost
	}
	// Renew from the adopted revision at once; validity is not extended by a
	// renewal whose send time is unknown.
	return l.kv.Update(ctx, l.key, l.value, e.Revision())
}

// Release gives the lease up (§8.1 Release): renewals stop, local validity
// ends, and the key is deleted if it still has this lease's last revision.
// The caller stops its writer first.
func (l *Lease) Release(ctx context.Context) error {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
	l.mu.Lock()
	held := l.reason == nil
	rev := l.rev
	l.mu.Unlock()
	l.end(ErrLeaseReleased)
	if !held {
		return nil
	}
	err := l.kv.Delete(ctx, l.key, jetstream.LastRevision(rev))
	if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("release %s: %w", l.key, err)
	}
	return nil
}

// stopRenewing ends renewals without deleting the key (a node that stops
// abruptly; tests use it to let a lease expire while its holder runs on).
func (l *Lease) stopRenewing() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
}

// LeaseHolder is one lease key as the watcher last saw it.
type LeaseHolder struct {
	Partition int
	Node      string // "" when free (never taken, deleted or expired)
	Revision  uint64
}

// WatchLeases reports every change of duet-leases, starting with the current
// holders; a free lease (deleted on release, or an expiry marker of a holder
// that stopped renewing) is reported with Node "". The channel closes when
// ctx ends.
func WatchLeases(ctx context.Context, kv jetstream.KeyValue) (<-chan LeaseHolder, error) {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, err
	}
	out := make(chan LeaseHolder, 64)
	go func() {
		defer close(out)
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil { // end of the initial values
					continue
				}
				var p int
				if _, err := fmt.Sscanf(e.Key(), "p%d", &p); err != nil {
					continue
				}
				h := LeaseHolder{Partition: p, Revision: e.Revision()}
				if e.Operation() == jetstream.KeyValuePut {
					var v leaseValue
					if json.Unmarshal(e.Value(), &v) == nil {
						h.Node = v.Node
					}
				}
				select {
				case out <- h:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}
