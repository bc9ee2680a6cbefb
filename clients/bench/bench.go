package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Config is one benchmark run. A zero optional field takes the default
// main's flags list (see normalize); V5ReceiveMax and Rate keep their zero.
type Config struct {
	Mode     string        // "duet" or "raw"
	Addr     string        // broker URL, tcp://host:port
	Pairs    int           // sender/receiver pairs
	Duration time.Duration // sending window; always bounds the run
	Messages int           // per sender; 0 = as many as fit in Duration
	Window   int           // max unacknowledged QoS 1 publishes per sender
	Rate     float64       // per-sender msgs/s cap; 0 = as fast as acks allow
	Payload  int           // extra filler bytes per message
	V5       bool          // MQTT 5 (paho.golang) instead of 3.1.1
	// Client picks the MQTT 3.1.1 implementation: "wire" (built in, lean;
	// wire.go) or "paho" (paho.mqtt.golang). MQTT 5 always uses paho.golang,
	// so "" means wire without V5 and paho with it.
	Client string
	// V5ReceiveMax is the Receive Maximum an MQTT 5 client sends in CONNECT;
	// 0 omits the property (as most clients do), and paho.golang then
	// preallocates a 65535-message inbound buffer per connection.
	V5ReceiveMax int
	Prefix       string // user ids {Prefix}-s-{i} / {Prefix}-r-{i}, raw topics {Prefix}/{i}

	// Duet mode only.
	Secret    string
	SDKAppID  uint64
	Device    string
	SigExpire time.Duration
	// SendersReplyOnly: duet senders subscribe to im/{me}/rsp only (a
	// back-end bot), not to their timeline (a phone, which gets the events
	// of its user's other devices).
	SendersReplyOnly bool

	ConnParallel int           // connections dialled concurrently
	Timeout      time.Duration // connect, subscribe and per-PUBACK timeout
	ReadyTimeout time.Duration // duet: wait for sync_complete on every receiver
	Drain        time.Duration // wait for stragglers after sending stops
	AllowRemote  bool          // permit a non-loopback broker address
	// BrokerPID, when set, is the broker's process (on this machine): its
	// CPU over the send window is reported per delivered message.
	// BrokerPIDs adds more processes to the same figure (a cluster's
	// nodes on this machine).
	BrokerPID  int
	BrokerPIDs []int
	// Placement, with several addresses in Addr (a cluster's nodes): cross
	// (the default) connects a pair's sender and receiver to different
	// nodes, same to the same node. Pairs spread over the nodes in turn.
	Placement string

	Log      io.Writer // phase and progress messages; nil discards them
	Progress bool      // a progress line per second while sending
}

const (
	defaultSDKAppID    = 1400000000
	maxWindow          = 4096
	maxPairs           = 100000
	maxConsecutiveErrs = 50 // a sender worker gives up after this many failed publishes in a row
	maxRecordedErrors  = 8
	keepAlive          = 60 * time.Second
	defaultV5RecvMax   = 1024
	drainPollInterval  = 10 * time.Millisecond
	progressInterval   = time.Second
)

func (c *Config) normalize() error {
	if c.Mode == "" {
		c.Mode = "duet"
	}
	if c.Mode != "duet" && c.Mode != "raw" {
		return fmt.Errorf("mode %q: want duet or raw", c.Mode)
	}
	if c.Addr == "" {
		c.Addr = "tcp://127.0.0.1:1883"
	}
	if c.Placement == "" {
		c.Placement = "cross"
	}
	if c.Placement != "cross" && c.Placement != "same" {
		return fmt.Errorf("placement %q: want cross or same", c.Placement)
	}
	for _, pid := range append([]int{c.BrokerPID}, c.BrokerPIDs...) {
		if pid < 0 {
			return fmt.Errorf("broker-pid %d: want a process id", pid)
		}
		if pid > 0 {
			if _, err := procCPU(pid); err != nil {
				return fmt.Errorf("broker-pid %d: %w", pid, err)
			}
		}
	}
	if c.Pairs < 1 || c.Pairs > maxPairs {
		return fmt.Errorf("pairs %d: want 1..%d", c.Pairs, maxPairs)
	}
	if c.Duration <= 0 {
		return errors.New("duration must be > 0 (it bounds every run, also with -messages)")
	}
	if c.Messages < 0 {
		return errors.New("messages must be >= 0")
	}
	if c.Window == 0 {
		c.Window = 1
	}
	if c.Window < 1 || c.Window > maxWindow {
		return fmt.Errorf("window %d: want 1..%d", c.Window, maxWindow)
	}
	if c.Rate < 0 {
		return errors.New("rate must be >= 0")
	}
	if c.Payload < 0 || c.Payload > 1<<20 {
		return errors.New("payload: want 0..1048576 extra bytes")
	}
	switch c.Client {
	case "":
		c.Client = "wire"
		if c.V5 {
			c.Client = "paho"
		}
	case "paho":
	case "wire":
		if c.V5 {
			return errors.New("client wire speaks MQTT 3.1.1 only: use -client paho (or leave -client out) with -v5")
		}
	default:
		return fmt.Errorf("client %q: want wire or paho", c.Client)
	}
	if c.V5ReceiveMax < 0 || c.V5ReceiveMax > 65535 {
		return errors.New("v5-receive-max: want 0..65535")
	}
	if c.Prefix == "" {
		c.Prefix = "bench"
	}
	if c.Mode == "duet" && c.Secret == "" {
		return errors.New("duet mode needs -secret (or DUET_SECRET)")
	}
	if c.SDKAppID == 0 {
		c.SDKAppID = defaultSDKAppID
	}
	if c.Device == "" {
		c.Device = "bench"
	}
	if c.SigExpire <= 0 {
		c.SigExpire = 24 * time.Hour
	}
	if c.ConnParallel <= 0 {
		c.ConnParallel = 100
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = 10 * time.Second
	}
	if c.Drain <= 0 {
		c.Drain = 10 * time.Second
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	return nil
}

// brokerHostPort turns tcp://host:port (or mqtt://) into host:port and, unless
// allowRemote, refuses anything but a literal loopback address or localhost.
func brokerHostPort(addr string, allowRemote bool) (string, error) {
	u, err := url.Parse(addr)
	if err != nil {
		return "", fmt.Errorf("addr %q: %w", addr, err)
	}
	if u.Scheme != "tcp" && u.Scheme != "mqtt" {
		return "", fmt.Errorf("addr %q: want tcp://host:port", addr)
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return "", fmt.Errorf("addr %q: no host", addr)
	}
	if port == "" {
		port = "1883"
	}
	if !allowRemote {
		ip := net.ParseIP(host)
		if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return "", fmt.Errorf("addr %q is not a loopback address (pass -allow-remote to load another host)", addr)
		}
	}
	return net.JoinHostPort(host, port), nil
}

// Result is a run's summary.
type Result struct {
	Mode          string  `json:"mode"`
	Protocol      string  `json:"protocol"`
	Client        string  `json:"client"` // wire or paho
	Addr          string  `json:"addr"`
	Pairs         int     `json:"pairs"`
	Window        int     `json:"window"`
	Rate          float64 `json:"rate_per_sender"`
	Payload       int     `json:"payload_extra_bytes"`
	Sent          int64   `json:"sent"` // publishes acknowledged by PUBACK
	Delivered     int64   `json:"delivered"`
	Lost          int64   `json:"lost"` // sent - rejected - delivered, after the drain
	Errors        int64   `json:"errors"`
	PublishErrors int64   `json:"publish_errors"`
	Rejected      int64   `json:"rejected"`           // duet: replies with ErrorCode != 0
	Accepted      int64   `json:"accepted,omitempty"` // duet: replies with ErrorCode 0
	ConnLost      int64   `json:"connections_lost"`
	Stale         int64   `json:"stale_ignored,omitempty"` // messages stamped before this run (e.g. replayed history)
	ConnectSecs   float64 `json:"connect_s"`
	SendSecs      float64 `json:"send_window_s"`
	DeliveredRate float64 `json:"delivered_per_s"` // delivered / send window
	SentRate      float64 `json:"sent_per_s"`
	Latency       Latency `json:"latency_ms"`
	// CPU over the send window, per message delivered in it: the tool's
	// own, and the broker's when -broker-pid named it.
	ToolCPUSecs     float64  `json:"tool_cpu_s"`
	ToolCPUPerMsg   float64  `json:"tool_cpu_us_per_msg"`
	BrokerCPUSecs   float64  `json:"broker_cpu_s,omitempty"`
	BrokerCPUPerMsg float64  `json:"broker_cpu_us_per_msg,omitempty"`
	Drained         bool     `json:"drained"`
	Interrupted     bool     `json:"interrupted"`
	FirstErrors     []string `json:"first_errors,omitempty"`
}

// Latency holds send-to-receipt latency figures in milliseconds.
type Latency struct {
	N    uint64  `json:"n"`
	Min  float64 `json:"min"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
}

// pair is one sender/receiver couple and its counters. Sender counters are
// updated by the pair's send workers and the sender's message handler,
// receiver counters by the receiver's message handler.
type pair struct {
	idx        int
	send, recv client
	pace       *pacer

	readyOnce sync.Once
	ready     chan struct{}

	claimed  atomic.Int64 // message numbers handed to send workers
	sent     atomic.Int64
	pubErrs  atomic.Int64
	accepted atomic.Int64
	rejected atomic.Int64

	delivered atomic.Int64
	stale     atomic.Int64
	mu        sync.Mutex // guards hist
	hist      histogram
}

func (p *pair) markReady() { p.readyOnce.Do(func() { close(p.ready) }) }

// pacer spaces one sender's publishes (shared by its window workers).
type pacer struct {
	mu    sync.Mutex
	every time.Duration
	next  time.Time
}

// wait blocks until the next send slot; false if ctx ends (or its deadline
// falls) before that.
func (p *pacer) wait(ctx context.Context) bool {
	if p == nil {
		return ctx.Err() == nil
	}
	p.mu.Lock()
	now := time.Now()
	at := p.next
	if at.Before(now) {
		at = now
	}
	p.next = at.Add(p.every)
	p.mu.Unlock()
	if dl, ok := ctx.Deadline(); ok && at.After(dl) {
		return false
	}
	d := time.Until(at)
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// errorLog keeps the first few error messages.
type errorLog struct {
	mu    sync.Mutex
	first []string
}

func (l *errorLog) add(msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.first) < maxRecordedErrors {
		l.first = append(l.first, msg)
	}
}

func (l *errorLog) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.first...)
}

// run is the state of one Run call.
type run struct {
	cfg        Config
	mode       mode
	hostport   string   // every address, for the summary
	hostports  []string // the addresses dialled
	startNanos int64    // messages stamped earlier are not this run's
	pairs      []*pair
	errs       errorLog
	connLost   atomic.Int64
	closing    atomic.Bool
}

func (r *run) logf(format string, args ...any) {
	fmt.Fprintf(r.cfg.Log, format+"\n", args...)
}

// Run connects cfg.Pairs sender/receiver pairs, sends for cfg.Duration (or
// cfg.Messages per sender), drains, disconnects and summarises. Cancelling
// ctx aborts the connect phase, or stops sending early: publishes already
// started still wait for their PUBACK, the drain still runs (both bounded),
// and the result is returned with Interrupted set.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	var hostports []string
	for _, a := range strings.Split(cfg.Addr, ",") {
		hp, err := brokerHostPort(strings.TrimSpace(a), cfg.AllowRemote)
		if err != nil {
			return nil, err
		}
		hostports = append(hostports, hp)
	}
	hostport := strings.Join(hostports, ",")
	r := &run{cfg: cfg, hostport: hostport, hostports: hostports, startNanos: time.Now().UnixNano()}
	switch cfg.Mode {
	case "raw":
		r.mode = &rawMode{prefix: cfg.Prefix, pad: cfg.Payload}
	default:
		r.mode = &duetMode{prefix: cfg.Prefix, pad: cfg.Payload, device: cfg.Device, secret: cfg.Secret,
			sdkappid: cfg.SDKAppID, sigExpire: cfg.SigExpire, now: time.Now, replyOnly: cfg.SendersReplyOnly}
	}
	r.pairs = make([]*pair, cfg.Pairs)
	for i := range r.pairs {
		p := &pair{idx: i, ready: make(chan struct{})}
		if cfg.Rate > 0 {
			p.pace = &pacer{every: time.Duration(float64(time.Second) / cfg.Rate)}
		}
		r.pairs[i] = p
	}
	defer r.closeAll()

	connStart := time.Now()
	r.logf("connecting %d receivers to %s (%s via %s, %s mode)...", cfg.Pairs, hostport, r.protocol(), cfg.Client, cfg.Mode)
	if err := r.forEach(ctx, r.dialReceiver); err != nil {
		return nil, fmt.Errorf("receivers: %w%s", err, fdHint(err))
	}
	r.logf("connecting %d senders...", cfg.Pairs)
	if err := r.forEach(ctx, r.dialSender); err != nil {
		return nil, fmt.Errorf("senders: %w%s", err, fdHint(err))
	}
	if notReady := r.waitReady(ctx); notReady > 0 {
		r.logf("warning: %d receivers sent no sync_complete within %v; sending anyway", notReady, cfg.ReadyTimeout)
	}
	connSecs := time.Since(connStart).Seconds()
	r.logf("%d connections up in %.2fs; sending for %v", 2*cfg.Pairs, connSecs, cfg.Duration)

	sendStart := time.Now()
	cpu := startCPU(append([]int{cfg.BrokerPID}, cfg.BrokerPIDs...)...)
	r.sendAll(ctx, sendStart.Add(cfg.Duration))
	sendSecs := time.Since(sendStart).Seconds()
	var window Result // the CPU of the send window, before the drain
	window.Delivered = r.totals().delivered
	cpu.stop(&window)

	r.logf("sending stopped after %.2fs; draining (up to %v)...", sendSecs, cfg.Drain)
	drained := r.drain()

	r.closing.Store(true)
	res := r.result()
	res.ConnectSecs = connSecs
	res.SendSecs = sendSecs
	if sendSecs > 0 {
		res.DeliveredRate = float64(res.Delivered) / sendSecs
		res.SentRate = float64(res.Sent) / sendSecs
	}
	res.Drained = drained
	res.Interrupted = ctx.Err() != nil
	res.ToolCPUSecs, res.ToolCPUPerMsg = window.ToolCPUSecs, window.ToolCPUPerMsg
	res.BrokerCPUSecs, res.BrokerCPUPerMsg = window.BrokerCPUSecs, window.BrokerCPUPerMsg
	return res, nil
}

func (r *run) protocol() string {
	if r.cfg.V5 {
		return "mqtt5"
	}
	return "mqtt3.1.1"
}

func fdHint(err error) string {
	if err != nil && (errors.Is(err, syscall.EMFILE) || strings.Contains(err.Error(), "too many open files")) {
		return " (raise the open-files limit: ulimit -n)"
	}
	return ""
}

// forEach runs fn over all pairs with cfg.ConnParallel workers and returns
// the first error (which also stops the others) or ctx's error.
func (r *run) forEach(ctx context.Context, fn func(context.Context, *pair) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	for range min(r.cfg.ConnParallel, len(r.pairs)) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= len(r.pairs) {
					return
				}
				if err := fn(ctx, r.pairs[i]); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// node is the address pair i's receiver (sender false) or sender dials:
// pairs take the nodes in turn, and with cross placement a pair's two
// ends are on neighbouring nodes.
func (r *run) node(i int, sender bool) string {
	n := len(r.hostports)
	k := i % n
	if sender && r.cfg.Placement == "cross" {
		k = (k + 1) % n
	}
	return r.hostports[k]
}

func (r *run) dialOpts(hostport, user string, topics []string, onMessage func(string, []byte)) (dialOptions, error) {
	cid, username, password, err := r.mode.login(user)
	if err != nil {
		return dialOptions{}, err
	}
	return dialOptions{
		hostport:   hostport,
		v5:         r.cfg.V5,
		wire:       r.cfg.Client == "wire",
		clientID:   cid,
		username:   username,
		password:   password,
		topics:     topics,
		timeout:    r.cfg.Timeout,
		keepAlive:  keepAlive,
		receiveMax: uint16(r.cfg.V5ReceiveMax),
		onMessage:  onMessage,
		onLost: func(err error) {
			if r.closing.Load() {
				return
			}
			r.connLost.Add(1)
			r.errs.add(fmt.Sprintf("%s: connection lost: %v", user, err))
		},
	}, nil
}

func (r *run) dialReceiver(ctx context.Context, p *pair) error {
	user := r.mode.receiverID(p.idx)
	o, err := r.dialOpts(r.node(p.idx, false), user, r.mode.receiverTopics(p.idx), func(topic string, payload []byte) {
		r.onReceiver(p, topic, payload)
	})
	if err != nil {
		return err
	}
	c, err := dial(ctx, o)
	if err != nil {
		return fmt.Errorf("%s: %w", user, err)
	}
	p.recv = c
	if !r.mode.waitsForSync() {
		p.markReady()
	}
	return nil
}

func (r *run) dialSender(ctx context.Context, p *pair) error {
	user := r.mode.senderID(p.idx)
	o, err := r.dialOpts(r.node(p.idx, true), user, r.mode.senderTopics(p.idx), func(topic string, payload []byte) {
		r.onSender(p, topic, payload)
	})
	if err != nil {
		return err
	}
	c, err := dial(ctx, o)
	if err != nil {
		return fmt.Errorf("%s: %w", user, err)
	}
	p.send = c
	return nil
}

func (r *run) onReceiver(p *pair, topic string, payload []byte) {
	now := time.Now().UnixNano()
	ev := r.mode.onReceiver(p.idx, topic, payload)
	switch ev.kind {
	case evReady:
		p.markReady()
	case evDelivered:
		if ev.sentNanos < r.startNanos {
			p.stale.Add(1)
			return
		}
		p.mu.Lock()
		p.hist.record(time.Duration(now - ev.sentNanos))
		p.mu.Unlock()
		p.delivered.Add(1)
	}
}

func (r *run) onSender(p *pair, topic string, payload []byte) {
	ev := r.mode.onSender(p.idx, topic, payload)
	switch ev.kind {
	case evReplyOK:
		p.accepted.Add(1)
	case evReplyErr:
		p.rejected.Add(1)
		r.errs.add(fmt.Sprintf("%s: sendmsg: %s", r.mode.senderID(p.idx), ev.info))
	}
}

// waitReady waits, bounded by cfg.ReadyTimeout, until every receiver is
// ready, and returns how many are not.
func (r *run) waitReady(ctx context.Context) int {
	timer := time.NewTimer(r.cfg.ReadyTimeout)
	defer timer.Stop()
	for i, p := range r.pairs {
		select {
		case <-p.ready:
		case <-ctx.Done():
			return len(r.pairs) - i
		case <-timer.C:
			n := 0
			for _, q := range r.pairs[i:] {
				select {
				case <-q.ready:
				default:
					n++
				}
			}
			return n
		}
	}
	return 0
}

// sendAll runs cfg.Window workers per sender until the deadline, the message
// count or ctx ends them, and returns when the last PUBACK is in.
func (r *run) sendAll(ctx context.Context, deadline time.Time) {
	sendCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	ackCtx := context.WithoutCancel(ctx) // each publish is still bounded by cfg.Timeout
	var wg sync.WaitGroup
	for _, p := range r.pairs {
		for range r.cfg.Window {
			wg.Go(func() { r.sendLoop(ackCtx, sendCtx, p) })
		}
	}
	if r.cfg.Progress {
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		r.progress(done, deadline)
	}
	wg.Wait()
}

// sendLoop is one window slot of one sender. sendCtx decides whether to
// start another publish; a started publish waits for its PUBACK under ackCtx
// and the ack timeout, so the window's last messages are still counted.
func (r *run) sendLoop(ackCtx, sendCtx context.Context, p *pair) {
	consecutive := 0
	for sendCtx.Err() == nil {
		n := p.claimed.Add(1)
		if r.cfg.Messages > 0 && n > int64(r.cfg.Messages) {
			return
		}
		if !p.pace.wait(sendCtx) {
			return
		}
		topic, payload := r.mode.request(p.idx, n, time.Now().UnixNano())
		err := p.send.publish(ackCtx, topic, payload)
		switch {
		case err == nil:
			p.sent.Add(1)
			consecutive = 0
		default:
			p.pubErrs.Add(1)
			r.errs.add(fmt.Sprintf("%s: publish: %v", r.mode.senderID(p.idx), err))
			if consecutive++; consecutive >= maxConsecutiveErrs {
				return
			}
		}
	}
}

type totals struct {
	sent, delivered, rejected, accepted, pubErrs, stale int64
}

func (r *run) totals() totals {
	var t totals
	for _, p := range r.pairs {
		t.sent += p.sent.Load()
		t.delivered += p.delivered.Load()
		t.rejected += p.rejected.Load()
		t.accepted += p.accepted.Load()
		t.pubErrs += p.pubErrs.Load()
		t.stale += p.stale.Load()
	}
	return t
}

func (r *run) progress(done <-chan struct{}, deadline time.Time) {
	tick := time.NewTicker(progressInterval)
	defer tick.Stop()
	start := time.Now()
	var last totals
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			t := r.totals()
			r.logf("  %5.1fs sent %d (+%d) delivered %d (+%d) errors %d",
				time.Since(start).Seconds(), t.sent, t.sent-last.sent, t.delivered, t.delivered-last.delivered,
				t.pubErrs+t.rejected+r.connLost.Load())
			last = t
			if time.Now().After(deadline.Add(2 * r.cfg.Timeout)) { // belt and braces: senders stop by deadline+Timeout
				return
			}
		}
	}
}

// outstanding is how many acknowledged messages are neither delivered nor
// refused yet, plus (duet) how many replies are still due.
func (r *run) outstanding() int64 {
	t := r.totals()
	n := t.sent - t.rejected - t.delivered
	if r.cfg.Mode == "duet" {
		n = max(n, t.sent-t.accepted-t.rejected)
	}
	return n
}

// drain polls until nothing is outstanding or cfg.Drain passes.
func (r *run) drain() bool {
	deadline := time.Now().Add(r.cfg.Drain)
	tick := time.NewTicker(drainPollInterval)
	defer tick.Stop()
	for {
		if r.outstanding() <= 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
}

func (r *run) closeAll() {
	r.closing.Store(true)
	var wg sync.WaitGroup
	sem := make(chan struct{}, r.cfg.ConnParallel)
	for _, p := range r.pairs {
		for _, c := range []client{p.send, p.recv} {
			if c == nil {
				continue
			}
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				c.close()
			})
		}
	}
	wg.Wait()
}

func (r *run) result() *Result {
	t := r.totals()
	var h histogram
	for _, p := range r.pairs {
		p.mu.Lock()
		h.merge(&p.hist)
		p.mu.Unlock()
	}
	connLost := r.connLost.Load()
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return &Result{
		Mode:          r.cfg.Mode,
		Protocol:      r.protocol(),
		Client:        r.cfg.Client,
		Addr:          r.hostport,
		Pairs:         r.cfg.Pairs,
		Window:        r.cfg.Window,
		Rate:          r.cfg.Rate,
		Payload:       r.cfg.Payload,
		Sent:          t.sent,
		Delivered:     t.delivered,
		Lost:          max(0, t.sent-t.rejected-t.delivered),
		Errors:        t.pubErrs + t.rejected + connLost,
		PublishErrors: t.pubErrs,
		Rejected:      t.rejected,
		Accepted:      t.accepted,
		ConnLost:      connLost,
		Stale:         t.stale,
		Latency: Latency{
			N:    h.n,
			Min:  ms(time.Duration(h.min)),
			Mean: ms(h.mean()),
			P50:  ms(h.quantile(0.50)),
			P90:  ms(h.quantile(0.90)),
			P99:  ms(h.quantile(0.99)),
			Max:  ms(time.Duration(h.max)),
		},
		FirstErrors: r.errs.list(),
	}
}
