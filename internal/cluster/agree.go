package cluster

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Settings that must agree (docs/cluster.md §15.3). The first node records
// them in KV duet-cluster "config" with the partition and replica counts;
// every later node compares its own and refuses to start on a difference,
// naming the setting and both values. Nodes given different values would
// otherwise serve different answers depending on which node owns the data
// (the send policy, the recall window) or refuse each other's UserSigs.

// Setting is one setting every node of a cluster must give alike.
type Setting struct {
	Name  string // as the operator sets it: the flag, e.g. "--friends-only"
	Value string // as recorded and compared; for a secret, SecretHash of it
	// Hidden: Value is a hash of a secret, so a mismatch says that the
	// setting differs without printing either value.
	Hidden bool
	// Follow: a difference updates the record instead of refusing the
	// node. For route TLS: a node that reads the record at all has a
	// quorum of routes, so its peers have what it has (a mixed cluster
	// never forms; ProbeRouteTLS explains the node that cannot join), and
	// the record is merely from before the whole cluster was restarted
	// with TLS turned on or off.
	Follow bool
}

// SecretHash is what the record holds for a secret: an HMAC-SHA-256 keyed
// by the secret over a fixed label, so the record tells nothing of the
// secret itself.
func SecretHash(label, secret string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("duet cluster config: " + label))
	return hex.EncodeToString(m.Sum(nil))
}

// clusterConfig is KV duet-cluster key "config", written by the first node.
// Builds before the settings recorded Partitions and Replicas only: a
// node finding such a record completes it (checkConfig).
type clusterConfig struct {
	Partitions int               `json:"partitions"`
	Replicas   int               `json:"replicas"`
	Settings   map[string]string `json:"settings,omitempty"`
	By         string            `json:"by,omitempty"` // the node that last wrote the settings
}

func recordOf(cfg Config) clusterConfig {
	cc := clusterConfig{Partitions: cfg.Partitions, Replicas: cfg.Replicas, By: cfg.Node}
	if len(cfg.Settings) > 0 {
		cc.Settings = map[string]string{}
		for _, s := range cfg.Settings {
			cc.Settings[s.Name] = s.Value
		}
	}
	return cc
}

// checkConfig writes the cluster's config if absent, else compares it
// with this node's (§15.3). Partitions and replicas never change once
// recorded. A setting the record lacks (written by an older build) is
// added. A setting that differs refuses this node while another node runs
// (a live heartbeat in duet-nodes) or while the record is younger than a
// heartbeat's TTL (another node, starting at the same moment, wrote it
// and its heartbeat is not in yet); otherwise every node was stopped, and
// the first to start records its own values: that is how an operator
// changes a setting (stop every node, start them with the new value).
func checkConfig(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, cfg Config) error {
	want := recordOf(cfg)
	val, _ := json.Marshal(want)
	var notes []string
	err := retry(ctx, "cluster config", func(c context.Context) error {
		notes = nil
		_, err := kv.Create(c, "config", val)
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return err
		}
		e, err := kv.Get(c, "config")
		if err != nil {
			return err
		}
		var have clusterConfig
		if err := json.Unmarshal(e.Value(), &have); err != nil {
			return permanent(fmt.Errorf("KV %s config: %v", BucketCluster, err))
		}
		if have.Partitions != want.Partitions {
			return permanent(fmt.Errorf("%w: the cluster was created with --partitions %d; this node has --partitions %d", ErrConfigMismatch, have.Partitions, want.Partitions))
		}
		if have.Replicas != want.Replicas {
			return permanent(fmt.Errorf("%w: the cluster was created with --replicas %d; this node has --replicas %d", ErrConfigMismatch, have.Replicas, want.Replicas))
		}
		next := have
		next.Settings = maps.Clone(have.Settings)
		if next.Settings == nil {
			next.Settings = map[string]string{}
		}
		var differ, changed []Setting
		for _, s := range cfg.Settings {
			hv, ok := have.Settings[s.Name]
			switch {
			case !ok:
				notes = append(notes, fmt.Sprintf("recorded %s (the record was written by an older build)", s.Name))
				next.Settings[s.Name] = s.Value
			case hv == s.Value:
			case s.Follow:
				changed = append(changed, s)
			default:
				differ = append(differ, s)
			}
		}
		if len(differ) > 0 {
			running, err := othersRunning(c, js, cfg.Node, e, cfg.NodeTTL)
			if err != nil {
				return err
			}
			if running != "" {
				var say []string
				for _, s := range differ {
					say = append(say, mismatch(s, have.Settings[s.Name]))
				}
				return permanent(fmt.Errorf("%w: %s (%s; every node must give the same value: to change it, stop every node and start them all with the new one)",
					ErrConfigMismatch, strings.Join(say, "; "), running))
			}
			changed = append(changed, differ...)
		}
		for _, s := range changed {
			if s.Hidden {
				notes = append(notes, fmt.Sprintf("recorded a new %s", s.Name))
			} else {
				notes = append(notes, fmt.Sprintf("recorded %s %s (was %s)", s.Name, show(s.Value), show(have.Settings[s.Name])))
			}
			next.Settings[s.Name] = s.Value
		}
		if maps.Equal(next.Settings, have.Settings) {
			return nil
		}
		next.By = cfg.Node
		nv, _ := json.Marshal(next)
		// A revision check: a node that changed the record meanwhile is
		// compared with on the next attempt.
		_, err = kv.Update(c, "config", nv, e.Revision())
		return err
	})
	if err == nil && cfg.Log != nil {
		for _, n := range notes {
			cfg.Log.Info("cluster: settings that must agree: " + n)
		}
	}
	return err
}

// mismatch says how this node's value of s differs from the cluster's.
func mismatch(s Setting, have string) string {
	if s.Hidden {
		return fmt.Sprintf("%s differs from the cluster's", s.Name)
	}
	return fmt.Sprintf("the cluster runs with %s %s; this node has %s %s", s.Name, show(have), s.Name, show(s.Value))
}

// show quotes an empty value, which would otherwise read as nothing.
func show(v string) string {
	if v == "" {
		return `""`
	}
	return v
}

// othersRunning says why the record must stand ("" when nothing does): a
// node other than self with a live heartbeat, or a record written within
// a heartbeat's TTL.
func othersRunning(ctx context.Context, js jetstream.JetStream, self string, rec jetstream.KeyValueEntry, nodeTTL time.Duration) (string, error) {
	nodes, err := js.KeyValue(ctx, BucketNodes)
	if err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
		return "", err
	}
	if nodes != nil {
		keys, err := nodes.Keys(ctx)
		if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
			return "", err
		}
		var live []string
		for _, k := range keys {
			if k != self {
				live = append(live, k)
			}
		}
		if len(live) > 0 {
			slices.Sort(live)
			return "running: " + strings.Join(live, ", "), nil
		}
	}
	if age := time.Since(rec.Created()); age < nodeTTL {
		return fmt.Sprintf("recorded %v ago by a node starting now", age.Round(time.Second)), nil
	}
	return "", nil
}

// ProbeRouteTLS finds a route TLS mismatch between this node (tlsOn) and
// the nodes its routes name, for a node whose JetStream never became
// ready: a cluster whose nodes disagree on route TLS never forms, and
// nats-server itself only logs failed handshakes. It opens a TLS
// handshake to each route but this node's own listener (self): a node
// without route TLS sends its INFO in the clear first, which is no TLS
// record; a node with route TLS answers the handshake. It returns what to
// tell the operator, or "" when every reachable node agrees.
func ProbeRouteTLS(routes []string, self string, tlsOn bool, timeout time.Duration) string {
	var (
		mu     sync.Mutex
		differ []string
		wg     sync.WaitGroup
	)
	for _, r := range routes {
		u, err := url.Parse(strings.TrimSpace(r))
		if err != nil || u.Host == "" || u.Host == self {
			continue
		}
		wg.Go(func() {
			peerTLS, ok := routeSpeaksTLS(u.Host, timeout)
			if ok && peerTLS != tlsOn {
				mu.Lock()
				differ = append(differ, u.Host)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(differ) == 0 {
		return ""
	}
	slices.Sort(differ)
	if tlsOn {
		return fmt.Sprintf("routes: this node has route TLS on (--cluster-tls-cert, --cluster-tls-key, --cluster-tls-ca) but the node at %s has it off: every node of a cluster must have route TLS, or none",
			strings.Join(differ, ", "))
	}
	return fmt.Sprintf("routes: this node has route TLS off but the node at %s has it on: check that every node has --cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca (or none)",
		strings.Join(differ, ", "))
}

// routeSpeaksTLS reports whether the route listener at addr speaks TLS;
// ok is false when it could not tell (nothing listens, no answer).
func routeSpeaksTLS(addr string, timeout time.Duration) (speaksTLS, ok bool) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return false, false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	// The probe only asks whether the peer answers in TLS: it neither
	// trusts nor presents a certificate (the peer then refuses it, which
	// is an answer in TLS all the same).
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	err = tc.Handshake()
	var rec tls.RecordHeaderError
	var ne net.Error
	switch {
	case errors.As(err, &rec):
		return false, true // a clear-text INFO
	case errors.As(err, &ne) && ne.Timeout():
		return false, false
	case err == nil:
		return true, true
	default:
		var alert tls.AlertError
		if errors.As(err, &alert) || strings.Contains(err.Error(), "remote error") {
			return true, true
		}
		return false, false
	}
}
