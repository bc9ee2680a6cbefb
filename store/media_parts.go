package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble"
)

// Media and archives on the front of several partitions (docs/cluster.md
// §10.1, §14.3, §14.4). An upload's records (mu/, mp/, mc/) are in its
// uploader's partition, a grant (mg/) in its downloader's, a message's
// time index entry (m/), media references (mr/) and late-archive mark
// (mz/) with its sender's copy. What names no user is looked for in every
// partition here, from this node's views; the cleaner works each
// partition through Partition(i) on its owner, and the hour's archive
// record (ma/) is partition 0's, whose owner archives.
//
// On a single node and with one partition these methods are not reached:
// each caller goes to the store's own code, as before.

// getUploadAll finds upload uuid in whichever partition holds it (point
// reads, bloom-filtered: an absent key costs little).
func (s *Store) getUploadAll(uuid string) (*Upload, error) {
	for _, p := range s.parts {
		u, err := p.GetUpload(uuid)
		if !errors.Is(err, ErrNotFound) {
			return u, err
		}
	}
	return nil, ErrNotFound
}

// firstMessageTimeAll is the oldest time index entry of any partition.
func (s *Store) firstMessageTimeAll() (t time.Time, ok bool, err error) {
	for _, p := range s.parts {
		pt, pok, err := p.FirstMessageTime()
		if err != nil {
			return time.Time{}, false, err
		}
		if pok && (!ok || pt.Before(t)) {
			t, ok = pt, true
		}
	}
	return t, ok, nil
}

// dirtyHoursAll merges the partitions' marked hours.
func (s *Store) dirtyHoursAll(last int64, max int) ([]int64, error) {
	var out []int64
	for _, p := range s.parts {
		hs, err := p.DirtyHours(last, max)
		if err != nil {
			return nil, err
		}
		out = append(out, hs...)
	}
	slices.Sort(out)
	out = slices.Compact(out)
	return out[:min(len(out), max)], nil
}

// dirtyMarksAll is every partition's marks on hour, each partition's keys
// prefixed by its number (one byte), which MarkArchived takes apart.
func (s *Store) dirtyMarksAll(hour int64) ([][]byte, error) {
	var out [][]byte
	for i, p := range s.parts {
		ks, err := p.DirtyMarks(hour)
		if err != nil {
			return nil, err
		}
		for _, k := range ks {
			out = append(out, append([]byte{byte(i)}, k...))
		}
	}
	return out, nil
}

// PartMarks are the late-archive marks of one partition that an archive
// covered, with a user of that partition (one side of a marked message's
// conversation: the sender, whose copy carries the mark), who names the
// partition to a command router.
type PartMarks struct {
	User string
	Keys [][]byte
}

// SplitMarks takes marks (DirtyMarks' answer) apart by partition. On a
// single store it is one group, with no user.
func (s *Store) SplitMarks(marks [][]byte) (map[int]*PartMarks, error) {
	if s.parts == nil {
		return map[int]*PartMarks{0: {Keys: marks}}, nil
	}
	out := map[int]*PartMarks{}
	for _, m := range marks {
		if len(m) < 1 || int(m[0]) >= len(s.parts) {
			return nil, fmt.Errorf("store: archive mark %q names no partition", m)
		}
		p, k := int(m[0]), m[1:]
		g := out[p]
		if g == nil {
			u := markUser(k, p, s.opts.PartitionOf)
			if u == "" {
				return nil, fmt.Errorf("store: archive mark %q names no user of partition %d", k, p)
			}
			g = &PartMarks{User: u}
			out[p] = g
		}
		g.Keys = append(g.Keys, k)
	}
	return out, nil
}

// markUser is the user of partition p in mark k's conversation
// (mz/{hour}h/{lo}00{hi}00…).
func markUser(k []byte, p int, of func(string) int) string {
	hk, ok := bytes.CutPrefix(k, dirtyKey(0, nil)[:3])
	if !ok || len(hk) < 8 {
		return ""
	}
	rest, ok := bytes.CutPrefix(hk[8:], []byte("h/"))
	if !ok {
		return ""
	}
	users := bytes.SplitN(rest, []byte{sep}, 3)
	if len(users) < 3 {
		return ""
	}
	for _, u := range users[:2] {
		if of(string(u)) == p {
			return string(u)
		}
	}
	return ""
}

// ClearMarks deletes late-archive marks of this partition that an archive
// covered (SplitMarks' keys): only mz/ keys.
func (tx *Tx) ClearMarks(keys [][]byte) error {
	for _, k := range keys {
		if !bytes.HasPrefix(k, []byte("mz/")) {
			return fmt.Errorf("store: %q is not an archive mark", k)
		}
		tx.Delete(k)
	}
	return nil
}

// scanMessagesAll is ScanMessages over every partition: each partition's
// time index, read from one snapshot each and merged in key order (time
// first), so each message comes once — from its sender's partition.
func (s *Store) scanMessagesAll(lo, hi int64, fn func(*Message) error) error {
	type cursor struct {
		snap *pebble.Snapshot
		it   *pebble.Iterator
		ok   bool
	}
	cs := make([]*cursor, 0, len(s.parts))
	defer func() {
		for _, c := range cs {
			c.it.Close()
			c.snap.Close()
		}
	}()
	for _, p := range s.parts {
		snap := p.db.NewSnapshot()
		it, err := snap.NewIter(&pebble.IterOptions{
			LowerBound: key([]byte("m/"), u64(uint64(lo))),
			UpperBound: key([]byte("m/"), u64(uint64(hi))),
		})
		if err != nil {
			snap.Close()
			return err
		}
		cs = append(cs, &cursor{snap: snap, it: it, ok: it.First()})
	}
	for {
		var c *cursor
		for _, x := range cs {
			if x.ok && (c == nil || bytes.Compare(x.it.Key(), c.it.Key()) < 0) {
				c = x
			}
		}
		if c == nil {
			break
		}
		v, err := get(c.snap, c.it.Value())
		if err != nil {
			return err
		}
		if v != nil {
			var m Message
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("store: message at %x: %w", c.it.Value(), err)
			}
			if err := fn(&m); err != nil {
				return err
			}
		}
		c.ok = c.it.Next()
	}
	for _, c := range cs {
		if err := c.it.Error(); err != nil {
			return err
		}
	}
	return nil
}

// carriedElsewhere looks for live references to upload uuid in other
// partitions' views (others): a message whose sender is not the uploader
// (an App admin's upload sent as a user) keeps its reference with the
// sender's copy, in the sender's partition (docs/cluster.md §11.2 item
// 6). It answers when the last of them expires (0 with live: never).
// Dead references there are not this partition's to delete: they expire
// with their message.
func carriedElsewhere(others []*Store, uuid string, now time.Time) (until int64, live bool, err error) {
	prefix := key([]byte("mr/"), []byte(uuid), []byte{sep})
	for _, o := range others {
		err := o.scan(prefix, func(rest, v []byte) error {
			msg, err := get(o.db, rest)
			if err != nil {
				return err
			}
			if next, ok := refUntil(v, msg, now); ok {
				live, until = true, max(until, next)
			}
			return nil
		})
		if err != nil {
			return 0, false, err
		}
	}
	return until, live, nil
}
