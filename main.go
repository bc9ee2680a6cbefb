// Command duet is a self-hosted one-to-one instant messaging server: an
// embedded MQTT broker for devices, a Tencent-compatible REST API for app
// back-ends, and a durable Pebble store underneath.
//
//	duet [serve] [flags]              run the server (the default)
//	duet usersig --user U [--expire S] print a UserSig made with the configured key
//	duet account import USER...        create accounts in the data directory
//	duet import FILE                   import C2C history (JSON lines of importmsg bodies) via REST
//	duet version                       print the version
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/duet-im/duet/broker"
	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/push"
	"github.com/duet-im/duet/rest"
	"github.com/duet-im/duet/store"
	"github.com/duet-im/duet/usersig"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	if err := run(os.Args[1:]); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "duet:", err)
		}
		os.Exit(1)
	}
}

func run(args []string) error {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serveCmd(args)
	case "usersig":
		return usersigCmd(args)
	case "account":
		if len(args) == 0 || args[0] != "import" {
			return errors.New("usage: duet account import USER...")
		}
		return accountImportCmd(args[1:])
	case "import":
		return importCmd(args)
	case "version":
		fmt.Println("duet", version)
		return nil
	default:
		return fmt.Errorf("unknown command %q (serve, usersig, account import, import, version)", cmd)
	}
}

// gcPercent is the server's default GOGC. Its live heap is small (caches,
// in-flight packets) and it allocates fast, so collecting at 4× the live heap
// instead of 2× buys throughput for little memory. GOGC still overrides it.
const gcPercent = 400

func serveCmd(args []string) error {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	cfg, fl, err := loadConfig("duet serve", args)
	if err != nil {
		return err
	}
	if err := fl.Parse(args); err != nil {
		return err
	}
	log := cfg.logger()
	slog.SetDefault(log)
	srv, err := start(*cfg, log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	log.Info("shutting down")
	return srv.Close()
}

// server is a running Duet: store, command layer, broker and HTTP.
type server struct {
	store  *store.Store
	svc    *command.Service
	broker *broker.Broker
	http   *http.Server
	httpLn net.Listener
	rest   http.Handler // /v4/, the REST API
	push   *push.Pusher
	media  *mediaParts
	log    *slog.Logger
	web    http.Handler // the web chat at / (web/); nil with --web=false
}

func start(cfg Config, log *slog.Logger) (*server, error) {
	if abs, err := filepath.Abs(cfg.Data); err == nil {
		cfg.Data = abs // the embedded S3 gateway changes the working directory
	}
	key, err := cfg.secretKey(log)
	if err != nil {
		return nil, fmt.Errorf("secret: %w", err)
	}
	if cfg.CallbackFailure != "deliver" && cfg.CallbackFailure != "refuse" {
		return nil, fmt.Errorf("callback-failure must be deliver or refuse, not %q", cfg.CallbackFailure)
	}
	s := &server{log: log}
	var devices *broker.Devices
	var pusher *push.Pusher
	st, err := store.Open(filepath.Join(cfg.Data, "store"), store.Options{
		Logger:     log,
		SweepEvery: time.Minute,
		OnCommit: func(evs []store.Appended) {
			if devices != nil {
				devices.Committed(evs)
			}
			if pusher != nil {
				pusher.Committed(evs)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	s.store = st
	// From here on, a failure stops whatever was started.
	fail := func(err error) (*server, error) {
		s.Close()
		return nil, err
	}
	ccfg := command.DefaultConfig()
	ccfg.SDKAppID = cfg.SDKAppID
	ccfg.Admins = cfg.adminList()
	ccfg.AutoAccounts = cfg.AutoAccounts
	ccfg.MaxLifeTime = cfg.MaxLifeTime
	ccfg.RecallWindow = cfg.RecallWindow
	ccfg.MaxContacts = cfg.MaxContacts
	ccfg.FriendCheck, ccfg.BlacklistError = cfg.FriendsOnly, cfg.BlacklistErr
	s.svc = command.New(ccfg, st, log)
	if pusher, err = push.New(push.Options{Config: cfg.Push, Store: st, Log: log, Badge: push.UnreadBadge(st)}); err != nil {
		return fail(err)
	}
	pusher.Register(s.svc)
	s.svc.OnWithdraw(func(m store.Message) { pusher.Withdrawn(m.To, m.MsgKey) })
	s.push = pusher

	bcfg := broker.Config{
		MQTTAddr: cfg.MQTT, WSAddr: cfg.WS, TLSAddr: cfg.TLS,
		SDKAppID: cfg.SDKAppID, Key: key, AutoAccounts: cfg.AutoAccounts,
		Window: cfg.Window, MaxRequest: cfg.MaxRequest, Log: log,
		KickedAt: st.KickedAt, OnState: s.svc.StateChanged,
	}
	if cfg.TLS != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return fail(fmt.Errorf("tls: %w", err))
		}
		bcfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if s.media, err = startMedia(cfg, key, s.svc, st, log); err != nil {
		return fail(err)
	}
	s.broker, err = broker.New(bcfg, s.svc, st)
	if err != nil {
		return fail(err)
	}
	devices = s.broker.Devices
	s.svc.SetKicker(pusher.Kicker(devices))
	pusher.SetPresence(devices)
	if err := pusher.Start(); err != nil {
		return fail(err)
	}
	s.svc.SetPresence(devices)
	s.svc.SetCallbacks(command.CallbackConfig{URL: cfg.CallbackURL, Token: cfg.CallbackToken, RefuseOnFailure: cfg.CallbackFailure == "refuse"})
	s.rest = rest.New(rest.Config{Service: s.svc, Key: key, KickedAt: st.KickedAt, Rate: cfg.RESTRate, Log: log})
	if err := s.broker.Serve(); err != nil {
		return fail(err)
	}
	s.web = webHandler(cfg, key, s.broker.Addr("ws"))
	if cfg.HTTP != "" {
		ln, err := net.Listen("tcp", cfg.HTTP)
		if err != nil {
			return fail(fmt.Errorf("http: %w", err))
		}
		s.httpLn = ln
		s.http = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
		go s.http.Serve(ln)
	}
	log.Info("duet started", "version", version, "mqtt", s.broker.Addr("tcp"), "ws", s.broker.Addr("ws"),
		"tls", s.broker.Addr("tls"), "http", cfg.HTTP, "data", cfg.Data, "sdkappid", cfg.SDKAppID)
	return s, nil
}

// Close stops accepting work, disconnects devices, then closes the store.
func (s *server) Close() error {
	if s.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.http.Shutdown(ctx)
		cancel()
	}
	var err error
	if s.broker != nil {
		err = s.broker.Close()
	}
	if s.svc != nil {
		s.svc.CloseCallbacks()
	}
	if s.push != nil {
		s.push.Close() // before the store: its queue is there
	}
	err = errors.Join(err, s.media.Close())
	return errors.Join(err, s.store.Close())
}

func usersigCmd(args []string) error {
	cfg, fl, err := loadConfig("duet usersig", args)
	if err != nil {
		return err
	}
	user := fl.String("user", "", "UserID to sign for (required)")
	expire := fl.Int64("expire", 180*86400, "validity in seconds")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *user == "" {
		return errors.New("usersig: --user is required")
	}
	key, err := cfg.secretKey(cfg.logger())
	if err != nil {
		return err
	}
	sig, err := usersig.Gen(cfg.SDKAppID, key, *user, *expire, time.Now())
	if err != nil {
		return err
	}
	fmt.Println(sig)
	return nil
}

func accountImportCmd(args []string) error {
	cfg, fl, err := loadConfig("duet account import", args)
	if err != nil {
		return err
	}
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() == 0 {
		return errors.New("usage: duet account import USER...")
	}
	for _, u := range fl.Args() {
		if !command.ValidUserID(u) {
			return fmt.Errorf("invalid UserID %q: 1–32 bytes of A-Z a-z 0-9 _ - @ .", u)
		}
	}
	st, err := store.Open(filepath.Join(cfg.Data, "store"), store.Options{Logger: cfg.logger()})
	if err != nil {
		return fmt.Errorf("%w (is the server running on this data directory? stop it, or use the REST API)", err)
	}
	defer st.Close()
	for _, u := range fl.Args() {
		created, err := st.ImportAccount(store.Account{UserID: u})
		if err != nil {
			return err
		}
		state := "exists"
		if created {
			state = "created"
		}
		fmt.Printf("%s\t%s\n", u, state)
	}
	return nil
}
