package cluster

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Live events, kicks and presence across nodes (docs/cluster.md §13.3).
//
// A user's devices may be connected to any node, and a command runs on the
// partition's owner. What the command layer asks of "the devices" —
// deliver an ephemeral event (typing, an online-only message), kick a
// user, count a user's connected devices — must therefore reach every
// node. Stored events need none of this: every node applies the log and
// wakes its own devices (Store.Apply → OnCommit).
//
//	duet.live       {user} + payload: every node delivers to its devices
//	duet.kick       {user}: every node closes its devices of user
//	duet.presence   a question ("online" or "connected"): every node
//	                answers with its own devices' count
//
// A node hears its own publications too (NATS echoes them), so local
// delivery takes the same path as remote delivery.

// LocalDevices is this node's broker (broker.Devices).
type LocalDevices interface {
	Live(user string, payload []byte)
	Resync(user, device string, fromSeq uint64, done func(lastSeq uint64)) error
	Kick(user string)
	Online(user string) int
	Connected(user, clientID string) bool
}

const (
	subjLive     = "duet.live"
	subjKick     = "duet.kick"
	subjPresence = "duet.presence"

	hClient = "Duet-Client"
	hAsk    = "Duet-Ask"
)

// presenceWait bounds a presence question: answers that come later are
// not counted (a node that slow is on its way out of the cluster).
const presenceWait = 250 * time.Millisecond

// Devices is every node's devices, as the command layer and the pusher see
// them in cluster mode.
type Devices struct {
	nc    *nats.Conn
	local LocalDevices
	// Nodes is how many nodes are expected to answer a presence question
	// (the live members): the question ends as soon as that many have
	// answered. Nil or 0: wait presenceWait for answers.
	Nodes func() int
	log   *slog.Logger

	mu   sync.Mutex
	subs []*nats.Subscription
}

// NewDevices makes the cluster's view of devices over this node's local.
func NewDevices(nc *nats.Conn, local LocalDevices, log *slog.Logger) *Devices {
	if log == nil {
		log = slog.Default()
	}
	return &Devices{nc: nc, local: local, log: log}
}

// Start subscribes this node to the broadcasts.
func (d *Devices) Start() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for subj, f := range map[string]nats.MsgHandler{
		subjLive: func(m *nats.Msg) { d.local.Live(m.Header.Get(hUser), m.Data) },
		subjKick: func(m *nats.Msg) { d.local.Kick(m.Header.Get(hUser)) },
		subjPresence: func(m *nats.Msg) {
			user := m.Header.Get(hUser)
			n := 0
			if m.Header.Get(hAsk) == "connected" {
				if d.local.Connected(user, m.Header.Get(hClient)) {
					n = 1
				}
			} else {
				n = d.local.Online(user)
			}
			m.Respond([]byte(strconv.Itoa(n)))
		},
	} {
		sub, err := d.nc.Subscribe(subj, f)
		if err != nil {
			return err
		}
		d.subs = append(d.subs, sub)
	}
	return d.nc.Flush()
}

// Stop unsubscribes.
func (d *Devices) Stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.subs {
		s.Unsubscribe()
	}
	d.subs = nil
}

func (d *Devices) publish(subj, user string, data []byte) {
	m := nats.NewMsg(subj)
	m.Header.Set(hUser, user)
	m.Data = data
	if err := d.nc.PublishMsg(m); err != nil {
		d.log.Warn("cluster: broadcast failed", "subject", subj, "user", user, "error", err)
	}
}

// Live sends an ephemeral event to user's devices on every node.
func (d *Devices) Live(user string, payload []byte) { d.publish(subjLive, user, payload) }

// Resync concerns a device of this node (openim/sync runs where its
// connection is).
func (d *Devices) Resync(user, device string, fromSeq uint64, done func(lastSeq uint64)) error {
	return d.local.Resync(user, device, fromSeq, done)
}

// Kick closes user's devices on every node. (The kick time itself is in
// the store, so a device reconnecting anywhere is refused once that node
// has applied it.)
func (d *Devices) Kick(user string) { d.publish(subjKick, user, nil) }

// Online counts user's connected devices on every node.
func (d *Devices) Online(user string) int { return d.ask(user, "online", "") }

// Connected reports whether user's device clientID is connected to any node.
func (d *Devices) Connected(user, clientID string) bool {
	return d.ask(user, "connected", clientID) > 0
}

// ask puts a presence question to every node and sums the answers that
// come within presenceWait.
func (d *Devices) ask(user, what, client string) int {
	inbox := d.nc.NewRespInbox()
	sub, err := d.nc.SubscribeSync(inbox)
	if err != nil {
		d.log.Warn("cluster: presence question", "error", err)
		return d.localAnswer(user, what, client)
	}
	defer sub.Unsubscribe()
	m := nats.NewMsg(subjPresence)
	m.Reply = inbox
	m.Header.Set(hUser, user)
	m.Header.Set(hAsk, what)
	if client != "" {
		m.Header.Set(hClient, client)
	}
	if err := d.nc.PublishMsg(m); err != nil {
		d.log.Warn("cluster: presence question", "error", err)
		return d.localAnswer(user, what, client)
	}
	want := 0
	if d.Nodes != nil {
		want = d.Nodes()
	}
	ctx, cancel := context.WithTimeout(context.Background(), presenceWait)
	defer cancel()
	sum, answers := 0, 0
	for want == 0 || answers < want {
		r, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			break
		}
		n, _ := strconv.Atoi(string(r.Data))
		sum += n
		answers++
	}
	return sum
}

func (d *Devices) localAnswer(user, what, client string) int {
	if what == "connected" {
		if d.local.Connected(user, client) {
			return 1
		}
		return 0
	}
	return d.local.Online(user)
}
