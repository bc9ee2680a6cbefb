package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The processor is the one goroutine that applies events to the local
// store. It takes whatever has queued up, applies it in one store
// transaction, and only after the commit acknowledges the events to the
// server and hands the callbacks to the dispatcher. It never waits for the
// server: requests it needs (sync, the contact list) run on their own
// goroutines and post their outcome back to the inbox.
//
// Timeline rules (PROTOCOL §4–5): events carry a gap-free Seq; an event at
// or below the last applied Seq is a duplicate; one above last+1 is held
// back and openim/sync {FromSeq: last} asked for; sync_complete with a
// LastSeq above last also means events went missing. If a sync came back
// and events are still missing, they have left the server's retention: the
// client moves on and forgets which history ranges it knew complete.

// maxUnread caps a conversation's unread count, as the server's does
// (reference §9).
const maxUnread = 100

type itemKind int

const (
	itDelivery  itemKind = iota // a timeline or live PUBLISH
	itConnUp                    // a connection attempt starts (before it subscribes)
	itConnected                 // it is up
	itConnDown
	itSyncReply // openim/sync answered
	itSyncFailed
	itSyncRetry // time to ask again after a failed sync
	itContacts  // recentcontact/get_list answered (or failed)
	itLoggedOut
	itReplaced
	itFunc
)

type item struct {
	kind     itemKind
	gen      uint64
	d        delivery
	payload  []byte
	contacts []Contact
	err      error
	reason   string
	offline  bool // itSyncFailed: there was no connection to ask on
	fn       func(*proc)
	done     chan struct{}
}

type proc struct {
	c *Client

	last  uint64 // last applied Seq (persisted with each batch)
	fresh bool   // nothing applied yet: the first event sets the baseline
	gen   uint64

	connectPhase bool // between (re)connect and OnRefresh
	syncInFlight bool
	syncAnswered bool   // a sync reply came since the last sync_complete
	syncFailures int    // failed or refused syncs in a row
	target       uint64 // the highest LastSeq the server announced on this connection
	completeSeen bool   // a sync_complete came on this connection
	buffer       map[uint64][]byte
	holding      bool // waiting for the contact list: later deliveries wait in held
	held         []item
	listed       map[string]okey // after a list reload: each listed conversation's last message, until its event arrives

	// unreadDirty: a conversation's unread count may have changed in this
	// batch; lastTotal is the total last reported (-1: none yet).
	unreadDirty bool
	lastTotal   int

	// per batch
	tx    *bolt.Tx
	acks  []func()
	emits []dispatchItem
	dirty bool // ranges must be cleared
}

func (p *proc) loop() {
	c := p.c
	defer c.wg.Done()
	defer close(c.procDone)
	for {
		items := c.inbox.take()
		if len(items) == 0 {
			select {
			case <-c.inbox.signal:
				continue
			case <-c.quit:
				return
			}
		}
		p.batch(items)
	}
}

func (p *proc) batch(items []item) {
	c := p.c
	before := p.last
	err := c.db.db.Update(func(tx *bolt.Tx) error {
		p.tx = tx
		defer func() { p.tx = nil }()
		for _, it := range items {
			p.handle(it)
		}
		if p.unreadDirty {
			p.unreadDirty = false
			if total := totalUnread(tx); total != p.lastTotal {
				p.lastTotal = total
				p.emit(func() {
					if f := c.listeners().OnTotalUnreadChanged; f != nil {
						f(total)
					}
				})
			}
		}
		if p.dirty {
			p.dirty = false
			if err := clearRanges(tx); err != nil {
				return err
			}
		}
		if p.last != before {
			return putU64(tx, kSeq, p.last)
		}
		return nil
	})
	if err != nil {
		// Nothing of the batch is stored: go back to the stored Seq. The
		// events are acknowledged all the same (the server's cursor is only
		// a hint); the next one shows the gap and a sync brings them back.
		c.log.Error("local store: batch not applied", "error", err)
		_ = c.db.db.View(func(tx *bolt.Tx) error { p.last = getU64(tx, kSeq); return nil })
		p.fresh = p.last == 0
		p.emits = nil
	}
	for _, a := range p.acks {
		a()
	}
	for _, f := range p.emits {
		c.dispatch.push(f)
	}
	p.acks, p.emits = nil, nil
	for _, it := range items {
		if it.done != nil {
			close(it.done)
		}
	}
}

func (p *proc) handle(it item) {
	c := p.c
	switch it.kind {
	case itConnUp:
		p.gen = it.gen
		p.connectPhase = true
		p.syncInFlight, p.syncAnswered, p.syncFailures = false, false, 0
		p.target, p.completeSeen = 0, false
		p.buffer = make(map[uint64][]byte)
		p.holding, p.held = false, nil
	case itConnected:
		p.emitConn(true, it.reason)
	case itConnDown:
		p.emitConn(false, it.reason)
	case itDelivery:
		if p.holding {
			p.held = append(p.held, it)
			return
		}
		p.acks = append(p.acks, it.d.ack)
		if it.d.topic == "im/"+c.me+"/live" {
			p.live(it.d.payload)
		} else {
			p.timeline(it.d.payload, it.gen == p.gen)
		}
	case itSyncReply:
		if it.gen != p.gen {
			return
		}
		p.syncInFlight = false
		var r struct {
			ErrorCode int
			ErrorInfo string
			LastSeq   uint64
		}
		if json.Unmarshal(it.payload, &r) == nil && r.ErrorCode != 0 {
			c.log.Warn("openim/sync refused", "code", r.ErrorCode, "info", r.ErrorInfo)
			p.syncFailed(true)
			return
		}
		p.syncAnswered, p.syncFailures = true, 0
		p.target = max(p.target, r.LastSeq)
	case itSyncFailed:
		if it.gen == p.gen {
			p.syncInFlight = false
			if !it.offline {
				p.syncFailed(false)
			}
		}
	case itSyncRetry:
		if it.gen == p.gen && p.behind() {
			p.requestSync()
		}
	case itContacts:
		if it.gen != p.gen || !p.holding {
			return
		}
		p.refreshed(it.contacts, it.err)
	case itLoggedOut:
		p.loggedOut(it.reason)
	case itReplaced:
		p.ended(it.reason, true)
	case itFunc:
		it.fn(p)
	}
}

func (p *proc) emit(f func()) { p.emits = append(p.emits, dispatchItem{f: f}) }

func (p *proc) emitConn(up bool, reason string) {
	c := p.c
	p.emit(func() {
		if f := c.listeners().OnConnectionChanged; f != nil {
			f(up, reason)
		}
	})
}

// head is the part of an event every rule needs.
type head struct {
	Seq     uint64 `json:"Seq"`
	Event   string `json:"Event"`
	LastSeq uint64 `json:"LastSeq"`
}

// timeline handles an event of im/{me}/in; current is false for what an
// earlier connection delivered (its events are still good data, but its
// sync_complete says nothing about the current replay).
func (p *proc) timeline(payload []byte, current bool) {
	var h head
	if err := json.Unmarshal(payload, &h); err != nil {
		p.c.log.Warn("undecodable timeline event", "error", err)
		return
	}
	if h.Seq == 0 {
		switch h.Event {
		case "sync_complete":
			if current {
				p.syncComplete(h.LastSeq)
			}
		case "kicked":
			p.kicked(payload)
		default:
			p.other(0, h.Event, payload)
		}
		return
	}
	if drop := p.c.opts.dropEvent; drop != nil && drop(h.Seq) {
		return
	}
	if p.fresh {
		// PROTOCOL §5: a new device starts where the server puts it.
		p.last, p.fresh = h.Seq-1, false
	}
	switch {
	case h.Seq <= p.last:
		return // a duplicate (replay after reconnect or sync)
	case h.Seq > p.last+1:
		p.buffer[h.Seq] = payload
		p.requestSync()
		return
	}
	p.apply(h, payload)
	p.drain()
}

// ownSeq accounts for the Seq of a message this device sent (m, already
// stored): it is applied when the events before it are, without a sync
// being asked for meanwhile (they are on their way on the timeline).
func (p *proc) ownSeq(m *Message) {
	if m.Seq == 0 {
		return
	}
	// Held back, it waits as the event the server would have sent.
	hold := func() {
		if payload, err := json.Marshal(struct {
			Event string `json:"Event"`
			*Message
		}{"msg", m}); err == nil {
			p.buffer[m.Seq] = payload
		}
	}
	if p.fresh {
		if !p.completeSeen {
			hold() // sent during a first replay: the replay sets the baseline
			return
		}
		p.fresh = false // the timeline was empty (sync_complete at 0)
	}
	switch {
	case m.Seq <= p.last:
	case m.Seq == p.last+1:
		p.last = m.Seq
		p.drain()
	default:
		hold()
	}
}

// drain applies held-back events that are now next in line.
func (p *proc) drain() {
	for s := range p.buffer {
		if s <= p.last {
			delete(p.buffer, s)
		}
	}
	for {
		payload, ok := p.buffer[p.last+1]
		if !ok {
			return
		}
		delete(p.buffer, p.last+1)
		var h head
		_ = json.Unmarshal(payload, &h)
		p.apply(h, payload)
	}
}

func (p *proc) syncComplete(lastSeq uint64) {
	if p.fresh && len(p.buffer) == 0 {
		p.last, p.fresh = lastSeq, lastSeq == 0
	}
	if lastSeq < p.last {
		// The server's timeline ends before what this device applied: its
		// data was reset. Follow it, or every new event would look old.
		p.c.log.Warn("server timeline is behind this device; following it", "local", p.last, "server", lastSeq)
		p.last, p.dirty = lastSeq, true
		p.buffer = make(map[uint64][]byte)
	}
	p.target, p.completeSeen = max(p.target, lastSeq), true
	if p.last < lastSeq {
		switch {
		case p.syncInFlight:
			return // that sync's own sync_complete follows
		case !p.syncAnswered:
			p.requestSync()
			return
		}
		// A sync came back and the events are still missing: they expired.
		p.skipGap(lastSeq)
	}
	p.syncAnswered = false
	if p.connectPhase && !p.holding {
		p.startRefresh()
	}
}

// behind reports whether events are known to be missing.
func (p *proc) behind() bool { return len(p.buffer) > 0 || p.last < p.target }

// syncFailed schedules another sync after a failed one. After a few
// refusals in a row the missing events are taken as gone; a sync that got
// no answer (timeout, lost connection) never counts as a refusal: skipping
// events the server still has would lose them.
func (p *proc) syncFailed(refused bool) {
	if refused {
		p.syncFailures++
	}
	if !p.behind() {
		return
	}
	if p.syncFailures >= 3 {
		p.skipGap(p.target)
		p.syncFailures = 0
		if p.connectPhase && !p.holding && p.completeSeen {
			p.startRefresh()
		}
		return
	}
	c, gen := p.c, p.gen
	time.AfterFunc(backoff(c.opts.MinBackoff, c.opts.MaxBackoff, p.syncFailures+1), func() {
		c.inbox.push(item{kind: itSyncRetry, gen: gen})
	})
}

// skipGap moves past events the server no longer has: it applies what is
// held back across each gap, up to upTo, and forgets which history ranges
// were known complete (messages of the gap may be anywhere).
func (p *proc) skipGap(upTo uint64) {
	p.c.log.Warn("skipping timeline events the server no longer has", "after", p.last, "to", upTo)
	for len(p.buffer) > 0 {
		lowest := uint64(0)
		for s := range p.buffer {
			if lowest == 0 || s < lowest {
				lowest = s
			}
		}
		if lowest > p.last+1 {
			p.last = lowest - 1
		}
		p.drain()
	}
	if p.last < upTo {
		p.last = upTo
	}
	p.dirty = true
}

// requestSync asks the server to replay the timeline after p.last. The
// reply is queued on the receive path, so it follows the replayed events.
func (p *proc) requestSync() {
	if p.syncInFlight {
		return
	}
	p.syncInFlight = true
	c, gen, from := p.c, p.gen, p.last
	c.syncs.Add(1)
	go func() {
		err := c.call(c.ctx, "openim/sync", map[string]any{"FromSeq": from}, nil, callOpts{
			onReply: func(raw []byte) { c.inbox.push(item{kind: itSyncReply, gen: gen, payload: raw}) },
		})
		var refused *Error
		if err != nil && !errors.As(err, &refused) {
			// A refusal came as itSyncReply. Without a connection there is
			// nothing to retry: the reconnect replays from the cursor anyway.
			offline := errors.Is(err, ErrNotConnected) || errors.Is(err, ErrClosed)
			c.inbox.push(item{kind: itSyncFailed, gen: gen, offline: offline})
		}
	}()
}

// startRefresh reloads the conversation list after the replay; events that
// arrive meanwhile wait, so the app sees: offline messages, the list, then
// OnRefresh.
func (p *proc) startRefresh() {
	p.holding = true
	c, gen := p.c, p.gen
	go func() {
		ctx, cancel := context.WithTimeout(c.ctx, 2*c.opts.RequestTimeout)
		defer cancel()
		list, err := c.contactList(ctx)
		c.inbox.push(item{kind: itContacts, gen: gen, contacts: list, err: err})
	}()
}

// contactList reads the whole conversation list from the server, page by
// page: pinned conversations first (AssistFlags bit 0), paged apart from
// the others (bit 2), each reply's cursors going into the next request.
func (c *Client) contactList(ctx context.Context) ([]Contact, error) {
	var all []Contact
	body := map[string]any{"TimeStamp": 0, "StartIndex": 0, "TopTimeStamp": 0, "TopStartIndex": 0, "AssistFlags": 1 | 4}
	for range 100 {
		var r struct {
			SessionItem   []Contact `json:"SessionItem"`
			CompleteFlag  int       `json:"CompleteFlag"`
			TimeStamp     int64     `json:"TimeStamp"`
			StartIndex    int       `json:"StartIndex"`
			TopTimeStamp  int64     `json:"TopTimeStamp"`
			TopStartIndex int       `json:"TopStartIndex"`
		}
		if err := c.call(ctx, "recentcontact/get_list", body, &r, callOpts{retry: true}); err != nil {
			return nil, err
		}
		all = append(all, r.SessionItem...)
		if r.CompleteFlag == 1 {
			return all, nil
		}
		body["TimeStamp"], body["StartIndex"], body["TopTimeStamp"], body["TopStartIndex"] = r.TimeStamp, r.StartIndex, r.TopTimeStamp, r.TopStartIndex
	}
	return nil, errors.New("duet: recentcontact/get_list did not complete in 100 pages")
}

func (p *proc) refreshed(list []Contact, err error) {
	c := p.c
	if err == nil {
		for i := range list {
			if list[i].Type == 0 {
				list[i].Type = 1
			}
		}
		if e := replaceContacts(p.tx, list); e != nil {
			c.log.Error("local store: contacts", "error", e)
		}
	} else {
		c.log.Warn("conversation list not reloaded; using the local one", "error", err)
	}
	all := listContacts(p.tx)
	p.unreadDirty = true
	p.emit(func() {
		if f := c.listeners().OnRecentContactsChanged; f != nil {
			f(all)
		}
	})
	p.emit(func() {
		if f := c.listeners().OnRefresh; f != nil {
			f()
		}
	})
	p.connectPhase, p.holding = false, false
	held := p.held
	p.held = nil
	p.listed = make(map[string]okey)
	for _, ct := range all {
		if ct.LastMsg != nil {
			p.listed[ct.Peer] = ct.LastMsg.okey()
		}
	}
	for _, it := range held {
		p.handle(it)
	}
}

// apply applies the next timeline event.
func (p *proc) apply(h head, payload []byte) {
	p.last = h.Seq
	c := p.c
	switch h.Event {
	case "msg":
		var m Message
		if err := json.Unmarshal(payload, &m); err != nil {
			c.log.Warn("undecodable msg event", "seq", h.Seq, "error", err)
			return
		}
		p.message(&m, true)
	case "withdraw":
		var w struct {
			From   string `json:"From_Account"`
			To     string `json:"To_Account"`
			MsgKey string `json:"MsgKey"`
		}
		_ = json.Unmarshal(payload, &w)
		peer := w.From
		if peer == c.me {
			peer = w.To
		}
		p.recall(peer, w.MsgKey)
		p.emitEvent(&appEvent{Seq: h.Seq, Kind: "withdraw", Withdrawal: &Withdrawal{Peer: peer, From: w.From, To: w.To, MsgKey: w.MsgKey}})
	case "modify":
		var e struct {
			From            string `json:"From_Account"`
			To              string `json:"To_Account"`
			MsgKey          string `json:"MsgKey"`
			MsgBody         []Elem `json:"MsgBody"`
			CloudCustomData string `json:"CloudCustomData"`
		}
		_ = json.Unmarshal(payload, &e)
		peer := e.From
		if peer == c.me {
			peer = e.To
		}
		m, ok := getMessage(p.tx, peer, e.MsgKey)
		if !ok {
			m = &Message{From: e.From, To: e.To, MsgKey: e.MsgKey}
		}
		m.MsgBody, m.CloudCustomData = e.MsgBody, e.CloudCustomData
		if ok {
			_ = updateMessage(p.tx, peer, m)
		}
		p.touchLast(peer, m)
		p.emitEvent(&appEvent{Seq: h.Seq, Kind: "modify", Msg: m})
	case "read":
		var r struct {
			Report string `json:"Report_Account"`
			Peer   string `json:"Peer_Account"`
			Time   int64  `json:"MsgReadTime"`
		}
		_ = json.Unmarshal(payload, &r)
		if r.Report == c.me {
			// Another device of mine (or this one) read the conversation.
			p.markRead(r.Peer, r.Time)
			return
		}
		if ct := getContact(p.tx, r.Report); ct != nil && r.Time > ct.PeerReadTime {
			ct.PeerReadTime = r.Time
			_ = putContact(p.tx, ct)
		}
		p.emitEvent(&appEvent{Seq: h.Seq, Kind: "read", Read: &ReadReceipt{Peer: r.Report, Time: time.Unix(r.Time, 0)}})
	case "recentcontact_top":
		var e struct {
			From    string `json:"From_Account"`
			To      string `json:"To_Account"`
			TopFlag int    `json:"TopFlag"`
		}
		_ = json.Unmarshal(payload, &e)
		if e.From == c.me {
			p.setPinned(e.To, e.TopFlag == 1)
		}
	case "kicked":
		p.kicked(payload)
	default:
		p.other(h.Seq, h.Event, payload)
	}
}

// setPinned records a pin (or unpin) of the conversation with peer, from
// this device's PinConversation or another's recentcontact_top event.
func (p *proc) setPinned(peer string, pinned bool) {
	ct := getContact(p.tx, peer)
	if ct == nil || ct.Pinned() == pinned {
		return
	}
	ct.TopFlag = 0
	if pinned {
		ct.TopFlag = 1
	}
	_ = putContact(p.tx, ct)
	p.contactChanged(ct)
}

// kicked handles {"Event":"kicked"}: the server is about to disconnect
// this device and will refuse its UserSig from now on.
func (p *proc) kicked(payload []byte) {
	var k struct {
		Reason string `json:"Reason"`
	}
	_ = json.Unmarshal(payload, &k)
	if k.Reason == "" {
		k.Reason = "kicked"
	}
	p.loggedOut(k.Reason)
}

// loggedOut reports the end of this login once and closes the client.
func (p *proc) loggedOut(reason string) { p.ended(reason, false) }

// ended reports the end of this login once (OnReplaced or OnKicked) and
// closes the client.
func (p *proc) ended(reason string, replaced bool) {
	c := p.c
	if c.loggedOut.Swap(true) {
		return
	}
	if replaced {
		p.emit(func() {
			if f := c.listeners().OnReplaced; f != nil {
				f(reason)
			}
			go c.shutdown()
		})
		return
	}
	// The client closes once OnKicked returned: shutdown stops the
	// dispatcher, which must run OnKicked first.
	p.emit(func() {
		if f := c.listeners().OnKicked; f != nil {
			f(reason)
		}
		go c.shutdown()
	})
}

func (p *proc) other(seq uint64, event string, payload []byte) {
	ev := SystemEvent{Seq: seq, Event: event, Data: json.RawMessage(append([]byte(nil), payload...))}
	p.emitEvent(&appEvent{Seq: seq, Kind: "system", System: &ev})
}

// message stores a message and updates its conversation. report says
// whether it came from the timeline (as opposed to this device's own send).
func (p *proc) message(m *Message, report bool) {
	c := p.c
	peer := m.Peer(c.me)
	existed, prevSeq, err := putMessage(p.tx, peer, m)
	if err != nil {
		c.log.Error("local store: message", "error", err)
		return
	}
	own := m.From == c.me && c.takeSending(sendKey{m.To, m.MsgRandom, m.MsgSeq})
	if existed && (prevSeq != 0 || !report) {
		// De-duplicated by MsgKey: already applied from the timeline or
		// sent from here. (A copy that only roaming brought is still new
		// to the timeline and is reported once.)
		return
	}
	ct := getContact(p.tx, peer)
	if ct == nil {
		ct = &Contact{Type: 1, Peer: peer}
	}
	changed := false
	if m.From != c.me && !m.Recalled() && report {
		// A reloaded list already counts its conversation's messages up to
		// its last one, and their events may still be on their way: the
		// reply to get_list can overtake the events of messages stored
		// just before it was read. So until an event reaches the listed
		// last message, the older ones are not counted again.
		l, ok := p.listed[peer]
		if (!ok || cmpKey(m.okey(), l) > 0) && ct.Unread < maxUnread {
			ct.Unread++
			changed = true
		}
		if ok && cmpKey(m.okey(), l) >= 0 {
			delete(p.listed, peer)
		}
	}
	// The newest arrival of the latest second is the last message: within
	// a second the timeline's order is the one people saw.
	if ct.LastMsg == nil || m.MsgTimeStamp >= ct.LastMsg.MsgTimeStamp {
		lm := *m
		ct.LastMsg, ct.MsgTime = &lm, m.MsgTimeStamp
		changed = true
	}
	if changed {
		_ = putContact(p.tx, ct)
		p.contactChanged(ct)
	}
	if report && !own {
		mm := *m
		p.emitEvent(&appEvent{Seq: m.Seq, Kind: "msg", Msg: &mm})
	}
}

func (p *proc) contactChanged(ct *Contact) {
	p.unreadDirty = true
	if p.connectPhase {
		return // the whole list follows the replay
	}
	c, cc := p.c, *ct
	p.emit(func() {
		if f := c.listeners().OnRecentContactsChanged; f != nil {
			f([]Contact{cc})
		}
	})
}

// recall marks a message recalled; a recalled unread message leaves the
// conversation's unread count at once (the server's count leaves it out).
func (p *proc) recall(peer, msgKey string) {
	ct := getContact(p.tx, peer)
	changed := false
	if m, ok := getMessage(p.tx, peer, msgKey); ok && !m.Recalled() {
		if ct != nil && m.From == peer && unreadHolds(p.tx, peer, ct.Unread, msgKey) {
			ct.Unread--
			changed = true
		}
		m.MsgFlagBits |= FlagRecalled
		_ = updateMessage(p.tx, peer, m)
	}
	if ct != nil && ct.LastMsg != nil && ct.LastMsg.MsgKey == msgKey && !ct.LastMsg.Recalled() {
		ct.LastMsg.MsgFlagBits |= FlagRecalled
		changed = true
	}
	if changed {
		_ = putContact(p.tx, ct)
		p.contactChanged(ct)
	}
}

// unreadHolds reports whether msgKey is among the conversation's unread
// messages: the newest `unread` messages from peer not recalled.
func unreadHolds(tx *bolt.Tx, peer string, unread int, msgKey string) bool {
	if unread <= 0 {
		return false
	}
	n := 0
	for _, m := range below(tx, peer, keyMin, keyMax, unread*4+16) {
		if m.From != peer || m.Recalled() {
			continue
		}
		if m.MsgKey == msgKey {
			return true
		}
		if n++; n == unread {
			return false
		}
	}
	return false
}

func (p *proc) touchLast(peer string, m *Message) {
	if ct := getContact(p.tx, peer); ct != nil && ct.LastMsg != nil && ct.LastMsg.MsgKey == m.MsgKey {
		lm := *ct.LastMsg
		lm.MsgBody, lm.CloudCustomData = m.MsgBody, m.CloudCustomData
		ct.LastMsg = &lm
		_ = putContact(p.tx, ct)
		p.contactChanged(ct)
	}
}

// markRead resets the unread count of the conversation with peer to the
// messages after readTime (0: all read).
func (p *proc) markRead(peer string, readTime int64) {
	ct := getContact(p.tx, peer)
	if ct == nil {
		return
	}
	n := 0
	if readTime > 0 && ct.Unread > 0 {
		n = countFrom(p.tx, peer, peer, readTime, ct.Unread)
	}
	if n != ct.Unread {
		ct.Unread = n
		_ = putContact(p.tx, ct)
		p.contactChanged(ct)
	}
}

// live handles im/{me}/live: ephemeral events without Seq.
func (p *proc) live(payload []byte) {
	c := p.c
	var h head
	if json.Unmarshal(payload, &h) != nil {
		return
	}
	switch h.Event {
	case "typing":
		var t struct {
			From string `json:"From_Account"`
		}
		_ = json.Unmarshal(payload, &t)
		p.emit(func() {
			if f := c.listeners().OnTyping; f != nil {
				f(t.From)
			}
		})
	case "msg":
		var m Message
		if json.Unmarshal(payload, &m) != nil {
			return
		}
		m.OnlineOnly = true
		p.emit(func() {
			if f := c.listeners().OnNewMessage; f != nil {
				f(&m)
			}
		})
	default:
		p.other(0, h.Event, payload)
	}
}

// takeSending reports (and forgets) whether k is a send of this device.
func (c *Client) takeSending(k sendKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.sending[k]
	delete(c.sending, k)
	return ok
}

func (c *Client) markSending(k sendKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	for old, at := range c.sending {
		if now.Sub(at) > time.Hour {
			delete(c.sending, old)
		}
	}
	c.sending[k] = now
}
