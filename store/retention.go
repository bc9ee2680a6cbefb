package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"time"

	"github.com/cockroachdb/pebble"
)

// Retention: a transaction that writes something with a limited life also
// writes e/{expire}{key}. The sweeper walks e/ up to now and deletes what
// each entry names, then compacts the swept ranges so the disk space comes
// back (a Pebble delete is only a tombstone until compaction).

func expiryKey(t time.Time, k []byte) []byte {
	sec := t.Unix()
	if sec < 0 {
		sec = 0
	}
	return key([]byte("e/"), u64(uint64(sec)), k)
}

// ExpireAt schedules the deletion of keys at t. One entry carries them all
// (the first in its key, the others in its value): a message's expiry is
// one write, not one per index.
func (tx *Tx) ExpireAt(t time.Time, keys ...[]byte) {
	if len(keys) == 0 {
		return
	}
	var rest []byte
	for _, k := range keys[1:] {
		rest = binary.AppendUvarint(rest, uint64(len(k)))
		rest = append(rest, k...)
	}
	tx.Put(expiryKey(t, keys[0]), rest)
}

// Sweep deletes everything whose expiry is at or before now, at most limit
// keys per call (0 = no limit), and reports how many it deleted.
func (s *Store) Sweep(now time.Time, limit int) (int, error) {
	lower := []byte("e/")
	upper := expiryKey(now.Add(time.Second), nil)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return 0, err
	}
	var targets [][]byte
	n := 0
	for ok := it.First(); ok && (limit == 0 || n < limit); ok = it.Next() {
		k := it.Key()
		targets = append(targets, bytes.Clone(k[len(lower)+8:]))
		for v := it.Value(); len(v) > 0; {
			l, w := binary.Uvarint(v)
			if w <= 0 || uint64(len(v)-w) < l {
				break // a damaged list: delete what it named so far
			}
			targets = append(targets, bytes.Clone(v[w:w+int(l)]))
			v = v[w+int(l):]
			n++
		}
		targets = append(targets, bytes.Clone(k))
		n++
	}
	if err := it.Close(); err != nil {
		return 0, err
	}
	// The deletions go through the writer, ordered with transactions: a
	// recall that read an expiring event before the sweep cannot write it
	// back after (it sees it gone, or the sweep deletes its rewrite).
	for len(targets) > 0 {
		chunk := targets[:min(len(targets), 10000)]
		targets = targets[len(chunk):]
		if err := s.Update(func(tx *Tx) error {
			var emptied map[string]bool
			for _, k := range chunk {
				tx.Delete(k)
				if user, ok := timelineUser(k); ok {
					if emptied == nil {
						emptied = make(map[string]bool)
					}
					emptied[user] = true
				}
			}
			// A user's last Seq is their timeline's last key, until the
			// events go: from then s/ keeps it, so Seq never restarts.
			for user := range emptied {
				last, err := s.LastSeq(user)
				if err != nil {
					return err
				}
				tx.Put(lastSeqKey(user), u64(last))
			}
			return nil
		}); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// Compact asks Pebble to rewrite the whole key space, dropping tombstones,
// so swept data gives its disk space back.
func (s *Store) Compact() error {
	return s.db.Compact([]byte{0}, []byte{0xff}, true)
}

// LiveSize is the bytes of the store's live tables and write-ahead log:
// what the data occupies, without files Pebble is about to delete or keeps
// for recycling.
func (s *Store) LiveSize() uint64 {
	m := s.db.Metrics()
	return uint64(m.Total().Size) + m.WAL.PhysicalSize
}

// sweeper runs Sweep every interval, and a full compaction when enough has
// been deleted since the last one (at most hourly: it rewrites everything).
func (s *Store) sweeper(every time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	deleted, lastCompact := 0, time.Now()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		for {
			n, err := s.Sweep(s.Now(), 50000)
			if errors.Is(err, ErrNotOwner) {
				break // the owner of the log sweeps; its deletes reach this view
			}
			if err != nil {
				s.log.Error("retention sweep failed", "error", err)
				break
			}
			deleted += n
			if n < 50000 {
				break
			}
		}
		if deleted >= 100000 && time.Since(lastCompact) >= time.Hour {
			if err := s.Compact(); err != nil {
				s.log.Error("compaction after sweep failed", "error", err)
			}
			deleted, lastCompact = 0, time.Now()
		}
	}
}
