package sdk

import (
	"context"
	"errors"

	bolt "go.etcd.io/bbolt"
)

// SendMessage sends a C2C message with body to user `to` and returns its
// MsgKey. See Send.
func (c *Client) SendMessage(ctx context.Context, to string, body ...Elem) (string, error) {
	m, err := c.Send(ctx, Outgoing{To: to, Body: body})
	if err != nil {
		return "", err
	}
	return m.MsgKey, nil
}

// SendText sends a text message and returns its MsgKey.
func (c *Client) SendText(ctx context.Context, to, text string) (string, error) {
	return c.SendMessage(ctx, to, Text(text))
}

// Send sends a message and returns it as stored. It returns once the
// server stored it durably. The send is written to the outbox first (see
// Outgoing.ID and SendStatus): a timeout or a lost connection makes it send
// the same request again (same MsgRandom and MsgSeq, which the server
// recognises for 24 h) until ctx ends, and after ctx ended (or a Logout or
// crash) the outbox keeps resending it, reporting the outcome to
// OnSendStatus. A refusal is an *Error.
func (c *Client) Send(ctx context.Context, o Outgoing) (*Message, error) {
	if o.OnlineOnly {
		return c.sendOnline(ctx, o)
	}
	e, err := c.enqueue(o)
	if err != nil {
		return nil, err
	}
	m, err := c.sendEntry(ctx, e)
	var refused *Error
	if err != nil && !errors.As(err, &refused) {
		c.kickOutbox()
	}
	return m, err
}

// sendOnline sends an online-only message (MsgLifeTime 0): nothing is
// stored, so it has no place in the outbox.
func (c *Client) sendOnline(ctx context.Context, o Outgoing) (*Message, error) {
	rnd, seq := randU32(), c.nextMsgSeq(0)
	body := map[string]any{"To_Account": o.To, "MsgRandom": rnd, "MsgSeq": seq, "MsgBody": o.Body, "MsgLifeTime": 0}
	if o.CloudCustomData != "" {
		body["CloudCustomData"] = o.CloudCustomData
	}
	if len(o.OfflinePushInfo) > 0 {
		body["OfflinePushInfo"] = o.OfflinePushInfo
	}
	var r struct {
		MsgKey  string
		MsgTime int64
	}
	if err := c.call(ctx, "openim/sendmsg", body, &r, callOpts{retry: true}); err != nil {
		return nil, err
	}
	return &Message{
		From: c.me, To: o.To, MsgKey: r.MsgKey, MsgSeq: seq, MsgRandom: rnd, MsgTimeStamp: r.MsgTime,
		MsgBody: o.Body, CloudCustomData: o.CloudCustomData, OnlineOnly: true,
	}, nil
}

// nextMsgSeq numbers a send. History orders the messages of one second by
// MsgSeq, so a send is numbered after this device's previous one and after
// the conversation's last message (floor), so that a quick reply sorts
// after what it answers. Floors that look random (clients that leave
// MsgSeq to the server get a random one) are ignored.
func (c *Client) nextMsgSeq(floor uint32) uint32 {
	if floor > 1<<30 {
		floor = 0
	}
	for {
		cur := c.msgSeq.Load()
		n := max(cur, floor) + 1
		if c.msgSeq.CompareAndSwap(cur, n) {
			return n
		}
	}
}

// GetRecentContacts returns the conversation list from the local store:
// pinned conversations first, each part newest first. It is reloaded from the server at each (re)connect and
// kept current by the timeline.
func (c *Client) GetRecentContacts(ctx context.Context) ([]Contact, error) {
	var out []Contact
	err := c.view(func(tx *bolt.Tx) error {
		out = listContacts(tx)
		return nil
	})
	return out, err
}

// MarkRead marks the conversation with peer read (openim/set_msg_read): my
// other devices reset their unread count and the peer gets a read receipt.
func (c *Client) MarkRead(ctx context.Context, peer string) error {
	if err := c.call(ctx, "openim/set_msg_read", map[string]any{"Peer_Account": peer}, nil, callOpts{retry: true}); err != nil {
		return err
	}
	return c.inProc(ctx, func(p *proc) { p.markRead(peer, 0) })
}

// Withdraw recalls my message msgKey in the conversation with peer
// (openim/msgwithdraw). Codes: 20016 the recall window has passed, 20022
// no such message, 20023 already recalled.
func (c *Client) Withdraw(ctx context.Context, peer, msgKey string) error {
	err := c.call(ctx, "openim/msgwithdraw", map[string]any{"To_Account": peer, "MsgKey": msgKey}, nil,
		callOpts{retry: true, okOnRetry: 20023})
	if err != nil {
		return err
	}
	return c.inProc(ctx, func(p *proc) { p.recall(peer, msgKey) })
}

// Typing tells peer that I am typing (ephemeral: not retried, not stored).
func (c *Client) Typing(ctx context.Context, peer string) error {
	return c.call(ctx, "openim/typing", map[string]any{"To_Account": peer}, nil, callOpts{})
}

// DeleteRecentContact removes the conversation with peer from the list
// (recentcontact/delete); clearHistory also deletes its roaming messages
// on the server and here.
func (c *Client) DeleteRecentContact(ctx context.Context, peer string, clearHistory bool) error {
	body := map[string]any{"Type": 1, "To_Account": peer}
	if clearHistory {
		body["ClearRamble"] = 1
	}
	if err := c.call(ctx, "recentcontact/delete", body, nil, callOpts{retry: true}); err != nil {
		return err
	}
	return c.inProc(ctx, func(p *proc) {
		_ = deleteContact(p.tx, peer)
		p.unreadDirty = true
		if clearHistory {
			_ = deleteConversation(p.tx, peer)
		}
	})
}

// PinConversation pins the conversation with peer to the top of my list,
// or unpins it (recentcontact/top). My other devices learn of it from the
// timeline and report it to OnRecentContactsChanged, as this one does.
// Only a conversation in the list can be pinned (*Error 50002 otherwise);
// it stays pinned until unpinned, deleted (DeleteRecentContact), or until
// its last message expires on the server, after which it comes back
// unpinned with its next message.
func (c *Client) PinConversation(ctx context.Context, peer string, pinned bool) error {
	op := 2
	if pinned {
		op = 1
	}
	body := map[string]any{"OperationType": op, "RecentContactItem": []any{map[string]any{"Type": 1, "To_Account": peer}}}
	if err := c.call(ctx, "recentcontact/top", body, nil, callOpts{retry: true}); err != nil {
		return err
	}
	return c.inProc(ctx, func(p *proc) { p.setPinned(peer, pinned) })
}

// TotalUnread is the unread count of all conversations, from the local
// store (it works offline; OnTotalUnreadChanged reports its changes).
func (c *Client) TotalUnread(ctx context.Context) (int, error) {
	var n int
	err := c.view(func(tx *bolt.Tx) error { n = totalUnread(tx); return nil })
	return n, err
}

// LastSeq is the last timeline Seq this device applied.
func (c *Client) LastSeq() (uint64, error) {
	var n uint64
	err := c.view(func(tx *bolt.Tx) error { n = getU64(tx, kSeq); return nil })
	return n, err
}

// Request sends any other command of PROTOCOL §3 (sns/friend_add,
// profile/portrait_set, push/set_token, …) with body, a JSON object, and
// decodes the reply's result fields into result (may be nil). It is sent
// once: the SDK cannot know whether repeating it is safe.
func (c *Client) Request(ctx context.Context, command string, body any, result any) error {
	return c.call(ctx, command, body, result, callOpts{})
}
