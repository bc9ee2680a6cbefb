package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"

	"github.com/cockroachdb/pebble"

	"github.com/duet-im/duet/store/jsonenc"
)

// Conversation is one entry of a user's conversation list (recent
// contacts): the peer, the last message and the unread count.
type Conversation struct {
	Peer       string `json:"Peer"`
	MsgTime    int64  `json:"MsgTime"`
	LastMsgKey string `json:"LastMsgKey,omitempty"`
	Unread     int    `json:"Unread"`
	ReadTime   int64  `json:"ReadTime,omitempty"` // everything at or before it is read
	Expire     int64  `json:"Expire,omitempty"`   // the entry leaves the list with its last message
	// ClearedAt hides history up to it from this user (recentcontact/delete
	// with ClearRamble): history is shared by the two users, so one user's
	// deletion is a marker, not a delete.
	ClearedAt int64 `json:"ClearedAt,omitempty"`
	Deleted   bool  `json:"Deleted,omitempty"` // removed from the list until the next message
	// Top: pinned (recentcontact/top). The pin belongs to the entry: when
	// the entry leaves the list (its last message expires, or
	// recentcontact/delete), the pin goes with it, and the conversation's
	// next message brings it back unpinned.
	Top bool `json:"Top,omitempty"`
}

// Listed reports whether the entry is in the list at now (Unix seconds):
// it has a last message that has not expired and was not deleted.
func (c *Conversation) Listed(now int64) bool {
	return !c.Deleted && c.MsgTime != 0 && (c.Expire == 0 || c.Expire >= now)
}

// MaxUnread is the most messages counted unread per conversation (§9).
const MaxUnread = 100

func conversationPrefix(owner string) []byte {
	return key([]byte("r/"), []byte(owner), []byte{sep})
}

func conversationKey(owner, peer string) []byte {
	return append(conversationPrefix(owner), peer...)
}

// Conversation reads owner's entry for peer as of this transaction (nil if none).
func (tx *Tx) Conversation(owner, peer string) (*Conversation, error) {
	k := conversationKey(owner, peer)
	v, dec, err := tx.getDecoded(k)
	if err != nil || v == nil {
		return nil, err
	}
	if c, ok := dec.(*Conversation); ok {
		cp := *c
		return &cp, nil
	}
	var c Conversation
	if err := json.Unmarshal(v, &c); err != nil {
		return nil, fmt.Errorf("store: conversation: %w", err)
	}
	keep := c
	tx.decoded(k, v, &keep)
	return &c, nil
}

// PutConversation writes owner's entry.
func (tx *Tx) PutConversation(owner string, c *Conversation) error {
	keep := *c
	tx.putDecoded(conversationKey(owner, c.Peer), c.appendJSON(nil), &keep)
	return nil
}

// appendJSON is json.Marshal(c), by hand: it runs twice per message.
// TestConversationJSON holds it to encoding/json's output.
func (c *Conversation) appendJSON(b []byte) []byte {
	b = append(b, `{"Peer":`...)
	b = jsonenc.String(b, c.Peer, true)
	b = append(b, `,"MsgTime":`...)
	b = strconv.AppendInt(b, c.MsgTime, 10)
	if c.LastMsgKey != "" {
		b = append(b, `,"LastMsgKey":`...)
		b = jsonenc.String(b, c.LastMsgKey, true)
	}
	b = append(b, `,"Unread":`...)
	b = strconv.AppendInt(b, int64(c.Unread), 10)
	for _, f := range [...]struct {
		name string
		v    int64
	}{{`,"ReadTime":`, c.ReadTime}, {`,"Expire":`, c.Expire}, {`,"ClearedAt":`, c.ClearedAt}} {
		if f.v != 0 {
			b = append(b, f.name...)
			b = strconv.AppendInt(b, f.v, 10)
		}
	}
	if c.Deleted {
		b = append(b, `,"Deleted":true`...)
	}
	if c.Top {
		b = append(b, `,"Top":true`...)
	}
	return append(b, '}')
}

// Touch records a new message in owner's conversation with peer: it becomes
// the last message (unless noLastMsg) and counts as unread (when unread).
// A new conversation beyond limit evicts owner's oldest.
//
// For an owner of another partition (intents.go) it is deferred there,
// where the owner's own record is read and written.
func (tx *Tx) Touch(owner, peer string, m *Message, unread, noLastMsg bool, limit int, now int64) error {
	if p, ok := tx.foreign(owner); ok {
		tx.deferTouch(p, owner, peer, m, unread, noLastMsg, limit, now)
		return nil
	}
	c, err := tx.Conversation(owner, peer)
	if err != nil {
		return err
	}
	if c == nil {
		if noLastMsg {
			return nil
		}
		c = &Conversation{Peer: peer}
		if err := tx.evictOldest(owner, limit-1, now); err != nil {
			return err
		}
	}
	if !noLastMsg && !c.Listed(now) {
		c.Top = false // the entry had left the list: it comes back unpinned
	}
	if !noLastMsg && m.MsgTime >= c.MsgTime {
		c.MsgTime, c.LastMsgKey, c.Expire, c.Deleted = m.MsgTime, m.MsgKey, m.Expire, false
	}
	if unread && c.Unread < MaxUnread && m.MsgTime > c.ReadTime {
		c.Unread++
	}
	return tx.PutConversation(owner, c)
}

// evictOldest deletes owner's oldest entries until at most keep remain:
// those no longer listed first, then unpinned ones, then pinned ones.
func (tx *Tx) evictOldest(owner string, keep int, now int64) error {
	var all []Conversation
	if err := tx.scan(conversationPrefix(owner), func(_, v []byte) error {
		var c Conversation
		if err := json.Unmarshal(v, &c); err != nil {
			return err
		}
		all = append(all, c)
		return nil
	}); err != nil {
		return err
	}
	if len(all) <= keep {
		return nil
	}
	rank := func(c *Conversation) int {
		switch {
		case !c.Listed(now):
			return 0
		case !c.Top:
			return 1
		}
		return 2
	}
	sort.Slice(all, func(i, j int) bool {
		if ri, rj := rank(&all[i]), rank(&all[j]); ri != rj {
			return ri < rj
		}
		return all[i].MsgTime < all[j].MsgTime
	})
	for _, c := range all[:len(all)-max(keep, 0)] {
		tx.Delete(conversationKey(owner, c.Peer))
	}
	return nil
}

// scan calls fn for every key with prefix as of the group (not this
// transaction's own unapplied writes).
func (tx *Tx) scan(prefix []byte, fn func(k, v []byte) error) error {
	it, err := tx.group.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		if err := fn(bytes.Clone(it.Key()), bytes.Clone(it.Value())); err != nil {
			return err
		}
	}
	return it.Error()
}

// Conversations returns owner's conversation list, newest first, without
// expired or deleted entries.
func (s *Store) Conversations(owner string) ([]Conversation, error) {
	if o := s.part(owner); o != s {
		return o.Conversations(owner)
	}
	p := conversationPrefix(owner)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	now := s.Now().Unix()
	var out []Conversation
	for ok := it.First(); ok; ok = it.Next() {
		var c Conversation
		if err := json.Unmarshal(it.Value(), &c); err != nil {
			return nil, fmt.Errorf("store: conversation: %w", err)
		}
		if !c.Listed(now) {
			continue
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].MsgTime > out[j].MsgTime })
	return out, it.Error()
}

// GetConversation reads owner's entry for peer (nil if none).
func (s *Store) GetConversation(owner, peer string) (*Conversation, error) {
	if o := s.part(owner); o != s {
		return o.GetConversation(owner, peer)
	}
	v, err := get(s.db, conversationKey(owner, peer))
	if err != nil || v == nil {
		return nil, err
	}
	var c Conversation
	if err := json.Unmarshal(v, &c); err != nil {
		return nil, err
	}
	return &c, nil
}
