package sdk

import (
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// History is served from the local store. The store remembers, per
// conversation, which ranges of the (time, MsgSeq) order it knows to be
// complete: a roaming page (openim/getmsg) proves the span from its oldest
// message up to where the query started, or everything older when the
// server says Complete. A message that arrived on the timeline fills the
// store but proves nothing about the span before it. GetMessage walks down
// from its starting point through complete ranges and asks the server only
// for the spans it cannot vouch for.

// GetMessage returns up to count messages of the conversation with peer
// sent before `before` (zero: the newest), oldest first. Messages in the
// same second as `before` count as not before it; to page back without
// skipping any, use GetMessagesBefore with the oldest message you hold.
//
// When the server cannot be asked (offline), it returns what the local
// store holds together with the error.
func (c *Client) GetMessage(ctx context.Context, peer string, count int, before time.Time) ([]*Message, error) {
	cursor := keyMax
	if !before.IsZero() {
		t := before.Unix()
		if before.Nanosecond() > 0 {
			t++
		}
		cursor = orderKey(t, 0, 0)
	}
	return c.history(ctx, peer, count, cursor)
}

// GetMessagesBefore returns up to count messages of the conversation with
// peer that are older than anchor (a message returned earlier), oldest
// first.
func (c *Client) GetMessagesBefore(ctx context.Context, peer string, count int, anchor *Message) ([]*Message, error) {
	return c.history(ctx, peer, count, anchor.okey())
}

func (c *Client) history(ctx context.Context, peer string, count int, cursor okey) ([]*Message, error) {
	var out []*Message // newest first
	for len(out) < count {
		var lo okey
		covered := false
		err := c.view(func(tx *bolt.Tx) error {
			if lo, covered = coverBelow(tx, peer, cursor); covered {
				out = append(out, below(tx, peer, lo, cursor, count-len(out))...)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if covered {
			if len(out) >= count || lo == keyMin {
				break
			}
			cursor = lo
			continue
		}
		if err := c.fetch(ctx, peer, cursor, count-len(out)); err != nil {
			// Serve what is here, and say why it may be incomplete.
			_ = c.view(func(tx *bolt.Tx) error {
				out = append(out, below(tx, peer, keyMin, cursor, count-len(out))...)
				return nil
			})
			return reversed(out), err
		}
	}
	return reversed(out), nil
}

// fetch pulls one roaming page that ends just below cursor and records the
// range it proves complete. It fails when the page proves nothing.
func (c *Client) fetch(ctx context.Context, peer string, cursor okey, need int) error {
	req := map[string]any{"Peer_Account": peer, "MaxCnt": min(max(need, 20), 100)}
	if cursor != keyMax {
		if cursor.isTimeBound() {
			req["MaxTime"] = cursor.time() // exclusive
		} else {
			// Strictly before a message: its whole second, cut at its MsgKey.
			req["MaxTime"] = cursor.time() + 1
			req["LastMsgKey"] = c.msgKeyAt(peer, cursor)
		}
	}
	var r struct {
		Complete int        `json:"Complete"`
		MsgList  []*Message `json:"MsgList"`
	}
	c.fetches.Add(1)
	err := c.call(ctx, "openim/getmsg", req, &r, callOpts{})
	var e *Error
	if errors.As(err, &e) && e.Code == 90054 && req["LastMsgKey"] != nil {
		// The message the page should end before has left the server's
		// retention: ask by time, for its whole second (a page that also
		// holds later messages of that second proves as much).
		delete(req, "LastMsgKey")
		c.fetches.Add(1)
		err = c.call(ctx, "openim/getmsg", req, &r, callOpts{})
	}
	if err != nil {
		return err
	}
	lowest := cursor
	for _, m := range r.MsgList {
		if k := m.okey(); cmpKey(k, lowest) < 0 {
			lowest = k
		}
	}
	if r.Complete == 1 {
		lowest = keyMin
	}
	if lowest == cursor {
		return fmt.Errorf("duet: openim/getmsg returned nothing older than the local history of %s", peer)
	}
	return c.update(func(tx *bolt.Tx) error {
		for _, m := range r.MsgList {
			m.Seq = 0
			if _, _, err := putMessage(tx, peer, m); err != nil {
				return err
			}
		}
		return addRange(tx, peer, lowest, cursor)
	})
}

// msgKeyAt is the MsgKey of the message at k: from the store, or made the
// way the server makes MsgKeys ({MsgSeq}_{MsgRandom}_{MsgTime}).
func (c *Client) msgKeyAt(peer string, k okey) string {
	var key string
	_ = c.view(func(tx *bolt.Tx) error {
		if m, ok := messageAt(tx, peer, k); ok {
			key = m.MsgKey
		}
		return nil
	})
	if key == "" {
		m := Message{}
		m.MsgTimeStamp = k.time()
		key = fmt.Sprintf("%d_%d_%d", beU32(k[8:12]), beU32(k[12:]), m.MsgTimeStamp)
	}
	return key
}

func beU32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func reversed(ms []*Message) []*Message {
	for i, j := 0, len(ms)-1; i < j; i, j = i+1, j-1 {
		ms[i], ms[j] = ms[j], ms[i]
	}
	return ms
}
