package store

import (
	"bytes"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble"
)

// The writer goroutine is the only code that assigns timeline sequence
// numbers and the only code that commits acknowledged writes.
//
// One loop turn: take the first queued transaction, take every other one
// already queued (up to MaxGroup), run each against an indexed batch (so a
// transaction sees the writes of the ones before it in the same group, which
// is what makes two identical resends in one group de-duplicate), then commit
// the batch with one fsync and answer every caller. While the fsync runs, new
// transactions queue up and form the next group: under load, groups grow
// and the cost of an fsync is shared by everyone in them.

// Tx is the view a transaction function has of the store. It is only valid
// inside the function passed to Update.
type Tx struct {
	s     *Store
	group *pebble.Batch // indexed: reads see earlier transactions of the group
	puts  []kv
	seqs  map[string]uint64   // next Seq to hand out per user, this transaction
	gseqs map[string]uint64   // last Seq handed out per user by earlier transactions of the group
	ghot  map[string]hotValue // cacheable keys written by earlier transactions of the group
	app   []Appended

	// intents are the writes deferred to other partitions (intents.go);
	// nph numbers their placeholders across the group.
	intents []intent
	nph     *uint64

	// newSend is what Resent last found for a new message (messages.go).
	newSend newSend
}

// The writer keeps the current value of hot keys (conversation entries,
// read and rewritten by every message) in memory. Every write of such a key
// goes through a transaction, so the cache is exact: a commit moves the
// group's writes into it, a failed commit leaves it as it was.
type hotValue struct {
	v      []byte
	absent bool
	// dec is v decoded (a *Conversation), when known: the writer reads an
	// entry with every message, and decoding it each time was a cost of
	// its own. Never mutated: readers copy it.
	dec any
}

// maxHot bounds the cache; past it the cache starts again empty.
const maxHot = 1 << 18

func hotKey(k []byte) bool { return len(k) > 2 && k[0] == 'r' && k[1] == '/' }

type kv struct {
	k, v []byte
	del  bool
	dec  any // see hotValue.dec
}

// Appended describes one timeline event a commit added, or rewrote in
// place (a recalled or edited message's copy).
type Appended struct {
	User      string
	Seq       uint64
	Data      []byte
	Rewritten bool
	// Origin is the client id of the user's device that caused the event
	// (a message it sent), which need not be sent the event back. It is
	// not stored.
	Origin string
}

// Get reads k as of this transaction (its own writes, then the group's, then
// the database). It returns nil, nil for a missing key.
func (tx *Tx) Get(k []byte) ([]byte, error) {
	v, _, err := tx.getDecoded(k)
	return v, err
}

// getDecoded is Get, with the decoded form of a hot key's value when it is
// known (see hotValue.dec).
func (tx *Tx) getDecoded(k []byte) ([]byte, any, error) {
	for i := len(tx.puts) - 1; i >= 0; i-- {
		if bytes.Equal(tx.puts[i].k, k) {
			if tx.puts[i].del {
				return nil, nil, nil
			}
			return tx.puts[i].v, tx.puts[i].dec, nil
		}
	}
	if !hotKey(k) {
		v, err := get(tx.group, k)
		return v, nil, err
	}
	if h, ok := tx.ghot[string(k)]; ok {
		return h.v, h.dec, nil
	}
	if h, ok := tx.s.hot[string(k)]; ok {
		return h.v, h.dec, nil
	}
	// Not written in this group (that would be in ghot): the database
	// holds the committed value, which the cache may keep.
	v, err := get(tx.group, k)
	if err == nil {
		if len(tx.s.hot) >= maxHot {
			clear(tx.s.hot)
		}
		tx.s.hot[string(k)] = hotValue{v: v, absent: v == nil}
	}
	return v, nil, err
}

// decoded records dec as the decoded form of k's committed value v, which a
// reader just decoded, so the next reader need not.
func (tx *Tx) decoded(k, v []byte, dec any) {
	if h, ok := tx.s.hot[string(k)]; ok && h.dec == nil && len(h.v) == len(v) && len(v) > 0 && &h.v[0] == &v[0] {
		h.dec = dec
		tx.s.hot[string(k)] = h
	}
}

// Put writes k = v when the transaction commits.
func (tx *Tx) Put(k, v []byte) { tx.puts = append(tx.puts, kv{k: k, v: v}) }

// putDecoded is Put for a hot key, with v's decoded form (never mutated
// afterwards).
func (tx *Tx) putDecoded(k, v []byte, dec any) {
	tx.puts = append(tx.puts, kv{k: k, v: v, dec: dec})
}

// Delete removes k when the transaction commits.
func (tx *Tx) Delete(k []byte) { tx.puts = append(tx.puts, kv{k: k, del: true}) }

// Now is the store's clock.
func (tx *Tx) Now() time.Time { return tx.s.Now() }

// Append adds an event to user's timeline and returns its Seq. The stored
// and delivered JSON is `{"Seq":N,` followed by tail, which must be the rest
// of a JSON object without its opening brace (e.g. `"Event":"msg",...}`).
func (tx *Tx) Append(user string, tail []byte) (uint64, error) {
	return tx.appendEvent(user, "", tail, nil)
}

// appendEvent appends the event; stored, when not nil, is kept instead of
// its JSON (a reference: see AppendCopy).
func (tx *Tx) appendEvent(user, origin string, tail, stored []byte) (uint64, error) {
	if p, ok := tx.foreign(user); ok {
		return tx.deferAppend(p, user, origin, tail, time.Time{}), nil
	}
	next, ok := tx.seqs[user]
	if !ok {
		last, inGroup := tx.gseqs[user]
		if !inGroup {
			var err error
			if last, err = tx.s.LastSeq(user); err != nil {
				return 0, err
			}
		}
		next = last + 1
	}
	tx.seqs[user] = next + 1
	data := make([]byte, 0, len(tail)+32)
	data = append(data, `{"Seq":`...)
	data = strconv.AppendUint(data, next, 10)
	data = append(data, ',')
	data = append(data, tail...)
	if stored == nil {
		stored = data
	}
	tx.Put(timelineKey(user, next), stored)
	tx.app = append(tx.app, Appended{User: user, Seq: next, Data: data, Origin: origin})
	return next, nil
}

// AppendFrom is Append for an event caused by user's device origin (a
// client id): see Appended.Origin.
func (tx *Tx) AppendFrom(user, origin string, tail []byte) (uint64, error) {
	return tx.appendEvent(user, origin, tail, nil)
}

// AppendCopy is AppendFrom for an event whose tail this transaction also
// appended to of's timeline, at ofSeq: the sender's copy of a message. It is
// stored as a reference to that copy, so the store writes (and compacts)
// every message's event once, not twice; reads resolve it (ReadTimeline),
// and a rewrite of either copy (recall, edit) stores full data again.
//
// A copy of an event deferred to another partition (ofSeq a placeholder,
// intents.go) is stored whole: a reference cannot name a Seq this
// partition does not know, nor a key it does not hold.
func (tx *Tx) AppendCopy(user, origin string, tail []byte, of string, ofSeq uint64) (uint64, error) {
	if _, f := tx.foreign(of); f || isPlaceholder(ofSeq) {
		return tx.appendEvent(user, origin, tail, nil)
	}
	return tx.appendEvent(user, origin, tail, eventRef(of, ofSeq))
}

// AppendUntil is Append for an event that leaves the timeline at expire.
func (tx *Tx) AppendUntil(user string, tail []byte, expire time.Time) (uint64, error) {
	if p, ok := tx.foreign(user); ok {
		// The target schedules the expiry of its own key (§10.1).
		return tx.deferAppend(p, user, "", tail, expire), nil
	}
	seq, err := tx.Append(user, tail)
	if err == nil {
		tx.ExpireAt(expire, timelineKey(user, seq))
	}
	return seq, err
}

type txn struct {
	fn   func(*Tx) error
	err  error
	done chan struct{}
}

// Update runs fn in the writer and returns once its writes are durable (or
// fn failed, in which case nothing of it was written). fn runs on the
// writer goroutine: it must be quick and must not call Update.
func (s *Store) Update(fn func(*Tx) error) error {
	if s.parts != nil {
		return errNeedsHome
	}
	t := &txn{fn: fn, done: make(chan struct{})}
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	select {
	case s.queue <- t:
	case <-s.done:
		return ErrClosed
	}
	// With done closed and room in the queue, the send above may still win
	// the select after the writer drained the queue for the last time:
	// nobody would ever run t, so stop waiting once the writer has gone.
	select {
	case <-t.done:
		return t.err
	case <-s.stopped:
		select {
		case <-t.done:
			return t.err
		default:
			return ErrClosed
		}
	}
}

func (s *Store) writer() {
	defer s.wg.Done()
	defer close(s.stopped)
	group := make([]*txn, 0, s.opts.MaxGroup)
	for {
		group = group[:0]
		select {
		case t := <-s.queue:
			group = append(group, t)
		case <-s.done:
			// Drain what callers queued before Close; fail nothing silently.
			for {
				select {
				case t := <-s.queue:
					s.commit([]*txn{t})
				default:
					return
				}
			}
		}
	fill:
		for len(group) < s.opts.MaxGroup {
			select {
			case t := <-s.queue:
				group = append(group, t)
			default:
				break fill
			}
		}
		s.commit(group)
	}
}

// appendWarnEvery spaces the writer's warnings about failed log appends.
// While a partition's log has no leader, or its owner's lease has lapsed
// (docs/cluster.md §8.4), every group fails: a failover under load wrote
// 480 identical lines a second. The first failure of a run is logged at
// once, then one line per interval with the count, and one when appends
// succeed again.
const appendWarnEvery = 5 * time.Second

// appendFailures is the account behind those lines.
type appendFailures struct {
	first, logged time.Time // the run's first failure; the last line written
	streak        int       // failures since the last append that succeeded
	unlogged      int       // failures since the last line
}

func (f *appendFailures) failed(log *slog.Logger, err error, txns int, now time.Time) {
	if f.streak == 0 {
		f.first = now
	}
	f.streak++
	if f.streak > 1 && now.Sub(f.logged) < appendWarnEvery {
		f.unlogged++
		return
	}
	log.Warn("store: log append failed", "error", err, "txns", txns, "failed_in_a_row", f.streak, "not_logged", f.unlogged)
	f.logged, f.unlogged = now, 0
}

func (f *appendFailures) succeeded(log *slog.Logger, now time.Time) {
	log.Info("store: log appends succeed again", "failed_in_a_row", f.streak, "for", now.Sub(f.first).Round(time.Millisecond))
	*f = appendFailures{}
}

// commit runs one group and answers its callers.
func (s *Store) commit(group []*txn) {
	lg, err := s.ownerLog()
	if err != nil {
		s.failGroup(group, err)
		return
	}
	b := s.db.NewIndexedBatch()
	defer b.Close()
	var (
		appended []Appended
		intents  []intent
		nph      uint64 // placeholders handed out in the group (intents.go)
	)
	seqs := make(map[string]uint64) // users whose Seq this group advanced → new last
	ghot := make(map[string]hotValue)
	ok := 0
	for _, t := range group {
		tx := &Tx{s: s, group: b, seqs: make(map[string]uint64), gseqs: seqs, ghot: ghot, nph: &nph}
		if err := t.fn(tx); err != nil {
			t.err = err
			continue
		}
		if s.opts.PartitionOf != nil {
			if err := s.checkWrites(tx); err != nil {
				s.log.Error("store: refused a transaction", "error", err)
				t.err = err
				continue
			}
		}
		for _, p := range tx.puts {
			var err error
			if p.del {
				err = b.Delete(p.k, nil)
			} else {
				err = b.Set(p.k, p.v, nil)
			}
			if err != nil {
				// A batch that refuses a write is unusable: fail the group.
				s.failGroup(group, fmt.Errorf("store: batch: %w", err))
				return
			}
			if hotKey(p.k) {
				ghot[string(p.k)] = hotValue{v: p.v, absent: p.del, dec: p.dec}
			}
		}
		for u, next := range tx.seqs {
			seqs[u] = next - 1
		}
		appended = append(appended, tx.app...)
		intents = append(intents, tx.intents...)
		ok++
	}
	notify := true
	if ok > 0 && (!b.Empty() || len(intents) > 0) {
		start := time.Now()
		if lg != nil {
			// The log is the commit point (log.go); the view is written
			// after it, and all that follows runs under repl.mu.
			wrote, err := s.commitToLog(lg, b, appended, intents)
			if err != nil {
				s.repl.failures.failed(s.log, err, ok, time.Now())
				s.failGroup(group, err)
				return
			}
			if s.repl.failures.streak > 0 {
				s.repl.failures.succeeded(s.log, time.Now())
			}
			defer s.repl.mu.Unlock()
			notify = wrote
		} else if err := b.Commit(pebble.Sync); err != nil {
			s.log.Error("store: commit failed", "error", err, "txns", ok)
			s.failGroup(group, fmt.Errorf("store: commit: %w", err))
			return
		}
		s.Metrics.observeCommit(ok, time.Since(start))
		if len(s.hot)+len(ghot) > maxHot {
			clear(s.hot)
		}
		for k, h := range ghot {
			s.hot[k] = h
		}
	}
	// OnCommit hears of the events before LastSeq shows them: delivery keeps
	// what it must know about an event (whose device sent it) ready before
	// any reader can find it by Seq.
	if notify && len(appended) > 0 && s.opts.OnCommit != nil {
		s.opts.OnCommit(appended)
	}
	if ok > 0 {
		s.lastSeq.Update(func(_ func(string) (uint64, bool), put func(string, uint64)) {
			for u, last := range seqs {
				put(u, last)
			}
		})
	}
	for _, t := range group {
		close(t.done)
	}
}

func (s *Store) failGroup(group []*txn, err error) {
	for _, t := range group {
		if t.err == nil {
			t.err = err
		}
		close(t.done)
	}
}

// Metrics are the store's counters, read by the metrics endpoint.
type Metrics struct {
	Commits      atomic.Int64 // fsynced batches
	Txns         atomic.Int64 // transactions in them
	CommitMicros atomic.Int64 // total time spent in Commit
}

func (m *Metrics) observeCommit(txns int, d time.Duration) {
	m.Commits.Add(1)
	m.Txns.Add(int64(txns))
	m.CommitMicros.Add(d.Microseconds())
}
