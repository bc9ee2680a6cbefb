package store

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// CopyChange is what a recall or an edit does to one user's copy of a
// message. It is plain data: a change of the other side's copy is a
// target-side operation (docs/cluster.md §11.2), recorded by MsgKey and run
// in that user's partition against that user's own copy.
type CopyChange struct {
	// Flags are MsgFlagBits to set (FlagRecalled for a recall).
	Flags int
	// Body, when not nil, replaces MsgBody.
	Body json.RawMessage
	// CCD replaces CloudCustomData when SetCCD.
	CCD    string
	SetCCD bool
	// Event is the tail (see Append) the copy's timeline event is
	// rewritten with.
	Event []byte
	// Uncount is a recall's: when the user is the message's recipient and
	// the message reached their timeline, their unread count with the peer
	// stops counting it (if it still did).
	Uncount bool
}

// ChangeCopy applies c to user's copy of message msgKey of user's
// conversation with peer, and to user's timeline event of it. It reads and
// writes user's keys only, and takes the event's Seq from user's own copy
// (SenderSeq when user sent it, ReceiverSeq when user received it), never
// from the other side's: with partitions each side's copy knows only its
// own Seq. The copy keeps its Seqs and every other field. A copy that is
// not there (expired) is nothing to change.
//
// A copy c already changed is not written again: with one partition both
// sides' copies are one record, which the first side's call changed. The
// event and the unread count are user's own, so the caller asks once per
// user.
func (tx *Tx) ChangeCopy(user, peer, msgKey string, c CopyChange) error {
	if p, ok := tx.foreign(user); ok {
		return tx.deferJSON(p, user, opChangeCopy, appendBytes(appendBytes(nil, peer), msgKey), c, nil)
	}
	hk := historyKeyOf(user, peer, msgKey)
	if hk == nil {
		return nil
	}
	old, err := tx.Get(hk)
	if err != nil || old == nil {
		return err
	}
	var m Message
	if err := json.Unmarshal(old, &m); err != nil {
		return fmt.Errorf("store: message %s: %w", msgKey, err)
	}
	if user != m.From && user != m.To {
		return fmt.Errorf("store: message %s is not %s's", msgKey, user)
	}
	m.MsgFlagBits |= c.Flags
	if c.Body != nil {
		m.MsgBody = c.Body
	}
	if c.SetCCD {
		m.CloudCustomData = c.CCD
	}
	b, err := m.appendJSON(make([]byte, 0, 256+len(m.MsgBody)))
	if err != nil {
		return err
	}
	if !bytes.Equal(b, old) {
		tx.Put(hk, b)
	}
	seq := m.SenderSeq
	if user == m.To {
		seq = m.ReceiverSeq
	}
	if seq > 0 {
		if err := tx.RewriteEvent(user, seq, c.Event); err != nil {
			return err
		}
	}
	if c.Uncount && user == m.To && m.ReceiverSeq > 0 {
		return tx.uncount(user, peer, m.MsgTime)
	}
	return nil
}

// uncount takes one message of time msgTime out of owner's unread count
// with peer, when it still counts: it is later than what owner has read.
func (tx *Tx) uncount(owner, peer string, msgTime int64) error {
	cv, err := tx.Conversation(owner, peer)
	if err != nil || cv == nil || cv.Unread <= 0 || msgTime <= cv.ReadTime {
		return err
	}
	cv.Unread--
	return tx.PutConversation(owner, cv)
}
