package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/duet-im/duet/broker"
	"github.com/duet-im/duet/internal/cluster"
	"github.com/duet-im/duet/internal/server"
	"github.com/duet-im/duet/media"
	"github.com/duet-im/duet/push"
)

// Config is every setting of the server. Each one is a flag (--name), an
// environment variable (DUET_NAME) and a key of the optional YAML file
// (--config); a flag beats the environment, which beats the file, which
// beats the default.
type Config struct {
	Data         string        `yaml:"data" flag:"data" usage:"data directory (store, generated secret)"`
	MQTT         string        `yaml:"mqtt" flag:"mqtt" usage:"MQTT TCP listener address (empty: off)"`
	WS           string        `yaml:"ws" flag:"ws" usage:"MQTT over WebSocket listener address, path /mqtt (empty: off)"`
	HTTP         string        `yaml:"http" flag:"http" usage:"HTTP listener: /healthz, /metrics (empty: off)"`
	TLS          string        `yaml:"tls" flag:"tls" usage:"MQTT over TLS listener address (needs tls-cert and tls-key)"`
	TLSCert      string        `yaml:"tls-cert" flag:"tls-cert" usage:"PEM certificate for the TLS listener"`
	TLSKey       string        `yaml:"tls-key" flag:"tls-key" usage:"PEM private key for the TLS listener"`
	SDKAppID     uint64        `yaml:"sdkappid" flag:"sdkappid" usage:"SDKAppID that UserSigs must name"`
	Secret       string        `yaml:"secret" flag:"secret" usage:"UserSig secret key (empty: generated into the data dir)"`
	Admins       string        `yaml:"admins" flag:"admins" usage:"comma-separated admin UserIDs"`
	AutoAccounts bool          `yaml:"auto-accounts" flag:"auto-accounts" usage:"create unknown users on their first valid login (development)"`
	Window       int           `yaml:"window" flag:"window" usage:"timeline events a device may have unacknowledged"`
	MaxRequest   int           `yaml:"max-request" flag:"max-request" usage:"largest MQTT request payload in bytes (93000 above it)"`
	MaxLifeTime  time.Duration `yaml:"max-lifetime" flag:"max-lifetime" usage:"longest a message is kept (default and maximum MsgLifeTime)"`
	RecallWindow time.Duration `yaml:"recall-window" flag:"recall-window" usage:"how long users may recall their own messages"`
	MaxContacts  int           `yaml:"max-contacts" flag:"max-contacts" usage:"conversations kept in each user's list"`
	LogLevel     string        `yaml:"log-level" flag:"log-level" usage:"debug, info, warn or error"`
	MemoryLimit  string        `yaml:"memory-limit" flag:"memory-limit" usage:"soft limit of the Go heap: a share of the machine's memory (cgroup limit, else total) such as 75%, a size such as 3GiB, or 0 for none; GOMEMLIMIT overrides it"`

	// The edge before login (broker/listen.go) and the HTTP server's bounds.
	ConnectTimeout  time.Duration `yaml:"connect-timeout" flag:"connect-timeout" usage:"time from accept to a complete MQTT CONNECT (and WebSocket upgrade), and to an HTTP request's headers"`
	PendingPerIP    int           `yaml:"pending-per-ip" flag:"pending-per-ip" usage:"MQTT connections not yet logged in allowed per client IP (IPv6: per /64); more are closed at accept"`
	MaxPending      int           `yaml:"max-pending" flag:"max-pending" usage:"MQTT connections not yet logged in allowed in all; more are closed at accept"`
	HTTPReadTimeout time.Duration `yaml:"http-read-timeout" flag:"http-read-timeout" usage:"time an HTTP request (headers and body) may take to arrive"`

	Web bool `yaml:"web" flag:"web" usage:"serve the web chat at / on the HTTP listener (docs/web.md)"`
	// WebMQTTURLs is the list the page connects to, failing over from one to
	// the next when a node dies; empty: the page's own host at the ws port.
	WebMQTTURLs string `yaml:"web-mqtt-urls" flag:"web-mqtt-urls" usage:"comma-separated ws:// or wss:// URLs of every node's MQTT WebSocket listener, for the web chat to fail over between (docs/web.md); empty: the page's own host"`

	Push         push.Config `yaml:"push"` // offline push vendors (docs/push.md)
	FriendsOnly  bool        `yaml:"friends-only" flag:"friends-only" usage:"only friends may message each other (20009-20011)"`
	BlacklistErr bool        `yaml:"blacklist-check-error" flag:"blacklist-check-error" usage:"a blacklisted sender gets 20007 instead of a silent 'sent'"`

	// REST API and callbacks (rest/, command/callback.go, internal/callback).
	RESTRate        int    `yaml:"rest-rate" flag:"rest-rate" usage:"REST calls per second per command (account batch commands get half; 60007 above it; -1 = unlimited)"`
	CallbackURL     string `yaml:"callback-url" flag:"callback-url" usage:"app back-end URL for Tencent-style callbacks (empty: none)"`
	CallbackToken   string `yaml:"callback-token" flag:"callback-token" usage:"callback signing token (adds Sign and RequestTime)"`
	CallbackFailure string `yaml:"callback-failure" flag:"callback-failure" usage:"when the before-send callback fails: deliver, or refuse (80003)"`

	// Media storage (docs/media.md).
	Media            bool          `yaml:"media" flag:"media" usage:"serve media uploads and downloads; false: none (media elements pass as sent, e.g. with URLs the app hosts) and no S3 is needed"`
	S3Endpoint       string        `yaml:"s3-endpoint" flag:"s3-endpoint" usage:"S3/MinIO host:port for media (empty: an embedded S3 gateway on loopback, data in {data}/s3)"`
	S3AccessKey      string        `yaml:"s3-access-key" flag:"s3-access-key" usage:"S3 access key"`
	S3SecretKey      string        `yaml:"s3-secret-key" flag:"s3-secret-key" usage:"S3 secret key"`
	S3Bucket         string        `yaml:"s3-bucket" flag:"s3-bucket" usage:"S3 bucket for media and message archives, created when missing (empty: duet)"`
	S3Secure         bool          `yaml:"s3-secure" flag:"s3-secure" usage:"reach S3 over HTTPS"`
	S3PublicEndpoint string        `yaml:"s3-public-endpoint" flag:"s3-public-endpoint" usage:"host:port devices reach S3 at, when not s3-endpoint (presigned URLs are signed for it)"`
	MediaURL         string        `yaml:"media-url" flag:"media-url" usage:"base URL of media download links, the HTTP listener as devices reach it (empty: http://{http}; required when http listens on a wildcard address)"`
	MediaLimits      string        `yaml:"media-limits" flag:"media-limits" usage:"largest upload per type, e.g. image=28MB,file=100MB (28MB each by default)"`
	MediaCleanAfter  time.Duration `yaml:"media-clean-after" flag:"media-clean-after" usage:"uploads never committed are removed after this (empty: 1h)"`
	MediaLinkTTL     time.Duration `yaml:"media-link-ttl" flag:"media-link-ttl" usage:"life of the presigned GET a media download redirects to (empty: 5m)"`
	MediaLocalOnly   bool          `yaml:"media-local-only" flag:"media-local-only" usage:"refuse media elements that name no upload of this server, even from an App admin (default: admins may send media hosted elsewhere)"`

	// Cluster mode (docs/cluster.md): several nodes as one service on NATS
	// JetStream. Empty cluster-name and nats: a single node.
	ClusterName      string        `yaml:"cluster-name" flag:"cluster-name" usage:"name of the cluster this node belongs to; the same on every node (empty: a single node)"`
	Node             string        `yaml:"node" flag:"node" usage:"this node's name, unique in the cluster: 1-64 of [A-Za-z0-9_-] (empty: the host name)"`
	ClusterListen    string        `yaml:"cluster-listen" flag:"cluster-listen" usage:"host:port of the embedded NATS server's route listener, for the other nodes"`
	ClusterRoutes    string        `yaml:"cluster-routes" flag:"cluster-routes" usage:"comma-separated nats://host:port of every node's route listener (the same list on every node)"`
	ClusterAdvertise string        `yaml:"cluster-advertise" flag:"cluster-advertise" usage:"host:port the other nodes should dial for this node's routes when it is not cluster-listen's (behind NAT, in a container); gossiped to them"`
	ClusterSecret    string        `yaml:"cluster-secret" flag:"cluster-secret" usage:"password the nodes' routes authenticate with; the same on every node"`
	ClusterTLSCert   string        `yaml:"cluster-tls-cert" flag:"cluster-tls-cert" usage:"PEM certificate of this node for mutual TLS on the routes (with cluster-tls-key and cluster-tls-ca; its names must cover the host of this node's route URL)"`
	ClusterTLSKey    string        `yaml:"cluster-tls-key" flag:"cluster-tls-key" usage:"PEM private key of cluster-tls-cert"`
	ClusterTLSCA     string        `yaml:"cluster-tls-ca" flag:"cluster-tls-ca" usage:"PEM CA certificate that signed every node's cluster-tls-cert; a route from a node without one is refused"`
	ClusterSync      string        `yaml:"cluster-sync" flag:"cluster-sync" usage:"when JetStream fsyncs: always (every write, the default: an acknowledged message survives a power loss of every node) or an interval such as 2m"`
	Replicas         int           `yaml:"replicas" flag:"replicas" usage:"copies of every log (3 or 5); an acknowledgement waits for a majority of them"`
	Partitions       int           `yaml:"partitions" flag:"partitions" usage:"how many partitions users are hashed into, each with its own log and owner (fixed when the cluster is created; the same on every node)"`
	LeaseTTL         time.Duration `yaml:"lease-ttl" flag:"lease-ttl" usage:"how long a node's ownership of the data outlives its last renewal: a dead owner is replaced within about this"`
	NATS             string        `yaml:"nats" flag:"nats" usage:"comma-separated URLs of an external NATS cluster to use instead of an embedded server (excludes cluster-routes and cluster-listen)"`
	NATSCreds        string        `yaml:"nats-creds" flag:"nats-creds" usage:"credentials file for the nats connection"`

	// How often the owner of the data snapshots it and trims the log
	// (docs/cluster.md §10.3).
	SnapshotEntries  int           `yaml:"snapshot-entries" flag:"snapshot-entries" usage:"cluster mode: the owner of the data snapshots it and trims the log after this many log entries"`
	SnapshotInterval time.Duration `yaml:"snapshot-interval" flag:"snapshot-interval" usage:"cluster mode: ... or after this long, if anything was written (whichever comes first)"`
}

// defaultPartitions is P of a new cluster (docs/cluster.md §5): a
// partition is the unit of ownership, so P bounds how many nodes share
// the writes, and each costs every node a Pebble directory and a stream.
const defaultPartitions = 1

func defaultConfig() Config {
	return Config{
		Data:         "./data",
		MQTT:         "127.0.0.1:1883",
		WS:           "127.0.0.1:8083",
		HTTP:         "127.0.0.1:8080",
		SDKAppID:     1400000000,
		Admins:       "administrator",
		Window:       128,
		MaxRequest:   64 << 10,
		MaxLifeTime:  7 * 24 * time.Hour,
		RecallWindow: 2 * time.Minute,
		MaxContacts:  100,
		LogLevel:     "info",
		MemoryLimit:  defaultMemoryLimit,

		ConnectTimeout:  broker.DefaultConnectTimeout,
		PendingPerIP:    broker.DefaultPendingPerIP,
		MaxPending:      broker.DefaultMaxPending,
		HTTPReadTimeout: 30 * time.Second,
		Web:             true,
		Media:           true,

		RESTRate:        200,
		CallbackFailure: "deliver",

		ClusterListen: "0.0.0.0:6222",
		ClusterSync:   "always",
		Replicas:      3,
		LeaseTTL:      5 * time.Second,
		Partitions:    defaultPartitions,

		SnapshotEntries:  100_000,
		SnapshotInterval: 6 * time.Hour,
	}
}

// loadConfig applies the YAML file, the environment and then args to the
// defaults. It returns the arguments left after the flags.
//
// The flags write into the returned Config when the caller parses them.
// With only, the flag set offers just those settings (a subcommand's
// --help then lists what it uses, not every server setting); the YAML file
// and the environment still apply to all of them.
func loadConfig(name string, args []string, only ...string) (*Config, *flag.FlagSet, error) {
	cfg := new(Config)
	*cfg = defaultConfig()
	fsFlags := flag.NewFlagSet(name, flag.ContinueOnError)
	configFile := os.Getenv("DUET_CONFIG")
	for i, a := range args {
		if a == "--config" || a == "-config" {
			if i+1 < len(args) {
				configFile = args[i+1]
			}
		} else if v, ok := strings.CutPrefix(strings.TrimLeft(a, "-"), "config="); ok && strings.HasPrefix(a, "-") {
			configFile = v
		}
	}
	if configFile != "" {
		raw, err := os.ReadFile(configFile)
		if err != nil {
			return cfg, nil, fmt.Errorf("config: %w", err)
		}
		if err := checkYAMLKeys(raw, reflect.TypeOf(*cfg)); err != nil {
			return cfg, nil, fmt.Errorf("config %s: %w", configFile, err)
		}
		if err := yaml.Unmarshal(raw, cfg); err != nil {
			return cfg, nil, fmt.Errorf("config %s: %w", configFile, err)
		}
	}
	fsFlags.String("config", configFile, "YAML config file (keys named like the flags)")
	v := reflect.ValueOf(cfg).Elem()
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		name := sf.Tag.Get("flag")
		if name == "" {
			continue // a YAML-only section (push:)
		}
		if len(only) > 0 && !slices.Contains(only, name) {
			continue
		}
		env := "DUET_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		fv := v.Field(i)
		if e, ok := os.LookupEnv(env); ok {
			if err := setField(fv, e); err != nil {
				return cfg, nil, fmt.Errorf("%s: %w", env, err)
			}
		}
		usage := sf.Tag.Get("usage") + " ($" + env + ")"
		switch p := fv.Addr().Interface().(type) {
		case *string:
			fsFlags.StringVar(p, name, *p, usage)
		case *bool:
			fsFlags.BoolVar(p, name, *p, usage)
		case *int:
			fsFlags.IntVar(p, name, *p, usage)
		case *uint64:
			fsFlags.Uint64Var(p, name, *p, usage)
		case *time.Duration:
			fsFlags.DurationVar(p, name, *p, usage)
		}
	}
	return cfg, fsFlags, nil
}

func setField(fv reflect.Value, s string) error {
	switch p := fv.Addr().Interface().(type) {
	case *string:
		*p = s
	case *bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		*p = b
	case *int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return err
		}
		*p = n
	case *uint64:
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return err
		}
		*p = n
	case *time.Duration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*p = d
	}
	return nil
}

func (c Config) adminList() []string { return splitList(c.Admins) }

// Validate is every check of the settings that needs nothing started: a
// server refuses to start on the first error, and says which setting.
// (The push vendors' key files are read and checked by push.New.)
func (c Config) Validate() error {
	if _, err := c.logger(); err != nil {
		return err
	}
	if c.CallbackFailure != "deliver" && c.CallbackFailure != "refuse" {
		return fmt.Errorf("callback-failure must be deliver or refuse, not %q", c.CallbackFailure)
	}
	if c.TLS != "" && (c.TLSCert == "" || c.TLSKey == "") {
		return errors.New("tls needs tls-cert and tls-key")
	}
	if c.MQTT == "" && c.WS == "" && c.TLS == "" {
		return errors.New("no MQTT listener: set mqtt, ws or tls")
	}
	for _, n := range []struct {
		name string
		v    int
	}{{"window", c.Window}, {"max-request", c.MaxRequest}, {"max-contacts", c.MaxContacts},
		{"pending-per-ip", c.PendingPerIP}, {"max-pending", c.MaxPending}} {
		if n.v <= 0 {
			return fmt.Errorf("%s must be positive, not %d", n.name, n.v)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"max-lifetime", c.MaxLifeTime}, {"recall-window", c.RecallWindow},
		{"connect-timeout", c.ConnectTimeout}, {"http-read-timeout", c.HTTPReadTimeout}} {
		if d.v <= 0 {
			return fmt.Errorf("%s must be positive, not %v", d.name, d.v)
		}
	}
	if _, err := media.ParseLimits(c.MediaLimits); err != nil {
		return fmt.Errorf("media-limits: %w", err)
	}
	if _, err := server.MediaURL(c.MediaURL, c.HTTP); err != nil {
		return err
	}
	if c.ClusterName != "" || c.NATS != "" {
		if c.NATS != "" && c.ClusterRoutes != "" {
			return errors.New("nats (an external NATS cluster) excludes cluster-routes (an embedded one)")
		}
		if c.NATS != "" && c.ClusterAdvertise != "" {
			return errors.New("nats (an external NATS cluster) excludes cluster-advertise (the embedded server's route address)")
		}
		if c.ClusterAdvertise != "" {
			if _, _, err := net.SplitHostPort(c.ClusterAdvertise); err != nil {
				return fmt.Errorf("cluster-advertise %q: want host:port: %v", c.ClusterAdvertise, err)
			}
		}
		if c.NATS == "" && c.ClusterRoutes == "" {
			return errors.New("cluster-name needs cluster-routes (the nodes' route listeners) or nats (an external NATS cluster)")
		}
		if c.NATS == "" && c.ClusterSecret == "" {
			return errors.New("cluster-secret is required: it is what keeps strangers off the routes (with route TLS too: a leaked password alone or a certificate alone does not let a machine in)")
		}
		tf := cluster.TLSFiles{Cert: c.ClusterTLSCert, Key: c.ClusterTLSKey, CA: c.ClusterTLSCA}
		if err := tf.Check(); err != nil {
			return err
		}
		if c.Replicas != 3 && c.Replicas != 5 {
			return fmt.Errorf("replicas must be 3 or 5, not %d", c.Replicas)
		}
		if c.LeaseTTL < 2*time.Second {
			return fmt.Errorf("lease-ttl must be at least 2s, not %v", c.LeaseTTL)
		}
		if c.Partitions < 1 || c.Partitions > cluster.MaxPartitions {
			return fmt.Errorf("partitions must be 1 to %d, not %d", cluster.MaxPartitions, c.Partitions)
		}
		if c.SnapshotEntries < 1 {
			return fmt.Errorf("snapshot-entries must be at least 1, not %d", c.SnapshotEntries)
		}
		if c.SnapshotInterval < time.Second {
			return fmt.Errorf("snapshot-interval must be at least 1s, not %v", c.SnapshotInterval)
		}
	}
	return nil
}

// clusterConfig is the cluster settings as the server takes them.
func (c Config) clusterConfig() server.ClusterConfig {
	if c.ClusterName == "" && c.NATS == "" {
		return server.ClusterConfig{}
	}
	node := c.Node
	if node == "" {
		node, _ = os.Hostname()
	}
	cc := server.ClusterConfig{
		Name: c.ClusterName, Node: node, Secret: c.ClusterSecret, Sync: c.ClusterSync,
		TLS:      cluster.TLSFiles{Cert: c.ClusterTLSCert, Key: c.ClusterTLSKey, CA: c.ClusterTLSCA},
		Replicas: c.Replicas, LeaseTTL: c.LeaseTTL, NATSCreds: c.NATSCreds, Partitions: c.Partitions,
		SnapshotEntries: c.SnapshotEntries, SnapshotInterval: c.SnapshotInterval,
	}
	if c.NATS != "" {
		cc.NATS = splitList(c.NATS)
	} else {
		cc.Listen, cc.Routes, cc.Advertise = c.ClusterListen, splitList(c.ClusterRoutes), c.ClusterAdvertise
	}
	return cc
}

// splitList splits a comma-separated setting, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// logger is the process's log; a log-level that is not one of slog's
// names is an error rather than a silent info.
func (c Config) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("log-level %q: want debug, info, warn or error", c.LogLevel)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})), nil
}

// errNoSecret is a subcommand's answer when the data directory holds no
// secret: only serve generates one, so that a mistyped --data never
// produces UserSigs the server will refuse.
var errNoSecret = errors.New("no secret")

// existingSecret returns the configured secret or the data directory's,
// and never creates one.
func (c Config) existingSecret() (string, error) {
	if c.Secret != "" {
		return c.Secret, nil
	}
	path := filepath.Join(c.Data, "secret.key")
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%w in %s — is --data the server's data directory? (or pass --secret)", errNoSecret, path)
	}
	return c.secretKey(nil)
}

// secretKey returns the configured secret, or the one kept in the data
// directory, generating it on first start (server.SecretKey).
func (c Config) secretKey(log *slog.Logger) (string, error) {
	return server.SecretKey(c.Data, c.Secret, log)
}
