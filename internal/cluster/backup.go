package cluster

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Backups and restores (docs/cluster.md §19, "Back up").
//
// A backup is a tar archive:
//
//	manifest.json   Manifest: format, cluster, P, when, and per file its
//	                size and SHA-256
//	p00 … p{P-1}    each partition's snapshot (the store's snapshot
//	                format, store/snapshot.go) at the sequence the manifest
//	                names
//	cursors.jsonl   the device cursors and high-water marks (KV
//	                duet-cursors), one JSON object a line (CursorRecord)
//
// The cut: the cursors are read first, then, partition by partition, the
// log's last sequence L, and the snapshot of this node's view once it has
// applied L. A cursor is at most the Seq its device had received, which
// was committed before the cursor was read, so no restored cursor points
// past the restored timeline (a device resumes from it and misses
// nothing). With one partition the backup is exactly the log up to the
// snapshot's sequence.
//
// A restore goes into a new, empty cluster with the same P: each
// partition's snapshot is put in the object store duet-snapshots as
// restore-p{pp}-{id}, then a restore entry naming it and its digest
// (store.RestoreEntry) is appended to the partition's log, expecting the
// last sequence of a log whose view this node found empty: nothing can
// come between the check and the entry, and the entry fences the
// partition's owner as a takeover does (it steps down and takes the
// partition again after the entry). Every node's view, applying the
// entry, loads the object; a node that joins later replays it, or
// rebuilds from a snapshot taken after it. The view stays a function of
// the log (I8). The object is deleted once the log no longer holds the
// entry (sweepRestores).

// BackupFormat is the version of the backup archive.
const BackupFormat = 1

// Backup archive names.
const (
	ManifestName = "manifest.json"
	CursorsName  = "cursors.jsonl"
)

// Headers of a restore object (besides the snapshot headers).
const HeaderRestoreSeq = "Duet-Restore-Seq" // the restore entry's log sequence, once appended

// restorePrefix starts every restore object's name.
const restorePrefix = "restore-"

// BackupName is partition p's file in a backup: p00.
func BackupName(p int) string { return fmt.Sprintf("p%02d", p) }

// Manifest describes a backup.
type Manifest struct {
	Format         int          `json:"format"`
	Cluster        string       `json:"cluster"` // the cluster's name; "" for a single node's data
	Source         string       `json:"source"`  // "cluster" or "single node"
	Partitions     int          `json:"partitions"`
	SnapshotFormat int          `json:"snapshot_format"`
	Created        time.Time    `json:"created"`
	Parts          []BackupPart `json:"parts"`
	Cursors        BackupFile   `json:"cursors"`
}

// BackupFile is one file of a backup.
type BackupFile struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // hex
}

// BackupPart is a partition's snapshot in a backup.
type BackupPart struct {
	Partition int    `json:"partition"`
	Seq       uint64 `json:"seq"` // the log sequence the snapshot was taken at (0: a single node's data)
	// Inbox is the partition's inbox marks (P > 1): for each source
	// partition, the highest sequence of the source's log whose intents
	// ran here, read once the snapshot was taken (so at least the
	// snapshot's own). A restore numbers each log above them (NextSeq).
	Inbox map[int]uint64 `json:"inbox,omitempty"`
	BackupFile
}

// NextSeq is the sequence at which a restore of m makes partition p's log
// continue (docs/cluster.md §19, "The numbering rule"): above its own
// snapshot's sequence and above every other partition's inbox mark for
// it, since a target runs only the source entries above its mark, and a
// source's outbox records are keyed by its sequences. 0 with one
// partition: no other partition reads its numbering.
func (m Manifest) NextSeq(p int) uint64 {
	if m.Partitions <= 1 || p >= len(m.Parts) {
		return 0
	}
	n := m.Parts[p].Seq
	for _, part := range m.Parts {
		n = max(n, part.Inbox[p])
	}
	return n + 1
}

// CursorRecord is one line of cursors.jsonl: a device's cursor, or (with
// HighWater) a user's high-water mark.
type CursorRecord struct {
	User      string `json:"user"`
	Device    string `json:"device,omitempty"`
	HighWater bool   `json:"high_water,omitempty"`
	Seq       uint64 `json:"seq"`
}

// BackupSource is what WriteBackup reads: the cursors, then each
// partition's snapshot, in that order (the cut above).
type BackupSource struct {
	Manifest Manifest // Format, Parts, Cursors and Created are filled in
	// Cursors writes every cursor record with put.
	Cursors func(ctx context.Context, put func(CursorRecord) error) error
	// Snapshot hands put partition p's snapshot and its sequence.
	Snapshot func(ctx context.Context, p int, put func(seq uint64, r io.Reader) error) error
	// Marks, when set, reads partition p's inbox marks once its snapshot
	// is taken (BackupPart.Inbox).
	Marks func(ctx context.Context, p int) (map[int]uint64, error)
}

// WriteBackup writes the backup src describes to w. The files are spooled
// to temporary files in spool first (a tar header names its file's size),
// so the node needs free disk for one copy of the backup; nothing of it is
// held in memory. It returns the manifest written.
func WriteBackup(ctx context.Context, w io.Writer, spool string, src BackupSource) (Manifest, error) {
	m := src.Manifest
	m.Format, m.Created, m.Parts = BackupFormat, time.Now().UTC(), nil
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	spoolFile := func(name string, write func(io.Writer) error) (BackupFile, *os.File, error) {
		f, err := os.CreateTemp(spool, "backup-"+name+"-*")
		if err != nil {
			return BackupFile{}, nil, err
		}
		files = append(files, f)
		h := sha256.New()
		bw := bufio.NewWriterSize(io.MultiWriter(f, h), 64<<10)
		cw := &countWriter{w: bw}
		if err := write(cw); err != nil {
			return BackupFile{}, nil, err
		}
		if err := bw.Flush(); err != nil {
			return BackupFile{}, nil, err
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return BackupFile{}, nil, err
		}
		return BackupFile{Name: name, Size: cw.n, SHA256: hex.EncodeToString(h.Sum(nil))}, f, nil
	}

	// The cursors first: see the cut above.
	cur, curFile, err := spoolFile(CursorsName, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		return src.Cursors(ctx, func(r CursorRecord) error { return enc.Encode(r) })
	})
	if err != nil {
		return m, fmt.Errorf("cursors: %w", err)
	}
	m.Cursors = cur
	partFiles := make([]*os.File, m.Partitions)
	for p := 0; p < m.Partitions; p++ {
		var seq uint64
		bf, f, err := spoolFile(BackupName(p), func(w io.Writer) error {
			return src.Snapshot(ctx, p, func(s uint64, r io.Reader) error {
				seq = s
				_, err := io.Copy(w, r)
				return err
			})
		})
		if err != nil {
			return m, fmt.Errorf("partition %d: %w", p, err)
		}
		var marks map[int]uint64
		if src.Marks != nil {
			if marks, err = src.Marks(ctx, p); err != nil {
				return m, fmt.Errorf("partition %d: inbox marks: %w", p, err)
			}
		}
		if len(marks) == 0 {
			marks = nil
		}
		m.Parts = append(m.Parts, BackupPart{Partition: p, Seq: seq, Inbox: marks, BackupFile: bf})
		partFiles[p] = f
	}

	tw := tar.NewWriter(w)
	raw, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return m, err
	}
	raw = append(raw, '\n')
	put := func(name string, size int64, r io.Reader) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: size, ModTime: m.Created, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := io.Copy(tw, r)
		return err
	}
	if err := put(ManifestName, int64(len(raw)), strings.NewReader(string(raw))); err != nil {
		return m, err
	}
	for p, part := range m.Parts {
		if err := put(part.Name, part.Size, partFiles[p]); err != nil {
			return m, err
		}
	}
	if err := put(cur.Name, cur.Size, curFile); err != nil {
		return m, err
	}
	return m, tw.Close()
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// ErrBadBackup is returned by ReadBackup for an archive that is not a
// whole backup of this format, or whose files do not match its manifest.
var ErrBadBackup = errors.New("not a whole Duet backup")

// BackupReader is what ReadBackup hands a backup's parts to.
type BackupReader struct {
	// Manifest checks the manifest before any file is read.
	Manifest func(Manifest) error
	// Part reads partition part's snapshot from r. r fails at its end
	// (instead of io.EOF) when the file does not match the manifest, so
	// whatever reads it to the end (an object store's Put) fails too.
	Part func(part BackupPart, r io.Reader) error
	// Cursors reads the cursors file, checked the same way.
	Cursors func(r io.Reader) error
}

// ReadBackup reads a backup archive from r: its manifest, each partition's
// file and the cursors, in the order WriteBackup wrote them, checking
// every file's size and SHA-256 against the manifest. Nil callbacks skip
// (but still check) their files.
func ReadBackup(r io.Reader, br BackupReader) (Manifest, error) {
	var m Manifest
	tr := tar.NewReader(r)
	h, err := tr.Next()
	if err != nil || h.Name != ManifestName {
		return m, fmt.Errorf("%w: it does not start with %s (%v)", ErrBadBackup, ManifestName, err)
	}
	if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&m); err != nil {
		return m, fmt.Errorf("%w: %s: %v", ErrBadBackup, ManifestName, err)
	}
	if m.Format != BackupFormat {
		return m, fmt.Errorf("%w: backup format %d; this build reads %d", ErrBadBackup, m.Format, BackupFormat)
	}
	if m.Partitions < 1 || len(m.Parts) != m.Partitions || m.Cursors.Name != CursorsName {
		return m, fmt.Errorf("%w: the manifest lists %d partition files for %d partitions", ErrBadBackup, len(m.Parts), m.Partitions)
	}
	for i, part := range m.Parts {
		if part.Partition != i || part.Name != BackupName(i) {
			return m, fmt.Errorf("%w: the manifest's partition file %d is %s (partition %d)", ErrBadBackup, i, part.Name, part.Partition)
		}
	}
	if br.Manifest != nil {
		if err := br.Manifest(m); err != nil {
			return m, err
		}
	}
	next := func(want BackupFile, read func(io.Reader) error) error {
		h, err := tr.Next()
		if err != nil {
			return fmt.Errorf("%w: %s is missing (%v)", ErrBadBackup, want.Name, err)
		}
		if h.Name != want.Name {
			return fmt.Errorf("%w: %s where the manifest has %s", ErrBadBackup, h.Name, want.Name)
		}
		cr := &checkReader{r: tr, h: sha256.New(), want: want}
		if read != nil {
			if err := read(cr); err != nil {
				return err
			}
		}
		// What the reader left, and the check, whatever it read.
		if _, err := io.Copy(io.Discard, cr); err != nil {
			return err
		}
		return cr.check()
	}
	for _, part := range m.Parts {
		var read func(io.Reader) error
		if br.Part != nil {
			read = func(r io.Reader) error { return br.Part(part, r) }
		}
		if err := next(part.BackupFile, read); err != nil {
			return m, err
		}
	}
	if err := next(m.Cursors, br.Cursors); err != nil {
		return m, err
	}
	if h, err := tr.Next(); err != io.EOF {
		name := ""
		if h != nil {
			name = h.Name
		}
		return m, fmt.Errorf("%w: %q after the last file (%v)", ErrBadBackup, name, err)
	}
	return m, nil
}

// checkReader reads one file of a backup, and at its end compares it with
// the manifest.
type checkReader struct {
	r    io.Reader
	h    hash.Hash
	n    int64
	want BackupFile
	err  error
}

func (c *checkReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	if err == io.EOF {
		if cerr := c.check(); cerr != nil {
			c.err = cerr
			return n, cerr
		}
	}
	return n, err
}

func (c *checkReader) check() error {
	if c.n != c.want.Size {
		return fmt.Errorf("%w: %s has %d bytes, the manifest says %d", ErrBadBackup, c.want.Name, c.n, c.want.Size)
	}
	if got := hex.EncodeToString(c.h.Sum(nil)); got != c.want.SHA256 {
		return fmt.Errorf("%w: %s has SHA-256 %s, the manifest says %s", ErrBadBackup, c.want.Name, got, c.want.SHA256)
	}
	return nil
}

// RestoreView is a view a backup can be restored into (the store).
type RestoreView interface {
	SnapshotView
	// Empty reports a view that holds none of the log's keys.
	Empty() (bool, error)
}

// backupWait bounds the wait for this node's view to reach a log's end.
const backupWait = 30 * time.Second

// waitApplied waits until view has applied seq.
func waitApplied(ctx context.Context, view View, seq uint64, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for view.Applied() < seq {
		if !sleepCtx(ctx, 5*time.Millisecond) {
			return fmt.Errorf("this node's view has applied %d of the log's %d entries after %v (is it catching up? ask another node)", view.Applied(), seq, d)
		}
	}
	return nil
}

// logEnd is partition p's log's last sequence, read now.
func (c *Cluster) logEnd(ctx context.Context, p int) (uint64, error) {
	var last uint64
	err := retry(ctx, "stream "+StreamName(p), func(c2 context.Context) error {
		info, err := c.streamInfo(c2, p)
		if err == nil {
			last = info.State.LastSeq
		}
		return err
	})
	return last, err
}

func (c *Cluster) streamInfo(ctx context.Context, p int) (*jetstream.StreamInfo, error) {
	s, err := c.node.js.Stream(ctx, StreamName(p))
	if err != nil {
		return nil, err
	}
	return s.Info(ctx)
}

// Backup writes a backup of the cluster, as this node's views have it, to
// w (the cut above); spool is a directory for its temporary files. The
// restore objects the logs no longer need are deleted first.
func (c *Cluster) Backup(ctx context.Context, w io.Writer, spool string, cursors *Cursors, name string) (Manifest, error) {
	c.sweepRestores(ctx)
	return WriteBackup(ctx, w, spool, BackupSource{
		Manifest: Manifest{Cluster: name, Source: "cluster", Partitions: c.o.Partitions, SnapshotFormat: c.snapshotFormat()},
		Cursors:  cursors.Each,
		Snapshot: func(ctx context.Context, p int, put func(uint64, io.Reader) error) error {
			view, ok := c.o.View(p).(SnapshotView)
			if !ok {
				return errors.New("this node's view cannot be snapshotted")
			}
			last, err := c.logEnd(ctx, p)
			if err != nil {
				return err
			}
			if err := waitApplied(ctx, view, last, backupWait); err != nil {
				return fmt.Errorf("%s: %w", StreamName(p), err)
			}
			return view.Snapshot(put)
		},
		Marks: func(_ context.Context, p int) (map[int]uint64, error) {
			if v, ok := c.o.View(p).(interface {
				InboxMarks() (map[int]uint64, error)
			}); ok && c.o.Partitions > 1 {
				return v.InboxMarks()
			}
			return nil, nil
		},
	})
}

func (c *Cluster) snapshotFormat() int {
	if v, ok := c.o.View(0).(SnapshotView); ok {
		return v.SnapshotFormat()
	}
	return 0
}

// Each calls put with every cursor and high-water mark in the bucket.
func (c *Cursors) Each(ctx context.Context, put func(CursorRecord) error) error {
	kv, err := c.bucket(ctx)
	if err != nil {
		return err
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	for {
		var e jetstream.KeyValueEntry
		select {
		case e = <-w.Updates():
		case <-ctx.Done():
			return ctx.Err()
		}
		if e == nil {
			return nil // the bucket's current values are all in
		}
		r, ok := parseCursorKey(e.Key())
		if !ok || len(e.Value()) != 8 {
			continue
		}
		r.Seq = binary.BigEndian.Uint64(e.Value())
		if err := put(r); err != nil {
			return err
		}
	}
}

// parseCursorKey reads a cursorKey or highWaterKey.
func parseCursorKey(k string) (CursorRecord, bool) {
	parts := strings.Split(k, ".")
	dec := func(s string) (string, bool) {
		b, err := keyEnc.DecodeString(s)
		return string(b), err == nil && len(b) > 0
	}
	switch {
	case len(parts) == 3 && parts[0] == "c":
		u, ok1 := dec(parts[1])
		d, ok2 := dec(parts[2])
		return CursorRecord{User: u, Device: d}, ok1 && ok2
	case len(parts) == 2 && parts[0] == "w":
		u, ok := dec(parts[1])
		return CursorRecord{User: u, HighWater: true}, ok
	}
	return CursorRecord{}, false
}

// Put raises a cursor record's value in the bucket (values only move
// forward). A key that does not exist yet, as in a restore into an empty
// cluster, takes one request: it is created without being read first.
func (c *Cursors) Put(ctx context.Context, r CursorRecord) error {
	key := cursorKey(r.User, r.Device)
	if r.HighWater {
		key = highWaterKey(r.User)
	}
	kv, err := c.bucket(ctx)
	if err != nil {
		return err
	}
	if _, err := kv.Create(ctx, key, binary.BigEndian.AppendUint64(nil, r.Seq)); err == nil {
		return nil
	}
	// It exists (or the create failed for a reason raise knows how to
	// wait out): the compare-and-set path.
	return c.raise(ctx, key, r.Seq)
}

// cursorPutters is how many cursor puts a restore keeps in flight: each is
// a round trip to the bucket's leader and a quorum write, so one at a time
// a million devices took most of an hour.
const cursorPutters = 64

// PutAll puts the records next yields, cursorPutters at a time, and
// returns how many it put. It stops at the first error (next's or a
// put's).
func (c *Cursors) PutAll(ctx context.Context, next func() (CursorRecord, bool, error)) (int, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	recs := make(chan CursorRecord)
	var put atomic.Int64
	var wg sync.WaitGroup
	for range cursorPutters {
		wg.Go(func() {
			for r := range recs {
				if err := c.Put(ctx, r); err != nil {
					cancel(err)
					return
				}
				put.Add(1)
			}
		})
	}
	var err error
feed:
	for {
		r, ok, nerr := next()
		if nerr != nil {
			err = nerr
			break
		}
		if !ok {
			break
		}
		select {
		case recs <- r:
		case <-ctx.Done():
			break feed
		}
	}
	close(recs)
	wg.Wait()
	if err == nil && ctx.Err() != nil {
		err = context.Cause(ctx) // a put's error, or the caller's context's
	}
	return int(put.Load()), err
}

// Restore errors, for the caller to tell the operator's mistakes apart.
var (
	// ErrNotEmpty: the cluster holds data; a backup is restored only into
	// a new, empty one.
	ErrNotEmpty = errors.New("the cluster is not empty")
	// ErrBackupMismatch: the backup does not fit this cluster (another P,
	// another snapshot format).
	ErrBackupMismatch = errors.New("the backup does not fit this cluster")
)

// Restored is what Restore did.
type Restored struct {
	Partitions []RestoredPart `json:"partitions"`
	Cursors    int            `json:"cursors"` // cursor records put
}

// RestoredPart is one partition's restore.
type RestoredPart struct {
	Partition int    `json:"partition"`
	Object    string `json:"object"`     // the restore object in duet-snapshots
	BackupSeq uint64 `json:"backup_seq"` // the snapshot's sequence in the backup's log
	Seq       uint64 `json:"seq"`        // the restore entry's sequence in this cluster's log
}

// restoreWait bounds the wait for this node's view to load a restore.
const restoreWait = 10 * time.Minute

// Restore restores the backup read from r into this cluster, which must
// be empty and have the backup's P (the procedure above). entry builds a
// partition's restore entry (the store's encoding: store.RestoreEntry)
// from the object's name, its SHA-256 and the snapshot's sequence. spool
// is a directory for the cursors file, which is put only once every
// partition is restored. It returns once this node's views have loaded the
// restore.
//
// With several partitions each log continues above what the backup's
// partitions hold of its numbering (Manifest.NextSeq), and every log is
// moved there before the first restore entry (freeze): empty builds the
// snapshot of an empty view (store.EmptySnapshot) that bridges the jump
// (jumpTo).
func (c *Cluster) Restore(ctx context.Context, r io.Reader, spool string, cursors *Cursors, entry func(object, sha256 string, seq uint64) []byte, empty func(seq uint64) []byte) (Restored, error) {
	var out Restored
	id := nuid.Next()
	var objects []string
	done := false
	defer func() {
		if done {
			return
		}
		// A refused or failed restore leaves no object behind (best effort).
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, o := range objects {
			_ = c.obs.Delete(dctx, o)
		}
	}()
	curFile, err := os.CreateTemp(spool, "restore-cursors-*")
	if err != nil {
		return out, err
	}
	defer func() {
		curFile.Close()
		os.Remove(curFile.Name())
	}()
	m, err := ReadBackup(r, BackupReader{
		Manifest: func(m Manifest) error {
			if m.Partitions != c.o.Partitions {
				return fmt.Errorf("%w: the backup has %d partitions, this cluster %d", ErrBackupMismatch, m.Partitions, c.o.Partitions)
			}
			if f := c.snapshotFormat(); m.SnapshotFormat != f {
				return fmt.Errorf("%w: the backup's snapshots are format %d; this build reads %d", ErrBackupMismatch, m.SnapshotFormat, f)
			}
			for p := 0; p < c.o.Partitions; p++ {
				if _, err := c.emptyAt(ctx, p); err != nil {
					return err
				}
			}
			return nil
		},
		Part: func(part BackupPart, r io.Reader) error {
			h := nats.Header{}
			h.Set(HeaderSnapshotSeq, strconv.FormatUint(part.Seq, 10))
			h.Set(HeaderSnapshotFormat, strconv.Itoa(c.snapshotFormat()))
			h.Set(HeaderSnapshotPartitions, strconv.Itoa(c.o.Partitions))
			name := fmt.Sprintf("%s%s-%s", restorePrefix, SnapshotName(part.Partition), id)
			objects = append(objects, name)
			if _, err := c.obs.Put(ctx, jetstream.ObjectMeta{Name: name, Headers: h}, r); err != nil && !errors.Is(err, ErrBadBackup) {
				return fmt.Errorf("putting %s into %s: %w", part.Name, BucketSnapshots, err)
			} else if err != nil {
				return err
			}
			return nil
		},
		Cursors: func(r io.Reader) error {
			_, err := io.Copy(curFile, r)
			return err
		},
	})
	if err != nil {
		return out, err
	}
	frozen, err := c.freeze(ctx, m, empty)
	if err != nil {
		return out, err
	}
	for i, part := range m.Parts {
		object := objects[part.Partition]
		var at uint64
		if frozen != nil {
			at = frozen[part.Partition]
		}
		seq, err := c.appendRestore(ctx, part.Partition, entry(object, part.SHA256, part.Seq), at)
		if err != nil {
			if frozen != nil {
				c.thaw(frozen[i:], i)
			}
			if len(out.Partitions) > 0 {
				done = true // the partitions restored keep their objects
				err = fmt.Errorf("%w (partitions restored before this one: %d)", err, len(out.Partitions))
			}
			return out, err
		}
		out.Partitions = append(out.Partitions, RestoredPart{Partition: part.Partition, Object: object, BackupSeq: part.Seq, Seq: seq})
		// The object's entry is in the log: the sweep deletes the object
		// once the log no longer holds it.
		h := nats.Header{}
		h.Set(HeaderSnapshotSeq, strconv.FormatUint(part.Seq, 10))
		h.Set(HeaderSnapshotFormat, strconv.Itoa(c.snapshotFormat()))
		h.Set(HeaderSnapshotPartitions, strconv.Itoa(c.o.Partitions))
		h.Set(HeaderRestoreSeq, strconv.FormatUint(seq, 10))
		if err := c.obs.UpdateMeta(ctx, object, jetstream.ObjectMeta{Name: object, Headers: h}); err != nil {
			c.report(part.Partition, fmt.Errorf("restore object %s: recording its entry %d: %w", object, seq, err))
		}
	}
	done = true
	for _, rp := range out.Partitions {
		var at uint64
		if frozen != nil {
			at = frozen[rp.Partition]
		}
		if err := c.waitRestored(ctx, rp, at, empty); err != nil {
			return out, fmt.Errorf("%s restored at %d, but not loaded here yet: %w", StreamName(rp.Partition), rp.Seq, err)
		}
	}
	if _, err := curFile.Seek(0, io.SeekStart); err != nil {
		return out, err
	}
	dec := json.NewDecoder(bufio.NewReader(curFile))
	n, err := cursors.PutAll(ctx, func() (CursorRecord, bool, error) {
		var rec CursorRecord
		if err := dec.Decode(&rec); err == io.EOF {
			return rec, false, nil
		} else if err != nil {
			return rec, false, fmt.Errorf("%w: %s: %v", ErrBadBackup, CursorsName, err)
		}
		return rec, true, nil
	})
	out.Cursors = n
	if err != nil {
		return out, fmt.Errorf("restoring cursors (%d put): %w", n, err)
	}
	return out, nil
}

// waitRestored waits until this node's view has loaded rp. A log that was
// moved to continue at next is crossed by a rebuild from the bridge
// snapshot: while the view waits, the bridge is kept in place (keepBridge).
func (c *Cluster) waitRestored(ctx context.Context, rp RestoredPart, next uint64, empty func(seq uint64) []byte) error {
	if next == 0 || rp.Seq != next {
		return waitApplied(ctx, c.o.View(rp.Partition), rp.Seq, restoreWait)
	}
	ctx, cancel := context.WithTimeout(ctx, restoreWait)
	defer cancel()
	for {
		c.keepBridge(ctx, rp.Partition, next-1, empty)
		if waitApplied(ctx, c.o.View(rp.Partition), rp.Seq, time.Second) == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("this node's view has applied %d of the log's %d entries after %v", c.o.View(rp.Partition).Applied(), rp.Seq, restoreWait)
		}
	}
}

// emptyAt reads partition p's log's last sequence L and, once this node's
// view has applied it, checks that the view is empty: ErrNotEmpty if not.
func (c *Cluster) emptyAt(ctx context.Context, p int) (uint64, error) {
	view, ok := c.o.View(p).(RestoreView)
	if !ok {
		return 0, errors.New("this node's view cannot be restored into")
	}
	last, err := c.logEnd(ctx, p)
	if err != nil {
		return 0, err
	}
	if err := waitApplied(ctx, view, last, backupWait); err != nil {
		return 0, fmt.Errorf("%s: %w", StreamName(p), err)
	}
	empty, err := view.Empty()
	if err != nil {
		return 0, err
	}
	if !empty {
		return 0, fmt.Errorf("%w: partition %d holds data (accounts, messages or relationships): a backup is restored only into a new, empty cluster", ErrNotEmpty, p)
	}
	return last, nil
}

// appendRestore appends a restore entry to partition p's log right after
// an end at which this node's view is empty, and returns its sequence.
// Appended after anything else (a write that came between the check and
// the publish) it is refused by JetStream, and the check runs again. With
// at > 0 the log was moved to continue at at (freeze): the entry lands
// there, where nothing else can have.
func (c *Cluster) appendRestore(ctx context.Context, p int, entry []byte, at uint64) (uint64, error) {
	group := fmt.Sprintf("%s/restore/%s", c.node.name, nuid.Next())
	for {
		last := at - 1
		if at == 0 {
			var err error
			if last, err = c.emptyAt(ctx, p); err != nil {
				return 0, err
			}
		}
		seq, ok, err := c.publishAt(ctx, p, entry, "restore", group, last)
		switch {
		case err != nil:
			return 0, err
		case ok:
			return seq, nil
		case at > 0:
			return 0, fmt.Errorf("%s: an entry landed after the log was moved to continue at %d", StreamName(p), at)
		}
		// Something came after last: look again.
	}
}

// publishAt publishes data (of kind) as partition p's entry last+1 and
// returns its sequence; ok false when another entry is there.
func (c *Cluster) publishAt(ctx context.Context, p int, data []byte, kind, group string, last uint64) (seq uint64, ok bool, err error) {
	for {
		msg := &nats.Msg{Subject: Subject(p), Data: data, Header: nats.Header{}}
		msg.Header.Set(HeaderGroup, group)
		msg.Header.Set(HeaderKind, kind)
		pctx, cancel := context.WithTimeout(ctx, publishTimeout)
		ack, err := c.node.js.PublishMsg(pctx, msg, jetstream.WithExpectLastSequence(last))
		cancel()
		switch {
		case err == nil:
			return ack.Sequence, true, nil
		case wrongLastSeq(err):
			return 0, false, nil
		case isAPIError(err):
			return 0, false, err
		}
		// Unclear: did it land at last+1? Not found: publish again (if the
		// first attempt lands meanwhile, this one is refused).
		seq, ours, err := c.landed(ctx, p, last+1, group)
		if err != nil || ours {
			return seq, ours, err
		}
	}
}

// freeze moves, with several partitions, every partition's log to
// continue at its sequence in a restore of m (Manifest.NextSeq, and at
// least two past the log's end, so that its owner's next append, which
// expects the end, is refused: jumpTo), one after the other, before any
// restore entry, and returns those sequences. Until its restore entry
// lands a moved log takes no other write: no owner can append to it, nor
// a new one fence it (a view cannot catch up across the jump). So the
// intents of a partition already restored cannot run into one not yet
// restored (whose emptiness was checked). nil with one partition, where
// nothing moves. A failure thaws the partitions moved so far.
func (c *Cluster) freeze(ctx context.Context, m Manifest, empty func(seq uint64) []byte) ([]uint64, error) {
	if m.Partitions <= 1 {
		return nil, nil
	}
	at := make([]uint64, m.Partitions)
	for p := range at {
		last, err := c.emptyAt(ctx, p)
		if err == nil {
			next := max(m.NextSeq(p), last+2)
			if err = c.jumpTo(ctx, p, last, next, empty); err == nil {
				at[p] = next
				continue
			}
		}
		c.thaw(at[:p], 0)
		if p > 0 {
			err = fmt.Errorf("%w (the logs of partitions 0 to %d were moved, and are open again, empty)", err, p-1)
		}
		return nil, err
	}
	return at, nil
}

// thaw appends a fence at each of the moved logs' new start (at, from
// partition first on) whose restore entry will not come: every view
// rebuilds from the bridge, an empty view, and the partition takes an
// owner again, empty: a restore can be tried again. Best effort.
func (c *Cluster) thaw(at []uint64, first int) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, next := range at {
		if next == 0 {
			continue
		}
		p := first + i
		group := fmt.Sprintf("%s/thaw/%s", c.node.name, nuid.Next())
		if _, _, err := c.publishAt(ctx, p, c.o.FenceEntry(), "fence", group, next-1); err != nil {
			c.report(p, fmt.Errorf("restore failed: %s stays moved to %d without its restore entry: %w", StreamName(p), next, err))
		}
	}
}

// landed reads partition p's entry seq once the stream answers: whether it
// is group's.
func (c *Cluster) landed(ctx context.Context, p int, seq uint64, group string) (uint64, bool, error) {
	for {
		gctx, cancel := context.WithTimeout(ctx, time.Second)
		s, err := c.node.js.Stream(gctx, StreamName(p))
		var m *jetstream.RawStreamMsg
		if err == nil {
			m, err = s.GetMsg(gctx, seq)
		}
		cancel()
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return 0, false, nil
		case err == nil:
			return seq, m.Header.Get(HeaderGroup) == group, nil
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return 0, false, fmt.Errorf("restore entry of %s: outcome unknown: %w", StreamName(p), err)
		}
	}
}

// sweepRestores deletes the restore objects whose entries the logs no
// longer hold: a node that needs the entry's state rebuilds from a later
// snapshot. An object whose entry was never recorded (a restore that
// failed half-way) is left for the operator.
func (c *Cluster) sweepRestores(ctx context.Context) {
	if c.obs == nil {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	infos, err := c.obs.List(lctx)
	if err != nil {
		return
	}
	for _, info := range infos {
		if !strings.HasPrefix(info.Name, restorePrefix) {
			continue
		}
		seq, err := strconv.ParseUint(info.Headers.Get(HeaderRestoreSeq), 10, 64)
		if err != nil {
			continue
		}
		var p int
		if _, err := fmt.Sscanf(strings.TrimPrefix(info.Name, restorePrefix), "p%02d-", &p); err != nil || p >= c.o.Partitions {
			continue
		}
		first, err := firstSeq(lctx, c.node.js, p)
		if err == nil && first > seq {
			_ = c.obs.Delete(lctx, info.Name)
		}
	}
}

// wireRestore gives view (the store) where to read restore entries'
// objects from: the object store of snapshots.
func wireRestore(view View, rb *rebuilder) {
	rv, ok := view.(interface {
		SetRestoreSource(func(object string) (io.ReadCloser, error))
	})
	if !ok || rb == nil || rb.obs == nil {
		return
	}
	rv.SetRestoreSource(func(object string) (io.ReadCloser, error) {
		res, err := rb.obs.Get(context.Background(), object)
		if err != nil {
			return nil, err
		}
		return res, nil
	})
}

// jumpTo makes partition p's log, which ends at last with a view that
// holds nothing, continue at next (docs/cluster.md §19, "The numbering
// rule"). JetStream moves a stream's first sequence when it is purged up
// to a sequence past its last: the stream is then empty, its first
// sequence next and its last next-1. The entries up to last (fences) go,
// so every view is then behind the log's first entry, and rebuilds (§10.4)
// from the partition's snapshot, which is first replaced by that of an
// empty view at next-1 (empty): the state those entries left. The owner's
// next append, expecting its own last, is refused: it steps down, as for
// the restore entry that follows.
func (c *Cluster) jumpTo(ctx context.Context, p int, last, next uint64, empty func(seq uint64) []byte) error {
	if empty == nil || c.obs == nil {
		return fmt.Errorf("%s: the restore must continue the log at %d, and this node cannot move it", StreamName(p), next)
	}
	if err := c.putBridge(ctx, p, next-1, empty); err != nil {
		return err
	}
	info, err := c.streamInfo(ctx, p)
	if err != nil {
		return err
	}
	if info.State.LastSeq != last {
		return fmt.Errorf("%w: %s was written to during the restore (its last entry %d, checked empty at %d)", ErrNotEmpty, StreamName(p), info.State.LastSeq, last)
	}
	req, _ := json.Marshal(map[string]uint64{"seq": next})
	msg, err := c.node.nc.RequestWithContext(ctx, fmt.Sprintf(apiStreamPurge, StreamName(p)), req)
	if err != nil {
		return fmt.Errorf("%s: moving its first sequence to %d: %w", StreamName(p), next, err)
	}
	var resp struct {
		Success bool   `json:"success"`
		Purged  uint64 `json:"purged"`
		Error   *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil || !resp.Success {
		why := string(msg.Data)
		if resp.Error != nil {
			why = resp.Error.Description
		}
		return fmt.Errorf("%s: moving its first sequence to %d: %s", StreamName(p), next, why)
	}
	if resp.Purged > info.State.Msgs {
		// A write came between the check and the purge, and went with it:
		// the restore replaces the partition's data anyway, but a client
		// was acknowledged. The operator restored into a cluster in use.
		c.report(p, fmt.Errorf("restore: %d entries written to %s after it was checked empty were dropped by the restore", resp.Purged-info.State.Msgs, StreamName(p)))
	}
	return nil
}

// apiStreamPurge is JetStream's purge request; its answer says how many
// entries went (the client library's Purge does not).
const apiStreamPurge = "$JS.API.STREAM.PURGE.%s"

// putBridge stores the snapshot of an empty view at seq as partition p's
// snapshot.
func (c *Cluster) putBridge(ctx context.Context, p int, seq uint64, empty func(seq uint64) []byte) error {
	h := nats.Header{}
	h.Set(HeaderSnapshotSeq, strconv.FormatUint(seq, 10))
	h.Set(HeaderSnapshotFormat, strconv.Itoa(c.snapshotFormat()))
	h.Set(HeaderSnapshotPartitions, strconv.Itoa(c.o.Partitions))
	if _, err := c.obs.Put(ctx, jetstream.ObjectMeta{Name: SnapshotName(p), Headers: h}, bytes.NewReader(empty(seq))); err != nil {
		return fmt.Errorf("%s: putting the snapshot it continues from: %w", SnapshotName(p), err)
	}
	return nil
}

// keepBridge puts the bridge back if the object store's snapshot of p is
// older than seq once the restore entry is in: a snapshot the deposed
// owner was writing when the log moved, landed after the bridge, would
// leave every view unable to rebuild across the jump.
func (c *Cluster) keepBridge(ctx context.Context, p int, seq uint64, empty func(seq uint64) []byte) {
	info, err := c.obs.GetInfo(ctx, SnapshotName(p))
	if err == nil {
		if s, err := strconv.ParseUint(info.Headers.Get(HeaderSnapshotSeq), 10, 64); err == nil && s >= seq {
			return
		}
	}
	if err := c.putBridge(ctx, p, seq, empty); err != nil {
		c.report(p, err)
	}
}
