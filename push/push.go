// Package push sends offline-push notifications through Apple (APNs),
// Google (FCM), Huawei, Xiaomi, OPPO, vivo and Meizu, so a phone whose app
// is not connected still shows new messages.
//
// Flow: the store's commit notification hands every stored `msg` event to
// Committed, which only appends it to an in-memory inbox (it runs on the
// store's writer and must not block). The intake goroutine picks the
// recipient's devices that have a token and are not connected, and writes
// one notification per device into the durable push queue (store/push.go)
// due after the grace period. When one falls due, it is dropped if the
// device has acknowledged the event or is connected again; otherwise it
// joins its vendor's lane, where a bounded number of workers send. A send
// that fails for a passing reason goes back into the schedule with
// exponential backoff and jitter; an unregistered token is removed; any
// other failure is logged and counted. A queued notification is deleted
// only once it is settled, so a restart resends what was in flight.
//
// Nothing here runs on the message path: a vendor that hangs fills its own
// lane while messages keep flowing.
//
// In a cluster (Options.Replicated) the queue is in the replicated store,
// which only the owner of the data writes: a node works the queue only
// between Own and Disown, and every node's pusher answers the same
// questions — is the device connected, has it acknowledged — from the
// cluster's presence and cursors. With several partitions each has its
// own queue, the recipient's (docs/cluster.md §14.2): one Pusher per node
// (one set of vendor clients) works the queues of the partitions the node
// owns, each between OwnPartition and DisownPartition.
package push

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/duet-im/duet/store"
)

// Presence tells whether a device is connected (broker.Devices).
type Presence interface {
	Connected(user, clientID string) bool
}

// Options configure New.
type Options struct {
	Config Config
	Store  *store.Store
	Log    *slog.Logger
	// HTTPClient, when set, is used by every vendor client (tests point it
	// at local servers with their own CA). Nil: each vendor's own client.
	HTTPClient *http.Client
	// Now is the clock of tokens and schedules; nil means time.Now.
	Now func() time.Time
	// Badge returns the badge number for user's notifications: their total
	// unread count (UnreadBadge). Nil counts nothing and shows 1.
	Badge func(user string) int
	// Presence tells which devices are connected (the broker's devices),
	// so that no online device is taken for offline. Nil: none is online,
	// until SetPresence.
	Presence Presence
	// Replicated: Store is one node's view of a cluster's replicated
	// store, which only the owner of the data writes. The queue is then
	// loaded and worked only between Own and Disown (the node's tenure as
	// owner), not from Start.
	Replicated bool
}

// Pusher schedules and sends offline pushes.
type Pusher struct {
	cfg     Config
	st      *store.Store
	log     *slog.Logger
	now     func() time.Time
	badge   func(string) int
	lanes   map[string]*lane
	metrics *Metrics
	// warnings are the start-up warnings about the config (also logged).
	warnings []string

	// Lock order: mu -> sentMu; the others are leaves (locksordering.txt).
	presMu   sync.RWMutex
	presence Presence

	inMu   sync.Mutex
	inbox  []store.Appended
	inWake chan struct{}

	replicated bool // Options.Replicated

	// queues are the partitions' queues (one unless the store has
	// several partitions), indexed by partition.
	queues []*queue

	mu        sync.Mutex
	closed    bool // Close was called: no more tenures
	sched     schedule
	queued    int                 // entries of every queue
	byMsg     map[string][]*entry // user 00 msgKey → queued entries
	schedKick chan struct{}

	sentMu   sync.Mutex
	sent     map[string][]Notification // user 00 msgKey → what was shown, for recalls
	sentFIFO []sentMark

	doneMu   sync.Mutex // guards every queue's done and shown
	doneWake chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type sentMark struct {
	key string
	at  time.Time
}

// queue is one partition's durable push queue as this node works it
// (docs/cluster.md §14.2): the recipients' of that partition. Its ids
// are the partition's own, so entries are kept per queue.
type queue struct {
	part int
	st   *store.Store // the partition's store (Partition(part))

	// Guarded by Pusher.mu. owned: this node works the queue (always, on
	// a single node). tenure counts Own and Disown: a load stops when its
	// tenure ends. loading, while a new owner loads the queue, holds the
	// ids its own intake queued meanwhile, which the load must not add
	// again (they may be sent and gone from memory by the time it reads
	// them).
	owned   bool
	tenure  uint64
	loading map[uint64]bool
	entries map[uint64]*entry

	// Guarded by Pusher.doneMu: settled ids, and what was shown, written
	// together by the next flush.
	done  []uint64
	shown []store.ShownPush
}

const (
	sentMemory  = 24 * time.Hour
	sentMax     = 200000
	sendTimeout = 30 * time.Second
	maxBackoff  = 5 * time.Minute
	// configErrorUsers: a vendor is stopped when devices of this many
	// different users answer a configuration error with no success in
	// between. One device cannot stop a vendor for everybody (a developer's
	// sandbox build registering with a production server, a garbage
	// token); a wrong `production` or `bundle_id` fails every device and
	// stops it within a few sends.
	configErrorUsers = 3
)

// entry is one queued notification in memory.
type entry struct {
	q     *queue
	id    uint64
	n     Notification
	due   time.Time
	index int // in the schedule heap; -1 when not there
	state int // scheduled, sending or settled
	// inflight: a worker is sending it; withdrawn: recalled meanwhile, so a
	// success is followed by a silent update. Both guarded by Pusher.mu.
	inflight, withdrawn bool
}

const (
	scheduled = iota
	sending
	settled
)

// New builds a Pusher; vendors without credentials are off. Give it the
// broker's devices (Options.Presence, or SetPresence before Start) so no
// device is taken for offline.
func New(o Options) (*Pusher, error) {
	c := o.Config
	if c.Grace == 0 {
		c.Grace = 3 * time.Second
	}
	if c.RetryBase <= 0 {
		c.RetryBase = time.Second
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 8
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Badge == nil {
		o.Badge = func(string) int { return 1 }
	}
	c = c.clone()
	warnings, err := checkClasses(&c)
	if err != nil {
		return nil, fmt.Errorf("push: %w", err)
	}
	p := &Pusher{
		cfg: c, st: o.Store, log: o.Log.With("component", "push"), now: o.Now, badge: o.Badge,
		lanes: map[string]*lane{}, metrics: newMetrics(), warnings: warnings,
		inWake: make(chan struct{}, 1), schedKick: make(chan struct{}, 1), doneWake: make(chan struct{}, 1),
		byMsg: map[string][]*entry{}, sent: map[string][]Notification{},
		presence: o.Presence, replicated: o.Replicated,
	}
	n := 1
	if o.Store != nil {
		n = o.Store.Partitions()
	}
	p.queues = make([]*queue, n)
	for i := range p.queues {
		q := &queue{part: i, owned: !o.Replicated, entries: map[uint64]*entry{}}
		if o.Store != nil {
			q.st = o.Store.Partition(i)
		}
		p.queues[i] = q
	}
	hc := o.HTTPClient
	add := func(v vendor, err error, conc int) error {
		if err != nil {
			return err
		}
		if conc <= 0 {
			conc = 16
		}
		p.lanes[v.name()] = &lane{v: v, workers: conc, wake: make(chan struct{}, conc)}
		return nil
	}
	if c.APNs != nil {
		v, e := newAPNs(*c.APNs, hc, o.Now)
		err = add(v, e, c.APNs.Concurrency)
	}
	if err == nil && c.FCM != nil {
		v, e := newFCM(*c.FCM, hc, o.Now)
		err = add(v, e, c.FCM.Concurrency)
	}
	if err == nil && c.Huawei != nil {
		v, e := newHuawei(*c.Huawei, hc, o.Now)
		err = add(v, e, c.Huawei.Concurrency)
	}
	if err == nil && c.Xiaomi != nil {
		v, e := newXiaomi(*c.Xiaomi, hc)
		err = add(v, e, c.Xiaomi.Concurrency)
	}
	if err == nil && c.OPPO != nil {
		v, e := newOPPO(*c.OPPO, hc, o.Now)
		err = add(v, e, c.OPPO.Concurrency)
	}
	if err == nil && c.VIVO != nil {
		v, e := newVIVO(*c.VIVO, hc, o.Now)
		err = add(v, e, c.VIVO.Concurrency)
	}
	if err == nil && c.Meizu != nil {
		v, e := newMeizu(*c.Meizu, hc)
		err = add(v, e, c.Meizu.Concurrency)
	}
	if err != nil {
		return nil, fmt.Errorf("push: %w", err)
	}
	for name := range p.lanes {
		p.metrics.vendor(name)
	}
	for _, w := range warnings {
		p.log.Warn(w)
	}
	return p, nil
}

// Warnings are the configuration warnings New logged: settings that work
// but deliver worse than they could (docs/push.md, "Message classes").
func (p *Pusher) Warnings() []string { return p.warnings }

// Metrics are the per-vendor counters (a prometheus.Collector).
func (p *Pusher) Metrics() *Metrics { return p.metrics }

// Enabled reports whether vendor has credentials and was not stopped for a
// configuration error.
func (p *Pusher) Enabled(vendor string) bool {
	_, ok := p.lanes[vendor]
	return ok && !p.metrics.vendor(vendor).stopped.Load()
}

// SetPresence connects the broker's view of connected devices.
func (p *Pusher) SetPresence(pr Presence) {
	p.presMu.Lock()
	p.presence = pr
	p.presMu.Unlock()
}

func (p *Pusher) connected(user, device string) bool {
	p.presMu.RLock()
	pr := p.presence
	p.presMu.RUnlock()
	return pr != nil && pr.Connected(user, device)
}

// Start loads the durable queue (in a cluster: Own does, when this node
// owns the data) and starts sending.
func (p *Pusher) Start() error {
	p.ctx, p.cancel = context.WithCancel(context.Background())
	if !p.replicated {
		for _, q := range p.queues {
			if err := p.load(q, 0); err != nil {
				return err
			}
		}
	}
	for _, l := range p.lanes {
		for i := 0; i < l.workers; i++ {
			p.wg.Add(1)
			go p.worker(l)
		}
	}
	p.wg.Add(3)
	go p.intake()
	go p.scheduler()
	go p.deleter()
	return nil
}

// load adds the store's queue q to memory in tenure and wakes the
// scheduler. Ids this tenure's intake queued meanwhile are skipped.
func (p *Pusher) load(q *queue, tenure uint64) error {
	defer func() {
		p.mu.Lock()
		if q.tenure == tenure {
			q.loading = nil
		}
		p.mu.Unlock()
		p.kick()
	}()
	var after uint64
	for {
		items, err := q.st.QueuedPushes(after, 1024)
		if err != nil {
			return fmt.Errorf("push: loading queue: %w", err)
		}
		if len(items) == 0 {
			return nil
		}
		p.mu.Lock()
		if q.tenure != tenure {
			p.mu.Unlock()
			return nil // disowned meanwhile
		}
		for _, it := range items {
			after = it.ID
			if q.entries[it.ID] != nil || q.loading[it.ID] {
				continue
			}
			var n Notification
			if err := json.Unmarshal(it.Data, &n); err != nil {
				p.log.Error("dropping undecodable queued push", "id", it.ID, "error", err)
				p.settle(q, it.ID)
				continue
			}
			p.addLocked(q, it.ID, n)
		}
		p.mu.Unlock()
	}
}

// Own makes this cluster node work the queue of every partition: Own is
// OwnPartition(0) for a store of one partition.
func (p *Pusher) Own() {
	for i := range p.queues {
		p.OwnPartition(i)
	}
}

// Disown is DisownPartition for every partition.
func (p *Pusher) Disown() {
	for i := range p.queues {
		p.DisownPartition(i)
	}
}

// OwnPartition makes this cluster node work partition part's queue, once
// the partition's store is its log's writer (store.Own): its view is at
// the log's end, the previous owner's queue included. That queue is loaded
// in the background (a long one must not delay the takeover), so a
// notification the previous owner had not settled — in flight when it
// died — is sent again, as after a restart.
func (p *Pusher) OwnPartition(part int) {
	q := p.queues[part]
	p.mu.Lock()
	if q.owned || p.closed {
		p.mu.Unlock()
		return
	}
	q.owned = true
	q.tenure++
	tenure := q.tenure
	q.loading = map[uint64]bool{}
	p.mu.Unlock()
	if len(p.lanes) > 0 {
		p.log.Info("working the push queue: this node owns the data", "partition", part)
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if err := p.load(q, tenure); err != nil {
			p.log.Error("loading the push queue; it is loaded again at the next takeover", "partition", part, "error", err)
		}
	}()
}

// DisownPartition stops this cluster node's work on partition part's
// queue: the node no longer owns the partition, so it can neither send
// for it nor settle what it sent. Everything of it in memory is forgotten
// (the store keeps it for the next owner); a send in flight finishes, and
// the next owner sends it again.
func (p *Pusher) DisownPartition(part int) {
	q := p.queues[part]
	p.mu.Lock()
	if !q.owned {
		p.mu.Unlock()
		return
	}
	q.owned = false
	q.tenure++
	q.loading = nil
	for _, e := range q.entries {
		// Settled in memory only: a worker that pops it skips it, a retry
		// does not reschedule it, finish does not settle it.
		p.finishLocked(e)
	}
	p.mu.Unlock()
	for _, l := range p.lanes {
		l.mu.Lock()
		l.q = slices.DeleteFunc(l.q, func(e *entry) bool { return e.q == q })
		l.mu.Unlock()
	}
	p.inMu.Lock()
	if len(p.queues) == 1 {
		p.inbox = nil
	} else {
		p.inbox = slices.DeleteFunc(p.inbox, func(a store.Appended) bool { return p.st.UserPartition(a.User) == part })
	}
	p.inMu.Unlock()
	p.doneMu.Lock()
	q.done = nil
	p.doneMu.Unlock()
	if len(p.lanes) > 0 {
		p.log.Info("push queue left to the new owner of the data", "partition", part)
	}
}

// queueOf is the queue of user's partition: the recipient's.
func (p *Pusher) queueOf(user string) *queue {
	if len(p.queues) == 1 {
		return p.queues[0]
	}
	return p.queues[p.st.UserPartition(user)]
}

// notOwner reports an error of a write refused because this node no
// longer owns the data (cluster mode): the next owner has the queue.
func notOwner(err error) bool { return errors.Is(err, store.ErrNotOwner) }

// Close stops sending; what is queued stays in the store for the next start.
func (p *Pusher) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	if p.cancel == nil {
		p.wg.Wait() // a load begun by Own before Start
		return
	}
	p.cancel()
	p.wg.Wait()
	p.flushDone()
}

// Committed is the store's commit hook: it keeps the `msg` events for the
// intake goroutine and returns at once. In a cluster it is to be fed only
// the commits of partitions this node owns (a commit's events are all of
// one partition); each notification goes to its recipient's partition's
// queue.
func (p *Pusher) Committed(evs []store.Appended) {
	added := false
	p.inMu.Lock()
	for _, e := range evs {
		if e.Rewritten {
			continue // a recalled or edited copy, not a new message
		}
		// The stored event starts {"Seq":N,"Event":"msg" — a cheap filter
		// before any decoding, which happens off the writer.
		if bytes.Contains(e.Data[:min(len(e.Data), 64)], []byte(`"Event":"msg"`)) {
			p.inbox = append(p.inbox, e)
			added = true
		}
	}
	p.inMu.Unlock()
	if added {
		select {
		case p.inWake <- struct{}{}:
		default:
		}
	}
}

func (p *Pusher) intake() {
	defer p.wg.Done()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.inWake:
		}
		// Let a burst gather so its pushes are queued in one commit: a
		// tenth of the grace, at most 20 ms, is nothing to a phone.
		t := time.NewTimer(min(p.cfg.Grace/10, 20*time.Millisecond))
		select {
		case <-p.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		for {
			p.inMu.Lock()
			batch := p.inbox
			p.inbox = nil
			p.inMu.Unlock()
			if len(batch) == 0 {
				break
			}
			p.plan(batch)
		}
	}
}

// plan turns committed events into durable notifications.
func (p *Pusher) plan(batch []store.Appended) {
	var ns []Notification
	due := p.now().Add(p.cfg.Grace).UnixMilli()
	for _, a := range batch {
		// Most users have no token: ask that first, before decoding.
		toks, err := p.st.PushTokens(a.User)
		if err != nil {
			p.log.Error("reading push tokens", "user", a.User, "error", err)
			continue
		}
		if len(toks) == 0 {
			continue
		}
		var ev msgEvent
		if err := json.Unmarshal(a.Data, &ev); err != nil || ev.Event != "msg" {
			continue
		}
		// Only the recipient is alerted; the sender's own timeline copy
		// (multi-device sync) and notes to self are not pushed.
		if a.User != ev.To || ev.From == ev.To {
			continue
		}
		c, ok := contentOf(&ev)
		if !ok {
			continue
		}
		for _, t := range toks {
			if !p.Enabled(t.Vendor) || p.connected(a.User, t.Device) {
				continue
			}
			ns = append(ns, Notification{
				User: a.User, Device: t.Device, Vendor: t.Vendor, Token: t.Token, BundleID: t.BundleID,
				Seq: a.Seq, MsgKey: ev.MsgKey, From: ev.From,
				Title: c.title, Body: c.body, Ext: c.ext, Android: c.android, APNs: c.apns,
				Due: due,
			})
			if c.sound != "" && ns[len(ns)-1].APNs.Sound == "" {
				ns[len(ns)-1].APNs.Sound = c.sound
			}
		}
	}
	p.enqueue(ns)
}

// enqueue makes ns durable, each in its recipient's queue, then schedules
// them.
func (p *Pusher) enqueue(ns []Notification) {
	if len(p.queues) == 1 {
		p.enqueueIn(p.queues[0], ns)
		return
	}
	// A commit's events are of one partition: mostly one round.
	for len(ns) > 0 {
		q := p.queueOf(ns[0].User)
		var same, rest []Notification
		for _, n := range ns {
			if p.queueOf(n.User) == q {
				same = append(same, n)
			} else {
				rest = append(rest, n)
			}
		}
		p.enqueueIn(q, same)
		ns = rest
	}
}

// enqueueIn makes ns, all of q's partition, durable, then schedules them.
func (p *Pusher) enqueueIn(q *queue, ns []Notification) {
	if len(ns) == 0 {
		return
	}
	items := make([][]byte, len(ns))
	for i := range ns {
		items[i], _ = json.Marshal(&ns[i])
	}
	ids, err := q.st.EnqueuePushes(items)
	if notOwner(err) {
		// A cluster node that has just lost the data to another: the
		// messages are unaffected, these notifications are not sent.
		p.log.Warn("pushes not queued: this node no longer owns the data", "count", len(ns))
		return
	} else if err != nil {
		// The store is closing or failing: nothing was accepted, and the
		// messages themselves are unaffected.
		p.log.Error("queueing pushes", "count", len(ns), "error", err)
		return
	}
	p.mu.Lock()
	for i, id := range ids {
		// Not working the queue (ownership changed meanwhile): the store
		// has them, for whichever node loads it next.
		if !q.owned || q.entries[id] != nil {
			continue
		}
		if q.loading != nil {
			q.loading[id] = true
		}
		p.addLocked(q, id, ns[i])
	}
	p.mu.Unlock()
	p.kick()
}

func (p *Pusher) addLocked(q *queue, id uint64, n Notification) {
	e := &entry{q: q, id: id, n: n, due: time.UnixMilli(n.Due), index: -1}
	q.entries[id] = e
	k := n.User + "\x00" + n.MsgKey
	p.byMsg[k] = append(p.byMsg[k], e)
	heap.Push(&p.sched, e)
	p.queued++
	p.metrics.queued.Store(int64(p.queued)) // under mu, as every change of entries
}

func (p *Pusher) kick() {
	select {
	case p.schedKick <- struct{}{}:
	default:
	}
}

func (p *Pusher) scheduler() {
	defer p.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		p.mu.Lock()
		var due []*entry
		now := p.now()
		for len(p.sched) > 0 && !p.sched[0].due.After(now) {
			e := heap.Pop(&p.sched).(*entry)
			e.state = sending
			due = append(due, e)
		}
		wait := time.Hour
		if len(p.sched) > 0 {
			wait = p.sched[0].due.Sub(now)
		}
		p.mu.Unlock()
		for _, e := range due {
			p.dispatch(e)
		}
		t.Reset(wait)
		select {
		case <-p.ctx.Done():
			return
		case <-p.schedKick:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
		case <-t.C:
		}
	}
}

// dispatch drops a notification whose event the device has meanwhile
// received, and hands the others to their vendor.
func (p *Pusher) dispatch(e *entry) {
	n := &e.n
	if !n.Silent {
		if p.connected(n.User, n.Device) {
			p.finish(e)
			p.metrics.vendor(n.Vendor).cancelled.Add(1)
			return
		}
		if cur, _, err := p.st.Cursor(n.User, n.Device); err == nil && cur >= n.Seq {
			p.finish(e)
			p.metrics.vendor(n.Vendor).cancelled.Add(1)
			return
		}
	}
	l := p.lanes[n.Vendor]
	if l == nil {
		// The vendor was switched off since this was queued.
		p.log.Warn("dropping push for a vendor that is off", "vendor", n.Vendor, "user", n.User)
		p.finish(e)
		return
	}
	if m := p.metrics.vendor(n.Vendor); m.stopped.Load() {
		// Stopped for a configuration error: every send would fail alike.
		m.failed.Add(1)
		p.finish(e)
		return
	}
	l.push(e)
}

func (p *Pusher) worker(l *lane) {
	defer p.wg.Done()
	for {
		e := l.pop(p.ctx)
		if e == nil {
			return
		}
		p.mu.Lock()
		cancelled := e.state == settled // recalled while it waited in the lane
		e.inflight = !cancelled
		p.mu.Unlock()
		if !cancelled {
			p.deliver(l.v, e)
		}
	}
}

func (p *Pusher) deliver(v vendor, e *entry) {
	n := e.n
	if !n.Silent {
		n.Badge = p.badge(n.User)
	}
	ctx, cancel := context.WithTimeout(p.ctx, sendTimeout)
	err := v.send(ctx, &n)
	cancel()
	m := p.metrics.vendor(v.name())
	// A recall (Withdrawn) either saw this send in flight and marked it, or
	// comes after and finds it remembered: one lock decides which.
	p.mu.Lock()
	e.inflight = false
	withdrawn := e.withdrawn
	if err == nil && !withdrawn && !n.Silent {
		p.remember(e.q, n)
	}
	p.mu.Unlock()
	if err == nil {
		m.sent.Add(1)
		l := p.lanes[v.name()]
		l.configOK()
		if withdrawn && !n.Silent && silentCapable[n.Vendor] {
			// Recalled while it was being sent: take it back at once.
			s := Notification{User: n.User, Device: n.Device, Vendor: n.Vendor, Token: n.Token, BundleID: n.BundleID,
				Seq: n.Seq, MsgKey: n.MsgKey, Silent: true, Due: p.now().UnixMilli()}
			go p.enqueue([]Notification{s})
		}
		p.finish(e)
		return
	}
	if p.ctx.Err() != nil {
		return // shutting down: it stays queued for the next start
	}
	se := classify(err)
	switch se.kind {
	case invalidToken:
		// A cluster node that no longer owns the data cannot remove it
		// (notOwner): the next owner sends this again and hears the same.
		switch removed, derr := p.st.DeletePushTokenIf(n.User, n.Device, n.Token); {
		case derr != nil && !notOwner(derr):
			p.log.Error("removing invalid token", "vendor", v.name(), "user", n.User, "error", derr)
		case removed:
			m.removed.Add(1)
		}
		p.log.Info("push token removed", "vendor", v.name(), "user", n.User, "device", n.Device, "reason", se.msg)
		m.failed.Add(1)
		p.finish(e)
	case retry:
		if withdrawn {
			p.finish(e) // recalled meanwhile: nothing to retry
			return
		}
		e.n.Attempts++
		if e.n.Attempts >= p.cfg.MaxAttempts {
			p.log.Error("push failed after retries", "vendor", v.name(), "user", n.User, "attempts", e.n.Attempts, "error", se.msg)
			m.failed.Add(1)
			p.finish(e)
			return
		}
		m.retried.Add(1)
		delay := p.backoff(e.n.Attempts, se.retryAfter)
		p.log.Debug("push retry", "vendor", v.name(), "in", delay, "error", se.msg)
		due := p.now().Add(delay)
		// The attempt count and the backoff survive a restart too.
		e.n.Due = due.UnixMilli()
		if b, err := json.Marshal(&e.n); err == nil {
			if err := e.q.st.UpdatePush(e.id, b); err != nil && !notOwner(err) {
				p.log.Warn("recording a retry", "error", err)
			}
		}
		p.mu.Lock()
		if e.state != settled {
			e.due = due
			e.state = scheduled
			heap.Push(&p.sched, e)
		}
		p.mu.Unlock()
		p.kick()
	case misconfigured:
		// The token is kept: the vendor blames the config, not the device.
		m.configErrors.Add(1)
		m.failed.Add(1)
		first, stop := p.lanes[v.name()].configError(n.User)
		if first {
			p.log.Error("push configuration error: the vendor's answer blames Duet's push settings, not the device token, which is kept",
				"vendor", v.name(), "user", n.User, "error", se.msg)
		}
		if stop && !m.stopped.Swap(true) {
			p.log.Error("push vendor stopped until the config is fixed and Duet restarted: devices of several users answered a configuration error",
				"vendor", v.name(), "users", configErrorUsers, "error", se.msg)
		}
		p.finish(e)
	default:
		p.log.Error("push refused", "vendor", v.name(), "user", n.User, "error", se.msg)
		m.failed.Add(1)
		p.finish(e)
	}
}

// backoff is RetryBase·2^(attempt-1), capped, with "equal jitter": half
// fixed, half random, so retries of many devices spread out. A vendor's
// Retry-After is a floor.
func (p *Pusher) backoff(attempt int, floor time.Duration) time.Duration {
	d := p.cfg.RetryBase << min(attempt-1, 20)
	if d > maxBackoff || d <= 0 {
		d = maxBackoff
	}
	d = d/2 + rand.N(d/2+1)
	return max(d, floor)
}

// finish settles e: it leaves memory now and the store soon.
func (p *Pusher) finish(e *entry) {
	p.mu.Lock()
	done := p.finishLocked(e)
	p.mu.Unlock()
	if done {
		p.settle(e.q, e.id)
	}
}

// finishLocked forgets e; the caller then settles it (if it reports true).
func (p *Pusher) finishLocked(e *entry) bool {
	if e.state == settled {
		return false
	}
	if e.index >= 0 {
		heap.Remove(&p.sched, e.index)
	}
	e.state = settled
	delete(e.q.entries, e.id)
	p.queued--
	p.metrics.queued.Store(int64(p.queued))
	k := e.n.User + "\x00" + e.n.MsgKey
	es := p.byMsg[k]
	for i, o := range es {
		if o == e {
			es = append(es[:i], es[i+1:]...)
			break
		}
	}
	if len(es) == 0 {
		delete(p.byMsg, k)
	} else {
		p.byMsg[k] = es
	}
	return true
}

// settle has q's id removed from the store by the deleter.
func (p *Pusher) settle(q *queue, id uint64) {
	p.doneMu.Lock()
	q.done = append(q.done, id)
	p.doneMu.Unlock()
	select {
	case p.doneWake <- struct{}{}:
	default:
	}
}

// deleter removes settled notifications from the store, many per commit.
func (p *Pusher) deleter() {
	defer p.wg.Done()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.doneWake:
			// Gather a burst of settled pushes into one delete commit.
			t := time.NewTimer(20 * time.Millisecond)
			select {
			case <-p.ctx.Done():
				t.Stop()
				return // Close flushes what is left
			case <-t.C:
			}
			p.flushDone()
		}
	}
}

func (p *Pusher) flushDone() {
	for _, q := range p.queues {
		p.doneMu.Lock()
		ids, shown := q.done, q.shown
		q.done, q.shown = nil, nil
		p.doneMu.Unlock()
		if len(ids) == 0 && len(shown) == 0 {
			continue
		}
		// What was shown is written with the queue's deletes, in the
		// recipients' partition: a recall after a restart, or on the node
		// that takes the data next, finds it there. Lost with a failed
		// commit, its push stays queued and is sent (and recorded) again.
		if err := q.st.SettlePushes(ids, shown); notOwner(err) {
			// Left in the queue, the next owner of the data sends them again.
			p.log.Info("sent pushes left in the queue: this node no longer owns the data", "partition", q.part, "count", len(ids))
		} else if err != nil {
			// Left in the queue, they are resent after a restart: at least once.
			p.log.Warn("removing sent pushes from the queue", "partition", q.part, "count", len(ids), "error", err)
		}
	}
}

// remember records n, shown by q's partition's device, for a recall.
func (p *Pusher) remember(q *queue, n Notification) {
	k := n.User + "\x00" + n.MsgKey
	now := p.now()
	// Only what a silent update needs: no text is kept, in memory or in
	// the store.
	n = Notification{User: n.User, Device: n.Device, Vendor: n.Vendor, Token: n.Token, BundleID: n.BundleID, Seq: n.Seq, MsgKey: n.MsgKey}
	if data, err := json.Marshal(n); err == nil {
		p.doneMu.Lock()
		q.shown = append(q.shown, store.ShownPush{User: n.User, MsgKey: n.MsgKey, Vendor: n.Vendor, Device: n.Device, Data: data, Expire: now.Add(sentMemory)})
		p.doneMu.Unlock()
	}
	p.sentMu.Lock()
	defer p.sentMu.Unlock()
	p.sent[k] = append(p.sent[k], n)
	p.sentFIFO = append(p.sentFIFO, sentMark{k, now})
	for len(p.sentFIFO) > 0 && (len(p.sentFIFO) > sentMax || now.Sub(p.sentFIFO[0].at) > sentMemory) {
		delete(p.sent, p.sentFIFO[0].key)
		p.sentFIFO = p.sentFIFO[1:]
	}
}

// Withdrawn is called when msgKey, a message to user, was recalled: a push
// still waiting is cancelled, and devices that already showed it get a
// background update where the vendor has one (APNs, FCM, Huawei, Xiaomi)
// and nothing at all elsewhere: never anything visible.
func (p *Pusher) Withdrawn(user, msgKey string) {
	k := user + "\x00" + msgKey
	p.mu.Lock()
	var cancelled []*entry
	for _, e := range slices.Clone(p.byMsg[k]) {
		switch {
		case e.inflight:
			e.withdrawn = true // deliver follows a success with a silent update
		case p.finishLocked(e):
			cancelled = append(cancelled, e)
		}
	}
	p.mu.Unlock()
	for _, e := range cancelled {
		p.settle(e.q, e.id)
	}
	p.sentMu.Lock()
	shown := p.sent[k]
	delete(p.sent, k)
	p.sentMu.Unlock()
	// Not yet written: it need not be, now.
	q := p.queueOf(user)
	p.doneMu.Lock()
	q.shown = slices.DeleteFunc(q.shown, func(sp store.ShownPush) bool { return sp.User == user && sp.MsgKey == msgKey })
	p.doneMu.Unlock()
	// Off the caller's path: a recall command must not wait for a commit
	// (nor for a store read).
	go p.takeBack(user, msgKey, shown)
}

// takeBack sends a silent update for each notification of user's message
// msgKey that was shown: those this process remembers, else those the
// store recorded (shown before a restart, or by the cluster node that
// owned the data before), whose records it takes out of the store.
func (p *Pusher) takeBack(user, msgKey string, shown []Notification) {
	recs, err := p.st.TakeShown(user, msgKey)
	if err != nil && !notOwner(err) {
		p.log.Warn("reading the notifications shown for a recalled message", "user", user, "msgkey", msgKey, "error", err)
	}
	if len(shown) == 0 {
		for _, r := range recs {
			var n Notification
			if json.Unmarshal(r, &n) == nil {
				shown = append(shown, n)
			}
		}
	}
	if len(shown) == 0 {
		return
	}
	due := p.now().UnixMilli()
	var ns []Notification
	for _, n := range shown {
		if !silentCapable[n.Vendor] {
			continue // OPPO, vivo and Meizu show every push: send nothing
		}
		ns = append(ns, Notification{
			User: n.User, Device: n.Device, Vendor: n.Vendor, Token: n.Token, BundleID: n.BundleID,
			Seq: n.Seq, MsgKey: n.MsgKey, Silent: true, Due: due,
		})
	}
	p.enqueue(ns)
}

// silentCapable are the vendors with a push that shows nothing (APNs
// background, FCM and Huawei data messages, MiPush pass-through).
var silentCapable = map[string]bool{"apns": true, "fcm": true, "huawei": true, "xiaomi": true}

// RemoveUserTokens forgets every push token of user: logout and kick.
func (p *Pusher) RemoveUserTokens(user string) error {
	_, err := p.st.DeleteUserPushTokens(user)
	return err
}

// Pending is the number of notifications queued or being sent.
func (p *Pusher) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.queued
}

// schedule is a min-heap of entries by due time.
type schedule []*entry

func (s schedule) Len() int           { return len(s) }
func (s schedule) Less(i, j int) bool { return s[i].due.Before(s[j].due) }
func (s schedule) Swap(i, j int) {
	s[i], s[j] = s[j], s[i]
	s[i].index, s[j].index = i, j
}
func (s *schedule) Push(x any) {
	e := x.(*entry)
	e.index = len(*s)
	*s = append(*s, e)
}
func (s *schedule) Pop() any {
	old := *s
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*s = old[:len(old)-1]
	e.index = -1
	return e
}

// lane is one vendor's unbounded queue and its workers: dispatch never
// waits for a vendor, and at most `workers` requests to it are in flight.
type lane struct {
	v       vendor
	workers int
	mu      sync.Mutex
	q       []*entry
	wake    chan struct{}

	cfgMu     sync.Mutex
	cfgUsers  map[string]bool // users whose devices answered a config error since the last success
	cfgLogged bool
}

// configError records a configuration error for a device of user. first
// is true for the vendor's first one (logged once); stop when devices of
// configErrorUsers users answered so with no success in between.
func (l *lane) configError(user string) (first, stop bool) {
	l.cfgMu.Lock()
	defer l.cfgMu.Unlock()
	first = !l.cfgLogged
	l.cfgLogged = true
	if l.cfgUsers == nil {
		l.cfgUsers = map[string]bool{}
	}
	l.cfgUsers[user] = true
	return first, len(l.cfgUsers) >= configErrorUsers
}

// configOK records a success: the config works for some devices.
func (l *lane) configOK() {
	l.cfgMu.Lock()
	if len(l.cfgUsers) > 0 {
		l.cfgUsers = nil
	}
	l.cfgMu.Unlock()
}

func (l *lane) push(e *entry) {
	l.mu.Lock()
	l.q = append(l.q, e)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *lane) pop(ctx context.Context) *entry {
	for {
		l.mu.Lock()
		if len(l.q) > 0 {
			e := l.q[0]
			l.q[0] = nil
			l.q = l.q[1:]
			more := len(l.q) > 0
			l.mu.Unlock()
			if more {
				select {
				case l.wake <- struct{}{}:
				default:
				}
			}
			return e
		}
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-l.wake:
		}
	}
}

// Kicker is what a kick disconnects through (broker.Devices).
type Kicker interface{ Kick(user string) }

// Kicker wraps next so a kick (a forced logout) also forgets the user's
// push tokens, as logout does; a mere disconnect keeps them.
func (p *Pusher) Kicker(next Kicker) Kicker { return kicker{p, next} }

type kicker struct {
	p    *Pusher
	next Kicker
}

func (k kicker) Kick(user string) {
	if err := k.p.RemoveUserTokens(user); err != nil {
		k.p.log.Error("removing push tokens on kick", "user", user, "error", err)
	}
	k.next.Kick(user)
}
