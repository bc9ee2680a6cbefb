package store

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cockroachdb/pebble"
)

// Snapshots of a replicated store (docs/cluster.md §10.3, §10.4).
//
// A view is the log applied in order, so the log could be replayed from its
// first entry for ever; it is trimmed instead, once a snapshot of a view at
// applied mark S is stored where every node can read it. A node whose view
// is behind the log's first entry loads the snapshot and replays from S+1.
//
// What a snapshot holds is the view's replicated keys: every key an entry
// can write. Not in it: the node-local device cursor caches (c/, w/; each
// node writes its own, outside the log: the cluster's cursors are in KV)
// and the marks (z: zs, the applied mark, which the snapshot's header
// carries; zr, below).
//
// Format (version 1):
//
//	"DUETSNAP" 0x01 {seq u64be}
//	per key, in key order: uvarint len + key (len > 0), uvarint len + value
//	0x00 (end), uvarint number of keys
//
// The object store that keeps snapshots checks a digest of the whole
// object; the count at the end catches a stream cut short.

// snapshotMagic starts every snapshot.
const (
	snapshotMagic   = "DUETSNAP"
	snapshotVersion = 1
)

// SnapshotFormat is the format version Snapshot writes and LoadSnapshot
// reads (the cluster puts it in the snapshot object's headers).
func (s *Store) SnapshotFormat() int { return snapshotVersion }

// rebuildKey marks a view whose replicated keys are being replaced by a
// snapshot: present, the view's data is neither the old state nor the new,
// so Open clears it and starts the view from nothing (applied 0).
var rebuildKey = []byte("zr")

// loadBatchBytes is how much of a snapshot one Pebble batch carries (a
// variable for tests).
var loadBatchBytes = 4 << 20

// localKey reports a key that is not the log's: a node's own device cursor
// cache, or a mark of the view itself.
func localKey(k []byte) bool {
	return bytes.HasPrefix(k, []byte("c/")) || bytes.HasPrefix(k, []byte("w/")) || (len(k) > 0 && k[0] == 'z')
}

// replicatedRanges are the key ranges an entry can write: everything below
// z except the cursor caches c/ and w/ (no key sorts at or after z but the
// marks; store.go's layout).
var replicatedRanges = [][2][]byte{
	{{}, []byte("c/")},
	{prefixEnd([]byte("c/")), []byte("w/")},
	{prefixEnd([]byte("w/")), []byte("z")},
}

// clearReplicated deletes every replicated key in b.
func clearReplicated(b *pebble.Batch) error {
	for _, r := range replicatedRanges {
		if err := b.DeleteRange(r[0], r[1], nil); err != nil {
			return err
		}
	}
	return nil
}

// finishRebuild is Open's half of an interrupted LoadSnapshot: the view is
// emptied of the log's keys and marked as having applied nothing, so that
// the cluster rebuilds it again (its applied mark is then behind the log's
// first entry) or replays the log from its start.
func finishRebuild(db *pebble.DB) error {
	v, err := get(db, rebuildKey)
	if err != nil || v == nil {
		return err
	}
	b := db.NewBatch()
	defer b.Close()
	if err := clearReplicated(b); err != nil {
		return err
	}
	b.Set(appliedKey, u64(0), nil)
	b.Delete(rebuildKey, nil)
	return b.Commit(pebble.Sync)
}

// Snapshot takes a consistent snapshot of this view and hands it to put as
// a stream, with the applied mark it is at: the view's state after the
// log's entry seq. put must read r to its end (or fail); the view goes on
// applying and writing meanwhile.
func (s *Store) Snapshot(put func(seq uint64, r io.Reader) error) error {
	if s.repl == nil {
		return errors.New("store: Snapshot on a store not opened as Replicated")
	}
	if !s.hold() {
		return ErrClosed
	}
	defer s.wg.Done()
	snap := s.db.NewSnapshot()
	defer snap.Close()
	// The mark is written in the same batch as the entry it marks (log.go),
	// so the snapshot's data is exactly the log up to it.
	v, err := get(snap, appliedKey)
	if err != nil {
		return err
	}
	if len(v) != 8 {
		return errors.New("store: Snapshot of a view that has applied nothing")
	}
	return streamSnapshot(snap, binary.BigEndian.Uint64(v), put)
}

// streamSnapshot hands put snap's replicated keys as a snapshot taken at
// seq, written by a goroutine as put reads.
func streamSnapshot(snap *pebble.Snapshot, seq uint64, put func(seq uint64, r io.Reader) error) error {
	return streamWith(seq, func(w io.Writer) error { return writeSnapshot(w, snap, seq) }, put)
}

// streamWith hands put what write writes, as a snapshot taken at seq,
// written by a goroutine as put reads.
func streamWith(seq uint64, write func(io.Writer) error, put func(seq uint64, r io.Reader) error) error {
	pr, pw := io.Pipe()
	wrote := make(chan error, 1)
	go func() {
		err := write(pw)
		pw.CloseWithError(err)
		wrote <- err
	}()
	err := put(seq, pr)
	// Stop the writer if put gave up before the end.
	pr.CloseWithError(errors.New("store: snapshot reader closed"))
	werr := <-wrote
	if err != nil {
		return err
	}
	return werr
}

func writeSnapshot(w io.Writer, snap *pebble.Snapshot, seq uint64) error {
	sw := newSnapWriter(w, seq)
	for _, r := range replicatedRanges {
		it, err := snap.NewIter(&pebble.IterOptions{LowerBound: r[0], UpperBound: r[1]})
		if err != nil {
			return err
		}
		for ok := it.First(); ok; ok = it.Next() {
			if err := sw.add(it.Key(), it.Value()); err != nil {
				it.Close()
				return err
			}
		}
		if err := it.Close(); err != nil {
			return err
		}
	}
	return sw.close()
}

// snapWriter writes a snapshot (the format above) record by record.
type snapWriter struct {
	bw  *bufio.Writer
	n   uint64
	buf [binary.MaxVarintLen64]byte
}

func newSnapWriter(w io.Writer, seq uint64) *snapWriter {
	sw := &snapWriter{bw: bufio.NewWriterSize(w, 64<<10)}
	sw.bw.WriteString(snapshotMagic)
	sw.bw.WriteByte(snapshotVersion)
	sw.bw.Write(u64(seq))
	return sw
}

// add writes one key (never empty: a 0 length ends the records).
func (sw *snapWriter) add(k, v []byte) error {
	if len(k) == 0 {
		return errors.New("store: a snapshot record without a key")
	}
	sw.bw.Write(sw.buf[:binary.PutUvarint(sw.buf[:], uint64(len(k)))])
	sw.bw.Write(k)
	sw.bw.Write(sw.buf[:binary.PutUvarint(sw.buf[:], uint64(len(v)))])
	_, err := sw.bw.Write(v)
	sw.n++
	return err
}

// close writes the end and the count, and flushes.
func (sw *snapWriter) close() error {
	sw.bw.WriteByte(0)
	sw.bw.Write(sw.buf[:binary.PutUvarint(sw.buf[:], sw.n)])
	return sw.bw.Flush()
}

// Export is Snapshot for a single node's store as well (a backup, or the
// seed of a cluster: docs/cluster.md §19): a single node's data is in the
// same layout as a one-partition view, and its snapshot is taken at
// sequence 0 (a single node has no log). A replicated store's is Snapshot.
func (s *Store) Export(put func(seq uint64, r io.Reader) error) error {
	if s.repl != nil {
		return s.Snapshot(put)
	}
	if !s.hold() {
		return ErrClosed
	}
	defer s.wg.Done()
	snap := s.db.NewSnapshot()
	defer snap.Close()
	return streamSnapshot(snap, 0, put)
}

// ExportCursors calls cursor for each device cursor and highWater for each
// user's high-water mark this store holds (on a single node, all of them;
// on a cluster node, its own cache: the cluster's are in KV).
func (s *Store) ExportCursors(cursor func(user, device string, seq uint64) error, highWater func(user string, seq uint64) error) error {
	if !s.hold() {
		return ErrClosed
	}
	defer s.wg.Done()
	for _, prefix := range []string{"c/", "w/"} {
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte(prefix), UpperBound: prefixEnd([]byte(prefix))})
		if err != nil {
			return err
		}
		for ok := it.First(); ok; ok = it.Next() {
			k, v := it.Key()[len(prefix):], it.Value()
			if len(v) != 8 {
				continue
			}
			seq := binary.BigEndian.Uint64(v)
			if prefix == "w/" {
				err = highWater(string(k), seq)
			} else if user, device, found := bytes.Cut(k, []byte{sep}); found {
				err = cursor(string(user), string(device), seq)
			}
			if err != nil {
				it.Close()
				return err
			}
		}
		if err := it.Close(); err != nil {
			return err
		}
	}
	return nil
}

// Empty reports whether this store holds none of the log's keys (no
// account, no message, nothing an entry writes): a view that only
// fences have been applied to, or a single node never written. Only an
// empty cluster is restored into.
func (s *Store) Empty() (bool, error) {
	if !s.hold() {
		return false, ErrClosed
	}
	defer s.wg.Done()
	for _, r := range replicatedRanges {
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: r[0], UpperBound: r[1]})
		if err != nil {
			return false, err
		}
		found := it.First()
		if err := it.Close(); err != nil {
			return false, err
		}
		if found {
			return false, nil
		}
	}
	return true, nil
}

// ErrBadSnapshot is returned by LoadSnapshot for a stream that is not a
// whole snapshot of this format.
var ErrBadSnapshot = errors.New("store: malformed snapshot")

// LoadSnapshot replaces this view's replicated keys by the snapshot in r,
// which Snapshot wrote at applied mark seq, and sets the applied mark to
// seq: the view then continues with the log's entry seq+1. The node's own
// cursor caches are kept. A view that owns its log refuses (its writer's
// state would not match).
//
// The load is written in several batches: until the last, the view is
// marked as being rebuilt (and Applied reports 0), so that a crash or an
// error part-way leaves a view that is rebuilt again, never one that
// looks whole.
func (s *Store) LoadSnapshot(seq uint64, r io.Reader) error {
	return s.loadSnapshot(seq, seq, r)
}

// loadSnapshot is LoadSnapshot of a snapshot taken at seq taken, after
// which the view is at mark: the same for a rebuild, the restore entry's
// own sequence for a restore (log.go), whose snapshot was taken by another
// log (a backup's).
func (s *Store) loadSnapshot(taken, mark uint64, r io.Reader) error {
	if s.repl == nil {
		return errors.New("store: LoadSnapshot on a store not opened as Replicated")
	}
	if s.Owns() {
		return errors.New("store: LoadSnapshot on the owner of the log")
	}
	if !s.hold() {
		return ErrClosed
	}
	defer s.wg.Done()
	rp := s.repl
	rp.mu.Lock()
	defer rp.mu.Unlock()

	br := bufio.NewReaderSize(r, 64<<10)
	head := make([]byte, len(snapshotMagic)+1+8)
	if _, err := io.ReadFull(br, head); err != nil {
		return fmt.Errorf("%w: header: %v", ErrBadSnapshot, err)
	}
	if string(head[:len(snapshotMagic)]) != snapshotMagic {
		return fmt.Errorf("%w: not a snapshot", ErrBadSnapshot)
	}
	if v := head[len(snapshotMagic)]; v != snapshotVersion {
		return fmt.Errorf("store: snapshot format %d; this build reads %d", v, snapshotVersion)
	}
	if got := binary.BigEndian.Uint64(head[len(snapshotMagic)+1:]); got != taken {
		return fmt.Errorf("%w: taken at %d, announced as %d", ErrBadSnapshot, got, taken)
	}

	// First: the old state goes, the marker comes, the mark drops to 0.
	b := s.db.NewBatch()
	if err := clearReplicated(b); err != nil {
		b.Close()
		return err
	}
	b.Set(rebuildKey, nil, nil)
	b.Set(appliedKey, u64(0), nil)
	err := b.Commit(pebble.NoSync)
	b.Close()
	if err != nil {
		return err
	}
	rp.advance(0)
	s.forgetCaches()

	now := s.Now()
	b = s.db.NewBatch()
	defer func() { b.Close() }()
	var n uint64
	var targets []int // of the outbox records loaded
	for {
		klen, err := binary.ReadUvarint(br)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadSnapshot, err)
		}
		if klen == 0 {
			break
		}
		k, err := readN(br, klen)
		if err != nil {
			return err
		}
		vlen, err := binary.ReadUvarint(br)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadSnapshot, err)
		}
		v, err := readN(br, vlen)
		if err != nil {
			return err
		}
		if localKey(k) {
			return fmt.Errorf("%w: node-local key %q", ErrBadSnapshot, k)
		}
		if bytes.HasPrefix(k, []byte("d/")) {
			s.dedup.add(k, now)
		}
		if t, ok := outboxTarget(k); ok && !containsInt(targets, t) {
			targets = append(targets, t)
		}
		b.Set(k, v, nil)
		n++
		if b.Len() >= loadBatchBytes {
			if err := b.Commit(pebble.NoSync); err != nil {
				return err
			}
			b.Close()
			b = s.db.NewBatch()
		}
	}
	count, err := binary.ReadUvarint(br)
	if err != nil || count != n {
		return fmt.Errorf("%w: %d keys read, the snapshot says %v (%v)", ErrBadSnapshot, n, count, err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return fmt.Errorf("%w: after the end: %v", ErrBadSnapshot, err)
	}
	// Last: the mark, and the marker goes. Synced: a rebuild is rare, and
	// a view that must not be rebuilt twice for want of an fsync.
	b.Set(appliedKey, u64(mark), nil)
	b.Delete(rebuildKey, nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	// The loaded state may have changed any user: caches read from it
	// afresh.
	s.forgetCaches()
	rp.advance(mark)
	// Outbox records came with the snapshot (a restored backup's, or a
	// rebuild's): their targets' owners are told, as when an applied entry
	// brings some, or what the snapshot owes them would wait for this
	// partition's next entry for them.
	s.notifyIntents(targets)
	return nil
}

// hold keeps the database open (Close waits) until the caller's
// s.wg.Done; false when the store is closed already.
func (s *Store) hold() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

func readN(r io.Reader, n uint64) ([]byte, error) {
	if n > 1<<30 {
		return nil, fmt.Errorf("%w: a record of %d bytes", ErrBadSnapshot, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	return b, nil
}

// forgetCaches drops what the store remembers of the view's data (accounts,
// kicks, last Seqs, push-token absence, the writer's hot keys are dropped
// by the next tenure anyway): after a snapshot load it may all be stale.
// The resend filter is kept: it has no false negatives as long as every
// record written is added, and the load adds the snapshot's.
func (s *Store) forgetCaches() {
	s.accounts.Clear()
	s.kicks.Clear()
	s.lastSeq.Clear()
	s.tokenless.Clear()
}
