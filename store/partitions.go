package store

import (
	"errors"
	"fmt"
	"math/bits"
	"path/filepath"
	"time"
)

// A node's store in a cluster with several partitions (docs/cluster.md §5,
// §10.1): one Store per partition, each its own Pebble directory
// ({dir}/p00, {dir}/p01, …), writer and log, and in front of them one
// Store that the command layer, delivery and the REST API use as they use
// a single node's. Every method that names a user answers from, or
// commits in, that user's partition (part); a transaction's writes for
// users of other partitions become intents (intents.go).
//
// Why a directory per partition, not a prefix per partition in one
// database: each partition is then exactly today's store — its key
// layout, applied mark, snapshot and rebuild unchanged, a single node's
// code path untouched — and no entry of one partition can touch another's
// keys (I8) because it cannot reach them.
//
// The front has no database of its own. Work that is a partition's, not a
// user's (its log, snapshots, the push queue, media clean-up, retention),
// is done on Partition(i) by the code that runs it for that partition.

// OpenPartitions opens the n partitions of a cluster node's store in dir.
// of names each user's partition (in 0..n-1). Every partition is opened
// Replicated; o's caches are shared out between them.
func OpenPartitions(dir string, n int, of func(user string) int, o Options) (*Store, error) {
	if n < 1 || of == nil {
		return nil, errors.New("store: OpenPartitions needs n ≥ 1 and a partition function")
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 128 << 20
	}
	o.CacheSize = max(o.CacheSize/int64(n), 8<<20)
	o.memTableSize = max(64<<20/uint64(n), 4<<20)
	// The resend filter's lines are 512 bits: a power of two from 2^20.
	o.dedupBits = max(dedupFilterBits>>bits.Len(uint(n-1)), 1<<20)
	o.Replicated = true
	o.PartitionOf = of
	if o.Clock == nil {
		o.Clock = time.Now
	}
	parts := make([]*Store, 0, n)
	for i := range n {
		po := o
		po.Partition = i
		s, err := Open(filepath.Join(dir, fmt.Sprintf("p%02d", i)), po)
		if err != nil {
			for _, p := range parts {
				p.Close()
			}
			return nil, err
		}
		parts = append(parts, s)
	}
	return Front(parts), nil
}

// Front is a front over partition stores parts (parts[i] opened as
// partition i, with one PartitionOf): OpenPartitions' own, or, for a test
// that reads and writes a cluster's data from outside, the partitions of
// whichever nodes own them. Closing it closes them.
func Front(parts []*Store) *Store {
	o := parts[0].opts
	return &Store{opts: o, log: o.Logger, parts: parts}
}

// part is the store that holds user's data: s itself unless s is the
// front of several partitions.
func (s *Store) part(user string) *Store {
	if s.parts == nil {
		return s
	}
	return s.parts[s.opts.PartitionOf(user)]
}

// local reports whether user's data is in s (a partition store, or a
// store of one partition).
func (s *Store) local(user string) bool {
	return s.UserPartition(user) == s.opts.Partition
}

// Partitions is the number of partitions behind s (1 unless OpenPartitions).
func (s *Store) Partitions() int {
	if s.parts == nil {
		return 1
	}
	return len(s.parts)
}

// Partition is partition i's store (s itself for a store of one).
func (s *Store) Partition(i int) *Store {
	if s.parts == nil {
		return s
	}
	return s.parts[i]
}

// closeParts closes a front's partitions.
func (s *Store) closeParts() error {
	var errs []error
	for _, p := range s.parts {
		errs = append(errs, p.Close())
	}
	return errors.Join(errs...)
}

// errNeedsHome refuses Update on the front of several partitions: a
// transaction commits in one partition, named by UpdateFor's home.
var errNeedsHome = errors.New("store: a transaction on a partitioned store needs its home user (UpdateFor)")
