package command

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/duet-im/duet/store"
)

// Recall and edit of stored messages: openim/msgwithdraw (a user's own
// message, within the recall window), openim/admin_msgwithdraw (any message,
// no time limit; reference §5.5) and openim/modify_c2c_msg (§5.8). The
// message's copies in both timelines are rewritten in place (same Seq, so
// timelines stay gap-free) and both users get a withdraw or modify event.

func (s *Service) registerWithdraw() {
	handle(s, "openim/msgwithdraw", CodeJSON, nil, s.msgWithdraw)
	handle(s, "openim/admin_msgwithdraw", CodeJSON, nil, s.msgWithdraw)
	handle(s, "openim/modify_c2c_msg", CodeJSON, adminOnly(CodeOpenIMNeedsAdmin, "openim/modify_c2c_msg needs an App admin"), s.modifyMsg)
}

// OnWithdraw registers f to run after a message was recalled (the
// after-withdraw callback), on the node that ran the command. Start-up only.
func (s *Service) OnWithdraw(f func(m store.Message)) { s.withdrawn = append(s.withdrawn, f) }

// Recalls calls f with the recipient and MsgKey of each recall that evs,
// a commit's events, bring to the recipient: the withdraw events appended
// to recipients' timelines. The offline pusher retracts from it, on the
// node that commits the recipient's data, where the recipient's pushes are
// queued (docs/cluster.md §11.2), rather than on the node that ran the
// command. It runs on the store's writer: it decodes only withdraw events.
func Recalls(evs []store.Appended, f func(user, msgKey string)) {
	for _, a := range evs {
		// The stored event starts {"Seq":N,"Event":"withdraw".
		if a.Rewritten || !bytes.Contains(a.Data[:min(len(a.Data), 64)], []byte(`"Event":"withdraw"`)) {
			continue
		}
		var ev withdrawEvent
		if json.Unmarshal(a.Data, &ev) == nil && ev.Event == "withdraw" && ev.To == a.User {
			f(a.User, ev.MsgKey)
		}
	}
}

type withdrawEvent struct {
	Event      string `json:"Event"`
	From       string `json:"From_Account"`
	To         string `json:"To_Account"`
	MsgKey     string `json:"MsgKey"`
	MsgTime    int64  `json:"MsgTimeStamp"`
	Withdrawer string `json:"Operator_Account,omitempty"`
}

type modifyEvent struct {
	Event           string          `json:"Event"`
	From            string          `json:"From_Account"`
	To              string          `json:"To_Account"`
	MsgKey          string          `json:"MsgKey"`
	MsgBody         json.RawMessage `json:"MsgBody"`
	CloudCustomData string          `json:"CloudCustomData"`
}

var errNoMessage = errors.New("no such message")

// txMessage reads a message in tx; errNoMessage when there is none.
func txMessage(tx *store.Tx, a, b, msgKey string) (*store.Message, error) {
	m, err := tx.Message(a, b, msgKey)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errNoMessage
	}
	return m, err
}

// withdrawRequest names a message: From_Account's conversation with
// To_Account (Peer_Account), MsgKey.
type withdrawRequest struct {
	me, peer, msgKey string
}

func (r *withdrawRequest) decode(s *Service, c *Caller, f fields) (err error) {
	// A user names the peer; an admin (admin_msgwithdraw) names both sides.
	if r.me, err = s.account(c, f, []string{"From_Account"}, CodeFromAccount, CodeOpenIMNeedsAdmin, CodeFromAccount); err != nil {
		return err
	}
	if r.peer, err = s.existing(f, []string{"To_Account", "Peer_Account"}, CodeToAccount); err != nil {
		return err
	}
	msgKey, present, ok := f.str("MsgKey")
	if !present || !ok || msgKey == "" || len(msgKey) > 50 {
		return Errorf(CodeMsgKey, "MsgKey is missing or is not a valid message key")
	}
	r.msgKey = msgKey
	return nil
}

func (s *Service) msgWithdraw(ctx context.Context, c *Caller, r *withdrawRequest) (any, error) {
	me, peer, msgKey := r.me, r.peer, r.msgKey
	// Only an admin recalls other people's messages or old ones.
	own := !c.Admin
	now := s.store.Now()
	var recalled store.Message
	err := s.store.UpdateFor(me, func(tx *store.Tx) error {
		m, err := txMessage(tx, me, peer, msgKey)
		if err != nil {
			return err
		}
		switch {
		case own && m.From != me:
			return Errorf(CodeMsgNotFound, "message %s is not one you sent; you can only recall your own messages", msgKey)
		case m.MsgFlagBits&store.FlagRecalled != 0:
			return Errorf(CodeMsgRecalled, "message %s was already recalled", msgKey)
		case own && now.Sub(time.Unix(m.MsgTime, 0)) > s.cfg.RecallWindow:
			return Errorf(CodeRecallTooLate, "message %s is older than the recall window (%v)", msgKey, s.cfg.RecallWindow)
		}
		// The decisions above are H's, from H's copy; each side's copy,
		// event and unread count change where that side's data is
		// (changeCopies).
		m.MsgFlagBits |= store.FlagRecalled
		m.MsgBody = json.RawMessage(`[]`)
		if err := s.changeCopies(tx, m, store.CopyChange{Flags: store.FlagRecalled, Body: m.MsgBody, Uncount: true}); err != nil {
			return err
		}
		ev, err := tail(withdrawEvent{Event: "withdraw", From: m.From, To: m.To, MsgKey: m.MsgKey, MsgTime: m.MsgTime, Withdrawer: c.UserID})
		if err != nil {
			return err
		}
		if err := s.appendToBoth(tx, m, ev, now); err != nil {
			return err
		}
		recalled = *m
		return nil
	})
	if errors.Is(err, errNoMessage) {
		return nil, Errorf(CodeMsgNotFound, "message %s not found in the conversation of %s and %s", msgKey, me, peer)
	}
	if err != nil {
		return nil, err
	}
	for _, f := range s.withdrawn {
		f(recalled)
	}
	return struct{}{}, nil
}

// changeCopies applies c to both sides' copies of m (H's, the
// transaction's home's, and the other side's) and to their timeline events,
// which it rewrites with m, the message as changed. m is H's copy after the
// change; each side's change is a target-side operation by MsgKey
// (store.Tx.ChangeCopy), which finds that side's Seq in that side's own
// copy: H's copy need not know the other side's Seq. Recipient first, as
// the order of the rewritten events has always been.
func (s *Service) changeCopies(tx *store.Tx, m *store.Message, c store.CopyChange) error {
	ev, err := tail(s.newMsgEvent(m))
	if err != nil {
		return err
	}
	c.Event = ev
	if err := tx.ChangeCopy(m.To, m.From, m.MsgKey, c); err != nil {
		return err
	}
	if m.From == m.To {
		return nil // a note to self: one copy, one event
	}
	return tx.ChangeCopy(m.From, m.To, m.MsgKey, c)
}

// appendToBoth adds an event about m to the timelines that hold m.
func (s *Service) appendToBoth(tx *store.Tx, m *store.Message, ev []byte, now time.Time) error {
	expire := now.Add(s.cfg.MaxLifeTime)
	if !m.SenderOnly {
		if _, err := tx.AppendUntil(m.To, ev, expire); err != nil {
			return err
		}
	}
	if !m.ReceiverOnly && m.From != m.To {
		if _, err := tx.AppendUntil(m.From, ev, expire); err != nil {
			return err
		}
	}
	return nil
}

// modifyRequest is modify_c2c_msg's: the message and what replaces its
// MsgBody, CloudCustomData or both.
type modifyRequest struct {
	from, to, msgKey string
	body             json.RawMessage
	hasBody          bool
	ccd              string
	hasCCD           bool
}

func (r *modifyRequest) decode(s *Service, c *Caller, f fields) (err error) {
	if r.from, err = s.existing(f, []string{"From_Account"}, CodeFromAccount); err != nil {
		return err
	}
	if r.to, err = s.existing(f, []string{"To_Account"}, CodeToAccount); err != nil {
		return err
	}
	var present, ok bool
	r.msgKey, present, ok = f.str("MsgKey")
	if !present || !ok || r.msgKey == "" {
		return Errorf(CodeMsgKey, "MsgKey is missing or is not a String")
	}
	r.body, r.hasBody = f.raw("MsgBody"), f.has("MsgBody")
	if r.hasBody {
		if _, e := parseMsgBody(r.body); e != nil {
			return e
		}
	}
	if r.ccd, r.hasCCD, ok = f.str("CloudCustomData"); !ok {
		return Errorf(CodeJSON, "CloudCustomData must be a String")
	}
	if !r.hasBody && !r.hasCCD {
		return Errorf(CodeJSON, "give MsgBody, CloudCustomData or both")
	}
	if n := len(r.body) + len(r.ccd); n > s.cfg.MaxMsgBytes {
		return Errorf(CodeTooLong, "message is %d bytes; the limit is %d", n, s.cfg.MaxMsgBytes)
	}
	return nil
}

func (s *Service) modifyMsg(ctx context.Context, c *Caller, r *modifyRequest) (any, error) {
	from, to, msgKey, newBody, hasBody, ccd, hasCCD := r.from, r.to, r.msgKey, r.body, r.hasBody, r.ccd, r.hasCCD
	now := s.store.Now()
	err := s.store.UpdateFor(from, func(tx *store.Tx) error {
		m, err := txMessage(tx, from, to, msgKey)
		if err != nil {
			return err
		}
		if m.MsgFlagBits&store.FlagRecalled != 0 {
			return Errorf(CodeMsgRecalled, "message %s was recalled", msgKey)
		}
		change := store.CopyChange{CCD: ccd, SetCCD: hasCCD}
		if hasBody {
			m.MsgBody, change.Body = newBody, newBody
		}
		if hasCCD {
			m.CloudCustomData = ccd
		}
		if err := s.changeCopies(tx, m, change); err != nil {
			return err
		}
		ev, err := tail(modifyEvent{Event: "modify", From: m.From, To: m.To, MsgKey: m.MsgKey, MsgBody: m.MsgBody, CloudCustomData: m.CloudCustomData})
		if err != nil {
			return err
		}
		return s.appendToBoth(tx, m, ev, now)
	})
	if errors.Is(err, errNoMessage) {
		return nil, Errorf(CodeMsgNotFound, "message %s not found in the conversation of %s and %s", msgKey, from, to)
	}
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
