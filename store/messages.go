package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

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
func (tx *Tx) PutMessage(m *Message) error {
	b, err := m.appendJSON(make([]byte, 0, 256+len(m.MsgBody)))
	if err != nil {
		return err
	}
	hk := historyKey(m.From, m.To, m.MsgTime, m.MsgSeq, m.MsgRandom)
	if !bytes.Equal(historyKeyOf(m.From, m.To, m.MsgKey), hk) {
		return fmt.Errorf("store: message %q: MsgKey does not match its MsgSeq, MsgRandom and MsgTime", m.MsgKey)
	}
	tk := timeIndexKey(m.From, m.To, m.MsgTime, m.MsgSeq, m.MsgRandom)
	tx.Put(hk, b)
	tx.Put(tk, hk)
	refs, err := tx.onMessage(m, hk) // media references, late archive marks (media.go)
	if err != nil {
		return err
	}
	if m.Expire > 0 {
		// The message's timeline copies (and media references) go with it:
		// one expiry entry for all.
		keys := append([][]byte{hk, tk}, refs...)
		if m.ReceiverSeq > 0 {
			keys = append(keys, timelineKey(m.To, m.ReceiverSeq))
		}
		if m.SenderSeq > 0 && (m.From != m.To || m.SenderSeq != m.ReceiverSeq) {
			keys = append(keys, timelineKey(m.From, m.SenderSeq))
		}
		tx.ExpireAt(time.Unix(m.Expire, 0), keys...)
	}
	return nil
}

// GetMessage finds a message of the conversation between a and b by MsgKey.
func (s *Store) GetMessage(a, b, msgKey string) (*Message, error) {
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
// original's.
type Sent struct {
	MsgKey  string `json:"MsgKey"`
	MsgTime int64  `json:"MsgTime"`
	Seq     uint64 `json:"Seq,omitempty"`
	At      int64  `json:"At"` // when it was first stored, Unix seconds
}

// Resent returns the record of an earlier send from `from` to `to` with the
// same MsgRandom and MsgSeq within DedupWindow, or nil.
func (tx *Tx) Resent(from, to string, random, msgSeq uint32) (*Sent, error) {
	k := dedupKey(from, to, random, msgSeq)
	if tx.s.dedup.absent(k, tx.Now()) {
		return nil, nil // see dedup.go
	}
	v, err := tx.Get(k)
	if err != nil || v == nil {
		return nil, err
	}
	var r Sent
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("store: dedup record: %w", err)
	}
	if tx.Now().Sub(time.Unix(r.At, 0)) > DedupWindow {
		return nil, nil
	}
	return &r, nil
}

// RememberSent records a send so that a resend within DedupWindow is
// recognised.
func (tx *Tx) RememberSent(from, to string, random, msgSeq uint32, r Sent) error {
	r.At = tx.Now().Unix()
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	k := dedupKey(from, to, random, msgSeq)
	tx.s.dedup.add(k, tx.Now())
	tx.Put(k, b)
	tx.ExpireAt(tx.Now().Add(DedupWindow), k)
	return nil
}
