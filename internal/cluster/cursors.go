package cluster

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Device cursors across nodes (docs/cluster.md §13.2).
//
// A device's cursor (the highest Seq it acknowledged) and its user's high
// water (the highest any of the user's devices acknowledged) decide where
// its timeline resumes. On one node they are Pebble keys written without
// fsync. In a cluster a device reconnects to whichever node it reaches —
// after a node dies, to another one — so they must be the same on every
// node: a device unknown to the node it reaches would otherwise count as
// "seen for the first time" and start at that node's high water, past
// events it never received. They live in KV duet-cursors; the store keeps
// its local copy and takes the larger of the two.
//
// Both only ever move forward: a write is a compare-and-set on the key's
// revision that keeps the larger value. Losing a write (a node dies before
// it lands) only moves a cursor back, which re-delivers events, and devices
// drop what they have by Seq.

// BucketCursors is the KV bucket of device cursors and high-water marks.
const BucketCursors = "duet-cursors"

// cursorTimeout bounds one cursor read or write.
const cursorTimeout = 3 * time.Second

// Cursors is the cluster's cursor store (store.SharedCursors).
type Cursors struct {
	js       jetstream.JetStream
	replicas int

	mu sync.Mutex
	kv jetstream.KeyValue // opened on first use: JetStream is ready only once the node has joined
}

// NewCursors is the cursor store of a cluster whose buckets have replicas
// copies.
func NewCursors(n *Node, replicas int) *Cursors {
	if replicas == 0 {
		replicas = 3
	}
	return &Cursors{js: n.js, replicas: replicas}
}

func (c *Cursors) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.kv != nil {
		return c.kv, nil
	}
	kv, err := ensureKV(ctx, c.js, jetstream.KeyValueConfig{Bucket: BucketCursors, History: 1, Replicas: c.replicas, Storage: jetstream.FileStorage})
	if err != nil {
		return nil, err
	}
	c.kv = kv
	return kv, nil
}

// KV keys allow [-/_=.a-zA-Z0-9]: user and client ids (with @) are
// written as unpadded base64url.
var keyEnc = base64.RawURLEncoding

func cursorKey(user, device string) string {
	return "c." + keyEnc.EncodeToString([]byte(user)) + "." + keyEnc.EncodeToString([]byte(device))
}

func highWaterKey(user string) string { return "w." + keyEnc.EncodeToString([]byte(user)) }

// Ready opens the bucket and reads from it once: the node's devices are
// let in only when cursors can be read (a bucket's stream has no leader
// for a moment after it is created).
func (c *Cursors) Ready(ctx context.Context) error {
	return retry(ctx, "KV "+BucketCursors, func(ctx context.Context) error {
		_, _, _, err := c.get(ctx, "w.ready")
		return err
	})
}

// get reads key: its value, whether it exists, and its revision. A read
// that finds no leader (an election under way) is tried again until ctx
// ends.
func (c *Cursors) get(ctx context.Context, key string) (v uint64, ok bool, rev uint64, err error) {
	kv, err := c.bucket(ctx)
	if err != nil {
		return 0, false, 0, err
	}
	e, err := kv.Get(ctx, key)
	for transient(err) && sleepCtx(ctx, 50*time.Millisecond) {
		e, err = kv.Get(ctx, key)
	}
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, false, 0, nil
	}
	if err != nil {
		return 0, false, 0, err
	}
	if b := e.Value(); len(b) == 8 {
		v = binary.BigEndian.Uint64(b)
	}
	return v, true, e.Revision(), nil
}

// raise sets key to v unless it already holds v or more.
func (c *Cursors) raise(ctx context.Context, key string, v uint64) error {
	kv, err := c.bucket(ctx)
	if err != nil {
		return err
	}
	val := binary.BigEndian.AppendUint64(nil, v)
	for {
		cur, ok, rev, err := c.get(ctx, key)
		if err != nil {
			return err
		}
		if ok && cur >= v {
			return nil
		}
		if ok {
			_, err = kv.Update(ctx, key, val, rev)
		} else {
			_, err = kv.Create(ctx, key, val)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) || wrongLastSeq(err) {
			continue // another node moved it meanwhile: read it again
		}
		if transient(err) && sleepCtx(ctx, 50*time.Millisecond) {
			continue
		}
		return err
	}
}

// transient reports errors that end when a stream has a leader again.
func transient(err error) bool {
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrTimeout)
}

// Cursor is device's cursor as the cluster knows it, and whether the
// device was ever seen.
func (c *Cursors) Cursor(user, device string) (uint64, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cursorTimeout)
	defer cancel()
	v, ok, _, err := c.get(ctx, cursorKey(user, device))
	return v, ok, err
}

// HighWater is the highest Seq any device of user acknowledged.
func (c *Cursors) HighWater(user string) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cursorTimeout)
	defer cancel()
	v, _, _, err := c.get(ctx, highWaterKey(user))
	return v, err
}

// SetCursor raises device's cursor, and user's high water, to seq.
func (c *Cursors) SetCursor(user, device string, seq uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), cursorTimeout)
	defer cancel()
	if err := c.raise(ctx, cursorKey(user, device), seq); err != nil {
		return err
	}
	return c.raise(ctx, highWaterKey(user), seq)
}
