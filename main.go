// Command duet is a self-hosted one-to-one instant messaging server: an
// embedded MQTT broker for devices, a Tencent-compatible REST API for app
// back-ends, and a durable Pebble store underneath.
//
//	duet [serve] [flags]              run the server (the default)
//	duet usersig --user U [--expire S] print a UserSig made with the configured key
//	duet account import USER...        create accounts in the data directory
//	duet import FILE                   import C2C history (JSON lines of importmsg bodies) via REST
//	duet backup --data DIR --out FILE  back up a stopped single node
//	duet cluster status [--http H:P]   print a running cluster's nodes, partitions and owners
//	duet cluster drain|undrain         move work off a running node, and back
//	duet cluster remove NODE           remove a node stopped for good
//	duet cluster backup|restore|seed   back up a cluster, restore into an empty one, seed one from a single node
//	duet version                       print the version, VCS revision and Go version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/internal/server"
	"github.com/duet-im/duet/store"
	"github.com/duet-im/duet/usersig"
)

// setUsage makes fl's --help print "usage: duet SYNOPSIS", what, and the
// command's own flags.
func setUsage(fl *flag.FlagSet, synopsis, what string) {
	fl.Usage = func() {
		w := fl.Output()
		fmt.Fprintf(w, "usage: duet %s\n\n%s\n\nflags:\n", synopsis, what)
		fl.PrintDefaults()
	}
}

// version is set at build time with -ldflags "-X main.version=…"; unset,
// `duet version` reports the module version and VCS stamp from the build
// info instead.
var version = ""

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return // the usage was asked for and printed
		}
		fmt.Fprintln(os.Stderr, "duet:", err)
		os.Exit(1)
	}
}

// subcommand is one `duet COMMAND`.
type subcommand struct {
	name, args, what string
	run              func([]string) error
}

// subcommands in the order the top-level usage lists them. The hidden
// `s3-gateway` (the embedded S3 gateway's child process) is not among them:
// package media's init runs it, so test binaries can start it too.
var subcommands = []subcommand{
	{"serve", "[flags]", "run the server (the default when no command is given)", serveCmd},
	{"usersig", "--user U [--expire SECONDS]", "print a UserSig made with the server's secret", usersigCmd},
	{"account import", "USER...", "create accounts in the data directory (with the server stopped)", accountImportCmd},
	{"import", "[--url URL] FILE", "import C2C history (JSON lines) through a running server's REST API", importCmd},
	{"backup", "--data DIR --out FILE [--partitions P]", "write a backup of a stopped single node (restorable into a cluster of P partitions)", backupCmd},
	{"cluster status", "[--http HOST:PORT]", "print a running cluster's nodes, partitions and owners (a node's GET /cluster)", clusterStatusCmd},
	{"cluster drain", "[--http HOST:PORT]", "move the work and the devices off a running node without stopping it (run on its machine)", clusterDrainCmd},
	{"cluster undrain", "[--http HOST:PORT]", "let a drained node take work and devices again (run on its machine)", clusterUndrainCmd},
	{"cluster remove", "NODE [--http HOST:PORT]", "remove a node stopped for good from the cluster's JetStream (run on a node's machine)", clusterRemoveCmd},
	{"cluster backup", "--out FILE [--http HOST:PORT]", "write a backup of a running cluster (run on a node's machine)", clusterBackupCmd},
	{"cluster restore", "FILE [--http HOST:PORT]", "restore a backup into a new, empty cluster (run on a node's machine)", clusterRestoreCmd},
	{"cluster seed", "--from DATA [--http HOST:PORT]", "move a stopped single node's data into a new, empty cluster (run on a node's machine)", clusterSeedCmd},
	{"version", "", "print the version, the VCS revision and the Go version", versionCmd},
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Duet: a self-hosted one-to-one instant messaging server.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "usage: duet [COMMAND] [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	for _, c := range subcommands {
		fmt.Fprintf(w, "  %-16s %s\n", c.name, c.what)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run `duet COMMAND --help` for a command's flags.")
}

// run dispatches to a subcommand. Flags may come before the command name
// (`duet --data X usersig --user bob`): they are that command's flags.
func run(args []string) error {
	i := commandIndex(args)
	if i == -2 {
		return fmt.Errorf("unknown command in %q: run `duet --help` for the commands", args)
	}
	if i < 0 {
		for _, a := range args {
			switch a {
			case "-h", "-help", "--help", "help":
				usage(os.Stdout)
				return flag.ErrHelp
			case "-version", "--version":
				return versionCmd(nil)
			}
		}
		return serveCmd(args)
	}
	name := args[i]
	rest := append(slices.Clone(args[:i]), args[i+1:]...)
	switch name {
	case "help":
		if len(rest) > 0 {
			return run([]string{rest[0], "--help"})
		}
		usage(os.Stdout)
		return flag.ErrHelp
	case "account":
		if i+1 >= len(args) || args[i+1] != "import" {
			return errors.New("usage: duet account import USER... (run `duet --help` for all commands)")
		}
		return accountImportCmd(append(slices.Clone(args[:i]), args[i+2:]...))
	case "cluster":
		sub := ""
		if i+1 < len(args) {
			sub = args[i+1]
		}
		for _, c := range subcommands {
			if c.name == "cluster "+sub {
				return c.run(append(slices.Clone(args[:i]), args[i+2:]...))
			}
		}
		return errors.New("usage: duet cluster status|remove|drain|undrain|backup|restore|seed … (run `duet --help` for all commands)")
	}
	for _, c := range subcommands {
		if c.name == name {
			return c.run(rest)
		}
	}
	panic("unreachable: commandIndex returned " + name)
}

// commandIndex finds the subcommand name among args, skipping flags and
// the values of flags that take one: -1 when there is none (serve), -2 when
// the first argument that is neither a flag nor a flag's value is no
// command.
func commandIndex(args []string) int {
	names := map[string]bool{"help": true, "account": true, "cluster": true}
	for _, c := range subcommands {
		names[c.name] = true
	}
	takesValue := serverFlagValues()
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return -1
		}
		if strings.HasPrefix(a, "-") {
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && takesValue[name] {
				i++ // its value
			}
			continue
		}
		if names[a] {
			return i
		}
		return -2 // a positional argument that is no command
	}
	return -1
}

// serverFlagValues tells which settings' flags take a value (all but the
// booleans), so that `--data usersig` is read as a data directory.
func serverFlagValues() map[string]bool {
	out := map[string]bool{"config": true, "user": true, "expire": true, "url": true, "admin": true, "usersig": true, "workers": true, "out": true, "from": true}
	t := reflect.TypeOf(Config{})
	for i := 0; i < t.NumField(); i++ {
		if name := t.Field(i).Tag.Get("flag"); name != "" {
			out[name] = t.Field(i).Type.Kind() != reflect.Bool
		}
	}
	return out
}

// versionCmd prints what the binary was built from.
func versionCmd(args []string) error {
	fl := flag.NewFlagSet("duet version", flag.ContinueOnError)
	if err := fl.Parse(args); err != nil {
		return err
	}
	fmt.Println(versionLine())
	return nil
}

// versionLine is "duet VERSION (revision REV, TIME[, modified]) GOVERSION".
func versionLine() string {
	v, rev, when, dirty := version, "", "", false
	goVersion := runtime.Version()
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	line := "duet " + v
	if rev != "" {
		line += " (revision " + rev
		if when != "" {
			line += ", " + when
		}
		if dirty {
			line += ", modified"
		}
		line += ")"
	}
	return line + " " + goVersion
}

// gcPercent is the server's default GOGC. Its live heap is small (caches,
// in-flight packets) and it allocates fast, so collecting at 4× the live heap
// instead of 2× buys throughput for little memory. GOGC still overrides it.
// With many devices connected the live heap is not small: the percentage
// then comes down as the live memory grows (tuneGC), and --memory-limit
// (memlimit.go) bounds what the heap may grow to.
const gcPercent = 400

func serveCmd(args []string) error {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	cfg, fl, err := loadConfig("duet serve", args)
	if err != nil {
		return err
	}
	setUsage(fl, "serve [flags]", "Runs the server. Every flag is also an environment variable and a key of the --config YAML file.")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("serve takes no arguments, got %q (run `duet --help` for the commands)", fl.Arg(0))
	}
	log, err := cfg.logger()
	if err != nil {
		return err
	}
	slog.SetDefault(log)
	limit, err := applyMemoryLimit(cfg.MemoryLimit)
	if err != nil {
		return err
	}
	if limit != math.MaxInt64 {
		log.Info("heap memory limit", "bytes", limit)
	}
	srv, err := start(*cfg, log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if os.Getenv("GOGC") == "" {
		tuneGC(gcPercent, ctx.Done())
	}
	// Freed memory goes back to the system while the server is quiet
	// (memlimit.go).
	go trimWhenIdle(defaultIdleTrim, ctx.Done(), func(reclaimable uint64) {
		log.Debug("idle: memory returned to the system", "bytes", reclaimable)
	})
	<-ctx.Done()
	log.Info("shutting down")
	return srv.Close()
}

// start builds and starts the server cfg describes (internal/server owns
// the assembly; main only maps its settings onto server.Config).
func start(cfg Config, log *slog.Logger) (*server.Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	srv, err := server.New(cfg.serverConfig(log))
	if err != nil {
		return nil, err
	}
	if err := srv.Start(); err != nil {
		srv.Close()
		return nil, err
	}
	return srv, nil
}

// serverConfig maps the settings onto the server's.
func (c Config) serverConfig(log *slog.Logger) server.Config {
	return server.Config{
		Data: c.Data, Secret: c.Secret, Version: versionLine(),
		MQTT: c.MQTT, WS: c.WS, TLS: c.TLS, TLSCert: c.TLSCert, TLSKey: c.TLSKey, HTTP: c.HTTP,
		SDKAppID: c.SDKAppID, Admins: append([]string{}, c.adminList()...), AutoAccounts: c.AutoAccounts,
		Window: c.Window, MaxRequest: c.MaxRequest, MaxLifeTime: c.MaxLifeTime, RecallWindow: c.RecallWindow,
		MaxContacts: c.MaxContacts, FriendsOnly: c.FriendsOnly, BlacklistErr: c.BlacklistErr,
		ConnectTimeout: c.ConnectTimeout, PendingPerIP: c.PendingPerIP, MaxPending: c.MaxPending,
		HTTPReadTimeout: c.HTTPReadTimeout, Web: c.Web, WebMQTTURLs: splitList(c.WebMQTTURLs), Push: c.Push,
		RESTRate: c.RESTRate, CallbackURL: c.CallbackURL, CallbackToken: c.CallbackToken,
		CallbackRefuse: c.CallbackFailure == "refuse", StoreSweepEvery: time.Minute,
		S3Endpoint: c.S3Endpoint, S3AccessKey: c.S3AccessKey, S3SecretKey: c.S3SecretKey, S3Bucket: c.S3Bucket,
		S3Secure: c.S3Secure, S3PublicEndpoint: c.S3PublicEndpoint, MediaURL: c.MediaURL, MediaLimits: c.MediaLimits,
		MediaCleanAfter: c.MediaCleanAfter, MediaLinkTTL: c.MediaLinkTTL, MediaLocalOnly: c.MediaLocalOnly,
		NoMedia: !c.Media, Cluster: c.clusterConfig(), Log: log,
	}
}

func usersigCmd(args []string) error {
	cfg, fl, err := loadConfig("duet usersig", args, "data", "secret", "sdkappid")
	if err != nil {
		return err
	}
	user := fl.String("user", "", "UserID to sign for (required)")
	expire := fl.Int64("expire", 180*86400, "validity in seconds")
	setUsage(fl, "usersig --user U [--expire SECONDS]", "Prints a UserSig (the MQTT password) for U, made with the server's secret: --secret, or the secret.key the server generated in --data.")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *user == "" {
		return errors.New("usersig: --user is required")
	}
	key, err := cfg.existingSecret()
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
	cfg, fl, err := loadConfig("duet account import", args, "data")
	if err != nil {
		return err
	}
	setUsage(fl, "account import USER...", "Creates accounts in the data directory; the server must be stopped (a running server takes them through REST im_open_login_svc/account_import).")
	users, err := parseInterspersed(fl, args)
	if err != nil {
		return err
	}
	if len(users) == 0 {
		return errors.New("usage: duet account import USER...")
	}
	for _, u := range users {
		if !command.ValidUserID(u) {
			return fmt.Errorf("invalid UserID %q: 1–32 bytes of A-Z a-z 0-9 _ - @ .", u)
		}
	}
	lock, err := server.LockData(cfg.Data)
	if err != nil {
		return fmt.Errorf("%w (stop it, or use the REST API)", err)
	}
	defer lock.Close()
	st, err := store.Open(filepath.Join(cfg.Data, "store"), store.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		return err
	}
	defer st.Close()
	for _, u := range users {
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
