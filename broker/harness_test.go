package broker_test

// The harness starts a real Duet in-process (Pebble in a temp directory,
// mochi on a loopback port) and connects real MQTT clients to it: paho.mqtt
// for MQTT 3.1.1, paho.golang for MQTT 5.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/duet-im/duet/broker"
	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/internal/clustertest"
	srvpkg "github.com/duet-im/duet/internal/server"
	"github.com/duet-im/duet/store"
	"github.com/duet-im/duet/usersig"
)

const (
	testAppID = 1400000000
	testKey   = "duet-test-secret"
)

// testClock is a movable clock for retention and recall windows.
type testClock struct{ offset atomic.Int64 }

func (c *testClock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *testClock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// testServer is a Duet assembled by internal/server, as main runs it
// (without media and HTTP unless a test asks).
type testServer struct {
	t      testing.TB
	dir    string
	srv    *srvpkg.Server
	store  *store.Store
	svc    *command.Service
	broker *broker.Broker
	addr   string
	ws     string
	opts   serverOpts
	// cluster is every node in -cluster mode (startCluster); nil otherwise.
	cluster []*srvpkg.Server
	// owner is, in -cluster mode, the node that owns the data: what only
	// the owner runs (the pusher's queue and counters) is read from it.
	owner *srvpkg.Server
}

type serverOpts struct {
	autoAccounts bool
	window       int
	maxRequest   int
	clock        func() time.Time
	command      func(*command.Config) // adjusts command settings (send policy switches)
	websocket    bool                  // also listen for MQTT over WebSocket
	broker       func(*broker.Config)  // adjusts broker settings (listen_test.go)
	log          *slog.Logger          // the server's log, for a test that reads it
	// server adjusts the rest of the server's settings (push vendors, media,
	// callbacks); started is told of every start (and restart).
	server  func(*srvpkg.Config)
	started func(*srvpkg.Server)
}

func startServer(t testing.TB, o serverOpts) *testServer {
	t.Helper()
	s := &testServer{t: t, dir: t.TempDir(), opts: o}
	if *clusterMode {
		s.startCluster()
		return s
	}
	s.start()
	t.Cleanup(s.stop)
	return s
}

// clusterMode runs the scenarios against a three-node cluster
// (docs/cluster.md §22): the devices connect to a node that does not own
// the data, so every write they make is forwarded to the owner, and every
// event they get has come through the log to their node's view.
var clusterMode = flag.Bool("cluster", false, "run the scenarios against a 3-node cluster, devices on a node that does not own the data")

// clusterPartitions, with -cluster, gives the cluster several partitions
// (docs/cluster.md §5, §11): the nodes share them, so the devices' node
// owns some users' data and not others', and most pairs of users span two
// partitions (the recipient's side an intent). s.store is then a front
// over the owners' partitions: what a test writes or reads directly is
// exact.
var clusterPartitions = flag.Int("partitions", 1, "with -cluster: how many partitions the cluster has")

// startCluster is start for -cluster: s.srv (and s.addr) is a node that
// does not own the data; s.store and s.svc are the owner's, so what a
// test writes or reads directly is exact.
func (s *testServer) startCluster() {
	t := s.t
	cfgs := clustertest.Configs(t, 3)
	for i := range cfgs {
		c := &cfgs[i]
		c.Secret, c.SDKAppID, c.HTTP = testKey, testAppID, ""
		c.AutoAccounts, c.Window, c.MaxRequest = s.opts.autoAccounts, s.opts.window, s.opts.maxRequest
		c.Clock, c.Command, c.Broker = s.opts.clock, s.opts.command, s.opts.broker
		if s.opts.websocket {
			c.WS = "127.0.0.1:0"
		}
		if s.opts.log != nil {
			c.Log = s.opts.log
		}
		if s.opts.server != nil {
			s.opts.server(c)
		}
		// Owners stay put: a test's direct reads and writes go to them.
		c.Cluster.Partitions, c.Cluster.RebalanceDelay = *clusterPartitions, time.Hour
	}
	srvs := clustertest.New(t, cfgs)
	clustertest.StartAll(t, srvs)
	if *clusterPartitions > 1 {
		parts := make([]*store.Store, *clusterPartitions)
		for p := range parts {
			parts[p] = srvs[clustertest.OwnerOf(t, srvs, p)].Store().Partition(p)
		}
		dev := srvs[0]
		s.cluster, s.owner = srvs, nil
		s.srv, s.broker, s.addr, s.ws = dev, dev.Broker(), dev.Addr("tcp"), dev.Addr("ws")
		s.store, s.svc = store.Front(parts), dev.Service()
		if s.opts.started != nil {
			s.opts.started(dev)
		}
		return
	}
	o := clustertest.Owner(t, srvs)
	dev := srvs[(o+1)%len(srvs)]
	s.cluster, s.owner = srvs, srvs[o]
	s.srv, s.broker, s.addr, s.ws = dev, dev.Broker(), dev.Addr("tcp"), dev.Addr("ws")
	s.store, s.svc = srvs[o].Store(), srvs[o].Service()
	if s.opts.started != nil {
		s.opts.started(dev)
	}
}

// ownerOf is, in -cluster mode, the node that owns user's data: with
// several partitions, the owner of user's partition.
func (s *testServer) ownerOf(user string) *srvpkg.Server {
	if s.owner != nil || s.cluster == nil {
		return s.owner
	}
	st := s.cluster[0].Store()
	return s.cluster[clustertest.OwnerOf(s.t, s.cluster, st.UserPartition(user))]
}

// settle waits, in cluster mode, until every node's view has applied what
// the owner's has: a login reads the view of the node it reaches.
func (s *testServer) settle() {
	if s.cluster != nil {
		clustertest.Settle(s.t, s.cluster)
	}
}

func (s *testServer) start() {
	t := s.t
	if s.cluster != nil {
		// A test that stops a node and starts "the server" again would get
		// a fresh single node on an empty directory and pass for the wrong
		// reason; in a cluster the counterpart is a new owner taking over
		// (TestClusterPushTakeover, cluster_crash_test.go).
		t.Skip("restarts the server: not in -cluster mode yet")
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if s.opts.log != nil {
		log = s.opts.log
	}
	addr := s.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	cfg := srvpkg.Config{
		Data: s.dir, Secret: testKey, MQTT: addr, WS: s.wsAddr(), SDKAppID: testAppID,
		AutoAccounts: s.opts.autoAccounts, Window: s.opts.window, MaxRequest: s.opts.maxRequest,
		Clock: s.opts.clock, Log: log, NoMedia: true, Command: s.opts.command, Broker: s.opts.broker,
	}
	if s.opts.server != nil {
		s.opts.server(&cfg)
	}
	srv, err := srvpkg.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		srv.Close()
		t.Fatal(err)
	}
	s.srv, s.store, s.svc, s.broker, s.addr, s.ws = srv, srv.Store(), srv.Service(), srv.Broker(), srv.Addr("tcp"), srv.Addr("ws")
	if s.opts.started != nil {
		s.opts.started(srv)
	}
}

// wsAddr is the WebSocket listener's address: empty when off, any free port
// on the first start (start keeps the one bound), the same port on a restart.
func (s *testServer) wsAddr() string {
	if !s.opts.websocket {
		return ""
	}
	if s.ws == "" {
		return "127.0.0.1:0"
	}
	return s.ws
}

func (s *testServer) stop() {
	if s.srv == nil {
		return
	}
	s.srv.Close()
	s.srv, s.broker = nil, nil
}

// restart stops the server and starts it again on the same data directory
// and port.
func (s *testServer) restart() {
	if s.cluster != nil {
		s.t.Skip("restarts the server: not in -cluster mode yet")
	}
	s.stop()
	s.start()
}

func (s *testServer) users(ids ...string) {
	s.t.Helper()
	for _, id := range ids {
		if _, err := s.store.ImportAccount(store.Account{UserID: id}); err != nil {
			s.t.Fatal(err)
		}
	}
	s.settle()
}

func sig(t testing.TB, user string) string {
	t.Helper()
	s, err := usersig.Gen(testAppID, testKey, user, 3600, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// event is a decoded JSON payload.
type event map[string]any

func (e event) str(k string) string { s, _ := e[k].(string); return s }
func (e event) num(k string) int64  { f, _ := e[k].(float64); return int64(f) }

// device is a connected test client of either protocol version.
type device struct {
	t      testing.TB
	user   string
	v5     bool
	v3     pahov3.Client
	c5     *paho.Client
	in     chan event // im/{me}/in
	live   chan event
	rsp    chan event
	reqSeq atomic.Int64
	// arrivals numbers every received publish in order
	arrivals atomic.Int64
	// ownSeq is the highest Seq of this device's own sends (from replies).
	ownSeq atomic.Int64
	// sessionPresent is the CONNACK's Session Present flag.
	sessionPresent bool

	mu      sync.Mutex
	replies map[string]chan event
}

type connectOpts struct {
	v5       bool
	clientID string // default user:dev
	ws       bool   // MQTT 3.1.1 over WebSocket (/mqtt) instead of TCP
	password string // default a valid sig
	noSub    bool
	topics   []string // default im/{me}/#
	recvMax  uint16
	// session keeps the MQTT session across connections: clean session off
	// (v3), clean start off with a session expiry (v5). The SUBSCRIBE is
	// still sent after every CONNACK, as clients taught to subscribe in
	// their on-connect callback do.
	session bool
}

func (s *testServer) connect(user string, o connectOpts) *device {
	s.t.Helper()
	d, err := s.dial(user, o)
	if err != nil {
		s.t.Fatalf("connect %s: %v", user, err)
	}
	return d
}

// dial connects and subscribes; it returns the CONNACK refusal as an error.
func (s *testServer) dial(user string, o connectOpts) (*device, error) {
	t := s.t
	switch o.clientID {
	case "":
		o.clientID = user + ":dev"
	case "-":
		o.clientID = "" // let the server assign one
	}
	if o.password == "" {
		o.password = sig(t, user)
	}
	if o.topics == nil {
		o.topics = []string{"im/" + user + "/#"}
	}
	d := &device{t: t, user: user, v5: o.v5, in: make(chan event, 100000), live: make(chan event, 1000), rsp: make(chan event, 1000), replies: map[string]chan event{}}
	route := func(topic string, payload []byte) {
		var e event
		if err := json.Unmarshal(payload, &e); err != nil {
			t.Errorf("%s: undecodable payload on %s: %q", user, topic, payload)
			return
		}
		// Arrival order across topics, for tests of what comes before what.
		e["_arrival"] = float64(d.arrivals.Add(1))
		switch topic {
		case "im/" + user + "/in":
			d.in <- e
		case "im/" + user + "/live":
			d.live <- e
		default:
			d.mu.Lock()
			ch := d.replies[e.str("ReqId")]
			d.mu.Unlock()
			if ch != nil {
				ch <- e
			} else {
				d.rsp <- e
			}
		}
	}
	if o.v5 {
		conn, err := net.Dial("tcp", s.addr)
		if err != nil {
			return nil, err
		}
		c := paho.NewClient(paho.ClientConfig{
			ClientID: o.clientID,
			Conn:     conn,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				route(pr.Packet.Topic, pr.Packet.Payload)
				return true, nil
			}},
		})
		cp := &paho.Connect{ClientID: o.clientID, Username: user, UsernameFlag: true, Password: []byte(o.password), PasswordFlag: true, KeepAlive: 30, CleanStart: !o.session}
		if o.recvMax > 0 || o.session {
			cp.Properties = &paho.ConnectProperties{}
		}
		if o.recvMax > 0 {
			cp.Properties.ReceiveMaximum = &o.recvMax
		}
		if o.session {
			expiry := uint32(3600)
			cp.Properties.SessionExpiryInterval = &expiry
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ack, err := c.Connect(ctx, cp)
		if err != nil {
			if ack != nil {
				return nil, connackRefusal(ack)
			}
			return nil, err
		}
		d.c5, d.sessionPresent = c, ack.SessionPresent
		if !o.noSub {
			var subs []paho.SubscribeOptions
			for _, tp := range o.topics {
				subs = append(subs, paho.SubscribeOptions{Topic: tp, QoS: 1})
			}
			if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs}); err != nil {
				return nil, err
			}
		}
	} else {
		broker := "tcp://" + s.addr
		if o.ws {
			broker = "ws://" + s.ws + "/mqtt"
		}
		opts := pahov3.NewClientOptions().AddBroker(broker).SetClientID(o.clientID).
			SetUsername(user).SetPassword(o.password).SetCleanSession(!o.session).SetAutoReconnect(false).
			SetConnectRetry(false).SetOrderMatters(true).SetProtocolVersion(4)
		opts.SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) { route(m.Topic(), m.Payload()) })
		c := pahov3.NewClient(opts)
		tok := c.Connect()
		if !tok.WaitTimeout(5 * time.Second) {
			return nil, fmt.Errorf("connect timeout")
		}
		if err := tok.Error(); err != nil {
			return nil, err
		}
		d.v3, d.sessionPresent = c, tok.(*pahov3.ConnectToken).SessionPresent()
		if !o.noSub {
			filters := map[string]byte{}
			for _, tp := range o.topics {
				filters[tp] = 1
			}
			st := c.SubscribeMultiple(filters, nil)
			if !st.WaitTimeout(5*time.Second) || st.Error() != nil {
				return nil, fmt.Errorf("subscribe: %v", st.Error())
			}
		}
	}
	t.Cleanup(d.close)
	return d, nil
}

type refused struct {
	code   byte
	reason string
}

func (r *refused) Error() string { return fmt.Sprintf("refused 0x%02x %s", r.code, r.reason) }

// connackRefusal is the refusal an MQTT 5 CONNACK carries.
func connackRefusal(ack *paho.Connack) *refused {
	r := &refused{code: ack.ReasonCode}
	if ack.Properties != nil {
		r.reason = ack.Properties.ReasonString
	}
	return r
}

func (d *device) close() {
	if d.v3 != nil {
		d.v3.Disconnect(0)
	}
	if d.c5 != nil {
		d.c5.Disconnect(&paho.Disconnect{})
	}
}

// pubResult is what the broker answered to a request PUBLISH.
type pubResult struct {
	reason byte   // MQTT 5 PUBACK reason
	info   string // its reason string
	err    error
}

// publish sends a raw payload at QoS 1 to topic.
// publishWait bounds the wait for a PUBACK. It is a safety net, not a
// speed check: a media commit renders an image before its PUBACK, which
// under -race beside the other packages' tests has taken over 5 s.
const publishWait = 30 * time.Second

func (d *device) publish(topic string, payload []byte) pubResult {
	if d.v5 {
		ctx, cancel := context.WithTimeout(context.Background(), publishWait)
		defer cancel()
		resp, err := d.c5.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload})
		r := pubResult{err: err}
		if resp != nil {
			r.reason = resp.ReasonCode
			if resp.Properties != nil {
				r.info = resp.Properties.ReasonString
			}
			if r.reason >= 0x80 {
				r.err = nil // an answered refusal, inspected by the caller
			}
		}
		return r
	}
	tok := d.v3.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(publishWait) {
		return pubResult{err: fmt.Errorf("publish timeout")}
	}
	return pubResult{err: tok.Error()}
}

// request sends a command and waits for its reply (matched by ReqId).
func (d *device) request(cmd string, body map[string]any) (event, pubResult) {
	d.t.Helper()
	id := fmt.Sprintf("r%d", d.reqSeq.Add(1))
	body["ReqId"] = id
	raw, _ := json.Marshal(body)
	ch := make(chan event, 1)
	d.mu.Lock()
	d.replies[id] = ch
	d.mu.Unlock()
	defer func() { d.mu.Lock(); delete(d.replies, id); d.mu.Unlock() }()
	pr := d.publish("im/"+d.user+"/req/"+cmd, raw)
	if pr.err != nil {
		d.t.Fatalf("%s: publish %s: %v", d.user, cmd, pr.err)
	}
	select {
	case e := <-ch:
		if seq := e.num("Seq"); cmd == "openim/sendmsg" && seq > d.ownSeq.Load() {
			d.ownSeq.Store(seq) // the device holds it: it is not sent back
		}
		return e, pr
	case <-time.After(5 * time.Second):
		d.t.Fatalf("%s: no reply to %s", d.user, cmd)
	}
	return nil, pr
}

// send is a sendmsg that must succeed.
func (d *device) send(to string, random int, body ...map[string]any) event {
	d.t.Helper()
	if len(body) == 0 {
		body = []map[string]any{{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": fmt.Sprintf("hello %d", random)}}}
	}
	r, _ := d.request("openim/sendmsg", map[string]any{"To_Account": to, "MsgRandom": random, "MsgBody": body})
	if r.str("ActionStatus") != "OK" {
		d.t.Fatalf("%s → %s: %v", d.user, to, r)
	}
	return r
}

// next waits for the next timeline event.
func (d *device) next() event {
	d.t.Helper()
	select {
	case e := <-d.in:
		return e
	case <-time.After(5 * time.Second):
		d.t.Fatalf("%s: no timeline event", d.user)
	}
	return nil
}

// nextMsg skips sync_complete markers and returns the next msg event.
func (d *device) nextMsg() event {
	d.t.Helper()
	for {
		if e := d.next(); e.str("Event") != "sync_complete" {
			return e
		}
	}
}

// drainToSync skips events up to the next sync_complete and returns its LastSeq.
func (d *device) drainToSync() int64 {
	d.t.Helper()
	for {
		if e := d.next(); e.str("Event") == "sync_complete" {
			return e.num("LastSeq")
		}
	}
}

// syncComplete waits for a sync_complete and returns its LastSeq, failing on
// any other event before it.
func (d *device) syncComplete() int64 {
	d.t.Helper()
	e := d.next()
	if e.str("Event") != "sync_complete" {
		d.t.Fatalf("%s: expected sync_complete, got %v", d.user, e)
	}
	return e.num("LastSeq")
}
