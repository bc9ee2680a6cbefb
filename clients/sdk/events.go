package sdk

import (
	"bytes"
	"errors"
	"runtime"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Delivery to the app is at least once. A timeline event that calls a
// listener (a message, a recall, an edit, a read receipt, a system event)
// is written to the local store's "pending" bucket in the same transaction
// that applies it, and removed only after its listener returned. Whatever
// is still pending at Logout or at a crash is delivered again, before
// anything else, at the next Login. So an event can reach a listener twice
// (the app crashed after the listener returned but before the SDK noted
// it); an app that must act once makes its action idempotent by the
// message's MsgKey (or the event's Seq) — for replies, Outgoing.ID.

// appEvent is one listener call that must not be lost.
type appEvent struct {
	Seq        uint64       `json:"-"`
	Kind       string       `json:"k"` // msg, withdraw, modify, read, system
	Msg        *Message     `json:"m,omitempty"`
	Withdrawal *Withdrawal  `json:"w,omitempty"`
	Read       *ReadReceipt `json:"r,omitempty"`
	System     *SystemEvent `json:"s,omitempty"`
}

// deliver calls the event's listener (the one registered now).
func (c *Client) deliver(ev *appEvent) {
	l := c.listeners()
	switch ev.Kind {
	case "msg", "modify":
		f := l.OnNewMessage
		if ev.Kind == "modify" {
			f = l.OnModify
		}
		if f != nil && ev.Msg != nil {
			m := *ev.Msg
			f(&m)
		}
	case "withdraw":
		if l.OnWithdraw != nil && ev.Withdrawal != nil {
			l.OnWithdraw(*ev.Withdrawal)
		}
	case "read":
		if l.OnRead != nil && ev.Read != nil {
			l.OnRead(*ev.Read)
		}
	case "system":
		if l.OnSystemEvent != nil && ev.System != nil {
			l.OnSystemEvent(*ev.System)
		}
	}
}

// emitEvent queues ev's listener call; with a Seq it is kept in the store
// until the listener returned.
func (p *proc) emitEvent(ev *appEvent) {
	c := p.c
	if ev.Seq != 0 {
		if err := putPending(p.tx, ev.Seq, ev); err != nil {
			c.log.Error("local store: pending event", "error", err)
		}
	}
	p.emits = append(p.emits, dispatchItem{f: func() { c.deliver(ev) }, seq: ev.Seq})
}

// dispatchItem is one listener call; seq names its pending event (0: none).
type dispatchItem struct {
	f   func()
	seq uint64
}

// handledFlushEvery bounds how long handled events stay noted only in
// memory: what a crash loses is at most this much of re-delivery.
const handledFlushEvery = 100 * time.Millisecond

// dispatchLoop runs the listeners, one at a time, until shutdown stops it.
func (c *Client) dispatchLoop() {
	defer close(c.dispatchDone)
	c.dispatchG.Store(goid())
	// No listener runs before Login returned (or, when Login had none,
	// before SetListeners): a listener may use the *Client.
	select {
	case <-c.loggedIn:
	case <-c.stopDispatch:
		return
	}
	last := time.Now()
	for {
		items := c.dispatch.take()
		for _, it := range items {
			if c.stopping.Load() {
				c.flushHandled()
				return
			}
			it.f()
			if it.seq != 0 {
				c.hmu.Lock()
				c.handled = append(c.handled, it.seq)
				c.hmu.Unlock()
			}
			if time.Since(last) >= handledFlushEvery {
				c.flushHandled()
				last = time.Now()
			}
		}
		if len(items) > 0 {
			continue
		}
		c.flushHandled()
		last = time.Now()
		select {
		case <-c.dispatch.signal:
		case <-c.stopDispatch:
			c.flushHandled()
			return
		}
	}
}

// flushHandled removes the events whose listeners returned from the
// store's pending events.
func (c *Client) flushHandled() {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	if len(c.handled) == 0 {
		return
	}
	err := c.update(func(tx *bolt.Tx) error { return deletePending(tx, c.handled) })
	if err != nil && !errors.Is(err, ErrClosed) {
		c.log.Error("local store: handled events", "error", err)
		return
	}
	c.handled = nil
}

// stopListeners stops the dispatcher: no listener starts after it returns.
// It waits for a listener that is running, unless called from one (Logout
// inside a listener): that listener's event stays pending.
func (c *Client) stopListeners() {
	c.stopping.Store(true)
	close(c.stopDispatch)
	if c.dispatchG.Load() == goid() {
		c.flushHandled()
		return
	}
	<-c.dispatchDone
}

// goid is the current goroutine's id (from its stack header, "goroutine N
// [..."): Logout uses it to tell whether it runs inside a listener.
func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	n, _ := strconv.ParseUint(string(b), 10, 64)
	return n
}
