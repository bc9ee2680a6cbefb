package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble"
)

// A replicated store (docs/cluster.md §9, §10).
//
// In cluster mode the commit point of a write is not Pebble's fsync but a
// replicated log (a JetStream stream): the store on each node is a view
// that applies the log's entries in order, and one node at a time — the
// owner — runs the writer and appends to the log. Everything else of the
// store (key layout, Tx, group commit, the hot-key cache, Seq assignment)
// is the single-node code; only where a group's batch goes differs:
//
//   - single node (Options.Replicated false): b.Commit(pebble.Sync), as
//     always. Nothing in this file runs.
//   - owner: the group's batch is encoded as an entry and appended to the
//     Log; once the log has it (quorum), the batch is committed to Pebble
//     without fsync, with the entry's log sequence as the applied mark.
//   - every other node: Apply writes each entry's batch and the applied
//     mark in one unsynced Pebble batch, and fires OnCommit, so devices
//     connected there are woken as by a local commit.
//
// The applied mark (key zs) and the batch are written atomically, so a view
// never applies an entry twice and resumes, after a crash, from the mark.
// Unsynced writes lost in a power failure only put the mark back: the view
// replays the log from there.
//
// An entry is the write set of a group, never the commands that produced
// it: applying is deterministic and re-runs no logic (I8 of the design).

// Log is the replicated log a store's owner commits through.
type Log interface {
	// Append appends one entry and returns its log sequence once the log
	// holds it durably (a quorum of its replicas). An error means the
	// entry was not appended: the writer fails its group, and its callers
	// may retry. A log that lost its ownership refuses every Append.
	Append(entry []byte) (seq uint64, err error)
}

// ErrNotOwner is returned by Update on a replicated store that is not the
// owner of its log (another node is; or no node is, during a takeover).
// Nothing was written: the caller may retry.
var ErrNotOwner = errors.New("store: this node does not own the log; retry")

// appliedKey holds the log sequence a replicated store has applied up to
// (u64be). No other key starts with 'z'.
var appliedKey = []byte("zs")

// Entry encoding: version, kind, then the kind's body.
//
//	entryTx:    uvarint len + Pebble batch representation,
//	            uvarint count, then per appended event:
//	            uvarint len + user, uvarint seq, flags (1 = rewritten),
//	            uvarint len + origin, uvarint len + data;
//	            in version 2 only, the intents for other partitions
//	            (intents.go, encodeIntents)
//	entryFence: uvarint len + a note (who fenced; for the log's readers)
//	entryRestore: uvarint len + object, uvarint len + SHA-256 (hex),
//	            uvarint the snapshot's own sequence
const (
	entryVersion = 1
	// entryIntents is the version of a tx entry that carries intents
	// (intents.go). Entries without stay version 1, byte for byte as
	// before partitions.
	entryIntents = 2
	entryTx      = 't'
	entryFence   = 'f'
	entryRestore = 'r'
)

// FenceEntry is the entry a new owner appends first (docs/cluster.md §8.2):
// it changes no data. note says who wrote it.
func FenceEntry(note string) []byte {
	b := []byte{entryVersion, entryFence}
	b = binary.AppendUvarint(b, uint64(len(note)))
	return append(b, note...)
}

// Restore is what a restore entry names (docs/cluster.md §19, "Back up"):
// a backup's snapshot of the partition, put where every node can read it
// (the cluster's object store). A view that applies the entry replaces its
// replicated keys by that snapshot, as LoadSnapshot does, and continues
// with the log after the entry: the view stays a function of the log (I8),
// for nodes that apply the entry now and for nodes that replay it later.
type Restore struct {
	Object string // the object holding the snapshot
	SHA256 string // the object's SHA-256, hex: checked as it is read
	Seq    uint64 // the sequence the snapshot was taken at (its own header's)
}

// RestoreEntry is the entry that restores r. Only an empty log's view may
// be restored: the caller appends it expecting the last sequence of a log
// whose view it found empty (Empty), so that no write can come between.
func RestoreEntry(r Restore) []byte {
	b := []byte{entryVersion, entryRestore}
	b = appendBytes(b, r.Object)
	b = appendBytes(b, r.SHA256)
	return binary.AppendUvarint(b, r.Seq)
}

// SetRestoreSource gives a replicated store where to read restore
// entries' objects from (the cluster's object store). A view that applies
// a restore entry without one fails the entry, and its consumer retries.
func (s *Store) SetRestoreSource(f func(object string) (io.ReadCloser, error)) {
	if s.repl != nil && f != nil {
		s.repl.restoreSrc.Store(&f)
	}
}

func encodeEntry(repr []byte, appended []Appended, intents []intent) []byte {
	n := 16 + len(repr)
	for _, a := range appended {
		n += 24 + len(a.User) + len(a.Origin) + len(a.Data)
	}
	for _, i := range intents {
		n += 16 + len(i.user) + len(i.args)
	}
	b := make([]byte, 0, n)
	version := byte(entryVersion)
	if len(intents) > 0 {
		version = entryIntents
	}
	b = append(b, version, entryTx)
	b = binary.AppendUvarint(b, uint64(len(repr)))
	b = append(b, repr...)
	b = binary.AppendUvarint(b, uint64(len(appended)))
	for _, a := range appended {
		b = appendBytes(b, a.User)
		b = binary.AppendUvarint(b, a.Seq)
		var flags byte
		if a.Rewritten {
			flags |= 1
		}
		b = append(b, flags)
		b = appendBytes(b, a.Origin)
		b = appendBytes(b, string(a.Data))
	}
	if len(intents) > 0 {
		b = encodeIntents(b, intents)
	}
	return b
}

func appendBytes(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// entry is a decoded entry; repr and the events' Data alias the input.
type entry struct {
	kind     byte
	repr     []byte
	appended []Appended
	intents  []intent // for other partitions (version 2)
	restore  Restore  // entryRestore
}

var errBadEntry = errors.New("store: malformed log entry")

func decodeEntry(b []byte) (entry, error) {
	if len(b) < 2 {
		return entry{}, errBadEntry
	}
	if b[0] != entryVersion && (b[0] != entryIntents || b[1] != entryTx) {
		return entry{}, fmt.Errorf("store: log entry version %d; this build reads %d and %d", b[0], entryVersion, entryIntents)
	}
	e := entry{kind: b[1]}
	r := entryReader{b: b[2:]}
	switch e.kind {
	case entryFence:
		r.bytes()
	case entryRestore:
		e.restore.Object = string(r.bytes())
		e.restore.SHA256 = string(r.bytes())
		e.restore.Seq = r.uvarint()
	case entryTx:
		e.repr = r.bytes()
		n := r.uvarint()
		if n > uint64(len(r.b)) { // each event takes at least a byte
			return entry{}, errBadEntry
		}
		e.appended = make([]Appended, 0, n)
		for i := uint64(0); i < n && r.err == nil; i++ {
			var a Appended
			a.User = string(r.bytes())
			a.Seq = r.uvarint()
			a.Rewritten = r.byte()&1 != 0
			a.Origin = string(r.bytes())
			a.Data = r.bytes()
			e.appended = append(e.appended, a)
		}
		if b[0] == entryIntents {
			e.intents = decodeIntents(&r)
		}
	default:
		return entry{}, fmt.Errorf("store: log entry of unknown kind %q", e.kind)
	}
	if r.err != nil || len(r.b) != 0 {
		return entry{}, errBadEntry
	}
	return e, nil
}

type entryReader struct {
	b   []byte
	err error
}

func (r *entryReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err, r.b = errBadEntry, nil
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *entryReader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err, r.b = errBadEntry, nil
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *entryReader) byte() byte {
	if len(r.b) == 0 {
		r.err = errBadEntry
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *entryReader) bytes() []byte {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.err, r.b = errBadEntry, nil
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// replication is a replicated store's state; nil for a single node.
type replication struct {
	// mu orders everything that writes the view: Apply, and the owner's
	// writer from the moment its entry is in the log until its callers
	// are answered. Held through OnCommit, so every view reports events in
	// log order.
	mu      sync.Mutex
	applied atomic.Uint64 // written under mu

	// advanced is closed and replaced each time applied moves (under mu):
	// WaitApplied's wake-up.
	advanced chan struct{}

	owner atomic.Pointer[ownership]
	gens  atomic.Uint64 // ownership generations handed out by Own
	// restoreSrc opens restore entries' objects (SetRestoreSource).
	restoreSrc atomic.Pointer[func(object string) (io.ReadCloser, error)]
	// hotGen is the ownership generation the writer's hot-key cache was
	// filled under (writer goroutine only): a new tenure starts it empty,
	// because the previous owner's writes reached this view by Apply,
	// which does not maintain it.
	hotGen uint64
	// failures is the writer's account of failed appends (writer.go),
	// writer goroutine only.
	failures appendFailures
}

// advance moves the applied mark; mu is held.
func (r *replication) advance(seq uint64) {
	r.applied.Store(seq)
	close(r.advanced)
	r.advanced = make(chan struct{})
}

// WaitApplied returns once this view has applied the log up to seq, or
// with ctx's error.
func (s *Store) WaitApplied(ctx context.Context, seq uint64) error {
	if s.parts != nil {
		return errors.New("store: WaitApplied names one partition's log: call it on Partition(p)")
	}
	if s.repl == nil {
		return nil
	}
	for {
		s.repl.mu.Lock()
		ch := s.repl.advanced
		s.repl.mu.Unlock()
		if s.repl.applied.Load() >= seq {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

type ownership struct {
	log Log
	gen uint64
}

// openMode checks that the database in dir was written in the mode it is
// opened in, and returns its applied mark. A view's data is only whole
// together with its log, and a single node's data has no log: opening
// either as the other would serve a wrong state.
func openMode(db *pebble.DB, dir string, replicated bool) (applied uint64, err error) {
	v, err := get(db, appliedKey)
	if err != nil {
		return 0, err
	}
	if len(v) == 8 {
		applied = binary.BigEndian.Uint64(v)
	}
	switch {
	case v != nil && !replicated:
		return 0, fmt.Errorf("store: %s is a cluster node's view of a replicated log; start this node with its cluster settings", dir)
	case v == nil && replicated:
		it, err := db.NewIter(nil)
		if err != nil {
			return 0, err
		}
		used := it.First()
		if err := it.Close(); err != nil {
			return 0, err
		}
		if used {
			return 0, fmt.Errorf("store: %s holds a single node's data; a cluster node starts with an empty data directory", dir)
		}
	}
	return applied, nil
}

// Applied is the log sequence this view has applied up to (0 for a single
// node, or a view that has applied nothing).
//
// On the front of several partitions it is the sum of theirs: how many
// entries this node's views have applied, all logs together.
func (s *Store) Applied() uint64 {
	if s.parts != nil {
		var n uint64
		for _, p := range s.parts {
			n += p.Applied()
		}
		return n
	}
	if s.repl == nil {
		return 0
	}
	return s.repl.applied.Load()
}

// Own makes this store the writer of its log: from now on Update commits
// through l. The caller has made sure the view is at the log's end, its
// own fence included (docs/cluster.md §8.2), and l appends only after
// that.
func (s *Store) Own(l Log) error {
	if s.repl == nil {
		return errors.New("store: Own on a store not opened as Replicated")
	}
	s.repl.owner.Store(&ownership{log: l, gen: s.repl.gens.Add(1)})
	return nil
}

// Disown stops this store writing: Update fails with ErrNotOwner until the
// next Own. A group already appending finishes or fails by its log's
// answer.
func (s *Store) Disown() {
	if s.repl != nil {
		s.repl.owner.Store(nil)
	}
}

// Owns reports whether Own is in force.
func (s *Store) Owns() bool { return s.repl != nil && s.repl.owner.Load() != nil }

// ownerLog is the log a group commits through, or ErrNotOwner; nil, nil on
// a single node. Writer goroutine only.
func (s *Store) ownerLog() (Log, error) {
	if s.repl == nil {
		return nil, nil
	}
	o := s.repl.owner.Load()
	if o == nil {
		return nil, ErrNotOwner
	}
	if o.gen != s.repl.hotGen {
		clear(s.hot)
		s.repl.hotGen = o.gen
	}
	return o.log, nil
}

// commitToLog appends the group's batch b to l and, once the log holds it,
// writes it to the view. It returns with repl.mu held (the caller answers
// and notifies under it, then unlocks), and whether the view was written
// here: false when Apply, fed this writer's own entry by the log's
// consumer, wrote it first and has already notified OnCommit.
func (s *Store) commitToLog(l Log, b *pebble.Batch, appended []Appended, intents []intent) (wrote bool, err error) {
	seq, err := l.Append(encodeEntry(b.Repr(), appended, intents))
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrNotOwner, err)
	}
	s.repl.mu.Lock()
	if seq <= s.repl.applied.Load() {
		return false, nil
	}
	var targets []int
	if len(intents) > 0 {
		targets, err = putOutbox(b, seq, intents)
	}
	if err == nil {
		err = b.Set(appliedKey, u64(seq), nil)
	}
	if err == nil {
		err = b.Commit(pebble.NoSync)
	}
	if err != nil {
		// The log has the entry; this view does not. Nothing can put it
		// right here but a re-apply from the log: stop writing.
		s.repl.mu.Unlock()
		s.Disown()
		return false, fmt.Errorf("store: view write after log append (seq %d): %w", seq, err)
	}
	s.repl.advance(seq)
	s.notifyIntents(targets)
	return true, nil
}

// Apply writes the log's entry seq to this view: another owner's group,
// this node's own group when the consumer gets it before the writer
// does, or a fence. Entries at or below Applied are skipped, so a
// consumer may redeliver. Entries must come in log order.
func (s *Store) Apply(seq uint64, data []byte) error {
	if s.repl == nil {
		return errors.New("store: Apply on a store not opened as Replicated")
	}
	e, err := decodeEntry(data)
	if err != nil {
		return fmt.Errorf("store: entry %d: %w", seq, err)
	}
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	if e.kind == entryRestore {
		return s.applyRestore(seq, e.restore)
	}
	r := s.repl
	r.mu.Lock()
	defer r.mu.Unlock()
	if seq <= r.applied.Load() {
		return nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	if len(e.repr) > 0 {
		if err := b.SetRepr(bytes.Clone(e.repr)); err != nil {
			return fmt.Errorf("store: entry %d: %w", seq, err)
		}
	}
	var targets []int
	if len(e.intents) > 0 {
		if targets, err = putOutbox(b, seq, e.intents); err != nil {
			return err
		}
	}
	if err := b.Set(appliedKey, u64(seq), nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("store: applying entry %d: %w", seq, err)
	}
	r.advance(seq)
	s.notifyIntents(targets)
	if len(e.repr) > 0 {
		s.noteApplied(b)
	}
	if len(e.appended) > 0 && s.opts.OnCommit != nil {
		s.opts.OnCommit(e.appended)
	}
	s.lastSeq.Update(func(get func(string) (uint64, bool), put func(string, uint64)) {
		for _, a := range e.appended {
			if cur, _ := get(a.User); !a.Rewritten && a.Seq > cur {
				put(a.User, a.Seq)
			}
		}
	})
	return nil
}

// applyRestore applies restore entry seq: the view's replicated keys are
// replaced by the snapshot the entry names, its digest checked before the
// load's last batch, and the view is then at seq. The load is LoadSnapshot's
// (snapshot.go), crash-safe the same way: until its last batch the view is
// marked as being rebuilt, reports Applied 0, and reopened, starts from
// nothing, so that its consumer replays the log — this entry included.
// Like LoadSnapshot it refuses while the store owns its log; the owner's
// log is fenced by the entry, so its consumer's retry finds it disowned.
func (s *Store) applyRestore(seq uint64, r Restore) error {
	if seq <= s.repl.applied.Load() {
		return nil
	}
	src := s.repl.restoreSrc.Load()
	if src == nil {
		return fmt.Errorf("store: restore entry %d: this view has no restore source", seq)
	}
	rc, err := (*src)(r.Object)
	if err != nil {
		return fmt.Errorf("store: restore entry %d: object %s: %w", seq, r.Object, err)
	}
	defer rc.Close()
	dr := &digestReader{r: rc, h: sha256.New(), want: r.SHA256}
	if err := s.loadSnapshot(r.Seq, seq, dr); err != nil {
		return fmt.Errorf("store: restore entry %d (object %s): %w", seq, r.Object, err)
	}
	return nil
}

// digestReader passes r through and, at its end, fails unless what came
// through has the SHA-256 want (hex): a load reads to the end before its
// last batch, so a corrupt object is never loaded whole.
type digestReader struct {
	r    io.Reader
	h    hash.Hash
	want string
}

func (d *digestReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	d.h.Write(p[:n])
	if err == io.EOF {
		if got := hex.EncodeToString(d.h.Sum(nil)); got != d.want {
			return n, fmt.Errorf("%w: SHA-256 %s, the entry says %s", ErrBadSnapshot, got, d.want)
		}
	}
	return n, err
}

// noteApplied brings the store's caches up to date with an applied batch,
// as the code that made the writes does for them on the owner (accounts,
// kicks, push tokens, the resend filter). The hot-key cache is not kept:
// ownerLog starts it empty in each tenure.
func (s *Store) noteApplied(b *pebble.Batch) {
	now := s.Now()
	rd := b.Reader()
	for {
		kind, k, v, ok, err := rd.Next()
		if !ok || err != nil {
			return
		}
		s.noteWrite(k, v, kind == pebble.InternalKeyKindSet, now)
	}
}

// noteWrite brings the caches up to date with one write (noteApplied's,
// and an intent's: Receive).
func (s *Store) noteWrite(k, v []byte, put bool, now time.Time) {
	switch {
	case bytes.HasPrefix(k, []byte("a/")):
		s.accounts.Set(string(k[2:]), put)
	case bytes.HasPrefix(k, []byte("x/")):
		var at time.Time
		if put && len(v) == 8 {
			at = earliestAccepted(time.Unix(0, int64(binary.BigEndian.Uint64(v))))
		}
		s.kicks.Set(string(k[2:]), at)
	case bytes.HasPrefix(k, []byte("pt/")):
		user, _, _ := bytes.Cut(k[3:], []byte{sep})
		s.tokenless.Forget(string(user))
	case bytes.HasPrefix(k, []byte("d/")) && put:
		s.dedup.add(k, now)
	}
	s.noteChange(k)
}

// changePrefixes are the keys whose users OnChange hears of.
var changePrefixes = [...]string{"a/", "pf/", "nm/", "rf/", "rb/"}

// noteChange tells OnChange of k's user when k is of changePrefixes.
func (s *Store) noteChange(k []byte) {
	if s.opts.OnChange == nil {
		return
	}
	for _, p := range changePrefixes {
		if bytes.HasPrefix(k, []byte(p)) {
			user, _, _ := bytes.Cut(k[len(p):], []byte{sep})
			s.opts.OnChange(string(user))
			return
		}
	}
}
