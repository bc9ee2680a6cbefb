package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/duet-im/duet/broker"
	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/internal/callback"
	"github.com/duet-im/duet/internal/cluster"
	"github.com/duet-im/duet/push"
	"github.com/duet-im/duet/rest"
	"github.com/duet-im/duet/store"
)

// Config is everything a Server is built from: a plain struct that package
// main fills from its flags, environment and YAML file (config.go), and that
// the test harnesses fill directly. Zero values mean what they mean to the
// part they configure (an empty address is a listener that is off).
type Config struct {
	Data    string // data directory: duet.lock, secret.key, store/, s3/
	Secret  string // UserSig key; empty: {Data}/secret.key, generated on first start
	Version string // for the start-up log line

	MQTT, WS, TLS string // MQTT listeners (TCP, WebSocket at /mqtt, TLS); empty: off
	// TLSCert and TLSKey are the TLS listener's PEM files, read by New;
	// TLSConfig, when set, is used instead (tests make their certificate).
	TLSCert, TLSKey string
	TLSConfig       *tls.Config
	HTTP            string // HTTP listener: REST, /healthz, /metrics, /media/, the web chat; empty: off

	SDKAppID     uint64
	Admins       []string // nil: the command layer's default (administrator); empty: none
	AutoAccounts bool
	Window       int
	MaxRequest   int
	MaxLifeTime  time.Duration
	RecallWindow time.Duration
	MaxContacts  int
	FriendsOnly  bool
	BlacklistErr bool

	ConnectTimeout  time.Duration
	PendingPerIP    int
	MaxPending      int
	HTTPReadTimeout time.Duration

	Web         bool     // the web chat at / on the HTTP listener
	WebMQTTURLs []string // --web-mqtt-urls: the page fails over between these; nil: its own host

	Push           push.Config
	PushHTTPClient *http.Client // nil: the vendors' default (tests: a local APNs server's client)

	RESTRate        int
	CallbackURL     string
	CallbackToken   string
	CallbackRefuse  bool // a failed before-send callback refuses the message (80003)
	StoreSweepEvery time.Duration

	// Media: an S3 endpoint, or (S3Endpoint empty) the embedded gateway
	// under {Data}/s3. NoMedia leaves the media service out (tests that do
	// not need it skip starting the gateway's child process).
	NoMedia           bool
	S3Endpoint        string
	S3AccessKey       string
	S3SecretKey       string
	S3Bucket          string
	S3Secure          bool
	S3PublicEndpoint  string
	MediaURL          string
	MediaLimits       string
	MediaCleanAfter   time.Duration
	MediaLinkTTL      time.Duration
	MediaLocalOnly    bool
	MediaCleanEvery   time.Duration // 0: the media default; negative: off (tests drive it)
	MediaArchiveEvery time.Duration // likewise

	// Cluster: cluster mode (cluster.go, docs/cluster.md); zero: a single node.
	Cluster ClusterConfig

	// Clock replaces time.Now for the store and the broker (tests move it).
	Clock func() time.Time
	Log   *slog.Logger
	// Command and Broker, when set, adjust the command layer's and the
	// broker's settings after Config is applied (tests: send-policy
	// switches, edge limits, a log to read).
	Command func(*command.Config)
	Broker  func(*broker.Config)
}

// Server is a Duet: the store, the command layer, offline push, media, the
// MQTT broker and the HTTP listener, assembled by New, run by Start and
// stopped by Close. doc.go gives the order of each and why.
type Server struct {
	cfg       Config
	log       *slog.Logger
	lock      *DataLock
	key       string
	sinks     commitSinks
	store     *store.Store
	svc       *command.Service
	callbacks *callback.Pool // nil without a callback URL
	push      *push.Pusher
	media     *mediaParts
	broker    *broker.Broker
	rest      http.Handler // /v4/, the REST API
	web       http.Handler // the web chat at / (web/); nil when off
	bcfg      broker.Config
	cluster   *clusterParts // nil on a single node (cluster.go)

	closeOnce sync.Once
	closeErr  error

	handler http.Handler // routes, built once by Handler
	http    *http.Server
	httpLn  net.Listener
}

// commitSinks is the store's OnCommit. The store must exist before delivery
// (broker.Devices) and the pusher, which both read it, so it is opened with
// this forwarder and the sinks are attached once, by New, before Start lets
// any device or REST call in. A commit before that (the store's own sweep)
// reaches no sink: no device is connected and the pusher takes its queue
// from the store when it starts. The atomic makes the hand-off safe
// whatever goroutine the store commits on.
type commitSinks struct {
	fns atomic.Pointer[[]func([]store.Appended)]
}

func (c *commitSinks) committed(evs []store.Appended) {
	if fns := c.fns.Load(); fns != nil {
		for _, f := range *fns {
			f(evs)
		}
	}
}

// attach sets the sinks in the order they are told: delivery first (a
// device online gets its event), then the pusher (which skips online devices).
func (c *commitSinks) attach(fns ...func([]store.Appended)) { c.fns.Store(&fns) }

// New assembles a server: it takes the data directory, opens the store and
// builds every part, binding the MQTT listeners, but lets nothing in until
// Start. On an error, whatever was built is closed again.
func New(cfg Config) (*Server, error) {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	if abs, err := filepath.Abs(cfg.Data); err == nil {
		cfg.Data = abs // logs and error messages name it in full
	}
	lock, err := LockData(cfg.Data)
	if err != nil {
		return nil, err
	}
	key, err := SecretKey(cfg.Data, cfg.Secret, log)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("secret: %w", err)
	}
	s := &Server{cfg: cfg, log: log, lock: lock, key: key}
	// From here on, a failure stops whatever was started.
	fail := func(err error) (*Server, error) {
		s.Close()
		return nil, err
	}

	// 0. Cluster mode: the NATS node first; the store is its view.
	if err := checkCluster(cfg); err != nil {
		return fail(err)
	}
	if cfg.Cluster.On() {
		if s.cluster, err = startClusterNode(cfg, log); err != nil {
			return fail(err)
		}
	}

	// 1. The store, with the forwarder its commits go through (and in a
	// cluster, the device cursors every node shares).
	sopts := store.Options{
		Logger: log, Clock: cfg.Clock, SweepEvery: cfg.StoreSweepEvery, OnCommit: s.sinks.committed,
		Replicated: cfg.Cluster.On(),
	}
	if s.cluster != nil {
		s.cluster.cursors = cluster.NewCursors(s.cluster.node, cfg.Cluster.Replicas)
		sopts.Cursors = s.cluster.cursors
	}
	if p := cfg.Cluster.partitions(); p > 1 {
		s.cluster.pump = newIntentPump(s, p)
		sopts.OnIntents = s.cluster.pump.owed
		// Send-policy state and sender profiles change on other
		// partitions' owners and through intents (cluster.md §11.2 (8)).
		sopts.OnChange = func(u string) { s.svc.Forget(u) }
		s.store, err = store.OpenPartitions(filepath.Join(cfg.Data, "store"), p, func(u string) int { return cluster.Partition(u, p) }, sopts)
	} else {
		s.store, err = store.Open(filepath.Join(cfg.Data, "store"), sopts)
	}
	if err != nil {
		return fail(err)
	}

	// 2. The command layer over the store, with the callback workers
	// (internal/callback) it hands the app back-end's callbacks to.
	ccfg := command.DefaultConfig()
	ccfg.SDKAppID = cfg.SDKAppID
	if cfg.Admins != nil {
		ccfg.Admins = cfg.Admins
	}
	ccfg.AutoAccounts = cfg.AutoAccounts
	if cfg.MaxLifeTime > 0 {
		ccfg.MaxLifeTime = cfg.MaxLifeTime
	}
	if cfg.RecallWindow > 0 {
		ccfg.RecallWindow = cfg.RecallWindow
	}
	if cfg.MaxContacts > 0 {
		ccfg.MaxContacts = cfg.MaxContacts
	}
	ccfg.FriendCheck, ccfg.BlacklistError = cfg.FriendsOnly, cfg.BlacklistErr
	ccfg.CallbackRefuse = cfg.CallbackRefuse
	if cfg.CallbackURL != "" {
		s.callbacks = callback.New(callback.Config{URL: cfg.CallbackURL, Token: cfg.CallbackToken, SDKAppID: cfg.SDKAppID, Log: log})
		ccfg.Callbacks = s.callbacks
	}
	if cfg.Command != nil {
		cfg.Command(&ccfg)
	}
	s.svc = command.New(ccfg, s.store, log)

	// 3. The broker: the MQTT transport and delivery (broker.Devices). It
	// binds its listeners here (a busy port fails before anything slow
	// starts); nothing is accepted before Start.
	s.bcfg = broker.Config{
		MQTTAddr: cfg.MQTT, WSAddr: cfg.WS, TLSAddr: cfg.TLS, TLS: cfg.TLSConfig,
		SDKAppID: cfg.SDKAppID, Key: key, AutoAccounts: cfg.AutoAccounts,
		Window: cfg.Window, MaxRequest: cfg.MaxRequest, Clock: cfg.Clock, Log: log,
		KickedAt: s.store.KickedAt, OnState: s.svc.StateChanged,
		ConnectTimeout: cfg.ConnectTimeout, PendingPerIP: cfg.PendingPerIP, MaxPending: cfg.MaxPending,
	}
	if cfg.TLS != "" && s.bcfg.TLS == nil {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return fail(fmt.Errorf("tls: %w", err))
		}
		s.bcfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	// The transports' executor: the command layer, or in a cluster the
	// router in front of it.
	var exec command.Executor = s.svc
	if s.cluster != nil {
		n := cfg.Cluster.partitions()
		for p := range n {
			s.cluster.routers = append(s.cluster.routers, cluster.NewRouter(s.cluster.node.Conn(), s.cluster.node.Name(), s.svc, s.store.Partition(p), p, log))
		}
		exec = s.cluster.routers[0]
		if n > 1 {
			exec = &cluster.Routers{
				Parts: s.cluster.routers,
				Home: func(c *command.Caller, name string, body []byte) string {
					home, _ := s.svc.Home(c, name, body)
					return home
				},
				Of: func(u string) int { return cluster.Partition(u, n) },
			}
		}
	}
	s.bcfg.Exec = exec
	if s.cluster != nil {
		s.bcfg.Accounts = clusterAccounts{st: s.store, exec: exec, cp: s.cluster}
	}
	if cfg.Broker != nil {
		cfg.Broker(&s.bcfg)
	}
	if s.broker, err = broker.New(s.bcfg, s.svc, s.store); err != nil {
		return fail(busyPort(err, cfg))
	}
	// devices is what the command layer and the pusher are told of
	// connected devices: this node's, or every node's in a cluster.
	var devices clusterDevices = s.broker.Devices
	if s.cluster != nil {
		s.cluster.devices = cluster.NewDevices(s.cluster.node.Conn(), s.broker.Devices, log)
		devices = s.cluster.devices
	}

	// 4. Offline push, told of the devices online (it skips them): its
	// commands join the command layer; a recall withdraws a notification
	// not yet sent (step 7).
	// In a cluster it works a partition's queue only while this node owns
	// the partition (joinCluster's OnOwn and OnLose).
	pusher, err := push.New(push.Options{Config: cfg.Push, Store: s.store, Log: log, Badge: push.UnreadBadge(s.store),
		HTTPClient: cfg.PushHTTPClient, Presence: devices, Replicated: s.cluster != nil})
	if err != nil {
		return fail(err)
	}
	s.push = pusher
	pusher.Register(s.svc)

	// 5. Media (it registers itself as the command layer's media checker).
	if !cfg.NoMedia {
		if s.media, err = startMedia(cfg, key, s.svc, s.store, s.cluster, exec, log); err != nil {
			return fail(err)
		}
	}

	// 6. The one real cycle: the command layer serves the broker's
	// requests, and it needs the broker's devices back: to deliver live
	// events and resyncs, to kick (through the pusher, which drops a kicked
	// device's token) and to tell who is online. The command layer is
	// built first, so it is given the devices here, once, before Start
	// lets a request in.
	s.svc.Connect(command.Devices{Live: devices, Kicker: pusher.Kicker(devices), Presence: devices})
	// 7. The store-to-delivery hand-off: a synced commit goes to the
	// devices, then to the pusher.
	// (A cluster node's view also commits the other owners' entries:
	// every node delivers to its own devices, and only the owner of the
	// partition whose commit it is — a commit's events are all of one
	// partition — plans pushes, into that partition's queue.)
	// A recall withdraws the recipient's notification where the
	// recipient's withdraw event commits (command.Recalls).
	pushed := func(evs []store.Appended) {
		pusher.Committed(evs)
		command.Recalls(evs, pusher.Withdrawn)
	}
	if s.cluster != nil {
		planned := pushed
		pushed = func(evs []store.Appended) {
			if len(evs) > 0 && s.store.Partition(s.store.UserPartition(evs[0].User)).Owns() {
				planned(evs)
			}
		}
	}
	s.sinks.attach(s.broker.Devices.Committed, pushed)

	// 8. The REST transport over the command layer.
	s.rest = rest.New(rest.Config{Service: s.svc, Exec: exec, Key: key, KickedAt: s.store.KickedAt, Rate: cfg.RESTRate, Log: log})
	return s, nil
}

// Start lets work in: the pusher's workers, the MQTT listeners, then the
// HTTP listener (REST); it logs the start-up line.
func (s *Server) Start() error {
	if s.cluster != nil {
		if err := s.joinCluster(); err != nil {
			return err
		}
	}
	if err := s.push.Start(); err != nil {
		return err
	}
	if err := s.broker.Serve(); err != nil {
		return err
	}
	// The web chat names the WebSocket listener's bound address.
	s.web = webHandler(s.cfg, s.key, s.broker.Addr("ws"))
	s.handler = s.routes()
	if s.cfg.HTTP != "" {
		ln, err := net.Listen("tcp", s.cfg.HTTP)
		if err != nil {
			return busyPort(fmt.Errorf("http: %w", err), s.cfg)
		}
		s.httpLn = ln
		s.http = s.httpServer()
		go s.http.Serve(ln)
	}
	s.logStarted()
	return nil
}

// Close stops accepting work (HTTP, then MQTT, disconnecting devices),
// stops the callback and push workers, then media, and closes the store
// last (the pusher's queue is in it), then lets the data directory go.
// It may be called after a failed New or Start, and more than once (later
// calls return the first one's error).
func (s *Server) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Server) close() error {
	if s.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.http.Shutdown(ctx)
		cancel()
	}
	var err error
	if s.broker != nil {
		err = s.broker.Close()
	}
	if s.callbacks != nil {
		s.callbacks.Close()
	}
	if s.push != nil {
		s.push.Close() // before the store: its queue is there
	}
	err = errors.Join(err, s.media.Close())
	s.cluster.close() // releases the leases: another node takes over now
	if s.store != nil {
		err = errors.Join(err, s.store.Close())
	}
	s.cluster.shutdown()
	return errors.Join(err, s.lock.Close())
}

// Store is the server's store.
func (s *Server) Store() *store.Store { return s.store }

// Service is the command layer.
func (s *Server) Service() *command.Service { return s.svc }

// Broker is the MQTT broker (and delivery: Broker().Devices).
func (s *Server) Broker() *broker.Broker { return s.broker }

// Pusher is the offline pusher.
func (s *Server) Pusher() *push.Pusher { return s.push }

// Key is the UserSig secret in use.
func (s *Server) Key() string { return s.key }

// Addr is a bound MQTT listener's address: "tcp", "ws" or "tls".
func (s *Server) Addr(kind string) string { return s.broker.Addr(kind) }

// HTTPAddr is the bound HTTP listener's address ("" when off or not started).
func (s *Server) HTTPAddr() string {
	if s.httpLn == nil {
		return ""
	}
	return s.httpLn.Addr().String()
}

// clusterDevices is what the command layer and the pusher need of the
// connected devices (broker.Devices, or cluster.Devices over it).
type clusterDevices interface {
	command.Deliverer
	Kick(user string)
	Online(user string) int
	Connected(user, clientID string) bool
}

// busyPort turns a listener's "address already in use" into what to do
// about it: which listener, its address, and the flag that moves it.
func busyPort(err error, cfg Config) error {
	var op *net.OpError
	if !errors.Is(err, syscall.EADDRINUSE) || !errors.As(err, &op) || op.Addr == nil {
		return err
	}
	addr := op.Addr.String()
	for _, l := range []struct{ what, flag, addr string }{
		{"MQTT", "--mqtt", cfg.MQTT}, {"MQTT over TLS", "--tls", cfg.TLS},
		{"MQTT over WebSocket", "--ws", cfg.WS}, {"HTTP", "--http", cfg.HTTP},
	} {
		if l.addr != "" && sameAddr(l.addr, addr) {
			return fmt.Errorf("the %s listener's address %s is in use by another process: stop that process or change %s", l.what, l.addr, l.flag)
		}
	}
	return fmt.Errorf("%w: stop the process that holds %s or change the listener's address", err, addr)
}

// sameAddr reports whether configured address a names bound address b
// (a may leave the host empty or name it by name).
func sameAddr(a, b string) bool {
	ah, ap, err1 := net.SplitHostPort(a)
	bh, bp, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || ap != bp {
		return false
	}
	return ah == bh || ah == "" || ah == "localhost" || net.ParseIP(bh).IsUnspecified() || net.ParseIP(ah).Equal(net.ParseIP(bh))
}

// logStarted is the start-up line: what a user needs to reach the server
// and to know how it is set up.
func (s *Server) logStarted() {
	cfg := s.cfg
	off := func(a string) string {
		if a == "" {
			return "off"
		}
		return a
	}
	secret := filepath.Join(cfg.Data, "secret.key")
	if cfg.Secret != "" {
		secret = "--secret"
	}
	pushes := "none"
	if vendors := cfg.Push.Configured(); len(vendors) > 0 {
		pushes = strings.Join(vendors, ",")
	}
	mediaStore := "embedded S3 in " + filepath.Join(cfg.Data, "s3")
	if cfg.S3Endpoint != "" {
		mediaStore = "S3 " + cfg.S3Endpoint
	}
	if cfg.NoMedia {
		mediaStore = "off"
	}
	s.log.Info("duet started", "version", cfg.Version,
		"mqtt", off(s.broker.Addr("tcp")), "ws", off(s.broker.Addr("ws")), "tls", off(s.broker.Addr("tls")),
		"http", off(s.HTTPAddr()), "data", cfg.Data, "secret", secret, "sdkappid", cfg.SDKAppID,
		"auto-accounts", cfg.AutoAccounts, "friends-only", cfg.FriendsOnly, "push", pushes, "media", mediaStore)
}
