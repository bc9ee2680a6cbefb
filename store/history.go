package store

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/cockroachdb/pebble"
)

// HistoryQuery selects a page of one conversation's history. Pages walk
// backwards in time (newest first), as Tencent's roaming queries do.
type HistoryQuery struct {
	A, B    string
	MinTime int64 // inclusive, Unix seconds
	MaxTime int64 // inclusive
	// Before, when set, is the MsgKey of the last message of the previous
	// page: the page starts strictly before it.
	Before string
	Max    int
	// MaxBytes, when positive, cuts a page once its messages' JSON passes it
	// (at least one message is always returned).
	MaxBytes int
	// Visible filters messages the reader may not see.
	Visible func(*Message) bool
}

// History returns the page in ascending order and whether nothing older
// (and visible) remains in the range.
func (s *Store) History(q HistoryQuery) (page []*Message, complete bool, err error) {
	if o := s.part(q.A); o != s {
		return o.History(q)
	}
	if q.MaxTime < q.MinTime || q.Max <= 0 {
		return nil, true, nil
	}
	prefix := historyPrefix(q.A, q.B)
	lower := append(bytes.Clone(prefix), u64(uint64(q.MinTime))...)
	upper := append(bytes.Clone(prefix), u64(uint64(q.MaxTime)+1)...)
	if q.Before != "" {
		hk := historyKeyOf(q.A, q.B, q.Before)
		if hk == nil {
			return nil, false, ErrNotFound
		}
		if v, err := get(s.db, hk); err != nil || v == nil {
			if err == nil {
				err = ErrNotFound
			}
			return nil, false, err
		}
		if bytes.Compare(hk, upper) < 0 {
			upper = hk
		}
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, false, err
	}
	defer it.Close()
	size := 0
	complete = true
	for ok := it.Last(); ok; ok = it.Prev() {
		var m Message
		if err := json.Unmarshal(it.Value(), &m); err != nil {
			return nil, false, fmt.Errorf("store: history: %w", err)
		}
		if q.Visible != nil && !q.Visible(&m) {
			continue
		}
		if len(page) >= q.Max || (q.MaxBytes > 0 && len(page) > 0 && size+len(it.Value()) > q.MaxBytes) {
			complete = false
			break
		}
		size += len(it.Value())
		page = append(page, &m)
	}
	if err := it.Error(); err != nil {
		return nil, false, err
	}
	for i, j := 0, len(page)-1; i < j; i, j = i+1, j-1 {
		page[i], page[j] = page[j], page[i]
	}
	return page, complete, nil
}

// CountAfter counts the messages from `from` to `to` later than t, up to max.
func (s *Store) CountAfter(from, to string, t int64, max int) (int, error) {
	if o := s.part(to); o != s {
		return o.CountAfter(from, to, t, max)
	}
	prefix := historyPrefix(from, to)
	it, err := s.db.NewIter(&pebble.IterOptions{
		LowerBound: append(bytes.Clone(prefix), u64(uint64(t)+1)...),
		UpperBound: prefixEnd(prefix),
	})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	n := 0
	for ok := it.Last(); ok && n < max; ok = it.Prev() {
		var m Message
		if json.Unmarshal(it.Value(), &m) == nil && m.From == from && m.MsgFlagBits&FlagRecalled == 0 && !m.SenderOnly {
			n++
		}
	}
	return n, it.Error()
}

// FlagRecalled is MsgFlagBits for a recalled message.
const FlagRecalled = 8

// Message looks a message up by MsgKey as of this transaction.
func (tx *Tx) Message(a, b, msgKey string) (*Message, error) {
	hk := historyKeyOf(a, b, msgKey)
	if hk == nil {
		return nil, ErrNotFound
	}
	v, err := tx.Get(hk)
	if err != nil || v == nil {
		if err == nil {
			err = ErrNotFound
		}
		return nil, err
	}
	var m Message
	if err := json.Unmarshal(v, &m); err != nil {
		return nil, fmt.Errorf("store: message %s: %w", msgKey, err)
	}
	return &m, nil
}

// UpdateMessage rewrites a stored message in place (recall, edit).
func (tx *Tx) UpdateMessage(m *Message) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	tx.Put(historyKey(m.From, m.To, m.MsgTime, m.MsgSeq, m.MsgRandom), b)
	return nil
}

// RewriteEvent replaces the stored data of user's event seq (keeping the
// Seq, so timelines stay gap-free) — a recalled message's copy loses its
// content. The tail is the event JSON without its opening brace.
func (tx *Tx) RewriteEvent(user string, seq uint64, tail []byte) error {
	k := timelineKey(user, seq)
	old, err := tx.Get(k)
	if err != nil || old == nil {
		return err // expired: nothing to rewrite
	}
	data := append([]byte(fmt.Sprintf(`{"Seq":%d,`, seq)), tail...)
	tx.Put(k, data)
	// Whoever keeps copies of recent events (delivery) must replace theirs.
	tx.app = append(tx.app, Appended{User: user, Seq: seq, Data: data, Rewritten: true})
	return nil
}
