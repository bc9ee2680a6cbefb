package broker

// Duet's own MQTT listeners (TCP, TLS, WebSocket) in place of mochi's:
//
//   - mochi's TCP listener returns from its accept loop on any error, so one
//     burst of EMFILE (out of file descriptors) stopped MQTT for good. These
//     retry temporary errors with the back-off of net/http's Server.Serve
//     (5 ms doubling to 1 s), log once per burst, count each failure, and
//     report the listener down (/healthz) until it accepts again.
//   - Before a connection has logged in it costs a goroutine pair, buffers and
//     whatever the CONNECT announces (mochi allocates the announced size up
//     front). So a connection must send its CONNECT within a deadline, the
//     CONNECT may not announce more than a few KB, and the connections not
//     yet logged in are capped per IP and in total.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Defaults of the pre-login limits (Config).
const (
	DefaultConnectTimeout = 10 * time.Second
	// DefaultMaxConnect fits the largest CONNECT Duet expects several times
	// over: a 32-byte UserID, a UserSig (about 200 bytes; TestLongestLoginFits),
	// a client id with a 128-byte DeviceID and MQTT 5 properties.
	DefaultMaxConnect   = 4 << 10
	DefaultPendingPerIP = 64
	DefaultMaxPending   = 2048
)

// EdgeMetrics counts what the listeners refuse (exported on /metrics).
type EdgeMetrics struct {
	AcceptErrors atomic.Int64 // failed Accept calls (each retried while temporary)
	Pending      atomic.Int64 // connections accepted and not yet logged in
	OverLimit    atomic.Int64 // connections closed at accept: too many pending from the IP or in all
	TooLarge     atomic.Int64 // connections whose first packet was too large or not a CONNECT
	TimedOut     atomic.Int64 // connections closed because no CONNECT arrived in time
}

// Down lists the listeners that are failing to accept connections.
func (b *Broker) Down() []string {
	var ids []string
	for _, l := range b.listeners {
		if l.down.Load() {
			ids = append(ids, l.id)
		}
	}
	return ids
}

// addListeners opens the configured MQTT listeners.
func (b *Broker) addListeners() error {
	g := &gate{cfg: &b.cfg, m: &b.Edge, byIP: map[string]int{}}
	add := func(id, addr string, tlsCfg *tls.Config, ws bool) error {
		if addr == "" {
			return nil
		}
		al := &acceptLoop{id: id, gate: g, log: b.cfg.Log, done: make(chan struct{}), clients: &b.Server.Listeners.ClientsWg}
		var l listeners.Listener = &tcpListener{id: id, address: addr, tls: tlsCfg, ln: al}
		if ws {
			l = &wsListener{id: id, address: addr, ln: al}
		}
		if err := b.Server.AddListener(l); err != nil {
			return fmt.Errorf("broker: %s listener: %w", id, err)
		}
		b.listeners = append(b.listeners, al)
		return nil
	}
	if b.cfg.TLSAddr != "" && b.cfg.TLS == nil {
		return fmt.Errorf("broker: TLS listener %s needs a certificate and key", b.cfg.TLSAddr)
	}
	err := errors.Join(add("tcp", b.cfg.MQTTAddr, nil, false), add("tls", b.cfg.TLSAddr, b.cfg.TLS, false),
		add("ws", b.cfg.WSAddr, nil, true))
	if err != nil {
		// New fails: free the ports already bound, for a retry.
		for _, l := range b.listeners {
			l.Close()
		}
	}
	return err
}

// gate admits connections while their IP and the server are under the
// pending-login caps.
type gate struct {
	cfg   *Config
	m     *EdgeMetrics
	mu    sync.Mutex
	byIP  map[string]int
	total int
}

// ipKey groups an IPv6 client by its /64, which one host usually has whole.
func ipKey(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	if ta.IP.To4() == nil {
		return ta.IP.Mask(net.CIDRMask(64, 128)).String()
	}
	return ta.IP.String()
}

// admit returns c as a pending connection with its CONNECT deadline set, or
// nil (c closed) when over a cap.
func (g *gate) admit(c net.Conn) *pendingConn {
	key := ipKey(c.RemoteAddr())
	g.mu.Lock()
	ok := g.byIP[key] < g.cfg.PendingPerIP && g.total < g.cfg.MaxPending
	if ok {
		g.byIP[key]++
		g.total++
	}
	g.mu.Unlock()
	if !ok {
		g.m.OverLimit.Add(1)
		c.Close()
		return nil
	}
	g.m.Pending.Add(1)
	pc := &pendingConn{Conn: c, g: g, key: key, deadline: time.Now().Add(g.cfg.ConnectTimeout)}
	_ = c.SetDeadline(pc.deadline)
	return pc
}

// pendingConn is an accepted connection; it stops counting as pending when
// it logs in or closes.
type pendingConn struct {
	net.Conn
	g        *gate
	key      string
	deadline time.Time // for the CONNECT
	released atomic.Bool
}

func (c *pendingConn) loggedIn() { c.release() }

func (c *pendingConn) release() {
	if !c.released.CompareAndSwap(false, true) {
		return
	}
	g := c.g
	g.mu.Lock()
	if g.byIP[c.key]--; g.byIP[c.key] <= 0 {
		delete(g.byIP, c.key)
	}
	g.total--
	g.mu.Unlock()
	g.m.Pending.Add(-1)
}

func (c *pendingConn) Close() error {
	c.release()
	return c.Conn.Close()
}

var errConnectTooLarge = errors.New("first packet is not a CONNECT within the size limit")

// guardConn is what mochi reads a connection through: it checks the first
// packet's fixed header before handing mochi the bytes, so a CONNECT
// announcing more than MaxConnect is refused before mochi allocates it.
type guardConn struct {
	net.Conn // the transport: TCP, TLS over pc, or WebSocket over pc
	pc       *pendingConn
	max      int
	hdr      [5]byte // fixed header so far
	n        int
	checked  bool
}

func (c *guardConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.checked && n > 0 {
		if e := c.inspect(p[:n]); e != nil {
			c.pc.g.m.TooLarge.Add(1)
			return 0, e
		}
	}
	var ne net.Error
	if err != nil && !c.pc.released.Load() && errors.As(err, &ne) && ne.Timeout() {
		c.pc.g.m.TimedOut.Add(1)
	}
	return n, err
}

// inspect reads the fixed header from the first bytes: a CONNECT type byte
// and the Remaining Length (1–4 bytes, 7 bits each) [MQTT-2.2.3].
func (c *guardConn) inspect(b []byte) error {
	for _, x := range b {
		c.hdr[c.n] = x
		c.n++
		if c.n == 1 {
			if x>>4 != packets.Connect {
				return errConnectTooLarge
			}
			continue
		}
		if x&0x80 != 0 {
			if c.n == len(c.hdr) {
				return errConnectTooLarge // malformed length
			}
			continue
		}
		remaining, mul := 0, 1
		for _, y := range c.hdr[1:c.n] {
			remaining += int(y&0x7f) * mul
			mul <<= 7
		}
		if c.n+remaining > c.max {
			return errConnectTooLarge
		}
		c.checked = true
		return nil
	}
	return nil
}

func (c *guardConn) Close() error {
	err := c.Conn.Close()
	c.pc.Close() // the transport may not close pc (a TLS handshake never done)
	return err
}

// establish hands a connection to mochi and counts it pending until it logs
// in (loginHook) or ends. A connection accepted as the listener closes is
// closed instead (see attached).
func (a *acceptLoop) establish(id string, fn listeners.EstablishFn, transport net.Conn, pc *pendingConn, max int, log *slog.Logger) {
	if !a.attach(pc) {
		transport.Close()
		pc.Close()
		return
	}
	defer a.detach(pc)
	c := &guardConn{Conn: transport, pc: pc, max: max}
	if err := fn(id, c); err != nil {
		// Refused logins and dropped connections are routine; a flood of them
		// must not flood the log.
		log.Debug("connection ended", "listener", id, "remote", pc.RemoteAddr().String(), "error", err)
	}
	c.Close()
}

// loginHook marks a connection logged in: it no longer counts as pending,
// and mochi has replaced its CONNECT deadline with the keep-alive's.
type loginHook struct{ mqtt.HookBase }

func (h *loginHook) ID() string { return "duet-login-gate" }

func (h *loginHook) Provides(b byte) bool { return b == mqtt.OnSessionEstablished }

func (h *loginHook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	// The guard sits under the connection's other wrappers (frameConn).
	for c := cl.Net.Conn; c != nil; {
		switch v := c.(type) {
		case *guardConn:
			v.pc.loggedIn()
			return
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return
		}
	}
}

// acceptLoop is a net.Listener that retries temporary Accept errors and
// admits connections through the gate.
type acceptLoop struct {
	net.Listener
	id     string
	gate   *gate
	log    *slog.Logger
	down   atomic.Bool
	closed atomic.Bool
	done   chan struct{}
	once   sync.Once

	// A burst of failures is logged when it starts and when the listener has
	// accepted for burstGap without one: out of descriptors, accepts and
	// failures alternate as connections close, one log line each would
	// flood the log.
	// Connections handed to mochi (attach); clients is mochi's
	// Listeners.ClientsWg.
	clients     *sync.WaitGroup
	connMu      sync.Mutex
	conns       map[net.Conn]struct{}
	connsClosed bool

	inBurst  atomic.Bool
	lastFail atomic.Int64 // unix ns
	failures atomic.Int64 // in this burst
}

const burstGap = time.Second

func (a *acceptLoop) listen(addr string) (err error) {
	a.Listener, err = net.Listen("tcp", addr)
	return err
}

// Accept returns the next admitted connection. Like net/http's Server.Serve
// it sleeps 5 ms, doubling to 1 s, after a temporary error (EMFILE, ENFILE,
// ENOBUFS…): the descriptors come back as connections close.
func (a *acceptLoop) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := a.Listener.Accept()
		if err == nil {
			a.down.Store(false)
			if pc := a.gate.admit(c); pc != nil {
				return pc, nil
			}
			continue
		}
		if a.closed.Load() {
			return nil, err
		}
		a.gate.m.AcceptErrors.Add(1)
		a.down.Store(true)
		// The net.Error Temporary method is deprecated for its vagueness, but
		// it is what net/http's Serve uses to tell these errors apart.
		if te, ok := err.(interface{ Temporary() bool }); !ok || !te.Temporary() {
			a.log.Error("listener stopped", "listener", a.id, "error", err)
			return nil, err
		}
		a.lastFail.Store(time.Now().UnixNano())
		a.failures.Add(1)
		if a.inBurst.CompareAndSwap(false, true) {
			a.log.Warn("listener failing to accept, retrying", "listener", a.id, "error", err)
			go a.endBurst(time.Now())
		}
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		select {
		case <-time.After(delay):
		case <-a.done:
			return nil, net.ErrClosed
		}
		// Out of descriptors, the listener is up again as soon as one is
		// free, though its next Accept may wait for a client to show it.
		if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
			if fd, perr := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0); perr == nil {
				syscall.Close(fd)
				a.down.Store(false)
			}
		}
	}
}

// endBurst logs the end of a burst of accept failures that began at since,
// once burstGap has passed without one.
func (a *acceptLoop) endBurst(since time.Time) {
	for {
		wait := time.Until(time.Unix(0, a.lastFail.Load()).Add(burstGap))
		if wait <= 0 && !a.down.Load() {
			break
		}
		select {
		case <-time.After(max(wait, burstGap/10)):
		case <-a.done:
			return
		}
	}
	a.log.Warn("listener accepting again", "listener", a.id, "failures", a.failures.Swap(0),
		"for", time.Since(since).Round(time.Millisecond))
	a.inBurst.Store(false)
}

func (a *acceptLoop) Close() error {
	a.closed.Store(true)
	a.once.Do(func() { close(a.done) })
	if a.Listener == nil {
		return nil
	}
	return a.Listener.Close()
}

// attach registers a connection about to be handed to mochi; false once
// the listener has closed its connections. mochi's Server.Close waits for
// its connections on Listeners.ClientsWg, which each connection Adds to
// only inside mochi, on its own goroutine: an Add racing that Wait from a
// counter of zero is a misuse of the WaitGroup (the race detector's report,
// and a connection attached after the shutdown). So the loop Adds for the
// connection first, under the same lock as closeConns, and every
// connection it handed over is closed there.
func (a *acceptLoop) attach(c net.Conn) bool {
	a.connMu.Lock()
	defer a.connMu.Unlock()
	if a.connsClosed {
		return false
	}
	if a.conns == nil {
		a.conns = map[net.Conn]struct{}{}
	}
	a.conns[c] = struct{}{}
	a.clients.Add(1)
	return true
}

// detach is attach's end, when mochi is done with the connection.
func (a *acceptLoop) detach(c net.Conn) {
	a.connMu.Lock()
	delete(a.conns, c)
	a.connMu.Unlock()
	a.clients.Done()
}

// closeConns closes every connection the loop handed to mochi (those
// mochi disconnected already are gone from the set) and refuses any still
// on their way: a listener's Close returns with nothing left that could
// attach later, and mochi's wait ends as their reads fail.
func (a *acceptLoop) closeConns() {
	a.connMu.Lock()
	defer a.connMu.Unlock()
	a.connsClosed = true
	for c := range a.conns {
		c.Close()
	}
}

func (a *acceptLoop) addr(configured string) string {
	if a.Listener != nil {
		return a.Listener.Addr().String()
	}
	return configured
}

// tcpListener serves MQTT over TCP, or TLS when tls is set.
type tcpListener struct {
	id, address string
	tls         *tls.Config
	ln          *acceptLoop
	log         *slog.Logger
	end         atomic.Bool
}

func (l *tcpListener) ID() string      { return l.id }
func (l *tcpListener) Address() string { return l.ln.addr(l.address) }
func (l *tcpListener) Protocol() string {
	if l.tls != nil {
		return "tls"
	}
	return "tcp"
}

func (l *tcpListener) Init(log *slog.Logger) error {
	l.log = log
	return l.ln.listen(l.address)
}

func (l *tcpListener) Serve(fn listeners.EstablishFn) {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		pc := c.(*pendingConn)
		go func() {
			var transport net.Conn = pc
			if l.tls != nil {
				// The handshake happens on the first read, within the
				// CONNECT deadline set on pc.
				transport = tls.Server(pc, l.tls)
			}
			l.ln.establish(l.id, fn, transport, pc, l.ln.gate.cfg.MaxConnect, l.log)
		}()
	}
}

func (l *tcpListener) Close(closeClients listeners.CloseFn) {
	if l.end.CompareAndSwap(false, true) {
		closeClients(l.id)
	}
	l.ln.Close()
	l.ln.closeConns()
}

// wsListener serves MQTT over WebSocket (any path, /mqtt documented).
type wsListener struct {
	id, address string
	ln          *acceptLoop
	log         *slog.Logger
	srv         *http.Server
	fn          listeners.EstablishFn
	end         atomic.Bool
}

type connKey struct{}

func (l *wsListener) ID() string       { return l.id }
func (l *wsListener) Address() string  { return l.ln.addr(l.address) }
func (l *wsListener) Protocol() string { return "ws" }

func (l *wsListener) Init(log *slog.Logger) error {
	l.log = log
	cfg := l.ln.gate.cfg
	l.srv = &http.Server{
		Handler: http.HandlerFunc(l.upgrade),
		// The upgrade request must arrive within the CONNECT deadline
		// (also set on the connection at accept), with small headers.
		ReadHeaderTimeout: cfg.ConnectTimeout,
		ReadTimeout:       cfg.ConnectTimeout,
		MaxHeaderBytes:    16 << 10, // room for a browser's cookies
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	// A connection is for one upgrade: no second request on it.
	l.srv.SetKeepAlivesEnabled(false)
	return l.ln.listen(l.address)
}

var upgrader = websocket.Upgrader{
	Subprotocols: []string{"mqtt"},
	// Browsers on any origin may connect: the login is the UserSig, not a
	// cookie.
	CheckOrigin: func(r *http.Request) bool { return true },
}

func (l *wsListener) upgrade(w http.ResponseWriter, r *http.Request) {
	pc, _ := r.Context().Value(connKey{}).(*pendingConn)
	if pc == nil {
		http.Error(w, "no connection", http.StatusInternalServerError)
		return
	}
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	// The upgrader clears the deadlines; the CONNECT's still holds.
	_ = pc.SetDeadline(pc.deadline)
	l.ln.establish(l.id, l.fn, &wsConn{Conn: ws.NetConn(), c: ws}, pc, l.ln.gate.cfg.MaxConnect, l.log)
}

func (l *wsListener) Serve(fn listeners.EstablishFn) {
	l.fn = fn
	_ = l.srv.Serve(l.ln)
}

func (l *wsListener) Close(closeClients listeners.CloseFn) {
	if l.end.CompareAndSwap(false, true) {
		// Upgraded connections are hijacked: the server does not track them,
		// closeClients ends them.
		_ = l.srv.Close()
		closeClients(l.id)
	}
	l.ln.Close()
	l.ln.closeConns()
}

// wsConn is a WebSocket connection as a byte stream: MQTT packets may span
// binary messages and a message may hold several [MQTT-6.0.0-2].
type wsConn struct {
	net.Conn
	c *websocket.Conn
	r io.Reader // the message being read
}

var errNotBinary = errors.New("websocket message is not binary") // [MQTT-6.0.0-1]

func (ws *wsConn) Read(p []byte) (int, error) {
	for {
		if ws.r == nil {
			op, r, err := ws.c.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, errNotBinary
			}
			ws.r = r
		}
		n, err := ws.r.Read(p)
		if errors.Is(err, io.EOF) {
			ws.r, err = nil, nil
			if n == 0 {
				continue
			}
		}
		return n, err
	}
}

func (ws *wsConn) Write(p []byte) (int, error) {
	if err := ws.c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
