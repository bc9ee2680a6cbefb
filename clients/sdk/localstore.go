package sdk

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// The local store is one bbolt file per user and device. Layout:
//
//	meta      "seq" → last applied timeline Seq (u64be); "device" → DeviceID;
//	          "msgseq" → the MsgSeq of this device's last send (u64be)
//	msgs/{peer}     {time u64be}{msgseq u32be}{random u32be} → Message JSON
//	keys/{peer}     MsgKey → the msgs key
//	ranges/{peer}   lo → hi: [lo, hi) of the msgs key space is known to hold
//	                every message the server has there (roaming filled it, or
//	                the timeline kept it complete since)
//	contacts        peer → Contact JSON
//	outbox          ID → outboxEntry JSON (outbox.go)
//	pending         Seq (u64be) → an event applied here whose listener has
//	                not returned yet (re-delivered at the next Login)
//
// Messages sort as the server's history does (time, then MsgSeq), so a
// local range and a roaming page describe the same order.
var (
	bMeta     = []byte("meta")
	bMsgs     = []byte("msgs")
	bKeys     = []byte("keys")
	bRanges   = []byte("ranges")
	bContacts = []byte("contacts")
	bPending  = []byte("pending")
	kSeq      = []byte("seq")
	kDevice   = []byte("device")
	kMsgSeq   = []byte("msgseq")
	kKnown    = []byte("known") // set once a login reached the server
)

type okey [16]byte

var (
	keyMin okey
	keyMax = okey{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
)

func orderKey(t int64, seq, rnd uint32) okey {
	var k okey
	binary.BigEndian.PutUint64(k[:8], uint64(t))
	binary.BigEndian.PutUint32(k[8:12], seq)
	binary.BigEndian.PutUint32(k[12:], rnd)
	return k
}

func (m *Message) okey() okey { return orderKey(m.MsgTimeStamp, m.MsgSeq, m.MsgRandom) }

func (k okey) time() int64       { return int64(binary.BigEndian.Uint64(k[:8])) }
func (k okey) isTimeBound() bool { return bytes.Equal(k[8:], make([]byte, 8)) }
func cmpKey(a, b okey) int       { return bytes.Compare(a[:], b[:]) }

type localStore struct {
	db *bolt.DB
}

func openLocal(path string) (*localStore, error) {
	// bbolt locks the file: a store in use is not waited for, since the
	// other user (another process of the app, or a client not logged out)
	// would not let go.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 100 * time.Millisecond})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%s is in use by another client (another process of this app, or a Login without Logout, with the same Dir and UserID)", path)
	}
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bMeta, bMsgs, bKeys, bRanges, bContacts, bPending, bOutbox} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &localStore{db: db}, nil
}

func (l *localStore) close() error { return l.db.Close() }

func getU64(tx *bolt.Tx, k []byte) uint64 {
	v := tx.Bucket(bMeta).Get(k)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func putU64(tx *bolt.Tx, k []byte, n uint64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	return tx.Bucket(bMeta).Put(k, b[:])
}

// peerBucket returns the peer's sub-bucket of root, creating it when create.
func peerBucket(tx *bolt.Tx, root []byte, peer string, create bool) (*bolt.Bucket, error) {
	r := tx.Bucket(root)
	if !create {
		return r.Bucket([]byte(peer)), nil
	}
	return r.CreateBucketIfNotExists([]byte(peer))
}

// putMessage stores m in the conversation with peer. A known MsgKey only
// merges what the newer copy adds (the recalled flag, the timeline Seq);
// prevSeq is then the stored copy's Seq before the merge (0 when it came
// from roaming or was never applied from the timeline).
func putMessage(tx *bolt.Tx, peer string, m *Message) (existed bool, prevSeq uint64, err error) {
	mb, err := peerBucket(tx, bMsgs, peer, true)
	if err != nil {
		return false, 0, err
	}
	kb, err := peerBucket(tx, bKeys, peer, true)
	if err != nil {
		return false, 0, err
	}
	if k := kb.Get([]byte(m.MsgKey)); k != nil {
		var old Message
		if json.Unmarshal(mb.Get(k), &old) != nil {
			return true, 0, nil
		}
		prevSeq = old.Seq
		changed := false
		if m.Recalled() && !old.Recalled() {
			old.MsgFlagBits |= FlagRecalled
			changed = true
		}
		if old.Seq == 0 && m.Seq != 0 {
			old.Seq = m.Seq
			changed = true
		}
		if changed {
			return true, prevSeq, putAt(mb, k, &old)
		}
		return true, prevSeq, nil
	}
	k := m.okey()
	stored := *m
	stored.OnlineOnly = false
	if err := putAt(mb, k[:], &stored); err != nil {
		return false, 0, err
	}
	return false, 0, kb.Put([]byte(m.MsgKey), k[:])
}

func putAt(b *bolt.Bucket, k []byte, m *Message) error {
	v, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return b.Put(k, v)
}

// getMessage finds a stored message by MsgKey.
func getMessage(tx *bolt.Tx, peer, msgKey string) (*Message, bool) {
	kb, _ := peerBucket(tx, bKeys, peer, false)
	mb, _ := peerBucket(tx, bMsgs, peer, false)
	if kb == nil || mb == nil {
		return nil, false
	}
	k := kb.Get([]byte(msgKey))
	if k == nil {
		return nil, false
	}
	var m Message
	if json.Unmarshal(mb.Get(k), &m) != nil {
		return nil, false
	}
	return &m, true
}

// updateMessage rewrites a stored message in place (recall, edit).
func updateMessage(tx *bolt.Tx, peer string, m *Message) error {
	mb, err := peerBucket(tx, bMsgs, peer, true)
	if err != nil {
		return err
	}
	k := m.okey()
	return putAt(mb, k[:], m)
}

// messageAt finds the stored message with order key k.
func messageAt(tx *bolt.Tx, peer string, k okey) (*Message, bool) {
	mb, _ := peerBucket(tx, bMsgs, peer, false)
	if mb == nil {
		return nil, false
	}
	v := mb.Get(k[:])
	if v == nil {
		return nil, false
	}
	var m Message
	if json.Unmarshal(v, &m) != nil {
		return nil, false
	}
	return &m, true
}

// below returns up to max stored messages with keys in [lo, hi), newest
// first.
func below(tx *bolt.Tx, peer string, lo, hi okey, max int) []*Message {
	mb, _ := peerBucket(tx, bMsgs, peer, false)
	if mb == nil || max <= 0 {
		return nil
	}
	var out []*Message
	c := mb.Cursor()
	var v []byte
	k, _ := c.Seek(hi[:])
	if k == nil {
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	for ; k != nil && bytes.Compare(k, lo[:]) >= 0 && len(out) < max; k, v = c.Prev() {
		var m Message
		if json.Unmarshal(v, &m) == nil {
			out = append(out, &m)
		}
	}
	return out
}

// countFrom counts the stored messages of the conversation sent by from
// later than after (Unix seconds), not recalled, up to max.
func countFrom(tx *bolt.Tx, peer, from string, after int64, max int) int {
	n := 0
	for _, m := range below(tx, peer, orderKey(after+1, 0, 0), keyMax, max*4+16) {
		if m.From == from && !m.Recalled() {
			n++
			if n == max {
				break
			}
		}
	}
	return n
}

// ---- complete ranges ----

type span struct{ lo, hi okey }

func ranges(tx *bolt.Tx, peer string) []span {
	rb, _ := peerBucket(tx, bRanges, peer, false)
	if rb == nil {
		return nil
	}
	var out []span
	_ = rb.ForEach(func(k, v []byte) error {
		var s span
		copy(s.lo[:], k)
		copy(s.hi[:], v)
		out = append(out, s)
		return nil
	})
	return out
}

// addRange records that [lo, hi) is complete, merging it with the ranges it
// overlaps or touches.
func addRange(tx *bolt.Tx, peer string, lo, hi okey) error {
	if cmpKey(lo, hi) >= 0 {
		return nil
	}
	rb, err := peerBucket(tx, bRanges, peer, true)
	if err != nil {
		return err
	}
	for _, s := range ranges(tx, peer) {
		if cmpKey(s.lo, hi) <= 0 && cmpKey(s.hi, lo) >= 0 {
			if cmpKey(s.lo, lo) < 0 {
				lo = s.lo
			}
			if cmpKey(s.hi, hi) > 0 {
				hi = s.hi
			}
			if err := rb.Delete(s.lo[:]); err != nil {
				return err
			}
		}
	}
	return rb.Put(lo[:], hi[:])
}

// coverBelow finds the complete range holding the keys just below cursor
// and returns its lower end.
func coverBelow(tx *bolt.Tx, peer string, cursor okey) (okey, bool) {
	for _, s := range ranges(tx, peer) {
		if cmpKey(s.lo, cursor) < 0 && cmpKey(s.hi, cursor) >= 0 {
			return s.lo, true
		}
	}
	return okey{}, false
}

// clearRanges forgets every completeness claim: after a timeline gap that
// could not be filled, messages may be missing anywhere after the gap.
func clearRanges(tx *bolt.Tx) error {
	root := tx.Bucket(bRanges)
	var peers [][]byte
	_ = root.ForEach(func(k, _ []byte) error {
		peers = append(peers, bytes.Clone(k))
		return nil
	})
	for _, p := range peers {
		if err := root.DeleteBucket(p); err != nil {
			return err
		}
	}
	return nil
}

// ---- contacts ----

func getContact(tx *bolt.Tx, peer string) *Contact {
	v := tx.Bucket(bContacts).Get([]byte(peer))
	if v == nil {
		return nil
	}
	var c Contact
	if json.Unmarshal(v, &c) != nil {
		return nil
	}
	return &c
}

func putContact(tx *bolt.Tx, c *Contact) error {
	v, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return tx.Bucket(bContacts).Put([]byte(c.Peer), v)
}

func deleteContact(tx *bolt.Tx, peer string) error {
	return tx.Bucket(bContacts).Delete([]byte(peer))
}

// listContacts returns the conversation list, pinned first, each part
// newest first (as recentcontact/get_list orders it with AssistFlags bit 0).
func listContacts(tx *bolt.Tx) []Contact {
	var out []Contact
	_ = tx.Bucket(bContacts).ForEach(func(_, v []byte) error {
		var c Contact
		if json.Unmarshal(v, &c) == nil {
			out = append(out, c)
		}
		return nil
	})
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].TopFlag != out[j].TopFlag {
			return out[i].TopFlag > out[j].TopFlag
		}
		return out[i].MsgTime > out[j].MsgTime
	})
	return out
}

// totalUnread sums the unread counts of the conversation list.
func totalUnread(tx *bolt.Tx) int {
	n := 0
	for _, c := range listContacts(tx) {
		n += c.Unread
	}
	return n
}

// replaceContacts makes list the whole conversation list, keeping the read
// receipts the server's list does not carry.
func replaceContacts(tx *bolt.Tx, list []Contact) error {
	old := map[string]int64{}
	for _, c := range listContacts(tx) {
		old[c.Peer] = c.PeerReadTime
	}
	if err := tx.DeleteBucket(bContacts); err != nil {
		return err
	}
	if _, err := tx.CreateBucket(bContacts); err != nil {
		return err
	}
	for i := range list {
		c := list[i]
		if c.PeerReadTime == 0 {
			c.PeerReadTime = old[c.Peer]
		}
		if err := putContact(tx, &c); err != nil {
			return err
		}
	}
	return nil
}

// deleteConversation drops the local messages and ranges of peer.
func deleteConversation(tx *bolt.Tx, peer string) error {
	for _, root := range [][]byte{bMsgs, bKeys, bRanges} {
		if tx.Bucket(root).Bucket([]byte(peer)) != nil {
			if err := tx.Bucket(root).DeleteBucket([]byte(peer)); err != nil {
				return err
			}
		}
	}
	return nil
}

// ---- events not yet handled by the app ----

func seqKey(seq uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	return b[:]
}

func putPending(tx *bolt.Tx, seq uint64, ev *appEvent) error {
	v, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	return tx.Bucket(bPending).Put(seqKey(seq), v)
}

// listPending returns the events whose listener has not returned, in Seq
// order.
func listPending(tx *bolt.Tx) []appEvent {
	var out []appEvent
	_ = tx.Bucket(bPending).ForEach(func(k, v []byte) error {
		var ev appEvent
		if json.Unmarshal(v, &ev) == nil {
			ev.Seq = binary.BigEndian.Uint64(k)
			out = append(out, ev)
		}
		return nil
	})
	return out
}

func deletePending(tx *bolt.Tx, seqs []uint64) error {
	b := tx.Bucket(bPending)
	for _, s := range seqs {
		if err := b.Delete(seqKey(s)); err != nil {
			return err
		}
	}
	return nil
}
