package store

import (
	"bytes"
	"encoding/binary"

	"github.com/cockroachdb/pebble"
)

// What a cluster backup records of a partition beyond its snapshot
// (docs/cluster.md §19, "The numbering rule"): the inbox marks, and the
// empty snapshot a restore bridges a log's jump with.

// InboxMarks is this partition's inbox marks: for each source partition
// whose intents ran here, the highest sequence of the source's log they
// ran up to (ii/{source}, intents.go). A restore numbers each source's
// log above every mark the backup holds for it, so that the target runs
// the source's new entries instead of taking them for ones it ran.
func (s *Store) InboxMarks() (map[int]uint64, error) {
	if !s.hold() {
		return nil, ErrClosed
	}
	defer s.wg.Done()
	prefix := []byte("ii/")
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	marks := map[int]uint64{}
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()[len(prefix):]
		if len(k) != 2 {
			continue
		}
		if v := u64At(it.Value()); v > 0 {
			marks[int(binary.BigEndian.Uint16(k))] = v
		}
	}
	return marks, it.Error()
}

// EmptySnapshot is the snapshot (the format Snapshot writes) of a view
// that holds none of the log's keys, taken at seq. A restore stores it as
// the partition's snapshot when it makes the log continue at seq+1: every
// view then rebuilds from it across the jump, as after any trim.
func EmptySnapshot(seq uint64) []byte {
	var b bytes.Buffer
	_ = newSnapWriter(&b, seq).close() // a bytes.Buffer takes every write
	return b.Bytes()
}

// outboxTarget is the target partition of an outbox key (io/{target}…).
func outboxTarget(k []byte) (int, bool) {
	if !bytes.HasPrefix(k, []byte("io/")) || len(k) < 5 {
		return 0, false
	}
	return int(binary.BigEndian.Uint16(k[3:5])), true
}
