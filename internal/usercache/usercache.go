// Package usercache holds facts about users that a server reads on hot
// paths, bounded in memory.
package usercache

import (
	"strings"
	"sync"
)

// Cache holds one fact per user that would otherwise be read from the
// store on a hot path: the store's account-exists answers (every send),
// timelines' last Seq (every append), kick times (every login), users
// without a push token (every stored message); the command layer's
// SenderProfile of each sender (every message).
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
//   - Set is authoritative: the code that committed the change records the
//     new fact (an import, a deletion, a kick, the writer's Seqs).
//   - Fill records what a reader found on disk. The reader takes the
//     cache's generation (Begin) before it reads, and Fill puts the answer
//     in only if no entry was dropped since. Without that, a slow reader
//     could put back an answer older than the one a writer set in the
//     meantime, once a drop had removed the writer's: a deleted account
//     that exists again, a kick forgotten, a Seq handed out twice. (With
//     nothing ever dropped, "fill only when absent" was enough.)
type Cache[V any] struct {
	mu  sync.RWMutex
	m   map[string]V
	gen uint64 // bumped by every drop
	max int
}

// New makes a cache of at most max users.
func New[V any](max int) *Cache[V] {
	return &Cache[V]{m: make(map[string]V), max: max}
}

func (c *Cache[V]) Get(user string) (V, bool) {
	c.mu.RLock()
	v, ok := c.m[user]
	c.mu.RUnlock()
	return v, ok
}

// Begin is the generation a reader takes before it reads from disk.
func (c *Cache[V]) Begin() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

// Fill records v, read from disk after begin returned gen, and returns the
// answer to give: the cached one when an entry is already there (unless
// newer says v replaces it), else v. v is not recorded if an entry was
// dropped since gen.
func (c *Cache[V]) Fill(user string, v V, gen uint64, newer func(old, v V) bool) V {
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

// Set records v for user, whatever was there.
func (c *Cache[V]) Set(user string, v V) {
	c.mu.Lock()
	c.put(user, v)
	c.mu.Unlock()
}

// Update is Set for several users under one lock; v may look at what is
// cached.
func (c *Cache[V]) Update(fn func(get func(string) (V, bool), put func(string, V))) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fn(func(u string) (V, bool) { v, ok := c.m[u]; return v, ok }, c.put)
}

// put is Set with c.mu held.
func (c *Cache[V]) put(user string, v V) {
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

func (c *Cache[V]) dropQuarter() {
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

// Forget drops user's entry (a fill begun before cannot put it back).
func (c *Cache[V]) Forget(user string) {
	c.mu.Lock()
	delete(c.m, user)
	c.gen++
	c.mu.Unlock()
}

// Clear drops every entry.
func (c *Cache[V]) Clear() {
	c.mu.Lock()
	clear(c.m)
	c.gen++
	c.mu.Unlock()
}

// Len is the number of users cached.
func (c *Cache[V]) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// SetLimit changes the bound (tests use a small one to go past it).
func (c *Cache[V]) SetLimit(max int) {
	c.mu.Lock()
	c.max = max
	c.mu.Unlock()
}
