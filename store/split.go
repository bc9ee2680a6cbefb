package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/cockroachdb/pebble"
)

// Seeding a cluster of several partitions from a single node's store
// (docs/cluster.md §19, "From one node to a cluster").
//
// A single node's data is one partition's layout. Split for P partitions,
// each key goes to the partition(s) of the user(s) it belongs to, as the
// cluster itself would have written it (§10.1, §11): a key that names a
// user goes to that user's partition; a history record to both users'
// (each side's copy); the time index, media references and late-archive
// marks only with the sender's copy; a sender's timeline copy that refers
// to the recipient's event (eventRef) is stored whole when the two are in
// different partitions; an expiry entry is split by the keys it expires;
// the push queue goes to its recipient, the push-token index to the
// token's holder, uploads to their uploader. splitRules is the table; a
// key no rule names fails the split (nothing is dropped unseen).

// splitRule names the users whose partitions hold a key (k, value v);
// all: every partition (counters and marks that are not a user's).
type splitRule struct {
	prefix string
	users  func(sp *splitter, k, v []byte) (users []string, all bool, err error)
}

var splitRules = []splitRule{
	{"a/", firstUser},   // account
	{"t/", firstUser},   // timeline event (refs: timelineValue)
	{"s/", firstUser},   // last Seq
	{"d/", firstUser},   // resend record: the sender's (from)
	{"r/", firstUser},   // conversation entry: the owner's
	{"x/", firstUser},   // last kick
	{"pf/", firstUser},  // profile
	{"nm/", firstUser},  // global mute
	{"rf/", firstUser},  // friend entry: the owner's
	{"rg/", firstUser},  // reverse friend index: a key of its first user (putSide)
	{"rb/", firstUser},  // blacklist entry: the owner's
	{"rh/", firstUser},  // reverse blacklist index (putSide)
	{"rq/", firstUser},  // friend request: the recipient's
	{"rs/", firstUser},  // reverse request index (putSide)
	{"rc/", firstUser},  // relationship counters
	{"rl/", firstUser},  // friend groups
	{"pt/", firstUser},  // push token
	{"pw/", firstUser},  // notification shown: the recipient's
	{"h/", bothUsers},   // history record: each side's copy
	{"k/", bothUsers},   // old MsgKey index: with the history record
	{"mg/", secondUser}, // download grant: the grantee's
	{"m/", func(sp *splitter, _, v []byte) ([]string, bool, error) { return sp.sender(v) }},
	{"mr/", func(sp *splitter, k, _ []byte) ([]string, bool, error) {
		_, hk, _ := bytes.Cut(k[len("mr/"):], []byte{sep})
		return sp.sender(hk)
	}},
	{"mz/", func(sp *splitter, k, _ []byte) ([]string, bool, error) { return sp.sender(tailAfter(k, "mz/", 8)) }},
	{"mu/", func(_ *splitter, _, v []byte) ([]string, bool, error) { return jsonUser(v, "Owner") }},
	{"mp/", func(sp *splitter, k, _ []byte) ([]string, bool, error) { return sp.uploader(tailAfter(k, "mp/", 8)) }},
	{"mc/", func(sp *splitter, k, _ []byte) ([]string, bool, error) { return sp.uploader(tailAfter(k, "mc/", 8)) }},
	{"pq/", func(_ *splitter, _, v []byte) ([]string, bool, error) { return jsonUser(v, "User") }},
	{"px/", func(_ *splitter, _, v []byte) ([]string, bool, error) {
		user, _, _ := bytes.Cut(v, []byte{sep})
		return []string{string(user)}, false, nil
	}},
	{"ps", everyPartition},  // the push queue's last id: no partition's ids may repeat it
	{"ma/", everyPartition}, // archive hours done
	{"ri/", everyPartition}, // the reverse relation indexes are whole: each partition's are
}

func firstUser(_ *splitter, k, _ []byte) ([]string, bool, error) {
	rest := k[bytes.IndexByte(k, '/')+1:]
	user, _, _ := bytes.Cut(rest, []byte{sep})
	return []string{string(user)}, false, nil
}

func secondUser(_ *splitter, k, _ []byte) ([]string, bool, error) {
	_, rest, _ := bytes.Cut(k[bytes.IndexByte(k, '/')+1:], []byte{sep})
	user, _, _ := bytes.Cut(rest, []byte{sep})
	return []string{string(user)}, false, nil
}

func bothUsers(_ *splitter, k, _ []byte) ([]string, bool, error) {
	parts := bytes.SplitN(k[bytes.IndexByte(k, '/')+1:], []byte{sep}, 3)
	if len(parts) < 2 {
		return nil, false, fmt.Errorf("store: split: key %q names no two users", k)
	}
	return []string{string(parts[0]), string(parts[1])}, false, nil
}

func everyPartition(_ *splitter, _, _ []byte) ([]string, bool, error) { return nil, true, nil }

// tailAfter is k after prefix and n fixed bytes.
func tailAfter(k []byte, prefix string, n int) []byte {
	if len(k) < len(prefix)+n {
		return nil
	}
	return k[len(prefix)+n:]
}

func jsonUser(v []byte, field string) ([]string, bool, error) {
	var rec map[string]json.RawMessage
	var user string
	if err := json.Unmarshal(v, &rec); err != nil || json.Unmarshal(rec[field], &user) != nil || user == "" {
		return nil, false, fmt.Errorf("store: split: a record without %s: %.100q", field, v)
	}
	return []string{user}, false, nil
}

// splitter reads what routing a key needs from a single node's store.
type splitter struct {
	s  *Store
	of func(user string) int
}

// sender is the sender of the message stored under history key hk: its
// time index and media references are the sender's copy's. A record
// gone already (they expire together) goes by the key's first user.
func (sp *splitter) sender(hk []byte) ([]string, bool, error) {
	v, err := get(sp.s.db, hk)
	if err != nil {
		return nil, false, err
	}
	if v != nil {
		if m, err := decodeMessage(v); err == nil && m.From != "" {
			return []string{m.From}, false, nil
		}
	}
	if !bytes.HasPrefix(hk, []byte("h/")) {
		return nil, false, fmt.Errorf("store: split: %q is not a history key", hk)
	}
	return firstUser(sp, hk, nil)
}

// uploader is the owner of upload uuid (its pending and check records go
// with its record); an upload whose record is gone goes to partition 0's
// first user, "", which is as good as any.
func (sp *splitter) uploader(uuid []byte) ([]string, bool, error) {
	v, err := get(sp.s.db, uploadKey(string(uuid)))
	if err != nil || v == nil {
		return []string{""}, false, err
	}
	return jsonUser(v, "Owner")
}

func ruleFor(k []byte) *splitRule {
	for i := range splitRules {
		if bytes.HasPrefix(k, []byte(splitRules[i].prefix)) {
			return &splitRules[i]
		}
	}
	return nil
}

// holds reports whether partition p holds key k (value v).
func (sp *splitter) holds(p int, k, v []byte) (bool, error) {
	r := ruleFor(k)
	if r == nil {
		return false, fmt.Errorf("store: split: no partition rule for key %q", k)
	}
	users, all, err := r.users(sp, k, v)
	if err != nil || all {
		return all, err
	}
	return slices.ContainsFunc(users, func(u string) bool { return sp.of(u) == p }), nil
}

// timelineValue is timeline key k's value v as partition p stores it: a
// reference to another partition's event is resolved into the whole
// event (nil: the event it names is gone, and so is this one).
func (sp *splitter) timelineValue(p int, k, v []byte) ([]byte, error) {
	if !isEventRef(v) {
		return v, nil
	}
	_, n := binary.Uvarint(v[1:])
	if n <= 0 {
		return nil, fmt.Errorf("store: damaged timeline reference %x", v)
	}
	if sp.of(string(v[1+n:])) == p {
		return v, nil
	}
	return sp.s.resolveRef(binary.BigEndian.Uint64(k[len(k)-8:]), v)
}

// expiry is expiry entry k (value v) as partition p stores it: the keys it
// expires that p holds (the first in the key, the rest in the value);
// ok false when p holds none. Keys already gone are left out.
func (sp *splitter) expiry(p int, k, v []byte) (nk, nv []byte, ok bool, err error) {
	const head = len("e/") + 8
	if len(k) <= head {
		return nil, nil, false, fmt.Errorf("store: split: expiry key %q", k)
	}
	keys := [][]byte{k[head:]}
	for r := v; len(r) > 0; {
		n, m := binary.Uvarint(r)
		if m <= 0 || uint64(len(r)-m) < n {
			return nil, nil, false, fmt.Errorf("store: split: expiry entry %q: damaged key list", k)
		}
		keys = append(keys, r[m:m+int(n)])
		r = r[m+int(n):]
	}
	var mine [][]byte
	for _, x := range keys {
		xv, err := get(sp.s.db, x)
		if err != nil {
			return nil, nil, false, err
		}
		if xv == nil {
			continue
		}
		if in, err := sp.holds(p, x, xv); err != nil {
			return nil, nil, false, err
		} else if in {
			mine = append(mine, x)
		}
	}
	if len(mine) == 0 {
		return nil, nil, false, nil
	}
	nk = append(bytes.Clone(k[:head]), mine[0]...)
	for _, x := range mine[1:] {
		nv = binary.AppendUvarint(nv, uint64(len(x)))
		nv = append(nv, x...)
	}
	return nk, nv, true, nil
}

// ExportPartition is Export of partition p's share of this single node's
// store, split for a cluster whose partition function is of (the rules
// above): a snapshot at sequence 0, as Export's. The store must not be
// written meanwhile, nor between the calls for a cluster's partitions
// (the seed holds the stopped node's data directory lock).
func (s *Store) ExportPartition(p int, of func(user string) int, put func(seq uint64, r io.Reader) error) error {
	if s.repl != nil || s.parts != nil {
		return errors.New("store: ExportPartition splits a single node's store")
	}
	if !s.hold() {
		return ErrClosed
	}
	defer s.wg.Done()
	sp := &splitter{s: s, of: of}
	return streamWith(0, func(w io.Writer) error { return sp.write(w, p) }, put)
}

// write writes partition p's snapshot to w.
func (sp *splitter) write(w io.Writer, p int) error {
	sw := newSnapWriter(w, 0)
	// Expiry entries rewritten for p may sort otherwise than the single
	// node's within their second (their first key may change): each
	// second's are sorted before they are written, so the snapshot stays
	// in key order.
	var group []kv
	flush := func() error {
		slices.SortStableFunc(group, func(a, b kv) int { return bytes.Compare(a.k, b.k) })
		for i, e := range group {
			if i+1 < len(group) && bytes.Equal(group[i+1].k, e.k) {
				// Two entries of one second now start with the same key:
				// one entry expires both lists.
				group[i+1].v = append(bytes.Clone(e.v), group[i+1].v...)
				continue
			}
			if err := sw.add(e.k, e.v); err != nil {
				return err
			}
		}
		group = group[:0]
		return nil
	}
	for _, r := range replicatedRanges {
		it, err := sp.s.db.NewIter(&pebble.IterOptions{LowerBound: r[0], UpperBound: r[1]})
		if err != nil {
			return err
		}
		err = func() error {
			defer it.Close()
			for ok := it.First(); ok; ok = it.Next() {
				k, v := it.Key(), it.Value()
				if bytes.HasPrefix(k, []byte("e/")) {
					nk, nv, in, err := sp.expiry(p, k, v)
					if err != nil {
						return err
					}
					if in {
						if len(group) > 0 && !bytes.Equal(group[0].k[:len("e/")+8], nk[:len("e/")+8]) {
							if err := flush(); err != nil {
								return err
							}
						}
						group = append(group, kv{k: nk, v: nv})
					}
					continue
				}
				if err := flush(); err != nil {
					return err
				}
				in, err := sp.holds(p, k, v)
				if err != nil {
					return err
				}
				if !in {
					continue
				}
				if bytes.HasPrefix(k, []byte("t/")) {
					if v, err = sp.timelineValue(p, k, v); err != nil {
						return err
					}
					if v == nil {
						continue
					}
				}
				if err := sw.add(k, v); err != nil {
					return err
				}
			}
			return it.Error()
		}()
		if err != nil {
			return err
		}
	}
	if err := flush(); err != nil {
		return err
	}
	return sw.close()
}
