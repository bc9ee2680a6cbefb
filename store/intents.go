package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble"
)

// Transactions that span partitions (docs/cluster.md §11).
//
// With partitions (cluster mode, P > 1) each partition is its own store —
// its own Pebble directory, writer and log — and a transaction runs in the
// store of its home user (UpdateFor). What it writes for a user of another
// partition is not written here: the store-level operation and its
// arguments are recorded as an intent, committed in the home's log entry
// with the rest of the transaction, and executed later by the target
// partition's writer against the target's own, exact data:
//
//   - Append*, for a foreign user, returns a placeholder Seq (bit 63 set,
//     low bits the index of the Append in the transaction). Code that only
//     passes it on (sendmsg sets m.ReceiverSeq from it) needs no change:
//     AppendCopy of a placeholder stores the whole event instead of a
//     reference, PutMessage keeps 0 in the home's copy, and the target
//     replaces the placeholder in its own arguments by the Seq its own
//     Append gave. A placeholder never reaches a key or a reply.
//   - Touch and the foreign half of PutMessage (the other side's copy of
//     the history record) are recorded whole and re-run by the target.
//
// Every view materialises an entry's intents as outbox records,
// io/{target}{source seq}, written in the same batch as the entry (so they
// are in every view and every snapshot of the source). The target's owner
// pulls them (Receive): one synthetic transaction per source entry that
// runs its intents in order and moves the target's inbox mark
// ii/{source} to the entry's sequence, in one commit — so an entry's
// intents run once (I4c), in the source log's order (I7), whoever pulls
// and however often. The source's owner deletes outbox records the
// target has executed (TrimOutbox).
//
// A store opened without Options.PartitionOf (a single node, and a cluster
// with one partition) never defers anything: every user is its own, and
// the send path pays one nil check.

// placeholderBit marks a Seq handed out for an Append deferred to another
// partition (§11.2).
const placeholderBit = 1 << 63

func isPlaceholder(seq uint64) bool { return seq&placeholderBit != 0 }

// Intent operations. An operation's arguments are plain data, decoded by
// the target; ops that yield a Seq fill the entry's placeholder table.
const (
	opAppend  = 'a' // placeholder index, origin, tail (as Append's), expire (Unix ns, 0 = never); yields a Seq
	opTouch   = 'c' // peer, msgTime, msgKey, expire, flags (1 unread, 2 noLastMsg), limit, now
	opPutCopy = 'h' // the Message's JSON: the target user's copy of a history record
)

type intent struct {
	part int
	user string
	op   byte
	args []byte
}

// foreign reports the partition of user when it is not this store's.
func (tx *Tx) foreign(user string) (int, bool) {
	of := tx.s.opts.PartitionOf
	if of == nil {
		return 0, false
	}
	p := of(user)
	return p, p != tx.s.opts.Partition
}

// deferAppend records an Append of tail for user of partition p and
// returns its placeholder. Placeholders are numbered across the whole
// group (commit), so that an entry's outbox record, which merges the
// group's transactions, names each once.
func (tx *Tx) deferAppend(p int, user, origin string, tail []byte, expire time.Time) uint64 {
	var at uint64
	if !expire.IsZero() {
		at = uint64(expire.UnixNano())
	}
	ph := *tx.nph
	*tx.nph++
	a := binary.AppendUvarint(nil, ph)
	a = appendBytes(a, origin)
	a = appendBytes(a, string(tail))
	a = binary.AppendUvarint(a, at)
	tx.intents = append(tx.intents, intent{part: p, user: user, op: opAppend, args: a})
	return placeholderBit | ph
}

// deferTouch records Touch(owner, …) for owner of partition p.
func (tx *Tx) deferTouch(p int, owner, peer string, m *Message, unread, noLastMsg bool, limit int, now int64) {
	a := appendBytes(nil, peer)
	a = binary.AppendVarint(a, m.MsgTime)
	a = appendBytes(a, m.MsgKey)
	a = binary.AppendVarint(a, m.Expire)
	var flags byte
	if unread {
		flags |= 1
	}
	if noLastMsg {
		flags |= 2
	}
	a = append(a, flags)
	a = binary.AppendVarint(a, int64(limit))
	a = binary.AppendVarint(a, now)
	tx.intents = append(tx.intents, intent{part: p, user: owner, op: opTouch, args: a})
}

// encodeIntents appends the intents section of an entry.
func encodeIntents(b []byte, in []intent) []byte {
	b = binary.AppendUvarint(b, uint64(len(in)))
	for _, i := range in {
		b = binary.AppendUvarint(b, uint64(i.part))
		b = append(b, i.op)
		b = appendBytes(b, i.user)
		b = appendBytes(b, string(i.args))
	}
	return b
}

func decodeIntents(r *entryReader) []intent {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.err, r.b = errBadEntry, nil
		return nil
	}
	in := make([]intent, 0, n)
	for k := uint64(0); k < n && r.err == nil; k++ {
		var i intent
		i.part = int(r.uvarint())
		i.op = r.byte()
		i.user = string(r.bytes())
		i.args = r.bytes()
		in = append(in, i)
	}
	return in
}

// Outbox and inbox keys. 'i' starts no other key of the layout.
//
//	io/{target u16be}{source seq u64be}   the intents entry seq recorded for target (encodeIntents)
//	ii/{source u16be}                     the highest source sequence whose intents ran here (u64be)
func outboxPrefix(target int) []byte {
	return binary.BigEndian.AppendUint16([]byte("io/"), uint16(target))
}

func outboxKey(target int, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(outboxPrefix(target), seq)
}

func inboxKey(source int) []byte {
	return binary.BigEndian.AppendUint16([]byte("ii/"), uint16(source))
}

// putOutbox adds entry seq's intents to b as outbox records, one per
// target partition, keeping their order. Both ways an entry reaches a view
// (the owner's commit, Apply) call it, so every view holds the same keys.
func putOutbox(b *pebble.Batch, seq uint64, in []intent) ([]int, error) {
	var targets []int
	for k := 0; k < len(in); {
		// Intents of one target, in order, even when targets interleave.
		t := in[k].part
		if containsInt(targets, t) {
			k++
			continue
		}
		targets = append(targets, t)
		var mine []intent
		for _, i := range in[k:] {
			if i.part == t {
				mine = append(mine, i)
			}
		}
		if err := b.Set(outboxKey(t, seq), encodeIntents(nil, mine), nil); err != nil {
			return nil, err
		}
		k++
	}
	return targets, nil
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// maxReceive bounds the source entries one inbox transaction executes.
const maxReceive = 256

// Receive runs, in this store's writer, every intent of src's log for this
// partition that has not run yet, in src's log order, and returns how many
// source entries it executed. It reads src's outbox from src's view: what
// this node has applied of src's log. Any node may call it, any number of
// times, concurrently: an entry whose sequence is at or below this
// partition's inbox mark for src is skipped inside the transaction, so it
// runs once; only the owner of this partition commits (others get
// ErrNotOwner).
func (s *Store) Receive(src *Store) (int, error) {
	if s.opts.PartitionOf == nil || src.opts.Partition == s.opts.Partition {
		return 0, nil
	}
	total := 0
	for {
		mark, err := s.inboxMark(src.opts.Partition)
		if err != nil {
			return total, err
		}
		batch, err := src.outbox(s.opts.Partition, mark, maxReceive)
		if err != nil || len(batch) == 0 {
			return total, err
		}
		ran := 0
		var wrote []kv
		err = s.Update(func(tx *Tx) error {
			ran, wrote = 0, nil
			v, err := tx.Get(inboxKey(src.opts.Partition))
			if err != nil {
				return err
			}
			cur := u64At(v)
			for _, o := range batch {
				if o.seq <= cur {
					continue
				}
				if err := tx.runIntents(o.intents); err != nil {
					return fmt.Errorf("store: intents of partition %d entry %d: %w", src.opts.Partition, o.seq, err)
				}
				cur = o.seq
				ran++
			}
			if ran > 0 { // else another Receive ran them all meanwhile
				tx.Put(inboxKey(src.opts.Partition), u64(cur))
			}
			wrote = tx.puts
			return nil
		})
		if err != nil {
			return total, err
		}
		// The code that writes accounts, kicks and push tokens keeps the
		// caches for its own writes; these were written by the intents.
		now := s.Now()
		for _, w := range wrote {
			s.noteWrite(w.k, w.v, !w.del, now)
		}
		total += ran
		if len(batch) < maxReceive {
			return total, nil
		}
	}
}

func u64At(v []byte) uint64 {
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// inboxMark is the highest entry of partition source whose intents this
// view has executed.
func (s *Store) inboxMark(source int) (uint64, error) {
	v, err := get(s.db, inboxKey(source))
	return u64At(v), err
}

type outboxEntry struct {
	seq     uint64
	intents []intent
}

// outbox reads up to max of this store's outbox records for target after
// source sequence after.
func (s *Store) outbox(target int, after uint64, max int) ([]outboxEntry, error) {
	prefix := outboxPrefix(target)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: outboxKey(target, after+1), UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []outboxEntry
	for ok := it.First(); ok && len(out) < max; ok = it.Next() {
		k := it.Key()
		r := entryReader{b: bytes.Clone(it.Value())}
		in := decodeIntents(&r)
		if r.err != nil || len(r.b) != 0 {
			return nil, fmt.Errorf("store: outbox record %x: %w", k, errBadEntry)
		}
		out = append(out, outboxEntry{seq: binary.BigEndian.Uint64(k[len(prefix):]), intents: in})
	}
	return out, it.Error()
}

// TrimOutbox deletes, in this store's log, the outbox records that target
// has executed (its inbox mark for this partition, as this node's view of
// target knows it). The owner of this partition calls it now and then; a
// record deleted late costs nothing but space.
func (s *Store) TrimOutbox(target *Store) error {
	mark, err := target.inboxMark(s.opts.Partition)
	if err != nil || mark == 0 {
		return err
	}
	// The records at or below the mark: their keys only, not decoded.
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: outboxPrefix(target.opts.Partition), UpperBound: outboxKey(target.opts.Partition, mark+1)})
	if err != nil {
		return err
	}
	var keys [][]byte
	for ok := it.First(); ok && len(keys) < maxReceive; ok = it.Next() {
		keys = append(keys, bytes.Clone(it.Key()))
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return err
	}
	if len(keys) == 0 {
		return nil
	}
	return s.Update(func(tx *Tx) error {
		for _, k := range keys {
			tx.Delete(k)
		}
		return nil
	})
}

var errUnknownOp = errors.New("unknown intent operation")

// runIntents executes one source entry's intents for this partition, in
// order; placeholders in later arguments are replaced by the Seqs earlier
// Appends of the same entry got here.
func (tx *Tx) runIntents(in []intent) error {
	var seqs map[uint64]uint64 // placeholder index → Seq given here
	resolve := func(seq uint64) uint64 {
		if !isPlaceholder(seq) {
			return seq
		}
		return seqs[seq&^placeholderBit] // 0: not appended here
	}
	for _, i := range in {
		if _, f := tx.foreign(i.user); f {
			return fmt.Errorf("intent for %q is not this partition's", i.user)
		}
		r := entryReader{b: i.args}
		switch i.op {
		case opAppend:
			ph := r.uvarint()
			origin := string(r.bytes())
			tail := r.bytes()
			at := r.uvarint()
			if r.err != nil {
				return r.err
			}
			seq, err := tx.appendEvent(i.user, origin, tail, nil)
			if err != nil {
				return err
			}
			if at != 0 {
				tx.ExpireAt(time.Unix(0, int64(at)), timelineKey(i.user, seq))
			}
			if seqs == nil {
				seqs = make(map[uint64]uint64)
			}
			seqs[ph] = seq
		case opTouch:
			peer := string(r.bytes())
			m := &Message{MsgTime: r.varint(), MsgKey: string(r.bytes()), Expire: r.varint()}
			flags := r.byte()
			limit, now := r.varint(), r.varint()
			if r.err != nil {
				return r.err
			}
			if err := tx.Touch(i.user, peer, m, flags&1 != 0, flags&2 != 0, int(limit), now); err != nil {
				return err
			}
		case opPutCopy:
			m, err := decodeMessage(i.args)
			if err != nil {
				return err
			}
			m.SenderSeq, m.ReceiverSeq = resolve(m.SenderSeq), resolve(m.ReceiverSeq)
			if err := tx.putCopies(m, historyKey(m.From, m.To, m.MsgTime, m.MsgSeq, m.MsgRandom)); err != nil {
				return err
			}
		default:
			if err := tx.runOp(i.user, i.op, i.args); err != nil {
				return err
			}
		}
	}
	return nil
}

// notifyIntents tells OnIntents of an entry's targets; repl.mu is held.
func (s *Store) notifyIntents(targets []int) {
	if len(targets) > 0 && s.opts.OnIntents != nil {
		s.opts.OnIntents(targets)
	}
}

// userKeyPrefixes are the keys named by their user first: a transaction
// writes them only for users of its own partition (I8). Keys whose owner
// is found another way (the time index, media records, expiry entries)
// are not checked here; store/split.go has the full table.
var userKeyPrefixes = [...]string{"a/", "t/", "s/", "d/", "r/", "x/", "pf/", "nm/", "rf/", "rg/", "rb/", "rh/", "rq/", "rs/", "rc/", "rl/", "pt/", "pw/"}

// foreignWrite reports a key this partition must not write: one named by
// a user of another partition (userKeyPrefixes), a history record of
// which neither user is this partition's, a download grant of another
// partition's user. Checked for every write of every transaction on a
// store with partitions: an operation the audit of docs/cluster.md §11.2
// missed fails its transaction loudly instead of writing another
// partition's key into this one (Q7).
func (s *Store) foreignWrite(k []byte) bool {
	local := func(u []byte) bool { return s.local(string(u)) }
	slash := bytes.IndexByte(k, '/')
	if slash < 0 {
		return false
	}
	prefix, rest := string(k[:slash+1]), k[slash+1:]
	first, after, _ := bytes.Cut(rest, []byte{sep})
	switch prefix {
	case "h/", "k/":
		second, _, _ := bytes.Cut(after, []byte{sep})
		return !local(first) && !local(second)
	case "mg/":
		second, _, _ := bytes.Cut(after, []byte{sep})
		return !local(second)
	}
	for _, p := range userKeyPrefixes {
		if p == prefix {
			return !local(first)
		}
	}
	return false
}

// checkWrites refuses a transaction that writes a key of another
// partition (foreignWrite).
func (s *Store) checkWrites(tx *Tx) error {
	for _, p := range tx.puts {
		if s.foreignWrite(p.k) {
			return fmt.Errorf("store: a transaction of partition %d writes %q, a key of another partition: an operation missing from docs/cluster.md §11.2", s.opts.Partition, p.k)
		}
	}
	return nil
}
