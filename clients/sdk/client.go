package sdk

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Listeners are the app's callbacks. They run one at a time, in event
// order, on one goroutine of the client, so an app needs no locks around
// the state they touch. None runs before Login returned; a listener may call
// the client's methods (set such listeners with SetListeners after Login).
//
// Delivery is at least once (events.go): an event that calls OnNewMessage,
// OnWithdraw, OnModify, OnRead or OnSystemEvent is kept in the local store
// until its listener returned, and delivered again, first, at the next
// Login if it did not (Logout before it ran, a crash). An app that must act
// once per event makes the action idempotent by MsgKey (or Seq): for an
// answer, send it with Outgoing.ID derived from the MsgKey, and the outbox
// sends it once. Other listeners (the list, OnRefresh, typing, connection
// and send status) are not repeated.
type Listeners struct {
	// OnNewMessage: a message to me, or one I sent from another device, or
	// a system message. Messages I send from this device are not reported
	// (SendMessage returns them).
	OnNewMessage func(*Message)
	// OnRefresh: the local store caught up with the server after login or
	// a reconnect (the timeline replay ended with sync_complete and the
	// conversation list was reloaded).
	OnRefresh func()
	// OnTotalUnreadChanged: the unread count of all conversations changed
	// (from the local store: first at Login, also offline).
	OnTotalUnreadChanged func(total int)
	// OnRecentContactsChanged: conversations whose last message, unread
	// count or read state changed. After login and each reconnect it gets
	// the whole list, just before OnRefresh.
	OnRecentContactsChanged func([]Contact)
	// OnRead: the peer read my messages (a read receipt).
	OnRead func(ReadReceipt)
	// OnWithdraw: a message of a conversation of mine was recalled (on
	// every device of both users, including the one that recalled it).
	OnWithdraw func(Withdrawal)
	// OnModify: a message was edited (its new body).
	OnModify func(*Message)
	// OnSystemEvent: timeline or live events without a typed listener
	// (friend_add, …).
	OnSystemEvent func(SystemEvent)
	// OnTyping: the peer is typing to me.
	OnTyping func(from string)
	// OnKicked: this device is logged out — kicked by an admin or the
	// multi-device policy, or its UserSig was refused on reconnect. The
	// client is closed; Login again (with a fresh UserSig) to continue.
	OnKicked func(reason string)
	// OnReplaced: another client with this UserID and DeviceID (another
	// process of the app, or a copy of its data) connected, and the server
	// closed this one (MQTT 5 DISCONNECT 0x8E Session taken over; on MQTT
	// 3.1.1, where the server cannot say why, the SDK recognises the
	// connection being taken over again and again). Reported once; the
	// client is closed and does not reconnect, since each reconnect would
	// take the connection back.
	OnReplaced func(reason string)
	// OnSendStatus: a send of this device was answered: sent (with its
	// MsgKey and Seq) or failed (with the server's code). Sends resent from
	// the outbox after a restart are reported here.
	OnSendStatus func(SendStatus)
	// OnConnectionChanged: the MQTT connection came up (reason "login" or
	// "reconnected"; before the backlog it brings, at login and at
	// reconnect alike) or went down (reason: the cause).
	OnConnectionChanged func(connected bool, reason string)
}

// any reports whether any listener is set.
func (l *Listeners) any() bool {
	v := reflect.ValueOf(l).Elem()
	for i := range v.NumField() {
		if !v.Field(i).IsNil() {
			return true
		}
	}
	return false
}

// Options configure Login.
type Options struct {
	// Addr is host:port of the server's MQTT listener: plain TCP, or TLS
	// when TLS is set. A WebSocket URL — ws://host:port/mqtt, or
	// wss://host/mqtt (TLS, with TLS's configuration when set) — connects
	// through the server's WebSocket listener, for networks that pass only
	// HTTP.
	Addr string
	// Addrs are more addresses of the same service (the nodes of a Duet
	// cluster), each in any form Addr takes. The client uses one address
	// at a time, from the list Addr then Addrs (repeats dropped): Login
	// tries them in turn until one accepts; when the connection is lost,
	// or an address cannot be reached, answers CONNACK "server
	// unavailable" (a node that is catching up) or closes the connection
	// at the subscription, the next attempt goes to the next address,
	// round-robin. The reconnect backoff (MinBackoff..MaxBackoff) is waited
	// before each round over the list, not between its addresses. Either
	// Addr or Addrs may be empty, not both.
	Addrs []string
	// TLS, when set, makes the connection TLS with this configuration
	// (its ServerName defaults to the host of the address it connects to).
	TLS     *tls.Config
	UserID  string
	UserSig string
	// RefreshUserSig, when set, is asked for a UserSig before each
	// reconnect, so a session outlives its first UserSig's expiry (the app
	// typically gets one from its back-end). An error skips the attempt.
	RefreshUserSig func(ctx context.Context) (string, error)
	// DeviceID names this device; it must stay the same across runs (the
	// server keeps this device's place in the timeline by it). Empty: one
	// is made on first use and kept in Dir.
	DeviceID string
	// Dir holds the local store (one bbolt file per user).
	Dir string
	// Protocol is MQTT5 (default) or MQTT311.
	Protocol Protocol
	// RequestTimeout bounds one attempt of a request (default 10 s).
	// Idempotent requests are sent again after it, until their context ends.
	RequestTimeout time.Duration
	// KeepAlive is the MQTT keep-alive (default 30 s).
	KeepAlive time.Duration
	// MinBackoff and MaxBackoff bound the reconnect delay, which doubles per
	// failed attempt with jitter (defaults 200 ms and 30 s).
	MinBackoff, MaxBackoff time.Duration

	// HTTPClient uploads and downloads media (default http.DefaultClient).
	HTTPClient *http.Client

	Listeners
	Logger *slog.Logger

	// dropEvent, set by tests, makes the SDK lose the timeline event with
	// that Seq as if the network had (it is still acknowledged).
	dropEvent func(seq uint64) bool
}

// Client is a logged-in device.
type Client struct {
	opts   Options
	me     string
	device string
	db     *localStore
	log    *slog.Logger

	ctx    context.Context // ends at Logout
	cancel context.CancelFunc
	quit   chan struct{}
	wg     sync.WaitGroup
	// procDone closes when the processor has stopped: the dispatcher runs
	// what it queued, then stops too.
	procDone chan struct{}

	inbox    *queue[item]
	dispatch *queue[dispatchItem]
	ls       atomic.Pointer[Listeners]

	// The dispatcher (events.go): stopping and stopDispatch end it;
	// dispatchG is its goroutine; handled lists pending events whose
	// listener returned, not yet removed from the store.
	stopping     atomic.Bool
	stopDispatch chan struct{}
	loggedIn     chan struct{} // closed when listeners may run (startOnce)
	startOnce    sync.Once
	dispatchDone chan struct{}
	dispatchG    atomic.Uint64
	hmu          sync.Mutex
	handled      []uint64

	// dbmu guards the local store's closing: view and update answer
	// ErrClosed after Logout.
	dbmu     sync.RWMutex
	dbClosed bool

	// addrs is Addr then Addrs; next (guarded by mu) indexes the address
	// the next connection attempt uses.
	addrs []string
	next  int

	mu     sync.Mutex
	conn   transport
	connCh chan struct{} // closed (and replaced) whenever conn changes
	// subscribed is closed once conn's subscription is in place: requests
	// wait for it, since the server answers on im/{me}/rsp only to a device
	// subscribed there.
	subscribed chan struct{}
	closed     bool
	gen        uint64
	userSig    string
	pending    map[string]func([]byte) // ReqId → reply handler
	flights    map[string]*flight      // outbox ID → its send in progress
	outboxKick chan struct{}
	sending    map[sendKey]time.Time // sends from this device not yet seen on the timeline

	reqSeq atomic.Uint64
	// msgSeq numbers this device's sends: history orders messages of one
	// second by MsgSeq, so it must grow with each send.
	msgSeq atomic.Uint32
	// syncs and fetches count openim/sync and openim/getmsg requests.
	syncs, fetches atomic.Int64
	loggedOut      atomic.Bool
	// known: this store was logged in with before (an offline start is
	// allowed).
	known     bool
	closeOnce sync.Once
	closeErr  error
}

type sendKey struct {
	to          string
	random, seq uint32
}

// Login opens the local store, connects and subscribes. It returns once the
// server accepted the device; the offline backlog then arrives through the
// listeners, ending with OnRefresh. A refused login is a *RefusedError.
//
// Offline start: when the server cannot be reached and the local store has
// been logged in with before, Login returns the client at once: history,
// the conversation list and TotalUnread are served from the store, sends
// wait in the outbox, and the client connects in the background
// (OnConnectionChanged). A first login needs the server.
func Login(ctx context.Context, o Options) (*Client, error) {
	if len(addresses(o)) == 0 || o.UserID == "" || o.UserSig == "" || o.Dir == "" {
		return nil, errors.New("duet: Login needs Addr (or Addrs), UserID, UserSig and Dir")
	}
	c, err := open(o)
	if err != nil {
		return nil, err
	}
	t, err := c.connectRound(ctx, "login")
	if err != nil {
		// Offline start: a store that has been online before serves its
		// history and conversations while the client connects in the
		// background. A refusal, or a first login, fails.
		var re *RefusedError
		if errors.As(err, &re) || ctx.Err() != nil || !c.known {
			c.shutdown()
			return nil, err
		}
		c.log.Info("server unreachable; starting offline, connecting in the background", "error", err)
		t = nil
	} else if !c.known {
		_ = c.update(func(tx *bolt.Tx) error { return tx.Bucket(bMeta).Put(kKnown, []byte{1}) })
	}
	c.wg.Add(1)
	go c.supervise(t)
	if o.Listeners.any() {
		c.startListeners()
	}
	return c, nil
}

// addresses is Addr then Addrs, without empty entries and repeats.
func addresses(o Options) []string {
	var out []string
	for _, a := range append([]string{o.Addr}, o.Addrs...) {
		if a = strings.TrimSpace(a); a != "" && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// open opens the local store and starts the processor and the dispatcher.
func open(o Options) (*Client, error) {
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 10 * time.Second
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = 30 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 200 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(30*time.Second, o.MinBackoff)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	db, err := openLocal(filepath.Join(o.Dir, "duet-"+o.UserID+".db"))
	if err != nil {
		return nil, fmt.Errorf("duet: local store: %w", err)
	}
	var last, msgSeq uint64
	known := false
	err = db.db.Update(func(tx *bolt.Tx) error {
		last, msgSeq = getU64(tx, kSeq), getU64(tx, kMsgSeq)
		meta := tx.Bucket(bMeta)
		known = meta.Get(kKnown) != nil
		if o.DeviceID == "" {
			if v := meta.Get(kDevice); v != nil {
				o.DeviceID = string(v)
			} else {
				var b [8]byte
				_, _ = rand.Read(b[:])
				o.DeviceID = hex.EncodeToString(b[:])
			}
		}
		return meta.Put(kDevice, []byte(o.DeviceID))
	})
	if err != nil {
		db.close()
		return nil, fmt.Errorf("duet: local store: %w", err)
	}
	c := &Client{
		opts: o, me: o.UserID, device: o.DeviceID, db: db, log: o.Logger.With("user", o.UserID, "device", o.DeviceID),
		quit: make(chan struct{}), procDone: make(chan struct{}), inbox: newQueue[item](), dispatch: newQueue[dispatchItem](),
		stopDispatch: make(chan struct{}), dispatchDone: make(chan struct{}), loggedIn: make(chan struct{}),
		userSig: o.UserSig, connCh: make(chan struct{}), pending: make(map[string]func([]byte)),
		flights: make(map[string]*flight), outboxKick: make(chan struct{}, 1), sending: make(map[sendKey]time.Time),
	}
	c.known = known
	c.addrs = addresses(o)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.msgSeq.Store(uint32(msgSeq))
	ls := o.Listeners
	c.ls.Store(&ls)
	// Events a previous run applied but whose listener never returned come
	// first (at-least-once delivery, events.go).
	_ = db.db.View(func(tx *bolt.Tx) error {
		for _, ev := range listPending(tx) {
			ev := ev
			c.dispatch.push(dispatchItem{f: func() { c.deliver(&ev) }, seq: ev.Seq})
		}
		return nil
	})
	p := &proc{c: c, last: last, fresh: last == 0, buffer: make(map[uint64][]byte), lastTotal: -1, unreadDirty: true}
	c.inbox.push(item{kind: itFunc, fn: func(*proc) {}}) // reports the stored total unread first
	c.wg.Add(2)
	go p.loop()
	go c.outboxLoop()
	go c.dispatchLoop()
	return c, nil
}

// UserID is the logged-in user.
func (c *Client) UserID() string { return c.me }

// DeviceID is this device's id (client id {UserID}:{DeviceID}).
func (c *Client) DeviceID() string { return c.device }

// Logout disconnects and closes the local store. It waits for a listener
// that is running (unless called from that listener); no listener runs
// after it returned. Events whose listener did not run (or did not return)
// are delivered at the next Login (see Listeners).
func (c *Client) Logout() error {
	c.shutdown()
	return c.closeErr
}

func (c *Client) shutdown() {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		t := c.conn
		c.conn = nil
		close(c.connCh)
		c.connCh = make(chan struct{})
		c.mu.Unlock()
		close(c.quit)
		c.cancel()
		if t != nil {
			t.close()
		}
		c.wg.Wait()
		c.stopListeners()
		c.dbmu.Lock()
		c.dbClosed = true
		c.closeErr = c.db.close()
		c.dbmu.Unlock()
	})
}

// connect dials one connection. The processor learns of it (connUp) before
// the subscription starts the timeline replay.
//
// It reports the connection (OnConnectionChanged) before subscribing, so
// the app hears of it before the backlog the subscription starts, at login
// and at each reconnect alike.
func (c *Client) connect(ctx context.Context, addr, reason string) (transport, error) {
	c.mu.Lock()
	c.gen++
	gen := c.gen
	c.mu.Unlock()
	c.inbox.push(item{kind: itConnUp, gen: gen})
	sig := c.sig()
	t, err := dial(ctx, c.opts.Protocol, dialConfig{
		addr: addr, tls: c.opts.TLS, clientID: c.me + ":" + c.device, user: c.me, password: sig,
		keepAlive: c.opts.KeepAlive, timeout: c.opts.RequestTimeout,
		onMessage: func(d delivery) { c.route(gen, d) },
	})
	if err != nil {
		return nil, err
	}
	// The connection is published before it subscribes: the replay starts
	// as soon as the server has the subscription, and the processor asks
	// for syncs and the contact list during it. Requests wait for the
	// subscription, though (see call): the server answers on im/{me}/rsp
	// only to a device subscribed there, and a request sent first (a resend
	// after a reconnect) would lose its reply and wait RequestTimeout.
	subscribed := make(chan struct{})
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		t.close()
		return nil, ErrClosed
	}
	c.conn, c.subscribed = t, subscribed
	close(c.connCh)
	c.connCh = make(chan struct{})
	c.mu.Unlock()
	c.inbox.push(item{kind: itConnected, gen: gen, reason: reason})
	if err := t.subscribe(ctx); err != nil {
		t.close()
		c.inbox.push(item{kind: itConnDown, gen: gen, reason: "subscription failed: " + err.Error()})
		return nil, err
	}
	close(subscribed)
	c.kickOutbox()
	return t, nil
}

// connectRound tries each address once, from the next one on, and
// returns the first connection that is up and subscribed. A failed address
// hands the next attempt to the address after it; so does a connection
// that is later lost (skipAddr). A refused login (*RefusedError: the
// UserSig, the account, a kick — the same on every node of a service) ends
// the round at once.
func (c *Client) connectRound(ctx context.Context, reason string) (transport, error) {
	var errs []error
	for range c.addrs {
		c.mu.Lock()
		addr := c.addrs[c.next]
		c.mu.Unlock()
		t, err := c.connect(ctx, addr, reason)
		if err == nil {
			return t, nil
		}
		var re *RefusedError
		if errors.As(err, &re) || errors.Is(err, ErrClosed) || ctx.Err() != nil {
			return nil, err
		}
		if len(c.addrs) > 1 {
			c.log.Info("address failed; trying the next one", "addr", addr, "error", err)
			err = fmt.Errorf("%s: %w", addr, err)
		}
		errs = append(errs, err)
		c.skipAddr(addr)
	}
	return nil, errors.Join(errs...)
}

// skipAddr moves the next attempt on from addr (if it is still the
// current address) to the address after it.
func (c *Client) skipAddr(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.addrs[c.next] == addr {
		c.next = (c.next + 1) % len(c.addrs)
	}
}

func (c *Client) sig() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.userSig
}

// supervise reconnects after a lost connection, with exponential backoff
// and jitter, until Logout or a refused login. A lost connection moves on
// to the next address; each round over the addresses (connectRound) waits
// its backoff first.
//
// A connection the server takes over for another client with this client
// id ends the login with OnReplaced: said by MQTT 5 (0x8E); on 3.1.1 seen
// as takeoverLoop connections in a row that the server accepted and closed
// within shortConn.
func (c *Client) supervise(t transport) {
	defer c.wg.Done()
	up, short := time.Now(), 0
	for {
		if t != nil { // nil: an offline start, connecting in the background
			select {
			case <-t.done():
			case <-c.quit:
				return
			}
			// MQTT 5 says so (0x8E); only 3.1.1 needs the heuristic.
			if c.opts.Protocol == MQTT311 && time.Since(up) < shortConn {
				short++
			} else {
				short = 0
			}
			if over := t.takenOver(); over || short >= takeoverLoop {
				reason := "another client with this UserID and DeviceID connected (MQTT 5 Session taken over)"
				if !over {
					reason = fmt.Sprintf("the connection was closed right after login %d times in a row: another client with this UserID and DeviceID is taking it over", short)
				}
				c.log.Warn("replaced by another client; not reconnecting", "reason", reason)
				c.inbox.push(item{kind: itReplaced, reason: reason})
				return
			}
			c.mu.Lock()
			if c.conn == t {
				c.conn = nil
			}
			c.mu.Unlock()
			t.close() // release the library's side of the dead connection
			// The node may be gone: the reconnect starts at the next
			// address (with one address, the same one).
			c.skipAddr(t.addr())
			cause := "connection lost"
			if err := t.cause(); err != nil {
				cause += ": " + err.Error()
			}
			c.log.Info("connection lost; reconnecting", "cause", cause)
			c.inbox.push(item{kind: itConnDown, reason: cause})
		}
		for attempt := 0; ; attempt++ {
			select {
			case <-time.After(backoff(c.opts.MinBackoff, c.opts.MaxBackoff, attempt)):
			case <-c.quit:
				return
			}
			if f := c.opts.RefreshUserSig; f != nil {
				fresh, err := f(c.ctx)
				if err != nil {
					c.log.Warn("no fresh UserSig; retrying later", "error", err)
					continue
				}
				c.mu.Lock()
				c.userSig = fresh
				c.mu.Unlock()
			}
			nt, err := c.connectRound(c.ctx, "reconnected")
			if err == nil {
				t, up = nt, time.Now()
				break
			}
			var re *RefusedError
			if errors.As(err, &re) {
				c.inbox.push(item{kind: itLoggedOut, reason: re.Error()})
				return
			}
			if errors.Is(err, ErrClosed) {
				return
			}
			c.log.Debug("reconnect failed", "attempt", attempt+1, "error", err)
		}
	}
}

// takeoverLoop connections in a row closed by the server within shortConn
// of their login mean, on MQTT 3.1.1, that another client with this client
// id takes the connection over each time.
const (
	takeoverLoop = 3
	shortConn    = 2 * time.Second
)

// backoff is min·2^attempt capped at max, with "equal jitter": a random
// delay in [d/2, d], so devices that lost the same server do not return in
// lock-step.
func backoff(lo, hi time.Duration, attempt int) time.Duration {
	d := hi
	if attempt < 30 {
		d = min(lo<<attempt, hi)
	}
	return d/2 + time.Duration(mrand.Int64N(int64(d/2)+1))
}

// route sorts a received PUBLISH: replies are answered here, on the receive
// path; timeline and live events go to the processor in arrival order.
func (c *Client) route(gen uint64, d delivery) {
	switch d.topic {
	case "im/" + c.me + "/rsp":
		c.reply(d.payload, d.correlation)
		d.ack()
	case "im/" + c.me + "/in", "im/" + c.me + "/live":
		c.inbox.push(item{kind: itDelivery, gen: gen, d: d})
	default:
		d.ack()
	}
}

// reply hands a reply to its request: by Correlation Data on MQTT 5 (the
// server copies it onto every reply, refusals included), else by ReqId.
func (c *Client) reply(payload []byte, correlation string) {
	id := correlation
	if id == "" {
		var r struct {
			ReqID json.RawMessage `json:"ReqId"`
		}
		if json.Unmarshal(payload, &r) != nil {
			return
		}
		if json.Unmarshal(r.ReqID, &id) != nil {
			id = string(r.ReqID)
		}
	}
	c.mu.Lock()
	h := c.pending[id]
	c.mu.Unlock()
	if h != nil {
		h(payload)
	}
}

// callOpts tune one request.
type callOpts struct {
	// retry sends the request again (the same body) after a timeout or a
	// reconnect, until ctx ends; only for idempotent commands.
	retry bool
	// okOnRetry is an error code that, on a resend, means an earlier
	// attempt succeeded (e.g. 20023 already recalled).
	okOnRetry int
	// onReply runs on the receive path with the raw reply, in wire order
	// relative to timeline events.
	onReply func([]byte)
}

// call sends command cmd with body (a JSON object) and decodes the reply's
// result fields into out.
func (c *Client) call(ctx context.Context, cmd string, body any, out any, o callOpts) error {
	id := "r" + strconv.FormatUint(c.reqSeq.Add(1), 10)
	raw, err := withReqID(body, id)
	if err != nil {
		return err
	}
	ch := make(chan []byte, 1)
	c.mu.Lock()
	c.pending[id] = func(p []byte) {
		if o.onReply != nil {
			o.onReply(p)
		}
		select {
		case ch <- p:
		default:
		}
	}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()
	topic := "im/" + c.me + "/req/" + cmd
	for attempt := 1; ; attempt++ {
		t, subscribed, err := c.waitConn(ctx, o.retry)
		if err != nil {
			return err
		}
		select {
		case <-subscribed:
		case <-t.done(): // the subscription failed: as if the connection had
			if !o.retry {
				return ErrNotConnected
			}
			continue
		case <-ctx.Done():
			return ctx.Err()
		}
		actx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
		stop := context.AfterFunc(c.ctx, cancel) // Logout ends the wait
		perr := t.publish(actx, topic, raw, id)
		var p []byte
		var refused *pubackRefused
		switch {
		case perr == nil:
			select {
			case p = <-ch:
			case <-t.done():
			case <-actx.Done():
			}
		case errors.As(perr, &refused):
			// The refusal is the answer: the reply with the Tencent code
			// went out just before the PUBACK; take it if it comes soon.
			select {
			case p = <-ch:
			case <-t.done():
			case <-actx.Done():
			case <-time.After(time.Second):
			}
			if p == nil {
				stop()
				cancel()
				return &Error{Code: int(refused.reason), Info: refused.Error()}
			}
		}
		stop()
		cancel()
		if p == nil {
			select {
			case p = <-ch:
			default:
			}
		}
		if p != nil {
			err := decodeReply(p, out, attempt > 1, o.okOnRetry)
			var e *Error
			if !o.retry || !errors.As(err, &e) || !transient(e.Code) {
				return err
			}
			// The server asked for a retry (shutting down, internal error).
			select {
			case <-time.After(backoff(c.opts.MinBackoff, c.opts.MaxBackoff, attempt-1)):
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if c.ctx.Err() != nil {
			return ErrClosed
		}
		if !o.retry {
			if perr != nil {
				return perr
			}
			return fmt.Errorf("duet: %s: no reply within %v: %w", cmd, c.opts.RequestTimeout, context.DeadlineExceeded)
		}
		c.log.Debug("request resent", "command", cmd, "attempt", attempt+1)
	}
}

// waitConn returns the live connection, and a channel closed once it is
// subscribed, waiting for a reconnect when wait.
func (c *Client) waitConn(ctx context.Context, wait bool) (transport, <-chan struct{}, error) {
	for {
		c.mu.Lock()
		t, subscribed, ch, closed := c.conn, c.subscribed, c.connCh, c.closed
		c.mu.Unlock()
		if closed {
			return nil, nil, ErrClosed
		}
		if t != nil {
			select {
			case <-t.done():
			default:
				return t, subscribed, nil
			}
		}
		if !wait {
			return nil, nil, ErrNotConnected
		}
		select {
		case <-ch:
		case <-time.After(50 * time.Millisecond): // t died but supervise has not noticed yet
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-c.quit:
			return nil, nil, ErrClosed
		}
	}
}

// transient codes say "retry": 20005 the server is shutting down, 91000
// an internal error (reference §7.2).
func transient(code int) bool { return code == 20005 || code == 91000 }

func withReqID(body any, id string) ([]byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	if len(b) < 2 || b[0] != '{' {
		return nil, fmt.Errorf("duet: request body must be a JSON object")
	}
	head := `{"ReqId":` + strconv.Quote(id)
	if len(b) == 2 {
		return []byte(head + "}"), nil
	}
	return append([]byte(head+","), b[1:]...), nil
}

func decodeReply(p []byte, out any, resent bool, okOnRetry int) error {
	var env struct {
		ActionStatus string
		ErrorCode    int
		ErrorInfo    string
	}
	if err := json.Unmarshal(p, &env); err != nil {
		return fmt.Errorf("duet: undecodable reply: %w", err)
	}
	if env.ErrorCode != 0 || env.ActionStatus == "FAIL" {
		if resent && okOnRetry != 0 && env.ErrorCode == okOnRetry {
			return nil
		}
		return &Error{Code: env.ErrorCode, Info: env.ErrorInfo}
	}
	if out != nil {
		if err := json.Unmarshal(p, out); err != nil {
			return fmt.Errorf("duet: undecodable reply: %w", err)
		}
	}
	return nil
}

// inProc runs f on the processor, inside its store transaction, and waits
// for it (and for the transaction's commit).
func (c *Client) inProc(ctx context.Context, f func(p *proc)) error {
	done := make(chan struct{})
	c.inbox.push(item{kind: itFunc, fn: f, done: done})
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.quit:
		return ErrClosed
	}
}

// listeners returns the listeners registered now.
func (c *Client) listeners() *Listeners { return c.ls.Load() }

// SetListeners replaces the listeners; calls queued from now on use the new
// ones. Events applied while a listener was missing are not kept for it.
//
// A Login whose Options have no listener delivers nothing until the first
// SetListeners: an app whose listeners use the *Client sets them this way,
// once it holds the client, and loses nothing (the backlog and the events
// pending from the last run wait for it).
func (c *Client) SetListeners(l Listeners) {
	c.ls.Store(&l)
	c.startListeners()
}

func (c *Client) startListeners() { c.startOnce.Do(func() { close(c.loggedIn) }) }

func randU32() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])
}

// queue is an unbounded FIFO: the receive path never blocks on it.
type queue[T any] struct {
	mu     sync.Mutex
	items  []T
	signal chan struct{}
}

func newQueue[T any]() *queue[T] { return &queue[T]{signal: make(chan struct{}, 1)} }

func (q *queue[T]) push(x T) {
	q.mu.Lock()
	q.items = append(q.items, x)
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

func (q *queue[T]) take() []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.items
	q.items = nil
	return out
}

// view reads the local store; ErrClosed after Logout.
func (c *Client) view(f func(*bolt.Tx) error) error {
	c.dbmu.RLock()
	defer c.dbmu.RUnlock()
	if c.dbClosed {
		return ErrClosed
	}
	return c.db.db.View(f)
}

// update writes the local store; ErrClosed after Logout.
func (c *Client) update(f func(*bolt.Tx) error) error {
	c.dbmu.RLock()
	defer c.dbmu.RUnlock()
	if c.dbClosed {
		return ErrClosed
	}
	return c.db.db.Update(f)
}
