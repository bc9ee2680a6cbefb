package sdk

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The outbox. A send is written to the local store (bucket "outbox", by
// its ID) with its MsgRandom and MsgSeq before it goes out. Until the
// server answers it stays "sending" and is sent again — the same request,
// which the server stores once (PROTOCOL §3: same MsgRandom and MsgSeq
// within 24 hours) — after a reconnect, after a timeout and at the next
// Login. The server's answer makes it "sent" (with MsgKey and Seq) or
// "failed" (with the code). Its status is queryable (SendStatus, Outbox)
// and reported to OnSendStatus. Finished entries are kept for
// outboxKeep, so a Send repeated with the same Outgoing.ID within that time
// (an app re-handling an event after a crash) answers from the outbox
// instead of sending again.

// outboxKeep is how long finished sends stay in the outbox.
const outboxKeep = 7 * 24 * time.Hour

// outboxResendLimit: a send not confirmed within it is failed instead of
// resent, since the server recognises a resend only for 24 hours.
const outboxResendLimit = 23 * time.Hour

var bOutbox = []byte("outbox")

// SendState is where a send stands.
type SendState string

const (
	Sending SendState = "sending" // written to the outbox; not yet answered
	Sent    SendState = "sent"    // stored by the server: MsgKey, Seq, MsgTime
	Failed  SendState = "failed"  // refused: Code, Info
)

// SendStatus is an outbox entry.
type SendStatus struct {
	ID        string
	To        string
	State     SendState
	MsgRandom uint32
	MsgSeq    uint32
	Created   time.Time
	// Sent:
	MsgKey  string `json:",omitempty"`
	Seq     uint64 `json:",omitempty"`
	MsgTime int64  `json:",omitempty"`
	// Failed: the server's code and ErrorInfo (0 when the SDK gave up:
	// not confirmed within 23 hours).
	Code int    `json:",omitempty"`
	Info string `json:",omitempty"`
}

// outboxEntry is a SendStatus with what is needed to send it again.
type outboxEntry struct {
	SendStatus
	Body            []Elem          `json:"Body"`
	CloudCustomData string          `json:"CloudCustomData,omitempty"`
	OfflinePushInfo json.RawMessage `json:"OfflinePushInfo,omitempty"`
}

func getOutbox(tx *bolt.Tx, id string) *outboxEntry {
	v := tx.Bucket(bOutbox).Get([]byte(id))
	if v == nil {
		return nil
	}
	var e outboxEntry
	if json.Unmarshal(v, &e) != nil {
		return nil
	}
	return &e
}

func putOutbox(tx *bolt.Tx, e *outboxEntry) error {
	v, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return tx.Bucket(bOutbox).Put([]byte(e.ID), v)
}

func listOutbox(tx *bolt.Tx) []*outboxEntry {
	var out []*outboxEntry
	_ = tx.Bucket(bOutbox).ForEach(func(_, v []byte) error {
		var e outboxEntry
		if json.Unmarshal(v, &e) == nil {
			out = append(out, &e)
		}
		return nil
	})
	return out
}

// SendStatus returns the outbox entry of the send with this ID.
func (c *Client) SendStatus(ctx context.Context, id string) (SendStatus, bool, error) {
	var st SendStatus
	var ok bool
	err := c.view(func(tx *bolt.Tx) error {
		if e := getOutbox(tx, id); e != nil {
			st, ok = e.SendStatus, true
		}
		return nil
	})
	return st, ok, err
}

// Outbox returns every outbox entry: the sends not yet answered, and those
// answered in the last 7 days.
func (c *Client) Outbox(ctx context.Context) ([]SendStatus, error) {
	var out []SendStatus
	err := c.view(func(tx *bolt.Tx) error {
		for _, e := range listOutbox(tx) {
			out = append(out, e.SendStatus)
		}
		return nil
	})
	return out, err
}

// enqueue writes a new send to the outbox, or returns the entry already
// there under o.ID.
func (c *Client) enqueue(o Outgoing) (*outboxEntry, error) {
	var e *outboxEntry
	err := c.update(func(tx *bolt.Tx) error {
		if o.ID != "" {
			if e = getOutbox(tx, o.ID); e != nil {
				return nil
			}
		}
		var floor uint32
		if ct := getContact(tx, o.To); ct != nil && ct.LastMsg != nil {
			floor = ct.LastMsg.MsgSeq
		}
		seq := c.nextMsgSeq(floor)
		if uint64(seq) > getU64(tx, kMsgSeq) {
			if err := putU64(tx, kMsgSeq, uint64(seq)); err != nil {
				return err
			}
		}
		id := o.ID
		if id == "" {
			var b [12]byte
			_, _ = rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		e = &outboxEntry{
			SendStatus: SendStatus{ID: id, To: o.To, State: Sending, MsgRandom: randU32(), MsgSeq: seq, Created: time.Now()},
			Body:       o.Body, CloudCustomData: o.CloudCustomData, OfflinePushInfo: o.OfflinePushInfo,
		}
		return putOutbox(tx, e)
	})
	return e, err
}

// flight is one send of an outbox entry in progress.
type flight struct {
	done chan struct{}
	m    *Message
	err  error
}

// sendEntry sends an outbox entry, or waits for the send of it already in
// progress, and returns the stored message.
func (c *Client) sendEntry(ctx context.Context, e *outboxEntry) (*Message, error) {
	for {
		switch e.State {
		case Sent:
			return e.message(c.me), nil
		case Failed:
			return nil, &Error{Code: e.Code, Info: e.Info}
		}
		c.mu.Lock()
		f := c.flights[e.ID]
		mine := f == nil
		if mine {
			f = &flight{done: make(chan struct{})}
			c.flights[e.ID] = f
		}
		c.mu.Unlock()
		if mine {
			// Look again: an earlier flight may have finished it.
			var cur *outboxEntry
			_ = c.view(func(tx *bolt.Tx) error { cur = getOutbox(tx, e.ID); return nil })
			if cur != nil && cur.State != Sending {
				c.mu.Lock()
				delete(c.flights, e.ID)
				c.mu.Unlock()
				close(f.done)
				e = cur
				continue
			}
			f.m, f.err = c.transmit(ctx, e)
			c.mu.Lock()
			delete(c.flights, e.ID)
			c.mu.Unlock()
			close(f.done)
			return f.m, f.err
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if f.err == nil {
			return f.m, nil
		}
		// That attempt ended without an answer (its context did): look
		// again and send it ourselves.
		var again *outboxEntry
		if err := c.view(func(tx *bolt.Tx) error { again = getOutbox(tx, e.ID); return nil }); err != nil {
			return nil, err
		}
		if again == nil {
			return nil, errors.New("duet: outbox entry vanished")
		}
		e = again
	}
}

func (e *outboxEntry) message(me string) *Message {
	return &Message{
		Seq: e.Seq, From: me, To: e.To, MsgKey: e.MsgKey, MsgSeq: e.MsgSeq, MsgRandom: e.MsgRandom, MsgTimeStamp: e.MsgTime,
		MsgBody: e.Body, CloudCustomData: e.CloudCustomData,
	}
}

// transmit sends e (resending after timeouts and reconnects until ctx
// ends) and records the answer in the outbox.
func (c *Client) transmit(ctx context.Context, e *outboxEntry) (*Message, error) {
	if time.Since(e.Created) > outboxResendLimit {
		e.State, e.Info = Failed, "not confirmed by the server within 23 hours; it may or may not have been stored"
		return nil, c.finish(e, nil)
	}
	body := map[string]any{"To_Account": e.To, "MsgRandom": e.MsgRandom, "MsgSeq": e.MsgSeq, "MsgBody": e.Body}
	if e.CloudCustomData != "" {
		body["CloudCustomData"] = e.CloudCustomData
	}
	if len(e.OfflinePushInfo) > 0 {
		body["OfflinePushInfo"] = e.OfflinePushInfo
	}
	k := sendKey{e.To, e.MsgRandom, e.MsgSeq}
	c.markSending(k)
	var r struct {
		MsgKey  string
		MsgTime int64
		Seq     uint64
	}
	if err := c.call(ctx, "openim/sendmsg", body, &r, callOpts{retry: true}); err != nil {
		var refused *Error
		if !errors.As(err, &refused) {
			return nil, err // still sending: resent later
		}
		c.takeSending(k) // refused: nothing was stored
		e.State, e.Code, e.Info = Failed, refused.Code, refused.Info
		if ferr := c.finish(e, nil); ferr != nil {
			return nil, ferr
		}
		return nil, err
	}
	e.State, e.MsgKey, e.MsgTime, e.Seq = Sent, r.MsgKey, r.MsgTime, r.Seq
	m := e.message(c.me)
	if err := c.finish(e, m); err != nil {
		return m, err
	}
	return m, nil
}

// finish records e's outcome (and, when sent, the message m) in the local
// store on the processor, and reports it to OnSendStatus.
func (c *Client) finish(e *outboxEntry, m *Message) error {
	st := e.SendStatus
	return c.inProc(context.Background(), func(p *proc) {
		if m != nil {
			// The server does not send this device its own message back
			// (PROTOCOL §4: my sends reach my other devices); the reply's
			// Seq takes its place in the timeline here. A copy that comes
			// anyway (a replay after a reconnect) is a duplicate by Seq.
			stored := *m
			p.message(&stored, false)
			p.ownSeq(&stored)
		}
		if err := putOutbox(p.tx, e); err != nil {
			p.c.log.Error("local store: outbox", "error", err)
		}
		p.emit(func() {
			if f := c.listeners().OnSendStatus; f != nil {
				f(st)
			}
		})
	})
}

// kickOutbox asks outboxLoop to look at the outbox.
func (c *Client) kickOutbox() {
	select {
	case c.outboxKick <- struct{}{}:
	default:
	}
}

// outboxLoop resends the outbox when kicked: at Login, after each
// connect, and after a Send that ended without an answer.
func (c *Client) outboxLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.outboxKick:
			c.resendOutbox()
		case <-c.quit:
			return
		}
	}
}

// resendOutbox sends what the outbox still holds as sending (after a
// restart, a reconnect, or a Send whose context ended), and drops finished
// entries older than outboxKeep.
func (c *Client) resendOutbox() {
	var todo []*outboxEntry
	err := c.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bOutbox)
		for _, e := range listOutbox(tx) {
			switch {
			case e.State == Sending:
				todo = append(todo, e)
			case time.Since(e.Created) > outboxKeep:
				if err := b.Delete([]byte(e.ID)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return
	}
	for _, e := range todo {
		if _, err := c.sendEntry(c.ctx, e); err != nil && c.ctx.Err() != nil {
			return
		}
	}
}
