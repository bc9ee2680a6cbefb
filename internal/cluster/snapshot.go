package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Snapshots and trimming the log (docs/cluster.md §10.3, §10.4).
//
// The owner of a partition snapshots its view every SnapshotEntries
// entries or SnapshotInterval, whichever comes first, into object p{pp} of
// the object store duet-snapshots, and then purges the partition's log up
// to the snapshot — but never past an entry a live node still has to
// apply: each node's heartbeat carries its views' applied marks. A node
// whose view is behind the log's first entry (new, back after a trim, or
// with a wiped data directory) loads the snapshot and replays from there:
// at its start, before it serves, and at any time its consumer finds the
// entries it needs gone.

// BucketSnapshots is the object store of the partitions' snapshots.
const BucketSnapshots = "duet-snapshots"

// Headers of a snapshot object.
const (
	HeaderSnapshotSeq        = "Duet-Snapshot-Seq"        // the log sequence the view was at (S)
	HeaderSnapshotFormat     = "Duet-Snapshot-Format"     // the store's snapshot format version
	HeaderSnapshotPartitions = "Duet-Snapshot-Partitions" // P of the cluster that wrote it
)

// SnapshotName is partition p's snapshot object: p07.
func SnapshotName(p int) string { return fmt.Sprintf("p%02d", p) }

// SnapshotView is a View that can be snapshotted and rebuilt (the store).
// Views without these methods (tests of the log alone) are never
// snapshotted, and a node with such a view cannot rebuild.
type SnapshotView interface {
	View
	// Snapshot hands put the view's replicated state as of its applied
	// mark seq, as a stream.
	Snapshot(put func(seq uint64, r io.Reader) error) error
	// LoadSnapshot replaces the view's replicated state by the snapshot r
	// taken at seq; Applied is seq afterwards.
	LoadSnapshot(seq uint64, r io.Reader) error
	// SnapshotFormat is the version of the format Snapshot writes and
	// LoadSnapshot reads.
	SnapshotFormat() int
}

// SnapshotInfo is what a node knows of a partition's latest snapshot and
// log (metrics).
type SnapshotInfo struct {
	Seq      uint64    // the snapshot's log sequence; 0: none
	At       time.Time // when it was written
	FirstSeq uint64    // the log's first sequence as last read (0: not read)
	Written  uint64    // snapshots this node has written
	Rebuilds uint64    // rebuilds of this node's view from a snapshot
}

// snapshots is a node's snapshot state per partition.
type snapshots struct {
	mu    sync.Mutex
	parts map[int]*SnapshotInfo
}

func (s *snapshots) update(p int, f func(*SnapshotInfo)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.parts == nil {
		s.parts = map[int]*SnapshotInfo{}
	}
	i := s.parts[p]
	if i == nil {
		i = &SnapshotInfo{}
		s.parts[p] = i
	}
	f(i)
}

func (s *snapshots) get(p int) SnapshotInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := s.parts[p]; i != nil {
		return *i
	}
	return SnapshotInfo{}
}

func ensureObjectStore(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.ObjectStore, error) {
	var obs jetstream.ObjectStore
	err := retry(ctx, "object store "+BucketSnapshots, func(c context.Context) error {
		var err error
		obs, err = js.CreateObjectStore(c, jetstream.ObjectStoreConfig{
			Bucket: BucketSnapshots, Storage: jetstream.FileStorage, Replicas: replicas,
		})
		if !errors.Is(err, jetstream.ErrBucketExists) {
			return err
		}
		if obs, err = js.ObjectStore(c, BucketSnapshots); err != nil {
			return err
		}
		return permanent(fmt.Errorf("%w: object store %s exists with another configuration", ErrConfigMismatch, BucketSnapshots))
	})
	return obs, err
}

// snapshotMeta reads a snapshot object's sequence and checks that this
// build can load it.
func snapshotMeta(info *jetstream.ObjectInfo, p, partitions, format int) (uint64, error) {
	seq, err := strconv.ParseUint(info.Headers.Get(HeaderSnapshotSeq), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("snapshot %s: header %s: %v", info.Name, HeaderSnapshotSeq, err)
	}
	if f := info.Headers.Get(HeaderSnapshotFormat); f != strconv.Itoa(format) {
		return 0, fmt.Errorf("snapshot %s is format %q; this build reads %d", info.Name, f, format)
	}
	if n := info.Headers.Get(HeaderSnapshotPartitions); n != strconv.Itoa(partitions) {
		return 0, fmt.Errorf("snapshot %s was written by a cluster of %s partitions; this one has %d", info.Name, n, partitions)
	}
	return seq, nil
}

// takeSnapshot writes view's snapshot as partition p's object and returns
// its sequence.
func takeSnapshot(ctx context.Context, obs jetstream.ObjectStore, p, partitions int, view SnapshotView) (uint64, time.Time, error) {
	var seq uint64
	var taken time.Time
	err := view.Snapshot(func(s uint64, r io.Reader) error {
		seq = s
		h := nats.Header{}
		h.Set(HeaderSnapshotSeq, strconv.FormatUint(s, 10))
		h.Set(HeaderSnapshotFormat, strconv.Itoa(view.SnapshotFormat()))
		h.Set(HeaderSnapshotPartitions, strconv.Itoa(partitions))
		info, err := obs.Put(ctx, jetstream.ObjectMeta{Name: SnapshotName(p), Headers: h}, r)
		if err == nil {
			taken = info.ModTime
		}
		return err
	})
	return seq, taken, err
}

// rebuild loads partition p's snapshot into view (§10.4); the log starts at
// first, and a snapshot older than that is refused unread (the view could
// not continue from it).
func rebuild(ctx context.Context, obs jetstream.ObjectStore, p, partitions int, view SnapshotView, first uint64) (uint64, error) {
	res, err := obs.Get(ctx, SnapshotName(p))
	if err != nil {
		return 0, fmt.Errorf("snapshot %s: %w", SnapshotName(p), err)
	}
	defer res.Close()
	info, err := res.Info()
	if err != nil {
		return 0, err
	}
	seq, err := snapshotMeta(info, p, partitions, view.SnapshotFormat())
	if err != nil {
		return 0, err
	}
	if behind(seq, first) {
		return 0, fmt.Errorf("snapshot %s at %d does not reach the log's first entry %d: waiting for a newer one", SnapshotName(p), seq, first)
	}
	if err := view.LoadSnapshot(seq, res); err != nil {
		return 0, fmt.Errorf("loading snapshot %s at %d: %w", SnapshotName(p), seq, err)
	}
	return seq, nil
}

// firstSeq is partition p's log's first sequence F: the view must have
// applied at least F-1 to continue from the log. An empty stream that never
// had an entry answers 0.
func firstSeq(ctx context.Context, js jetstream.JetStream, p int) (uint64, error) {
	s, err := js.Stream(ctx, StreamName(p))
	if err != nil {
		return 0, err
	}
	return s.CachedInfo().State.FirstSeq, nil
}

// behind reports a view that needs entries the log no longer has.
func behind(applied, first uint64) bool { return applied+1 < first }

// snapshotLoop runs while this node owns p under log: it snapshots the
// view and trims the log (§10.3).
func (c *Cluster) snapshotLoop(p int, log *Log) {
	defer c.wg.Done()
	view, ok := c.o.View(p).(SnapshotView)
	if !ok || c.obs == nil {
		return
	}
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	go func() {
		select {
		case <-log.Dead():
			cancel()
		case <-ctx.Done():
		}
	}()
	// The last snapshot, by whichever node took it.
	var lastSeq uint64
	lastTime := time.Now()
	if info, err := c.obs.GetInfo(ctx, SnapshotName(p)); err == nil {
		if seq, err := snapshotMeta(info, p, c.o.Partitions, view.SnapshotFormat()); err == nil {
			lastSeq, lastTime = seq, info.ModTime
			c.snaps.update(p, func(i *SnapshotInfo) { i.Seq, i.At = seq, info.ModTime })
		}
	}
	var trimmed uint64 // the purge sequence last sent
	tick := time.NewTicker(c.o.snapshotCheck())
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		last := log.Last()
		due := last >= lastSeq+c.o.SnapshotEntries || (last > lastSeq && time.Since(lastTime) >= c.o.SnapshotInterval)
		if due {
			sctx, scancel := context.WithTimeout(ctx, snapshotTimeout)
			seq, taken, err := takeSnapshot(sctx, c.obs, p, c.o.Partitions, view)
			scancel()
			if err != nil {
				c.report(p, fmt.Errorf("snapshot: %w", err))
				continue
			}
			lastSeq, lastTime = seq, time.Now()
			c.snaps.update(p, func(i *SnapshotInfo) { i.Seq, i.At = seq, taken; i.Written++ })
		}
		if lastSeq == 0 {
			continue
		}
		// Purge below min(S, every live node's mark) + 1: that entry and
		// those after it stay, so no live node is forced to rebuild.
		keep := min(lastSeq, c.lowMark(p, view)) + 1
		if keep <= trimmed {
			continue
		}
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		// S as the object store has it now: a deposed owner's snapshot
		// that landed late (older than ours) must not be left without the
		// entries after it.
		info, err := c.obs.GetInfo(pctx, SnapshotName(p))
		if err == nil {
			var stored uint64
			if stored, err = snapshotMeta(info, p, c.o.Partitions, view.SnapshotFormat()); err == nil {
				keep = min(keep, stored+1)
			}
		}
		if err == nil && keep <= trimmed {
			pcancel()
			continue
		}
		if err == nil {
			err = log.stream.Purge(pctx, jetstream.WithPurgeSequence(keep))
		}
		var first uint64
		if err == nil {
			first, err = firstSeq(pctx, c.node.js, p)
		}
		pcancel()
		if err != nil {
			c.report(p, fmt.Errorf("trimming the log below %d: %w", keep, err))
			continue
		}
		trimmed = keep
		c.snaps.update(p, func(i *SnapshotInfo) { i.FirstSeq = first })
	}
}

// snapshotTimeout bounds writing one snapshot.
const snapshotTimeout = 10 * time.Minute

// lowMark is the lowest applied mark of p that the live nodes report in
// their heartbeats (this node's own view read directly). A live node that
// reports none counts as 0: it may need the whole log.
func (c *Cluster) lowMark(p int, own View) uint64 {
	low := own.Applied()
	c.mu.Lock()
	defer c.mu.Unlock()
	for n := range c.live {
		if n == c.node.name {
			continue
		}
		marks := c.marks[n]
		if p >= len(marks) {
			return 0
		}
		low = min(low, marks[p])
	}
	return low
}

// refreshSnapshotInfo reads every partition's log first sequence and
// latest snapshot (for the metrics of a node that does not own them).
func (c *Cluster) refreshSnapshotInfo() {
	ctx, cancel := context.WithTimeout(c.ctx, 2*time.Second)
	defer cancel()
	for p := 0; p < c.o.Partitions; p++ {
		if first, err := firstSeq(ctx, c.node.js, p); err == nil {
			c.snaps.update(p, func(i *SnapshotInfo) { i.FirstSeq = first })
		}
		if c.obs == nil {
			continue
		}
		if info, err := c.obs.GetInfo(ctx, SnapshotName(p)); err == nil {
			if seq, err := strconv.ParseUint(info.Headers.Get(HeaderSnapshotSeq), 10, 64); err == nil {
				c.snaps.update(p, func(i *SnapshotInfo) {
					if seq >= i.Seq {
						i.Seq, i.At = seq, info.ModTime
					}
				})
			}
		}
	}
}

// Snapshot is what this node knows of partition p's snapshot and log.
func (c *Cluster) Snapshot(p int) SnapshotInfo { return c.snaps.get(p) }
