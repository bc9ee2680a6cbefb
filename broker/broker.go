// Package broker embeds the mochi-mqtt broker: listeners (TCP, TLS,
// WebSocket), capabilities, lifecycle, and delivery of timeline events from
// the store to devices (devices.go).
//
// The broker holds no state beyond connections: messages, cursors and
// accounts live in the store, so a device can reconnect to any broker that
// shares it.
package broker

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"math"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/hooks"
	"github.com/duet-im/duet/store"
)

// Config configures a Broker.
type Config struct {
	MQTTAddr string // TCP listener, e.g. 127.0.0.1:1883; empty = none
	WSAddr   string // WebSocket listener (path /mqtt); empty = none
	TLSAddr  string // TLS listener; needs TLS
	TLS      *tls.Config
	// Exec runs the requests' commands; nil: the Service New is given (a
	// cluster node's router otherwise, internal/cluster).
	Exec command.Executor
	// Accounts is what login asks about users (and where AutoAccounts
	// creates them); nil: the store New is given.
	Accounts hooks.Accounts

	SDKAppID     uint64
	Key          string // UserSig secret
	AutoAccounts bool
	KickedAt     func(user string) time.Time
	// OnState is told when a device logs in (online) and goes away, for the
	// State.StateChange callback. It must not block.
	OnState func(user, clientID string, online bool)

	// Window is how many timeline events a device may have unacknowledged.
	Window int
	// MaxRequest bounds one request payload (93000 above it).
	MaxRequest int
	// MaxPacket is the hard MQTT packet size cap (connection closed above it).
	MaxPacket uint32

	// Limits before login (listen.go); zero means the default.
	ConnectTimeout time.Duration // from accept to a complete CONNECT (and WebSocket upgrade)
	MaxConnect     int           // largest CONNECT packet, bytes
	PendingPerIP   int           // connections not logged in, per IP (IPv6: per /64)
	MaxPending     int           // connections not logged in, in all

	Clock func() time.Time
	Log   *slog.Logger
}

// readBufferSize is each connection's read buffer.
const readBufferSize = 512

// Broker is the MQTT side of Duet.
type Broker struct {
	Server   *mqtt.Server
	Devices  *Devices
	requests *hooks.Requests
	cfg      Config
	stop     chan struct{}
	// Edge counts what the listeners refuse; listeners are their accept
	// loops (Down).
	Edge      EdgeMetrics
	listeners []*acceptLoop
}

// New builds the broker and its listeners; Serve starts it.
func New(cfg Config, svc *command.Service, st *store.Store) (*Broker, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Window <= 0 {
		cfg.Window = 128
	}
	if cfg.MaxRequest <= 0 {
		cfg.MaxRequest = 64 << 10
	}
	if cfg.MaxPacket == 0 {
		cfg.MaxPacket = 1 << 20
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.MaxConnect <= 0 {
		cfg.MaxConnect = DefaultMaxConnect
	}
	if cfg.PendingPerIP <= 0 {
		cfg.PendingPerIP = DefaultPendingPerIP
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = cfg.MaxPacket
	// Timeline events never enter mochi's inflight queue (devices.go writes
	// them with its own packet ids), and nothing else may be queued there:
	// no retained messages, and a session keeps only its subscriptions.
	caps.RetainAvailable = 0
	caps.MaximumQos = 1
	caps.SharedSubAvailable = 0
	caps.MaximumMessageExpiryInterval = 0
	caps.Compatibilities.ObscureNotAuthorized = false
	// Topic aliases are resolved before the ACL (hooks.Protocol); a few
	// cover the request topics a device uses.
	caps.TopicAliasMaximum = 16
	// mochi sizes each connection's outbound queue by this (8,192 × 8 B by
	// default, 64 KB per idle connection). Only mochi's own fan-out uses
	// it, and Duet writes every packet itself (hooks.Write): delivery,
	// replies and live events never pass through it.
	caps.MaximumClientWritesPending = 8

	server := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		// Each connection's read buffer (mochi's default 2 KB) lives as long
		// as the connection. Most packets a device sends are PUBACKs and
		// requests of a few hundred bytes; a larger one is read straight
		// into its packet past the buffer (issue 11 §4).
		ClientNetReadBufferSize: readBufferSize,
		Logger:                  newMochiLogger(cfg.Log), // mochilog.go
		// Devices need no $SYS topics (the ACL lets no one subscribe to
		// them); metrics are on /metrics. mochi takes 0 for its default of
		// one second, and every round stops the world to read memory
		// statistics: publish them once, at start, and never again.
		SysTopicResendInterval: math.MaxInt32,
	})
	b := &Broker{Server: server, cfg: cfg, stop: make(chan struct{})}
	// The command layer gets b.Devices from whoever assembles the two
	// (svc.Connect in internal/server): the cycle is tied in one place.
	b.Devices = newDevices(st, cfg.Log, cfg.Window)

	accounts := cfg.Accounts
	if accounts == nil {
		accounts = st
	}
	if err := server.AddHook(hooks.NewAuth(server, hooks.AuthConfig{
		SDKAppID: cfg.SDKAppID, Key: cfg.Key, Accounts: accounts, AutoAccounts: cfg.AutoAccounts,
		Clock: cfg.Clock, KickedAt: cfg.KickedAt, Log: cfg.Log,
	}), nil); err != nil {
		return nil, err
	}
	if err := server.AddHook(hooks.NewProtocol(server), nil); err != nil {
		return nil, err
	}
	if err := server.AddHook(&sessionHook{b: b}, nil); err != nil {
		return nil, err
	}
	b.requests = hooks.NewRequests(hooks.RequestsConfig{Service: svc, Exec: cfg.Exec, MaxRequest: cfg.MaxRequest, Log: cfg.Log})
	if err := server.AddHook(b.requests, nil); err != nil {
		return nil, err
	}

	if err := server.AddHook(&loginHook{}, nil); err != nil {
		return nil, err
	}
	if err := b.addListeners(); err != nil {
		return nil, err
	}
	// Every connection's packet sizes are followed, for DISCONNECT 0x95
	// (framing.go).
	for _, id := range []string{"tcp", "tls", "ws"} {
		if l, ok := server.Listeners.Get(id); ok {
			server.Listeners.Add(framedListener{Listener: l, max: cfg.MaxPacket})
		}
	}
	return b, nil
}

// Serve starts the listeners and returns.
func (b *Broker) Serve() error {
	if err := b.Server.Serve(); err != nil {
		return err
	}
	go b.flushLoop()
	return nil
}

// Addr returns the bound address of listener id ("tcp", "tls", "ws").
func (b *Broker) Addr(id string) string {
	if l, ok := b.Server.Listeners.Get(id); ok {
		return l.Address()
	}
	return ""
}

// Close disconnects every client and stops the listeners. Cursors are
// flushed as devices detach.
func (b *Broker) Close() error {
	select {
	case <-b.stop:
		return nil // closed already
	default:
	}
	close(b.stop)
	// mochi v2.7.9 shuts its clients down with Clients.GetByListener, which
	// read-locks the client map and then again inside (Len): a connection
	// ending at that moment queues its write lock (Clients.Delete) between
	// the two, and both wait for ever (TestCloseWhileClientsLeave). So the
	// listeners are closed here first, with a closer that locks once and
	// waits for every connection to end; Server.Close then finds the TCP
	// listeners closed (it skips their closer) and no client left.
	b.Server.Listeners.CloseAll(b.disconnectListener)
	err := b.Server.Close()
	// mochi's Close does not wait for its connections' goroutines: wait for
	// the requests they are executing, so none touches the store after the
	// caller closes it.
	b.requests.Drain()
	b.Devices.closeAll() // flushes each cursor as it detaches
	return err
}

// disconnectListener disconnects the clients of listener id, as mochi's own
// closer would, without its double read lock.
func (b *Broker) disconnectListener(id string) {
	for _, cl := range b.Server.Clients.GetAll() {
		if cl.Net.Listener == id && !cl.Closed() {
			_ = b.Server.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
}

func (b *Broker) flushLoop() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.Devices.flushAll()
		}
	}
}

// sessionHook tells the delivery layer about connections, subscriptions and
// PUBACKs.
type sessionHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *sessionHook) ID() string { return "duet-sessions" }

func (h *sessionHook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnSubscribed, mqtt.OnUnsubscribe, mqtt.OnUnsubscribed, mqtt.OnPacketRead,
	}, []byte{b})
}

func (h *sessionHook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline {
		return
	}
	// mochi never holds a timeline event of ours, but a resumed session could
	// carry what an older broker version left in flight: drop it, replay
	// from the cursor covers it.
	cl.ClearInflights()
	user, ephemeral := hooks.Device(cl)
	dev := h.b.Devices.attach(cl, user, ephemeral)
	if h.b.cfg.OnState != nil {
		h.b.cfg.OnState(user, cl.ID, true)
	}
	// mochi put a resumed session's subscriptions back in its topic tree.
	h.untree(cl)
	// A resumed session (clean session off) keeps its subscriptions without
	// a new SUBSCRIBE: deliver as if it had just subscribed.
	h.applySubscriptions(dev, cl)
}

func (h *sessionHook) applySubscriptions(dev *Device, cl *mqtt.Client) {
	in, live := false, false
	for f := range cl.State.Subscriptions.GetAll() {
		in = in || hooks.Covers(f, "im/"+dev.User+"/in")
		live = live || hooks.Covers(f, "im/"+dev.User+"/live")
	}
	dev.setLive(live)
	dev.mu.Lock()
	was := dev.subscribed
	dev.mu.Unlock()
	switch {
	case in && !was:
		if err := dev.subscribe(); err != nil {
			// A device left without its timeline would wait for ever:
			// close it, and its client's reconnect tries again.
			h.b.cfg.Log.Error("replay failed to start; closing the connection", "client", cl.ID, "error", err)
			if cl.Properties.ProtocolVersion == 5 {
				_ = hooks.Write(cl, packets.Packet{
					FixedHeader: packets.FixedHeader{Type: packets.Disconnect},
					ReasonCode:  packets.ErrServerBusy.Code,
					Properties:  packets.Properties{ReasonString: "the timeline could not be read; reconnect"},
				})
			}
			cl.Stop(packets.ErrServerBusy)
		}
	case !in && was:
		dev.unsubscribe()
	}
}

// deviceOf is cl's device, if cl is still the connection it belongs to. A
// connection that ended is cleaned up by mochi after its client id may have
// connected again; what it reports (its subscriptions removed) is not about
// the new connection's device.
func (h *sessionHook) deviceOf(cl *mqtt.Client) *Device {
	user, _ := hooks.Device(cl)
	if dev := h.b.Devices.get(user, cl.ID); dev != nil && dev.cl == cl {
		return dev
	}
	return nil
}

// untree takes cl's subscriptions out of mochi's topic tree; they stay in
// cl.State.Subscriptions, which is all Duet reads (applySubscriptions, a
// resumed session). Duet never delivers through the tree (devices.go writes
// every packet itself, and PROTOCOL §2 lets a client subscribe only below
// its own im/{me}/, where nothing publishes through mochi), and each
// subscription's branch of particles costs ~3.5 KB per connection
// (docs/mqtt.md, Memory per connection). mochi offers no hook before it
// inserts, so the entries are removed right after: SUBACK codes stay
// mochi's own.
func (h *sessionHook) untree(cl *mqtt.Client) {
	if cl.Net.Inline {
		return
	}
	s := h.b.Server
	for f := range cl.State.Subscriptions.GetAll() {
		if s.Topics.Unsubscribe(f, cl.ID) {
			atomic.AddInt64(&s.Info.Subscriptions, -1)
		}
	}
}

// OnUnsubscribe puts back in the tree, for the moment mochi looks, the
// filters cl holds, so that mochi finds them, removes them and answers
// 0x00 Success; a filter cl does not hold gets 0x11 No subscription existed
// [MQTT-3.11.3-1]. (With the same packet id in use, mochi answers 0x91 and
// looks at nothing: nothing is put back then.)
func (h *sessionHook) OnUnsubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if cl.Net.Inline {
		return pk
	}
	if _, inUse := cl.State.Inflight.Get(pk.PacketID); inUse {
		return pk
	}
	s := h.b.Server
	for _, f := range pk.Filters {
		if sub, ok := cl.State.Subscriptions.Get(f.Filter); ok && s.Topics.Subscribe(cl.ID, sub) {
			atomic.AddInt64(&s.Info.Subscriptions, 1)
		}
	}
	return pk
}

func (h *sessionHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	// mochi runs this after it inserted the granted filters in its tree and
	// in cl.State.Subscriptions, before it writes the SUBACK.
	h.untree(cl)
	// A SUBSCRIBE covering a timeline this connection already takes (a
	// restored session subscribing again, overlapping filters) changes
	// nothing: a running replay goes on, and no event is sent twice
	// (devices.go, subscribe). openim/sync asks for a replay.
	if dev := h.deviceOf(cl); dev != nil {
		h.applySubscriptions(dev, cl)
	}
}

func (h *sessionHook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	// mochi reports the end of a connection's subscriptions here too, when
	// it cleans the connection up: by then the same client id may be back.
	if dev := h.deviceOf(cl); dev != nil {
		h.applySubscriptions(dev, cl)
	}
}

func (h *sessionHook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	user, _ := hooks.Device(cl)
	if dev := h.deviceOf(cl); dev != nil {
		h.b.Devices.detach(dev)
		if h.b.cfg.OnState != nil {
			h.b.cfg.OnState(user, cl.ID, false)
		}
	}
}

// OnPacketRead takes PUBACKs of timeline events before mochi looks for them
// in its own inflight queue (where they are not).
func (h *sessionHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Puback {
		return pk, nil
	}
	if dev := h.deviceOf(cl); dev != nil {
		dev.puback(pk.PacketID)
	}
	return pk, nil
}
