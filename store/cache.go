package store

import (
	"strings"
	"sync"
)

// userCache holds one fact per user that the store would otherwise read
// from Pebble on a hot path: whether an account exists (every send), the
// last Seq of a timeline (every append), when a user was last kicked
// (every login), that a user has no push token (every stored message).
//
// It is bounded. Each of these used to be a plain map that remembered every
// user the server had ever been asked about, so a long-running server's
// memory grew with its user count, active or not. At max entries a
// quarter of the entries are dropped; Go's map iteration starts at a
// random place, so that is a random sample, and the users still active
// are read back from Pebble on their next use (a bloom-filtered point
// read, or for a timeline one iterator seek).
//
// Two kinds of writes:
//
//   - set is authoritative: the code that committed the change records the
//     new fact (an import, a deletion, a kick, the writer's Seqs).
//   - fill records what a reader found on disk. The reader takes the
//     cache's generation (begin) before it reads, and fill puts the answer
//     in only if no entry was dropped since. Without that, a slow reader
//     could put back an answer older than the one a writer set in the
//     meantime, once a drop had removed the writer's: a deleted account
//     that exists again, a kick forgotten, a Seq handed out twice. (With
//     nothing ever dropped, "fill only when absent" was enough.)
type userCache[V any] struct {
	mu  sync.RWMutex
	m   map[string]V
	gen uint64 // bumped by every drop
	max int
}

func newUserCache[V any](max int) *userCache[V] {
	return &userCache[V]{m: make(map[string]V), max: max}
}

// Cache bounds. An entry costs about 85 bytes with a short user ID, so
// all four full take about 92 MiB (measured: touching a million users'
// four facts kept 280 MiB before the bounds, and grew on). lastSeq is the
// largest because a miss there costs an iterator seek on the send path;
// a kick time is read once per login.
const (
	maxAccountsCached  = 1 << 18
	maxLastSeqCached   = 1 << 19
	maxKicksCached     = 1 << 16
	maxTokenlessCached = 1 << 18
)

func (c *userCache[V]) get(user string) (V, bool) {
	c.mu.RLock()
	v, ok := c.m[user]
	c.mu.RUnlock()
	return v, ok
}

// begin is the generation a reader takes before it reads from disk.
func (c *userCache[V]) begin() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

// fill records v, read from disk after begin returned gen, and returns the
// answer to give: the cached one when an entry is already there (unless
// newer says v replaces it), else v. v is not recorded if an entry was
// dropped since gen.
func (c *userCache[V]) fill(user string, v V, gen uint64, newer func(old, v V) bool) V {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.m[user]; ok {
		if newer == nil || !newer(old, v) {
			return old
		}
		c.m[user] = v
		return v
	}
	if c.gen == gen {
		c.put(user, v)
	}
	return v
}

// set records v for user, whatever was there.
func (c *userCache[V]) set(user string, v V) {
	c.mu.Lock()
	c.put(user, v)
	c.mu.Unlock()
}

// update is set for several users under one lock; v may look at what is
// cached.
func (c *userCache[V]) update(fn func(get func(string) (V, bool), put func(string, V))) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fn(func(u string) (V, bool) { v, ok := c.m[u]; return v, ok }, c.put)
}

// put is set with c.mu held.
func (c *userCache[V]) put(user string, v V) {
	if _, ok := c.m[user]; !ok {
		if len(c.m) >= c.max {
			c.dropQuarter()
		}
		// The ID often points into a request's body: a copy keeps the
		// cache from pinning the whole body.
		user = strings.Clone(user)
	}
	c.m[user] = v
}

func (c *userCache[V]) dropQuarter() {
	n := len(c.m) / 4
	for k := range c.m {
		if n <= 0 {
			break
		}
		delete(c.m, k)
		n--
	}
	c.gen++
}

// forget drops user's entry (a fill begun before cannot put it back).
func (c *userCache[V]) forget(user string) {
	c.mu.Lock()
	delete(c.m, user)
	c.gen++
	c.mu.Unlock()
}

// clear drops every entry.
func (c *userCache[V]) clear() {
	c.mu.Lock()
	clear(c.m)
	c.gen++
	c.mu.Unlock()
}

func (c *userCache[V]) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
