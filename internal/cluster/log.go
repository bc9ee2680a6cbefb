package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Entry headers (§7).
const (
	HeaderGroup = "Duet-Group" // {node}/{lease epoch}/{counter}: identifies a group (§9.3)
	HeaderKind  = "Duet-Kind"  // "fence" on fences; the store's own entries carry their kind in the body
)

// publishTimeout bounds one publish attempt; past it the outcome is unclear
// and resolved as §9.3 says (which waits for a stream leader). A publish
// to a leader that died only ends by this timeout, so it adds to every
// failover that takes the stream's leader: with 5 s the process test's
// worst round took 9.2 s.
const publishTimeout = 2 * time.Second

// ErrFenced is returned by Append once another writer has appended to the
// partition's log after this writer's last entry (a new owner's fence, or a
// late write of an old owner while this node was fencing). The log is dead
// from then on: the node has lost the partition whatever its lease says.
var ErrFenced = errors.New("cluster: partition log fenced by another writer")

// ErrLeaseInvalid is returned by Append when the lease is not locally valid
// (§8.1); nothing was published.
var ErrLeaseInvalid = errors.New("cluster: partition lease not valid")

// ErrUnresolved is returned by Append when a publish's outcome could not be
// resolved while the lease was valid (§9.3). The entry may have landed; if it
// did, this node's consumer applies it like any other writer's. The log is
// dead from then on.
var ErrUnresolved = errors.New("cluster: publish outcome unresolved")

// ErrLogClosed is returned by Append after Close.
var ErrLogClosed = errors.New("cluster: partition log closed")

// Log is partition p's log as its owner's writer sees it (§9): Append
// publishes one group as one message, accepted by JetStream only directly
// after this writer's own last entry.
type Log struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	p      int
	node   string
	lease  *Lease
	view   View
	// applyMu is the applier's: the takeover's catch-up (catchUp) and the
	// consumer each check and apply an entry under it.
	applyMu *sync.Mutex

	ctx    context.Context // ends on Close: stops a §9.3 resolution
	cancel context.CancelFunc

	appendMu sync.Mutex // one Append at a time

	mu       sync.Mutex
	last     uint64        // this writer's own record (§9.2 step 4): its fence, then each acknowledged group
	counter  uint64        // last Duet-Group counter used
	inflight chan struct{} // non-nil while an Append is in flight; closed when it resolves
	unclear  uint64        // publishes whose outcome had to be resolved (§9.3)
	dead     error         // why Append refuses from now on
	deadCh   chan struct{} // closed when dead is set

	// Tests only: beforePublish may fail an attempt without sending it;
	// afterPublish may replace an attempt's outcome (a lost acknowledgement).
	beforePublish func(attempt int) error
	afterPublish  func(attempt int, err error) error
}

// Partition is the log's partition.
func (l *Log) Partition() int { return l.p }

// Last is the writer's own record of its last entry's sequence.
func (l *Log) Last() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// Unclear counts the publishes whose outcome had to be resolved by reading
// the log (§9.3): a metric.
func (l *Log) Unclear() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.unclear
}

// Dead is closed once Append refuses for good; Err says why.
func (l *Log) Dead() <-chan struct{} { return l.deadCh }

// Err is nil while the log accepts Appends.
func (l *Log) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dead
}

// die sets the reason once; l.mu held.
func (l *Log) die(err error) {
	if l.dead == nil {
		l.dead = err
		close(l.deadCh)
	}
}

// Close stops the log (the writer is done with it: release, step-down).
func (l *Log) Close() {
	l.cancel()
	l.mu.Lock()
	l.die(ErrLogClosed)
	l.mu.Unlock()
}

// Append commits entry as the next entry of the partition's log and returns
// its stream sequence once a quorum has stored it (§9.2 steps 3–5). It
// publishes only while the lease is locally valid, with
// Nats-Expected-Last-Sequence = the writer's own last, never a sequence read
// from the view or the consumer. The caller applies the entry to its view
// itself; this node's consumer skips it.
func (l *Log) Append(entry []byte) (uint64, error) {
	l.appendMu.Lock()
	defer l.appendMu.Unlock()
	l.mu.Lock()
	if l.dead != nil {
		err := l.dead
		l.mu.Unlock()
		return 0, err
	}
	if !l.lease.Valid() {
		l.mu.Unlock()
		return 0, ErrLeaseInvalid
	}
	l.counter++
	group := l.groupID(l.counter)
	expect := l.last
	done := make(chan struct{})
	l.inflight = done
	l.mu.Unlock()

	seq, err := l.commit(l.ctx, entry, group, expect, "")

	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err == nil:
		l.last = seq
	case errors.Is(err, ErrFenced), errors.Is(err, ErrUnresolved):
		l.die(err)
	case l.ctx.Err() != nil:
		// Closed during an unclear publish: whether it landed is for the
		// consumer to find out.
		l.die(ErrUnresolved)
		err = ErrUnresolved
	}
	l.inflight = nil
	close(done)
	return seq, err
}

func (l *Log) groupID(counter uint64) string {
	return fmt.Sprintf("%s/%d/%d", l.node, l.lease.Epoch(), counter)
}

// wrongLastSeq reports JetStream's refusal of an expected last sequence:
// 10071, or 10164 which replicated streams may answer instead.
func wrongLastSeq(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) &&
		(api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// commit publishes entry at expect+1 and resolves an unclear outcome (§9.3).
// It returns ErrFenced when the position is taken by another group,
// ErrLeaseInvalid when the lease ran out before anything was sent, and
// ErrUnresolved when it ran out after an unclear attempt.
func (l *Log) commit(ctx context.Context, entry []byte, group string, expect uint64, kind string) (uint64, error) {
	msg := &nats.Msg{Subject: Subject(l.p), Data: entry, Header: nats.Header{}}
	msg.Header.Set(HeaderGroup, group)
	if kind != "" {
		msg.Header.Set(HeaderKind, kind)
	}
	unclear := false
	for attempt := 1; ; attempt++ {
		if !l.lease.Valid() || ctx.Err() != nil {
			if unclear {
				return 0, ErrUnresolved
			}
			return 0, ErrLeaseInvalid
		}
		var ack *jetstream.PubAck
		var err error
		if l.beforePublish != nil {
			err = l.beforePublish(attempt)
		}
		if err == nil {
			pctx, cancel := context.WithTimeout(ctx, publishTimeout)
			ack, err = l.js.PublishMsg(pctx, msg, jetstream.WithExpectLastSequence(expect))
			cancel()
			if l.afterPublish != nil {
				err = l.afterPublish(attempt, err)
			}
		}
		switch {
		case err == nil:
			return ack.Sequence, nil
		case wrongLastSeq(err) && !unclear:
			return 0, ErrFenced
		case !wrongLastSeq(err) && isAPIError(err) && !unclear:
			// A clear refusal (too large, stream gone): nothing was stored.
			return 0, err
		}
		// Unclear (timeout, connection drop, no leader), or refused after an
		// unclear attempt (which may be that attempt having landed).
		if !unclear {
			l.mu.Lock()
			l.unclear++
			l.mu.Unlock()
		}
		unclear = true
		found, landed, err := l.resolve(ctx, expect+1, group)
		if err != nil {
			return 0, err
		}
		if landed {
			return expect + 1, nil
		}
		if found {
			return 0, ErrFenced
		}
		// Not there: publish again with the same expected sequence; if the
		// first attempt lands meanwhile, this one is refused.
	}
}

func isAPIError(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api)
}

// resolve waits for the stream to have a leader, then reads the message at
// seq (§9.3 steps 1–2): found reports a message there; landed that it is this
// group's. It gives up with ErrUnresolved when the lease validity runs out.
func (l *Log) resolve(ctx context.Context, seq uint64, group string) (found, landed bool, err error) {
	backoff := 10 * time.Millisecond
	for {
		if !l.lease.Valid() || ctx.Err() != nil {
			return false, false, ErrUnresolved
		}
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		info, ierr := l.stream.Info(rctx)
		if ierr == nil && info.Cluster != nil && info.Cluster.Leader == "" {
			ierr = errors.New("no stream leader")
		}
		var m *jetstream.RawStreamMsg
		if ierr == nil {
			m, ierr = l.stream.GetMsg(rctx, seq)
		}
		cancel()
		switch {
		case errors.Is(ierr, jetstream.ErrMsgNotFound):
			return false, false, nil
		case ierr == nil:
			return true, m.Header.Get(HeaderGroup) == group, nil
		}
		sleepCtx(ctx, backoff)
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// fence takes the partition over (§8.2 steps 1, 2 and 4): it reads the log's
// last sequence L, waits until the view has applied L, and publishes the
// fence entry expecting L; a refusal means someone appended after L, so it
// starts again. On success the fence is applied to the view and becomes the
// writer's last.
func (l *Log) fence(ctx context.Context, entry func() []byte) error {
	for {
		if !l.lease.Valid() {
			return ErrLeaseInvalid
		}
		ictx, cancel := context.WithTimeout(ctx, time.Second)
		info, err := l.stream.Info(ictx)
		cancel()
		if err != nil {
			if !sleepCtx(ctx, 20*time.Millisecond) {
				return fmt.Errorf("stream info: %w (%w)", err, ctx.Err())
			}
			continue
		}
		L := info.State.LastSeq
		if err := l.catchUp(ctx, L); err != nil {
			return fmt.Errorf("view at %d of the log's last %d: %w", l.view.Applied(), L, err)
		}
		l.mu.Lock()
		l.counter++
		group := l.groupID(l.counter)
		l.mu.Unlock()
		e := entry()
		seq, err := l.commit(ctx, e, group, L, "fence")
		if errors.Is(err, ErrFenced) {
			continue
		}
		if err != nil {
			return err
		}
		if err := l.view.Apply(seq, e); err != nil {
			return fmt.Errorf("apply fence %d of %s: %w", seq, StreamName(l.p), err)
		}
		l.mu.Lock()
		l.last = seq
		l.mu.Unlock()
		return nil
	}
}

// catchUp applies to the view, read from the stream's leader, the entries
// up to L that its consumer has not applied yet. A takeover must not wait
// for the consumer: when the old owner's server stops answering, the
// consumer may have been served by it, and an ordered consumer recreates
// itself with a back-off that grows to 10 s per attempt (and a create
// needs JetStream's meta leader, which may have been on the same server).
// The leader that must accept the fence is the one that answers these
// reads. The consumer skips what is applied here (Apply ignores entries
// at or below Applied), so the two never apply an entry twice or out of
// order: applyMu (the applier's) makes each entry's check and apply one
// step for both.
func (l *Log) catchUp(ctx context.Context, L uint64) error {
	backoff := 10 * time.Millisecond
	for {
		next := l.view.Applied() + 1
		if next > L {
			return nil
		}
		if !l.lease.Valid() {
			return ErrLeaseInvalid
		}
		gctx, cancel := context.WithTimeout(ctx, time.Second)
		m, err := l.stream.GetMsg(gctx, next)
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("entry %d is no longer in the log: the view must be rebuilt", next)
		}
		if err != nil {
			if !sleepCtx(ctx, backoff) {
				return fmt.Errorf("read entry %d: %w (%w)", next, err, ctx.Err())
			}
			backoff = min(2*backoff, 200*time.Millisecond)
			continue
		}
		l.applyMu.Lock()
		if l.view.Applied() < next {
			err = l.view.Apply(next, m.Data)
		}
		l.applyMu.Unlock()
		if err != nil {
			return fmt.Errorf("apply entry %d: %w", next, err)
		}
	}
}
