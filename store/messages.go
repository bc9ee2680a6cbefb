package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/duet-im/duet/store/jsonenc"
)

// Message is one C2C message as kept in a conversation's history.
type Message struct {
	From            string          `json:"From_Account"`
	To              string          `json:"To_Account"`
	MsgSeq          uint32          `json:"MsgSeq"`
	MsgRandom       uint32          `json:"MsgRandom"`
	MsgTime         int64           `json:"MsgTimeStamp"`
	MsgKey          string          `json:"MsgKey"`
	MsgBody         json.RawMessage `json:"MsgBody"`
	CloudCustomData string          `json:"CloudCustomData,omitempty"`
	MsgFlagBits     int             `json:"MsgFlagBits,omitempty"`
	System          bool            `json:"System,omitempty"` // an admin's message without From_Account
	// Expire is the Unix second after which the message leaves history.
	Expire int64 `json:"Expire,omitempty"`
	// SenderOnly: the recipient never sees it (blacklist "show as sent").
	// ReceiverOnly: kept out of the sender's roaming (SyncOtherMachine 2).
	SenderOnly   bool `json:"SenderOnly,omitempty"`
	ReceiverOnly bool `json:"ReceiverOnly,omitempty"`
	// SenderSeq and ReceiverSeq are the message's Seqs in each timeline (0
	// when it is not in that timeline).
	SenderSeq   uint64 `json:"SenderSeq,omitempty"`
	ReceiverSeq uint64 `json:"ReceiverSeq,omitempty"`
}

// MarshalJSON encodes m by hand (jsonenc): it is written with every
// message. TestMessageJSON holds it to encoding/json's reading.
func (m Message) MarshalJSON() ([]byte, error) {
	return m.appendJSON(make([]byte, 0, 256+len(m.MsgBody)))
}

func (m *Message) appendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"From_Account":`...)
	b = jsonenc.String(b, m.From, true)
	b = append(b, `,"To_Account":`...)
	b = jsonenc.String(b, m.To, true)
	b = append(b, `,"MsgSeq":`...)
	b = strconv.AppendUint(b, uint64(m.MsgSeq), 10)
	b = append(b, `,"MsgRandom":`...)
	b = strconv.AppendUint(b, uint64(m.MsgRandom), 10)
	b = append(b, `,"MsgTimeStamp":`...)
	b = strconv.AppendInt(b, m.MsgTime, 10)
	b = append(b, `,"MsgKey":`...)
	b = jsonenc.String(b, m.MsgKey, true)
	b = append(b, `,"MsgBody":`...)
	b, err := jsonenc.Raw(b, m.MsgBody)
	if err != nil {
		return nil, fmt.Errorf("store: message body: %w", err)
	}
	if m.CloudCustomData != "" {
		b = append(b, `,"CloudCustomData":`...)
		b = jsonenc.String(b, m.CloudCustomData, true)
	}
	if m.MsgFlagBits != 0 {
		b = append(b, `,"MsgFlagBits":`...)
		b = strconv.AppendInt(b, int64(m.MsgFlagBits), 10)
	}
	if m.System {
		b = append(b, `,"System":true`...)
	}
	if m.Expire != 0 {
		b = append(b, `,"Expire":`...)
		b = strconv.AppendInt(b, m.Expire, 10)
	}
	if m.SenderOnly {
		b = append(b, `,"SenderOnly":true`...)
	}
	if m.ReceiverOnly {
		b = append(b, `,"ReceiverOnly":true`...)
	}
	if m.SenderSeq != 0 {
		b = append(b, `,"SenderSeq":`...)
		b = strconv.AppendUint(b, m.SenderSeq, 10)
	}
	if m.ReceiverSeq != 0 {
		b = append(b, `,"ReceiverSeq":`...)
		b = strconv.AppendUint(b, m.ReceiverSeq, 10)
	}
	return append(b, '}'), nil
}

// PutMessage stores m in its conversation's history and the time index.
// m.MsgKey must be the one its MsgSeq, MsgRandom and MsgTime make.
//
// With partitions (intents.go) each side's partition keeps its own copy
// of the history record: this one's is written here, the other side's is
// deferred to its partition, which fills in the Seq its own timeline gave
// (m.ReceiverSeq is a placeholder here when the recipient is foreign).
func (tx *Tx) PutMessage(m *Message) error {
	hk := historyKey(m.From, m.To, m.MsgTime, m.MsgSeq, m.MsgRandom)
	if !bytes.Equal(historyKeyOf(m.From, m.To, m.MsgKey), hk) {
		return fmt.Errorf("store: message %q: MsgKey does not match its MsgSeq, MsgRandom and MsgTime", m.MsgKey)
	}
	pf, fromForeign := tx.foreign(m.From)
	pt, toForeign := tx.foreign(m.To)
	if !fromForeign || !toForeign {
		if err := tx.putCopies(m, hk); err != nil {
			return err
		}
	}
	if toForeign {
		if err := tx.deferCopy(pt, m.To, m); err != nil {
			return err
		}
	}
	if fromForeign && (!toForeign || pf != pt) {
		return tx.deferCopy(pf, m.From, m)
	}
	return nil
}

// putCopies writes this partition's copy of m's history record: the one
// both users share on one partition, or the copy of whichever of them is
// this partition's. The time index and the media references (the
// archives' and the media cleaner's) go with the sender's copy only, so
// that each exists once in the cluster. Seqs this partition does not know
// (placeholders, intents.go) are stored as 0. hk is m's history key.
func (tx *Tx) putCopies(m *Message, hk []byte) error {
	_, fromForeign := tx.foreign(m.From)
	_, toForeign := tx.foreign(m.To)
	mine := *m
	if isPlaceholder(mine.SenderSeq) {
		mine.SenderSeq = 0
	}
	if isPlaceholder(mine.ReceiverSeq) {
		mine.ReceiverSeq = 0
	}
	b, err := mine.appendJSON(make([]byte, 0, 256+len(m.MsgBody)))
	if err != nil {
		return err
	}
	tx.Put(hk, b)
	keys := [][]byte{hk}
	if !fromForeign {
		tk := timeIndexKey(m.From, m.To, m.MsgTime, m.MsgSeq, m.MsgRandom)
		tx.Put(tk, hk)
		refs, err := tx.onMessage(m, hk) // media references, late archive marks (media.go)
		if err != nil {
			return err
		}
		keys = append(append(keys, tk), refs...)
	}
	if m.Expire > 0 {
		// The message's timeline copies (and media references) go with it:
		// one expiry entry for all.
		if mine.ReceiverSeq > 0 && !toForeign {
			keys = append(keys, timelineKey(m.To, mine.ReceiverSeq))
		}
		if mine.SenderSeq > 0 && !fromForeign && (m.From != m.To || mine.SenderSeq != mine.ReceiverSeq) {
			keys = append(keys, timelineKey(m.From, mine.SenderSeq))
		}
		tx.ExpireAt(time.Unix(m.Expire, 0), keys...)
	}
	return nil
}

// deferCopy records user's copy of m for user's partition p.
func (tx *Tx) deferCopy(p int, user string, m *Message) error {
	b, err := m.appendJSON(make([]byte, 0, 256+len(m.MsgBody)))
	if err != nil {
		return err
	}
	tx.intents = append(tx.intents, intent{part: p, user: user, op: opPutCopy, args: b})
	return nil
}

// decodeMessage reads a Message's JSON (appendJSON's).
func decodeMessage(b []byte) (*Message, error) {
	var m Message
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("store: message record: %w", err)
	}
	return &m, nil
}

// GetMessage finds a message of the conversation between a and b by MsgKey.
func (s *Store) GetMessage(a, b, msgKey string) (*Message, error) {
	if o := s.part(a); o != s {
		return o.GetMessage(a, b, msgKey)
	}
	hk := historyKeyOf(a, b, msgKey)
	if hk == nil {
		return nil, ErrNotFound
	}
	v, err := get(s.db, hk)
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, ErrNotFound
	}
	var m Message
	if err := json.Unmarshal(v, &m); err != nil {
		return nil, fmt.Errorf("store: message %s: %w", msgKey, err)
	}
	return &m, nil
}

// DedupWindow is how long a resend is recognised (PROTOCOL §3: 24 hours).
const DedupWindow = 24 * time.Hour

// Sent is what a sender is told about a stored message; a resend gets the
// original's. It is the value of a resend record.
type Sent struct {
	MsgKey  string `json:"MsgKey"`
	MsgTime int64  `json:"MsgTime"`
	Seq     uint64 `json:"Seq,omitempty"`
	At      int64  `json:"At"` // when it was first stored, Unix seconds
	// Body is the BodyHash of a send without MsgSeq (0 in records written
	// before it was kept, and in records of sends with MsgSeq).
	Body uint64 `json:"Body,omitempty"`
}

// appendJSON is json.Marshal(r), by hand: a record is written with every
// send. TestSentJSON holds it to encoding/json's reading.
func (r *Sent) appendJSON(b []byte) []byte {
	b = append(b, `{"MsgKey":`...)
	b = jsonenc.String(b, r.MsgKey, true)
	b = append(b, `,"MsgTime":`...)
	b = strconv.AppendInt(b, r.MsgTime, 10)
	if r.Seq != 0 {
		b = append(b, `,"Seq":`...)
		b = strconv.AppendUint(b, r.Seq, 10)
	}
	b = append(b, `,"At":`...)
	b = strconv.AppendInt(b, r.At, 10)
	if r.Body != 0 {
		b = append(b, `,"Body":`...)
		b = strconv.AppendUint(b, r.Body, 10)
	}
	return append(b, '}')
}

// SendID is what the resend rule (PROTOCOL §3) compares: a resend is a send
// from the same sender to the same recipient with the same MsgRandom within
// DedupWindow, and with the same MsgSeq when the request gives one; without
// MsgSeq, with the same MsgBody or in the same second.
type SendID struct {
	From, To  string
	Random    uint32
	MsgSeq    uint32 // the request's; ignored without HasMsgSeq
	HasMsgSeq bool   // the request gave MsgSeq (0 included)
	Body      uint64 // BodyHash of the request's MsgBody; used without MsgSeq
}

// BodyHash is the hash a resend record keeps of a MsgBody, so that telling
// a resend from a new message that reuses its MsgRandom needs no copy of
// the body. It is never 0 (0 is "not known").
func BodyHash(body []byte) uint64 { return max(xxhash.Sum64(body), 1) }

// The resend records of one (from, to, MsgRandom):
//
//   - a send with MsgSeq has its own record, at dedupKey with that MsgSeq
//     (a 0 MsgSeq given is marked, so that it is not taken for an absent
//     one). Any send with that MsgSeq is a resend of it.
//   - sends without MsgSeq share the record at dedupKey with MsgSeq 0,
//     which holds the latest of them: a send in its second, or with its
//     body, is a resend of it. When another message reusing the MsgRandom
//     replaces it there, it moves to the key with its body hash appended,
//     where a later send with the same body still finds it. So the shared
//     record is always the youngest, and an absent or expired one means
//     there is nothing to find under its body keys either: the common first
//     send costs one filter lookup (dedup.go), as before.

func (id *SendID) key() []byte {
	if !id.HasMsgSeq {
		return dedupKey(id.From, id.To, id.Random, 0)
	}
	k := dedupKey(id.From, id.To, id.Random, id.MsgSeq)
	if id.MsgSeq == 0 {
		k = append(k, 's')
	}
	return k
}

func bodyKey(shared []byte, body uint64) []byte {
	return binary.BigEndian.AppendUint64(bytes.Clone(shared), body)
}

// sentRecord reads the resend record at k, when the filter says it may
// exist; nil when absent.
func (s *Store) sentRecord(get func([]byte) ([]byte, error), k []byte, now time.Time) (*Sent, error) {
	if s.dedup.absent(k, now) {
		return nil, nil // see dedup.go
	}
	v, err := get(k)
	if err != nil || v == nil {
		return nil, err
	}
	var r Sent
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("store: dedup record: %w", err)
	}
	return &r, nil
}

func live(r *Sent, now time.Time) bool {
	return r != nil && now.Sub(time.Unix(r.At, 0)) <= DedupWindow
}

// resent applies the resend rule with the reader get; k is id.key(). It
// returns the record id resends (nil: a new message) and the record at k.
func (s *Store) resent(get func([]byte) ([]byte, error), id SendID, k []byte, now time.Time) (match, atKey *Sent, err error) {
	r, err := s.sentRecord(get, k, now)
	if err != nil || !live(r, now) {
		return nil, r, err
	}
	if id.HasMsgSeq || r.At == now.Unix() || r.Body == id.Body {
		return r, r, nil
	}
	// An older message with this body may have been replaced here.
	if b, err := s.sentRecord(get, bodyKey(k, id.Body), now); err != nil || live(b, now) && b.Body == id.Body {
		return b, r, err
	}
	return nil, r, nil
}

// Resent returns the record of the send that id resends (PROTOCOL §3), or
// nil when id is a new message.
func (tx *Tx) Resent(id SendID) (*Sent, error) {
	k := id.key()
	r, atKey, err := tx.s.resent(tx.Get, id, k, tx.Now())
	if r == nil && err == nil {
		tx.newSend = newSend{key: k, prev: atKey}
	}
	return r, err
}

// Resent is Tx.Resent outside a transaction: a look-up that a send made
// since may make out of date.
func (s *Store) Resent(id SendID) (*Sent, error) {
	if o := s.part(id.From); o != s {
		return o.Resent(id)
	}
	r, _, err := s.resent(func(k []byte) ([]byte, error) { return get(s.db, k) }, id, id.key(), s.Now())
	return r, err
}

// newSend is what Tx.Resent found out about a new message's resend key,
// so that RememberSent need not look again.
type newSend struct {
	key  []byte
	prev *Sent // the record at key, nil when none
}

// RememberSent records a new message (one Resent found no record for), so
// that a resend within DedupWindow is recognised.
func (tx *Tx) RememberSent(id SendID, r Sent) error {
	now := tx.Now()
	r.At, r.Body = now.Unix(), 0
	if !id.HasMsgSeq {
		r.Body = id.Body
	}
	k := id.key()
	var prev *Sent
	if ns := tx.newSend; ns.key != nil && bytes.Equal(ns.key, k) {
		// What this transaction's Resent just read.
		prev = ns.prev
		tx.cancelExpiry(k, prev)
	} else {
		var err error
		if prev, err = tx.replaceSent(k, now); err != nil {
			return err
		}
	}
	tx.newSend = newSend{}
	if !id.HasMsgSeq && live(prev, now) && prev.Body != 0 && prev.Body != r.Body {
		// Another message reusing the MsgRandom: the one it replaces stays
		// findable by its body until its own window ends.
		bk := bodyKey(k, prev.Body)
		if _, err := tx.replaceSent(bk, now); err != nil {
			return err
		}
		tx.putSent(bk, prev, time.Unix(prev.At, 0), now)
	}
	tx.putSent(k, &r, now, now)
	return nil
}

// replaceSent returns the record at k that is about to be overwritten, and
// cancels its expiry, which would otherwise delete the new record early.
func (tx *Tx) replaceSent(k []byte, now time.Time) (*Sent, error) {
	prev, err := tx.s.sentRecord(tx.Get, k, now)
	tx.cancelExpiry(k, prev)
	return prev, err
}

// cancelExpiry deletes the expiry entry of the record r at k (none when r
// is nil).
func (tx *Tx) cancelExpiry(k []byte, r *Sent) {
	if r != nil {
		tx.Delete(expiryKey(time.Unix(r.At, 0).Add(DedupWindow), k))
	}
}

// putSent writes the record r, stored at `at`, at k.
func (tx *Tx) putSent(k []byte, r *Sent, at, now time.Time) {
	tx.s.dedup.add(k, now)
	tx.Put(k, r.appendJSON(make([]byte, 0, 96)))
	tx.ExpireAt(at.Add(DedupWindow), k)
}
