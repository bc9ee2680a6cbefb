package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/duet-im/duet/hooks"
	"github.com/duet-im/duet/store"
)

// Delivery: the store is the queue.
//
// Every connected device has a pump, a goroutine that runs only while the
// device has something to be sent (an idle device costs no goroutine,
// issue 11 §4). A device that subscribes to
// its timeline (im/{me}/in, or a wildcard covering it) gets, in Seq order,
// every event after its cursor, read from the store, with at most Window
// events unacknowledged; when it has caught up with the Seq the timeline had
// when it subscribed, it gets a sync_complete. New commits wake the pumps of
// the users they touch. Nothing is handed to mochi's inflight queue: packets
// are written straight to the client with packet IDs we track, and PUBACKs
// are taken from the read path (OnPacketRead). A slow device therefore costs
// Window events of memory, whatever its backlog, and a sender never waits
// for any receiver.
//
// Cursors (highest PUBACKed Seq) are kept in memory and flushed to the store
// every flushEvery acks, on a timer and at disconnect. A cursor lost in a
// crash only re-delivers events; devices de-duplicate by Seq.
//
// Lock order: Devices.mu before Device.mu. A pump never holds Device.mu while
// it writes to the network.

const flushEvery = 256

// Devices is the registry of connected devices.
type Devices struct {
	store  *store.Store
	log    *slog.Logger
	window int

	mu    sync.RWMutex
	users map[string]userDevices // UserID → its devices

	pumps sync.WaitGroup // every pump goroutine, so Close can wait for them

	// recent keeps the last events committed for each user with a device
	// online, so pumps deliver live traffic without reading the store.
	recentMu sync.Mutex
	recent   map[string]*recentEvents

	Metrics DeliveryMetrics
}

// DeliveryMetrics are delivery counters, read by the metrics endpoint.
type DeliveryMetrics struct {
	Delivered   atomic.Int64 // timeline events written to devices
	Acked       atomic.Int64
	LiveSent    atomic.Int64
	LiveDropped atomic.Int64 // live events dropped because a device's live queue was full
	Connected   atomic.Int64
	// PendingMax is the most unacknowledged events any device has had: it
	// stays at or below the window however large a backlog is.
	PendingMax atomic.Int64
}

func (m *DeliveryMetrics) observePending(n int) {
	for {
		cur := m.PendingMax.Load()
		if int64(n) <= cur || m.PendingMax.CompareAndSwap(cur, int64(n)) {
			return
		}
	}
}

func newDevices(st *store.Store, log *slog.Logger, window int) *Devices {
	return &Devices{store: st, log: log, window: window, users: make(map[string]userDevices), recent: make(map[string]*recentEvents)}
}

// Device is one connected MQTT client of a user.
type Device struct {
	d    *Devices
	cl   *mqtt.Client
	User string
	ID   string // client id
	// ephemeral devices (server-assigned client ids) keep no cursor.
	ephemeral bool

	mu sync.Mutex
	// The pump: running while a goroutine runs pump; woken when there may
	// be timeline events to send (a commit, a PUBACK into a full window,
	// a subscription); liveQ holds live events to send (maxLive at most).
	running bool
	woken   bool
	liveQ   [][]byte
	stopped bool
	closed  chan struct{} // closed once close has flushed the cursor

	subscribed bool   // to the timeline
	started    bool   // next was set from the cursor: the timeline has a position on this connection
	liveSub    bool   // to im/{me}/live
	next       uint64 // next Seq to send
	acked      uint64 // cursor
	flushed    uint64 // cursor as last written to the store
	syncTarget uint64 // send sync_complete once next > syncTarget; 0 = none owed
	syncOwed   bool
	syncDone   func(lastSeq uint64) // openim/sync's reply, sent just before sync_complete
	// pending maps packet id → Seq (0 for sync_complete). Nil while
	// nothing is in flight: an idle device keeps no map (issue 11 §4).
	pending map[uint16]uint64
	lastPID uint16
	window  int
	// own lists, ascending, the Seqs of this device's own sends not yet
	// reached by the pump: it holds their reply, so they are skipped, not
	// sent (PROTOCOL §4: my sends reach my other devices). skipped is the
	// highest Seq skipped while packets were in flight; it joins the cursor
	// once they are all acknowledged.
	own     []uint64
	skipped uint64
}

// maxOwn bounds Device.own for a device that sends without reading its
// timeline; the oldest entries go, and those events are sent after all.
const maxOwn = 1024

func (ds *Devices) attach(cl *mqtt.Client, user string, ephemeral bool) *Device {
	window := ds.window
	if cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.ReceiveMaximum > 0 && int(cl.Properties.Props.ReceiveMaximum) < window {
		window = int(cl.Properties.Props.ReceiveMaximum) // [MQTT-3.3.4-9]
	}
	dev := &Device{
		d: ds, cl: cl, User: user, ID: cl.ID, ephemeral: ephemeral,
		window: window,
	}
	ds.mu.Lock()
	m := ds.users[user]
	i := m.index(cl.ID)
	var old *Device
	if i >= 0 {
		old, m[i] = m[i], dev
	} else {
		ds.users[user] = append(m, dev)
	}
	ds.mu.Unlock()
	if old != nil {
		old.close()
	}
	ds.Metrics.Connected.Add(1)
	return dev
}

func (ds *Devices) get(user, id string) *Device {
	ds.mu.RLock()
	defer ds.mu.RUnlock()
	return ds.users[user].get(id)
}

// userDevices are the connected devices of a user, one per client id. A
// user has one or a few: a slice costs an idle connection a pointer where
// a map of its own cost a few hundred bytes (issue 11 §4).
type userDevices []*Device

func (m userDevices) index(id string) int {
	for i, dev := range m {
		if dev.ID == id {
			return i
		}
	}
	return -1
}

func (m userDevices) get(id string) *Device {
	if i := m.index(id); i >= 0 {
		return m[i]
	}
	return nil
}

// detach removes dev (if it is still the registered device for its id),
// flushes its cursor and stops its pump.
func (ds *Devices) detach(dev *Device) {
	// Stopped and flushed before it leaves the map: a successor with the
	// same client id either finds it there, and attach waits in close for
	// the flush, or comes after it, when the cursor is in the store. Out of
	// the map first, a quick reconnect read the cursor before the flush
	// and replayed what the device had acknowledged.
	dev.close()
	ds.mu.Lock()
	if m, i := ds.users[dev.User], ds.users[dev.User].index(dev.ID); i >= 0 && m[i] == dev {
		m = slices.Delete(m, i, i+1)
		ds.users[dev.User] = m
		if len(m) == 0 {
			delete(ds.users, dev.User)
			ds.recentMu.Lock()
			delete(ds.recent, dev.User)
			ds.recentMu.Unlock()
		}
	}
	ds.mu.Unlock()
}

// close stops the device: its pump ends at its next step and none starts
// again. It returns once the cursor is flushed, also to a second caller
// (attach replacing the device while detach closes it): the successor
// reads that cursor.
func (dev *Device) close() {
	dev.mu.Lock()
	stopped := dev.stopped
	dev.stopped, dev.liveQ = true, nil
	if dev.closed == nil {
		dev.closed = make(chan struct{})
	}
	closed := dev.closed
	dev.mu.Unlock()
	if stopped {
		<-closed
		return
	}
	dev.flush()
	dev.d.Metrics.Connected.Add(-1)
	close(closed)
}

// recentSize is how many recent events are kept per online user.
const recentSize = 32

// recentEvents is a ring of a user's last committed events, contiguous in Seq.
type recentEvents struct {
	evs   [recentSize]store.Event
	first uint64 // Seq of the oldest kept event
	n     int
}

// replace swaps in the rewritten data of a kept event.
func (r *recentEvents) replace(seq uint64, data []byte) {
	if r.n > 0 && seq >= r.first && seq < r.first+uint64(r.n) {
		r.evs[seq%recentSize] = store.Event{Seq: seq, Data: data}
	}
}

func (r *recentEvents) add(seq uint64, data []byte) {
	if r.n > 0 && seq != r.first+uint64(r.n) {
		r.n = 0 // not contiguous (cannot happen in commit order): start again
	}
	if r.n == 0 {
		r.first = seq
	}
	if r.n == recentSize {
		r.first++
		r.n--
	}
	r.evs[(seq)%recentSize] = store.Event{Seq: seq, Data: data}
	r.n++
}

// from returns up to max kept events starting at Seq next, or nil when next
// is not kept (or the user has no ring).
func (r *recentEvents) from(next uint64, max int) []store.Event {
	if r == nil || r.n == 0 || next < r.first || next >= r.first+uint64(r.n) {
		return nil
	}
	var out []store.Event
	for seq := next; seq < r.first+uint64(r.n) && len(out) < max; seq++ {
		out = append(out, r.evs[seq%recentSize])
	}
	return out
}

// Committed keeps the new events of online users and wakes their pumps.
// The writer calls it in commit order.
//
// The store calls it before it publishes the group's new Seqs (LastSeq), so
// a pump learns of a new event only here: from the ring, after its device
// knows which events are its own.
func (ds *Devices) Committed(evs []store.Appended) {
	ds.mu.RLock()
	defer ds.mu.RUnlock()
	for _, e := range evs {
		if e.Origin != "" {
			if dev := ds.users[e.User].get(e.Origin); dev != nil {
				dev.markOwn(e.Seq)
			}
		}
	}
	ds.recentMu.Lock()
	for _, e := range evs {
		if len(ds.users[e.User]) == 0 {
			continue
		}
		if e.Rewritten {
			if r := ds.recent[e.User]; r != nil {
				r.replace(e.Seq, e.Data)
			}
			continue
		}
		r := ds.recent[e.User]
		if r == nil {
			r = &recentEvents{}
			ds.recent[e.User] = r
		}
		r.add(e.Seq, e.Data)
	}
	ds.recentMu.Unlock()
	var prev string
	for _, e := range evs {
		if e.User == prev || e.Rewritten {
			continue
		}
		prev = e.User
		for _, dev := range ds.users[e.User] {
			dev.poke()
		}
	}
}

// lastSeq is user's last committed Seq as a pump may use it: the store's, or
// the ring's newest event, which Committed adds before the store publishes
// its Seq.
func (ds *Devices) lastSeq(user string) (uint64, error) {
	last, err := ds.store.LastSeq(user)
	ds.recentMu.Lock()
	if r := ds.recent[user]; r != nil && r.n > 0 {
		last = max(last, r.first+uint64(r.n)-1)
	}
	ds.recentMu.Unlock()
	return last, err
}

// readTimeline serves a pump from the recent events when it can, else from
// the store.
func (ds *Devices) readTimeline(user string, after uint64, max int) ([]store.Event, error) {
	ds.recentMu.Lock()
	evs := ds.recent[user].from(after+1, max)
	ds.recentMu.Unlock()
	if evs != nil {
		return evs, nil
	}
	return ds.store.ReadTimeline(user, after, max)
}

// Online reports how many devices of user are connected.
func (ds *Devices) Online(user string) int {
	ds.mu.RLock()
	defer ds.mu.RUnlock()
	return len(ds.users[user])
}

// Connected reports whether user's device clientID is connected (push/).
func (ds *Devices) Connected(user, clientID string) bool {
	ds.mu.RLock()
	defer ds.mu.RUnlock()
	return ds.users[user].get(clientID) != nil
}

// maxLive bounds a device's queue of live events.
const maxLive = 256

// Live queues an ephemeral event for user's devices that listen on
// im/{user}/live. It never blocks: a device whose live queue is full misses
// the event, which is what ephemeral means.
func (ds *Devices) Live(user string, payload []byte) {
	ds.mu.RLock()
	defer ds.mu.RUnlock()
	for _, dev := range ds.users[user] {
		dev.mu.Lock()
		if !dev.liveSub || dev.stopped {
			dev.mu.Unlock()
			continue
		}
		if len(dev.liveQ) >= maxLive {
			dev.mu.Unlock()
			ds.Metrics.LiveDropped.Add(1)
			continue
		}
		dev.liveQ = append(dev.liveQ, payload)
		start := dev.startPump()
		dev.mu.Unlock()
		if start {
			go dev.pump()
		}
	}
}

// closeAll stops every device and waits until no pump runs, so nothing
// reads the store after the broker closed.
func (ds *Devices) closeAll() {
	for _, dev := range ds.all() {
		ds.detach(dev)
	}
	ds.pumps.Wait()
}

// all lists the connected devices.
func (ds *Devices) all() []*Device {
	ds.mu.RLock()
	defer ds.mu.RUnlock()
	var all []*Device
	for _, m := range ds.users {
		for _, dev := range m {
			all = append(all, dev)
		}
	}
	return all
}

// flushAll writes every device's cursor; called on a timer.
func (ds *Devices) flushAll() {
	for _, dev := range ds.all() {
		dev.flush()
	}
}

// poke tells the pump there may be timeline events to send, starting it
// if it is not running.
func (dev *Device) poke() {
	dev.mu.Lock()
	dev.woken = true
	start := dev.startPump()
	dev.mu.Unlock()
	if start {
		go dev.pump()
	}
}

// startPump reports whether the caller must start the pump goroutine: none
// runs and the device is not stopped. Called with dev.mu held; closeAll
// stops every device before it waits for the pumps, so none starts after.
func (dev *Device) startPump() bool {
	if dev.running || dev.stopped {
		return false
	}
	dev.running = true
	dev.d.pumps.Add(1)
	return true
}

// subscribe starts timeline delivery: replay from the cursor, then
// sync_complete. A connection gets each event once (issue 12 §2): the
// cursor is read only when its first subscription starts. A subscription
// taken again after an UNSUBSCRIBE goes on from the last Seq sent (not
// from the acknowledged cursor, which would send again what is in flight)
// and ends with a sync_complete of its own. A SUBSCRIBE while subscribed
// does not come here (broker.go, applySubscriptions).
func (dev *Device) subscribe() error {
	dev.mu.Lock()
	started := dev.started
	dev.mu.Unlock()
	cursor := uint64(0)
	if !started {
		var err error
		if cursor, err = dev.startCursor(); err != nil {
			return err
		}
	}
	last, err := dev.d.store.LastSeq(dev.User)
	if err != nil {
		return err
	}
	dev.mu.Lock()
	if !dev.started {
		if cursor > dev.acked {
			dev.acked, dev.flushed = cursor, cursor
		}
		dev.next = dev.acked + 1
		dev.started = true
	}
	dev.subscribed = true
	dev.syncTarget, dev.syncOwed = last, true
	dev.mu.Unlock()
	dev.poke()
	return nil
}

// startCursor is where the device's timeline starts: its stored cursor, or
// for a device seen for the first time the user's high water.
func (dev *Device) startCursor() (uint64, error) {
	cursor, seen, err := uint64(0), false, error(nil)
	if !dev.ephemeral {
		cursor, seen, err = dev.d.store.Cursor(dev.User, dev.ID)
		if err != nil {
			return 0, err
		}
	}
	if seen {
		return cursor, nil
	}
	// PROTOCOL §5: a device seen for the first time starts at the oldest
	// event no device of the user has received yet.
	if cursor, err = dev.d.store.HighWater(dev.User); err != nil {
		return 0, err
	}
	if !dev.ephemeral {
		if err := dev.d.store.SetCursor(dev.User, dev.ID, cursor); err != nil {
			return 0, err
		}
	}
	return cursor, nil
}

// Resync replays device's timeline after fromSeq (openim/sync), then calls
// done and sends sync_complete.
func (ds *Devices) Resync(user, device string, fromSeq uint64, done func(lastSeq uint64)) error {
	dev := ds.get(user, device)
	if dev == nil {
		return errors.New("device is not connected")
	}
	last, err := ds.store.LastSeq(user)
	if err != nil {
		return err
	}
	dev.mu.Lock()
	if !dev.subscribed {
		dev.mu.Unlock()
		return fmt.Errorf("subscribe to im/%s/in before openim/sync", user)
	}
	// A sync still running is superseded: answer it with where it got to.
	prev, at := dev.syncDone, dev.next-1
	dev.next = fromSeq + 1
	dev.syncTarget, dev.syncOwed, dev.syncDone = last, true, done
	dev.mu.Unlock()
	if prev != nil {
		prev(at)
	}
	dev.poke()
	return nil
}

func (dev *Device) unsubscribe() {
	dev.mu.Lock()
	dev.subscribed, dev.syncOwed = false, false
	dev.mu.Unlock()
}

func (dev *Device) setLive(on bool) {
	dev.mu.Lock()
	dev.liveSub = on
	dev.mu.Unlock()
}

// markOwn notes that the event at seq was sent by this device.
func (dev *Device) markOwn(seq uint64) {
	dev.mu.Lock()
	if len(dev.own) == maxOwn {
		dev.own = append(dev.own[:0], dev.own[1:]...)
	}
	dev.own = append(dev.own, seq)
	dev.mu.Unlock()
}

// skipOwn reports whether the event at seq, next in line, is one of the
// device's own sends, and if so passes it as if delivered and acknowledged.
// Called with dev.mu held.
func (dev *Device) skipOwn(seq uint64) bool {
	for len(dev.own) > 0 && dev.own[0] < seq {
		dev.own = dev.own[1:] // passed by a replay that started later
	}
	if len(dev.own) == 0 || dev.own[0] != seq {
		return false
	}
	dev.own = dev.own[1:]
	dev.next = seq + 1
	if len(dev.pending) == 0 {
		dev.acked = max(dev.acked, seq)
	} else {
		dev.skipped = seq
	}
	return true
}

// acked records a PUBACK from the device. It reports whether the packet id
// was one of ours.
func (dev *Device) puback(pid uint16) bool {
	dev.mu.Lock()
	seq, ok := dev.pending[pid]
	if !ok {
		dev.mu.Unlock()
		return false
	}
	// A pump stops for a PUBACK only with a full window (for events or for
	// sync_complete): only then does this one wake it. Waking it for every
	// acknowledgement cost a goroutine switch per message for nothing.
	wake := len(dev.pending) >= dev.window
	delete(dev.pending, pid)
	if len(dev.pending) == 0 {
		// A map keeps the room it grew to: let it go while the device
		// idles (one small map per burst of traffic).
		dev.pending = nil
	}
	if seq > dev.acked {
		dev.acked = seq
	}
	if len(dev.pending) == 0 && dev.skipped > dev.acked {
		// [MQTT-4.6.0-2] acks come in order: everything sent is in, so
		// the own sends skipped meanwhile are passed too.
		dev.acked = dev.skipped
	}
	due := dev.acked-dev.flushed >= flushEvery
	dev.mu.Unlock()
	if seq > 0 {
		dev.d.Metrics.Acked.Add(1)
	}
	if due {
		dev.flush()
	}
	if wake {
		dev.poke()
	}
	return true
}

func (dev *Device) flush() {
	if dev.ephemeral {
		return
	}
	dev.mu.Lock()
	acked, flushed := dev.acked, dev.flushed
	dev.mu.Unlock()
	if acked <= flushed {
		return
	}
	if err := dev.d.store.SetCursor(dev.User, dev.ID, acked); err != nil {
		dev.d.log.Warn("cursor flush failed", "client", dev.ID, "error", err)
		return
	}
	dev.mu.Lock()
	if acked > dev.flushed {
		dev.flushed = acked
	}
	dev.mu.Unlock()
}

// track records packet pid, carrying seq, as in flight. Called with dev.mu
// held.
func (dev *Device) track(pid uint16, seq uint64) {
	if dev.pending == nil {
		dev.pending = make(map[uint16]uint64, min(dev.window, 8))
	}
	dev.pending[pid] = seq
}

// nextPID hands out a packet id not in flight. Called with dev.mu held.
func (dev *Device) nextPID() uint16 {
	for {
		dev.lastPID++
		if dev.lastPID == 0 {
			dev.lastPID = 1
		}
		if _, busy := dev.pending[dev.lastPID]; !busy {
			return dev.lastPID
		}
	}
}

// pump sends what the device is owed, then ends: it runs only while there
// is work, and poke or Live start it again.
func (dev *Device) pump() {
	defer dev.d.pumps.Done()
	inTopic := "im/" + dev.User + "/in"
	for {
		dev.mu.Lock()
		live, woken := dev.liveQ, dev.woken
		dev.liveQ, dev.woken = nil, false
		if dev.stopped || (len(live) == 0 && !woken) {
			dev.running = false
			dev.mu.Unlock()
			return
		}
		dev.mu.Unlock()
		if len(live) > 0 {
			dev.writeLive(live)
		}
		if woken {
			for dev.deliver(inTopic) {
			}
		}
	}
}

// writeLive sends queued live events, in one write.
func (dev *Device) writeLive(live [][]byte) {
	topic := "im/" + dev.User + "/live"
	pks := make([]packets.Packet, len(live))
	for i, p := range live {
		pks[i] = dev.packet(topic, 0, 0, p)
	}
	sent := len(pks)
	err := dev.writePackets(pks...)
	var tl *hooks.TooLarge
	switch {
	case errors.As(err, &tl):
		sent -= len(tl.Skipped) // QoS 0: those are simply not sent
	case err != nil:
		sent = 0
	}
	dev.d.Metrics.LiveSent.Add(int64(sent))
}

// deliver sends what the window allows and reports whether there may be more.
func (dev *Device) deliver(topic string) bool {
	dev.mu.Lock()
	room := dev.window - len(dev.pending)
	if dev.stopped || !dev.subscribed || room <= 0 {
		dev.mu.Unlock()
		return false
	}
	next := dev.next
	dev.mu.Unlock()

	last, err := dev.d.lastSeq(dev.User)
	if err != nil {
		dev.d.log.Error("delivery: last seq", "user", dev.User, "error", err)
		return false
	}
	if next <= last {
		evs, err := dev.d.readTimeline(dev.User, next-1, room)
		if err != nil {
			dev.d.log.Error("delivery: read timeline", "user", dev.User, "error", err)
			return false
		}
		// The events go out in one write: a replay costs a system call per
		// window, not per event.
		out := make([]packets.Packet, 0, len(evs))
		for _, ev := range evs {
			dev.mu.Lock()
			if !dev.subscribed || dev.next != next {
				// Unsubscribed, or a re-subscribe or openim/sync restarted
				// the replay.
				dev.mu.Unlock()
				break
			}
			if dev.skipOwn(ev.Seq) {
				next = dev.next
				dev.mu.Unlock()
				continue
			}
			// Events between next and ev.Seq have expired (retention):
			// they cannot be delivered, so the device skips to ev.Seq.
			pid := dev.nextPID()
			dev.track(pid, ev.Seq)
			dev.next = ev.Seq + 1
			next = dev.next
			inFlight := len(dev.pending)
			dev.mu.Unlock()
			dev.d.Metrics.observePending(inFlight)
			out = append(out, dev.packet(topic, 1, pid, ev.Data))
		}
		if len(out) > 0 {
			err := dev.writePackets(out...)
			var tl *hooks.TooLarge
			if errors.As(err, &tl) {
				// [MQTT-3.1.2-25]: an event the device cannot take counts as
				// delivered, or the device would wait for it for ever.
				for _, i := range tl.Skipped {
					dev.puback(out[i].PacketID)
				}
				err = nil
			}
			if err != nil {
				return false
			}
			dev.d.Metrics.Delivered.Add(int64(len(out)))
		}
		if len(evs) > 0 {
			return true
		}
		// Every Seq from next to last is committed (last was read first)
		// and none is left: they expired. Skip them, or the device would
		// wait for them, and for its sync_complete, until a new event.
		dev.mu.Lock()
		if dev.subscribed && dev.next == next {
			dev.next = last + 1
		}
		dev.mu.Unlock()
	}
	// Caught up: owe the device its sync_complete?
	dev.mu.Lock()
	if !dev.syncOwed || dev.next <= dev.syncTarget || len(dev.pending) >= dev.window {
		dev.mu.Unlock()
		return false
	}
	dev.syncOwed = false
	lastSeq := dev.next - 1
	pid := dev.nextPID()
	dev.track(pid, 0)
	done := dev.syncDone
	dev.syncDone = nil
	dev.mu.Unlock()
	if done != nil {
		done(lastSeq)
	}
	msg, _ := json.Marshal(struct {
		Event   string `json:"Event"`
		LastSeq uint64 `json:"LastSeq"`
	}{"sync_complete", lastSeq})
	dev.write(topic, 1, pid, msg)
	return false
}

// write sends one PUBLISH straight to the client.
func (dev *Device) write(topic string, qos byte, pid uint16, payload []byte) error {
	return dev.writePackets(dev.packet(topic, qos, pid, payload))
}

func (dev *Device) writePackets(pks ...packets.Packet) error {
	if err := hooks.Write(dev.cl, pks...); err != nil {
		dev.d.log.Debug("delivery: write failed", "client", dev.ID, "error", err)
		return err
	}
	return nil
}

func (dev *Device) packet(topic string, qos byte, pid uint16, payload []byte) packets.Packet {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic,
		Payload:     payload,
		PacketID:    pid,
	}
	if dev.cl.Properties.ProtocolVersion == 5 {
		pk.Properties.PayloadFormat, pk.Properties.PayloadFormatFlag = 1, true
		pk.Properties.ContentType = "application/json"
	}
	return pk
}
