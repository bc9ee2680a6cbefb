package sdk

// The harness runs a real Duet in-process — Pebble in a temp directory,
// the command layer, mochi on a loopback port — and logs real SDK clients
// into it, each with its own bbolt store.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/duet-im/duet/broker"
	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/internal/freeport"
	srvpkg "github.com/duet-im/duet/internal/server"
	testwait "github.com/duet-im/duet/internal/wait"
	"github.com/duet-im/duet/media"
	"github.com/duet-im/duet/store"
	"github.com/duet-im/duet/usersig"
)

const (
	testAppID = 1400000000
	testKey   = "duet-sdk-test-secret"
)

// checkFor polls f until it returns nil or the deadline passes (the
// shared helper, at this package's interval).
func checkFor(t testing.TB, total time.Duration, f func() error) {
	t.Helper()
	testwait.For(t, total, 10*time.Millisecond, f)
}

type server struct {
	t       testing.TB
	tls     *tls.Config // when set, a TLS listener runs too, at tlsAddr
	tlsAddr string
	offset  atomic.Int64 // added to the server's clock (ns)
	dir     string
	addr    string
	wsAddr  string // the WebSocket listener (path /mqtt)
	store   *store.Store
	svc     *command.Service
	broker  *broker.Broker

	srv *srvpkg.Server

	// With media (startMediaServer): the embedded S3 gateway and the HTTP
	// server of download links (serving the server's handler).
	gw      *media.Gateway
	web     *httptest.Server
	handler atomic.Pointer[http.Handler]
}

// startMediaServer also runs the media service on the embedded S3 gateway
// (real SigV4 checks) and an HTTP server for download links, as
// broker/media_test.go does.
func startMediaServer(t testing.TB) *server {
	t.Helper()
	gw, err := media.StartGateway(t.TempDir(), "", testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	s := &server{t: t, dir: t.TempDir(), gw: gw}
	s.web = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*s.handler.Load()).ServeHTTP(w, r) }))
	t.Cleanup(s.web.Close)
	s.start()
	t.Cleanup(s.stop)
	return s
}

// startTLSServer also listens for TLS, with a certificate made for the
// test; it returns the client side's configuration, trusting it.
func startTLSServer(t testing.TB) (*server, *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "duet test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	s := &server{t: t, dir: t.TempDir(), tls: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}}
	s.start()
	t.Cleanup(s.stop)
	return s, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
}

func startServer(t testing.TB) *server {
	t.Helper()
	s := &server{t: t, dir: t.TempDir()}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func testLogger() *slog.Logger {
	if testing.Verbose() && os.Getenv("DUET_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func (s *server) start() {
	t := s.t
	addr := s.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	wsAddr := s.wsAddr
	if wsAddr == "" {
		wsAddr = freeAddr(t)
	}
	// Push tokens are kept (push/set_token); no vendor is configured.
	cfg := srvpkg.Config{
		Data: s.dir, Secret: testKey, MQTT: addr, WS: wsAddr, SDKAppID: testAppID,
		Clock: s.now, Log: testLogger(), NoMedia: s.gw == nil,
	}
	if s.tls != nil {
		cfg.TLSConfig, cfg.TLS = s.tls, s.tlsAddr
		if cfg.TLS == "" {
			cfg.TLS = "127.0.0.1:0"
		}
	}
	if s.gw != nil {
		cfg.S3Endpoint, cfg.S3AccessKey, cfg.S3SecretKey, cfg.S3Bucket = s.gw.S3.Endpoint, s.gw.S3.AccessKey, s.gw.S3.SecretKey, s.gw.S3.Bucket
		cfg.S3Secure, cfg.S3PublicEndpoint = s.gw.S3.Secure, s.gw.S3.PublicEndpoint
		cfg.MediaURL, cfg.MediaCleanEvery, cfg.MediaArchiveEvery = s.web.URL, -1, -1
	}
	srv, err := srvpkg.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		srv.Close()
		t.Fatal(err)
	}
	if s.gw != nil {
		h := srv.Handler()
		s.handler.Store(&h)
	}
	s.srv, s.store, s.svc, s.broker, s.addr, s.wsAddr = srv, srv.Store(), srv.Service(), srv.Broker(), srv.Addr("tcp"), wsAddr
	if s.tls != nil {
		s.tlsAddr = srv.Addr("tls")
	}
}

// freeAddr picks a free loopback port for a listener that cannot be given
// port 0 (the broker reports only the TCP and TLS listeners' addresses).
func freeAddr(t testing.TB) string {
	return freeport.Addr(t)
}

// now is the server's clock: real time moved on by advance.
func (s *server) now() time.Time { return time.Now().Add(time.Duration(s.offset.Load())) }

func (s *server) advance(d time.Duration) { s.offset.Add(int64(d)) }

func (s *server) stop() {
	if s.srv == nil {
		return
	}
	s.srv.Close()
	s.srv, s.broker = nil, nil
}

// restart stops the server and starts it on the same data and port.
func (s *server) restart() {
	s.stop()
	s.start()
}

func (s *server) users(ids ...string) {
	s.t.Helper()
	for _, id := range ids {
		if _, err := s.store.ImportAccount(store.Account{UserID: id}); err != nil {
			s.t.Fatal(err)
		}
	}
}

// has reports whether the server registers command name (a feature whose
// server side has landed).
func (s *server) has(name string) bool {
	r := s.svc.Exec(context.Background(), &command.Caller{UserID: "nobody", Transport: command.MQTT}, name, []byte(`not json`))
	return r.Err == nil || r.Err.Code != 60009
}

func (s *server) need(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if !s.has(n) {
			t.Skipf("server side of %s not landed", n)
		}
	}
}

// waitHighWater waits until the server recorded that a device of user
// received Seq n.
func (s *server) waitHighWater(user string, n uint64) {
	s.t.Helper()
	checkFor(s.t, 20*time.Second, func() error {
		hw, err := s.store.HighWater(user)
		if err != nil || hw < n {
			return fmt.Errorf("high water %d (%v), want %d", hw, err, n)
		}
		return nil
	})
}

// sig is a UserSig for user issued by the server's clock.
func (s *server) sig(t testing.TB, user string) string {
	t.Helper()
	sg, err := usersig.Gen(testAppID, testKey, user, 3600, s.now())
	if err != nil {
		t.Fatal(err)
	}
	return sg
}

func sig(t testing.TB, user string) string {
	t.Helper()
	s, err := usersig.Gen(testAppID, testKey, user, 3600, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// recorder keeps what the listeners saw, in order, and fails the test if
// two callbacks ever run at once.
type recorder struct {
	t      testing.TB
	inside atomic.Int32

	mu        sync.Mutex
	log       []string
	msgs      []*Message
	contacts  map[string]Contact // as last reported
	refreshes int
	reads     []ReadReceipt
	withdrawn []Withdrawal
	modified  []*Message
	typing    []string
	kicked    []string
	system    []SystemEvent
}

func newRecorder(t testing.TB) *recorder {
	return &recorder{t: t, contacts: map[string]Contact{}}
}

func (r *recorder) enter() func() {
	if r.inside.Add(1) != 1 {
		r.t.Errorf("two listeners ran at the same time")
	}
	return func() { r.inside.Add(-1) }
}

func (r *recorder) listeners() Listeners {
	return Listeners{
		OnNewMessage: func(m *Message) {
			defer r.enter()()
			r.mu.Lock()
			defer r.mu.Unlock()
			r.msgs = append(r.msgs, m)
			r.log = append(r.log, "msg "+m.From+" "+m.Text())
		},
		OnRefresh: func() {
			defer r.enter()()
			r.mu.Lock()
			defer r.mu.Unlock()
			r.refreshes++
			r.log = append(r.log, "refresh")
		},
		OnRecentContactsChanged: func(cs []Contact) {
			defer r.enter()()
			r.mu.Lock()
			defer r.mu.Unlock()
			var parts []string
			for _, c := range cs {
				r.contacts[c.Peer] = c
				parts = append(parts, fmt.Sprintf("%s:%d", c.Peer, c.Unread))
			}
			r.log = append(r.log, "contacts "+strings.Join(parts, ","))
		},
		OnRead: func(rr ReadReceipt) {
			defer r.enter()()
			r.mu.Lock()
			defer r.mu.Unlock()
			r.reads = append(r.reads, rr)
			r.log = append(r.log, "read "+rr.Peer)
		},
		OnWithdraw: func(w Withdrawal) {
			defer r.enter()()
			r.mu.Lock()
			defer r.mu.Unlock()
			r.withdrawn = append(r.withdrawn, w)
			r.log = append(r.log, "withdraw "+w.MsgKey)
		},
		OnModify: func(m *Message) {
			defer r.enter()()
			r.mu.Lock()
			defer r.mu.Unlock()
			r.modified = append(r.modified, m)
			r.log = append(r.log, "modify "+m.MsgKey)
		},
		OnTyping: func(from string) {
			defer r.enter()()
			r.mu.Lock()
			defer r.mu.Unlock()
			r.typing = append(r.typing, from)
		},
		OnKicked: func(reason string) {
			defer r.enter()()
			r.mu.Lock()
			defer r.mu.Unlock()
			r.kicked = append(r.kicked, reason)
			r.log = append(r.log, "kicked")
		},
		OnSystemEvent: func(e SystemEvent) {
			defer r.enter()()
			r.mu.Lock()
			defer r.mu.Unlock()
			r.system = append(r.system, e)
		},
	}
}

func (r *recorder) snapshot() (log []string, msgs []*Message, refreshes int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.log...), append([]*Message(nil), r.msgs...), r.refreshes
}

func (r *recorder) contact(peer string) (Contact, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.contacts[peer]
	return c, ok
}

// waitRefreshes waits until OnRefresh ran n times in all.
func (r *recorder) waitRefreshes(n int) {
	r.t.Helper()
	checkFor(r.t, 20*time.Second, func() error {
		if _, _, got := r.snapshot(); got < n {
			return fmt.Errorf("%d refreshes, want %d", got, n)
		}
		return nil
	})
}

// waitMsgs waits until n messages arrived in all.
func (r *recorder) waitMsgs(n int) []*Message {
	r.t.Helper()
	var msgs []*Message
	checkFor(r.t, 20*time.Second, func() error {
		_, msgs, _ = r.snapshot()
		if len(msgs) < n {
			return fmt.Errorf("%d messages, want %d", len(msgs), n)
		}
		return nil
	})
	return msgs
}

type device struct {
	*Client
	rec *recorder
	dir string
}

// login logs user's device in with a fresh recorder. dir "" makes a new
// device directory.
func (s *server) login(t testing.TB, user, deviceID, dir string, p Protocol, mods ...func(*Options)) *device {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	rec := newRecorder(t)
	o := Options{
		Addr: s.addr, UserID: user, UserSig: s.sig(t, user), DeviceID: deviceID, Dir: dir, Protocol: p,
		RequestTimeout: 3 * time.Second, MinBackoff: 20 * time.Millisecond, MaxBackoff: 300 * time.Millisecond,
		Listeners: rec.listeners(), Logger: testLogger(),
	}
	for _, m := range mods {
		m(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Login(ctx, o)
	if err != nil {
		t.Fatalf("login %s:%s: %v", user, deviceID, err)
	}
	t.Cleanup(func() { c.Logout() })
	return &device{Client: c, rec: rec, dir: dir}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func texts(ms []*Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Text()
	}
	return out
}

func seqTexts(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s%02d", prefix, i))
	}
	return out
}

var protocols = []struct {
	name string
	p    Protocol
}{{"mqtt5", MQTT5}, {"mqtt311", MQTT311}}
