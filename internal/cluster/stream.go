package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The KV buckets of docs/cluster.md §6 this build uses.
const (
	BucketLeases  = "duet-leases"
	BucketCluster = "duet-cluster"
	BucketNodes   = "duet-nodes"
)

// markerTTL is how long a KV bucket keeps the marker of an expired key, so
// that watchers see a lease (or a node's heartbeat) expire (§6, §8.1).
const markerTTL = time.Second

// Config is what every node of one cluster must agree on (§5, §15.3), and
// this node's own pace.
type Config struct {
	Partitions int           // P, fixed when the cluster is created
	Replicas   int           // replicas of every stream and bucket (1 only for tests of one server)
	LeaseTTL   time.Duration // TTL of duet-leases (§8.1)
	NodeTTL    time.Duration // TTL of a duet-nodes heartbeat (§6; default 15 s)
	// RebalanceDelay is how long a node stays above its target before it
	// releases its surplus, one partition at a time (§8.3; default 30 s).
	// Not stored in the cluster: each node's own pace.
	RebalanceDelay time.Duration
	// SnapshotEntries and SnapshotInterval: the owner of a partition
	// snapshots its view and trims the log after this many entries, or
	// after this long if any entry came, whichever is first (§10.3;
	// defaults 100,000 and 6 h). Each owner's own pace.
	SnapshotEntries  uint64
	SnapshotInterval time.Duration
	// Settings are the assembly's settings that must agree (§15.3,
	// agree.go), recorded and compared with Partitions and Replicas.
	Settings []Setting
	// Node names this node in the record and is left out when Setup looks
	// for other nodes running; Log hears what Setup recorded (nil: nothing).
	Node string
	Log  *slog.Logger
}

// snapshotCheck is how often an owner looks whether a snapshot is due, or
// the log can be trimmed further.
func (c *Config) snapshotCheck() time.Duration { return min(time.Second, c.SnapshotInterval) }

func (c *Config) defaults() error {
	if c.Partitions < 1 || c.Partitions > MaxPartitions {
		return fmt.Errorf("partitions %d: want 1 to %d", c.Partitions, MaxPartitions)
	}
	if c.Replicas == 0 {
		c.Replicas = 3
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return fmt.Errorf("replicas %d: want 1 to 5 (3 or 5 in production)", c.Replicas)
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 5 * time.Second
	}
	// Local validity is ttl - 1 s (§8.1), so a lease must be longer than that margin.
	if c.LeaseTTL < 2*time.Second {
		return fmt.Errorf("lease ttl %v: want at least 2s", c.LeaseTTL)
	}
	if c.NodeTTL == 0 {
		c.NodeTTL = 15 * time.Second
	}
	if c.RebalanceDelay == 0 {
		c.RebalanceDelay = 30 * time.Second
	}
	if c.SnapshotEntries == 0 {
		c.SnapshotEntries = 100_000
	}
	if c.SnapshotInterval <= 0 {
		c.SnapshotInterval = 6 * time.Hour
	}
	return nil
}

// ErrConfigMismatch is wrapped by Setup when this node's settings differ from
// the cluster's recorded ones; the message names the setting and both values.
var ErrConfigMismatch = errors.New("cluster configuration mismatch")

// StreamConfig is partition p's log (§6): one subject, file storage, no
// limits (trimmed only by snapshot purges), deletes refused, and messages up
// to one group's 8 MiB. No atomic batch: one group is one message.
func StreamConfig(p, replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:       StreamName(p),
		Subjects:   []string{Subject(p)},
		Storage:    jetstream.FileStorage,
		Replicas:   replicas,
		Retention:  jetstream.LimitsPolicy,
		Discard:    jetstream.DiscardNew,
		DenyDelete: true,
		MaxMsgs:    -1,
		MaxBytes:   -1,
		MaxMsgSize: MaxPayload,
	}
}

// Setup creates, idempotently, what the nodes share: KV duet-cluster with its
// config (checked: a node with another P, replica count or setting that
// must agree is refused, checkConfig), the
// partition streams and the leases and nodes buckets. Any number of nodes may
// run it at once; it retries while the JetStream cluster is still forming
// (peers joining, no meta leader) until ctx ends.
func Setup(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	kv, err := ensureKV(ctx, js, jetstream.KeyValueConfig{
		Bucket: BucketCluster, History: 5, Storage: jetstream.FileStorage, Replicas: cfg.Replicas,
	})
	if err != nil {
		return err
	}
	if err := checkConfig(ctx, js, kv, cfg); err != nil {
		return err
	}
	for p := 0; p < cfg.Partitions; p++ {
		if err := ensureStream(ctx, js, StreamConfig(p, cfg.Replicas)); err != nil {
			return err
		}
	}
	if _, err := ensureObjectStore(ctx, js, cfg.Replicas); err != nil {
		return err
	}
	if _, err := ensureKV(ctx, js, jetstream.KeyValueConfig{
		Bucket: BucketLeases, History: 1, TTL: cfg.LeaseTTL, LimitMarkerTTL: markerTTL,
		Storage: jetstream.FileStorage, Replicas: cfg.Replicas,
	}); err != nil {
		return err
	}
	_, err = ensureKV(ctx, js, jetstream.KeyValueConfig{
		Bucket: BucketNodes, History: 1, TTL: cfg.NodeTTL, LimitMarkerTTL: markerTTL,
		Storage: jetstream.FileStorage, Replicas: cfg.Replicas,
	})
	return err
}

func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	return retry(ctx, "stream "+cfg.Name, func(c context.Context) error {
		_, err := js.CreateStream(c, cfg)
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return err
		}
		// It exists with another config: say which setting differs.
		s, err := js.Stream(c, cfg.Name)
		if err != nil {
			return err
		}
		have := s.CachedInfo().Config
		switch {
		case have.Replicas != cfg.Replicas:
			return permanent(fmt.Errorf("%w: stream %s has %d replicas; this node wants %d", ErrConfigMismatch, cfg.Name, have.Replicas, cfg.Replicas))
		case have.MaxMsgSize != cfg.MaxMsgSize:
			return permanent(fmt.Errorf("%w: stream %s has max message size %d; this node wants %d", ErrConfigMismatch, cfg.Name, have.MaxMsgSize, cfg.MaxMsgSize))
		default:
			return permanent(fmt.Errorf("%w: stream %s exists with another configuration", ErrConfigMismatch, cfg.Name))
		}
	})
}

func ensureKV(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	var kv jetstream.KeyValue
	err := retry(ctx, "KV "+cfg.Bucket, func(c context.Context) error {
		var err error
		kv, err = js.CreateKeyValue(c, cfg)
		if !errors.Is(err, jetstream.ErrBucketExists) {
			return err
		}
		if kv, err = js.KeyValue(c, cfg.Bucket); err != nil {
			return err
		}
		st, err := kv.Status(c)
		if err != nil {
			return err
		}
		if st.TTL() != cfg.TTL {
			return permanent(fmt.Errorf("%w: KV %s has TTL %v; this node wants %v (--lease-ttl must agree)", ErrConfigMismatch, cfg.Bucket, st.TTL(), cfg.TTL))
		}
		return permanent(fmt.Errorf("%w: KV %s exists with another configuration", ErrConfigMismatch, cfg.Bucket))
	})
	return kv, err
}

type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

// permanent marks an error retry must not retry.
func permanent(err error) error { return permanentError{err} }

// retry runs f until it succeeds, returns a permanent error, or ctx ends.
// Other errors are those of a cluster still forming (no meta leader,
// insufficient peers for the replicas, a request timing out).
func retry(ctx context.Context, what string, f func(context.Context) error) error {
	var last error
	for {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := f(c)
		cancel()
		if err == nil {
			return nil
		}
		var pe permanentError
		if errors.As(err, &pe) {
			return pe.error
		}
		last = err
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return fmt.Errorf("%s: %v", what, last)
		}
	}
}
