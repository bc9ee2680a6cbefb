// Package store keeps Duet's durable state in one Pebble database: accounts,
// per-user timelines with gap-free sequence numbers, per-conversation history,
// the resend de-duplication index and per-device cursors.
//
// # Writes
//
// Every write that must be acknowledged goes through one writer goroutine
// (see writer.go). Callers hand it a transaction function; the writer runs
// queued functions one after another, folds their writes into one batch and
// commits that batch with a single fsync (group commit). Because a single
// goroutine assigns timeline sequence numbers, Seq is gap-free without locks:
// a transaction that fails leaves no trace, and a failed commit rolls every
// sequence number of its group back.
//
// Writes that may be lost without harm (device cursors: losing one only
// re-delivers events, which devices de-duplicate by Seq) bypass the writer
// and are written without fsync.
//
// # Key layout
//
// User IDs are `[A-Za-z0-9_\-@.]` (PROTOCOL §1), so 0x00 never occurs in them
// and separates variable-length parts while keeping prefixes ordered.
//
//	a/{user}                                  account record (JSON)
//	t/{user} 00 {seq u64be}                   timeline event (JSON, as delivered), or a reference to
//	                                          the same event in another timeline (the sender's copy
//	                                          of a message: eventRef, resolved by ReadTimeline)
//	h/{lo} 00 {hi} 00 {time u64be}{msgseq u32be}{random u32be}
//	                                          history record (JSON Message); lo < hi
//	k/{lo} 00 {hi} 00 {msgkey}                (no longer written: a MsgKey names its history key;
//	                                          see historyKeyOf. Old entries expire with their messages.)
//	d/{from} 00 {to} 00 {random u32be}{msgseq u32be}
//	                                          resend record (JSON Sent) of a send with MsgSeq, or (msgseq
//	                                          0) of the latest send without; 's' appended: MsgSeq 0 given
//	d/{from} 00 {to} 00 {random u32be}{0 u32be}{body hash u64be}
//	                                          resend record of an earlier send without MsgSeq, found by
//	                                          its body (messages.go)
//	c/{user} 00 {device}                      device cursor: highest PUBACKed Seq (u64be)
//	w/{user}                                  highest Seq any device of the user PUBACKed (u64be)
//	s/{user}                                  a user's last Seq is the larger of this (u64be) and their
//	                                          timeline's last key; retention writes it as it deletes
//	                                          events, so Seq never restarts
//	m/{time u64be} {lo} 00 {hi} 00 {msgseq u32be}{random u32be}
//	                                          time index of history (value: the history key)
//	e/{expire u64be} {key}                    retention: key (and the keys listed in the value,
//	                                          uvarint length-prefixed) go once expire has passed
//	rf/{owner} 00 {peer}                      friend-list entry (JSON Friend); relations.go
//	rg/{peer} 00 {owner}                      reverse friend index: owner has peer as a friend (empty)
//	rb/{owner} 00 {peer}                      blacklist entry (JSON Blocked)
//	rq/{to} 00 {from}                         pending friend request from `from` to `to` (JSON FriendRequest)
//	rc/{user}                                 relationship counters and sequences (JSON RelCounts)
//	pf/{user}                                 profile tags (JSON Profile); profile.go
//	nm/{user}                                 global mute (JSON Mute)
//	mu/{uuid}                                 media upload record (JSON Upload)
//	mp/{deadline u64be} {uuid}                uncommitted upload, removed by the media cleaner after deadline
//	mg/{uuid} 00 {user}                       user may download upload uuid (peer of a message carrying it)
//	ma/{hour u64be}                           message-record archive of that hour is done (JSON record)
//	x/{user}                                  last kick of user, Unix ns (u64be); older UserSigs refused
//	r/{owner} 00 {peer}                       conversation list entry (JSON Conversation)
//	pt/{user} 00 {device}                     offline-push token of a device (JSON PushToken)
//	px/{vendor} 00 {token}                    which {user} 00 {device} holds a push token
//	pq/{id u64be}                             durable push queue entry (push package's JSON); ps: last id
//	pw/{user} 00 {msgKey} 00 {vendor} 00 {device}  a notification shown, for a recall to take back (push's JSON; expires)
//
// History is ordered as Tencent orders C2C history: time, then MsgSeq.
//
// # Pebble version
//
// github.com/cockroachdb/pebble v1.1.5, the version the design card names:
// v2's API differs (and its on-disk format moves on), and nothing here needs
// what v2 adds. The surface other packages see is this package's, so a move
// is one package's work.
package store

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/bloom"
	"github.com/duet-im/duet/internal/usercache"
)

// ErrClosed is returned by operations on a closed store.
var ErrClosed = errors.New("store: closed")

// ErrNotFound is returned when a requested record does not exist.
var ErrNotFound = errors.New("store: not found")

const sep = 0x00

// Options configure Open.
type Options struct {
	// Logger receives the store's own log lines; nil means slog.Default.
	Logger *slog.Logger
	// MaxGroup bounds how many transactions one commit may carry.
	MaxGroup int
	// OnCommit is called by the writer after each durable commit with the
	// timeline events it appended, before LastSeq shows their Seqs (and
	// before Update returns to their callers). It must not block.
	OnCommit func([]Appended)
	// Clock returns the current time; nil means time.Now. Tests move it.
	Clock func() time.Time
	// SweepEvery is how often expired data is deleted; 0 = never (tests
	// call Sweep themselves).
	SweepEvery time.Duration
	// CacheSize is Pebble's block cache in bytes (default 128 MiB).
	CacheSize int64
	// memTableSize is Pebble's memtable size (default 64 MiB); a node's
	// partitions share it out (OpenPartitions).
	memTableSize uint64
	// dedupBits sizes the resend filter (dedup.go; default
	// dedupFilterBits): a partition holds its share of the senders.
	dedupBits int
	// Replicated opens the store as one node's view of a replicated log
	// (cluster mode, log.go): its state changes by Apply, and by Update
	// only while Own has made it the log's writer; until then Update fails
	// with ErrNotOwner.
	Replicated bool
	// Cursors, when set, is where device cursors and high-water marks are
	// shared with other nodes (cluster mode, internal/cluster): reads take
	// the larger of it and the local copy, writes go to both.
	Cursors SharedCursors
	// Partition is this store's partition, and PartitionOf names any
	// user's, in a cluster with several partitions (docs/cluster.md §5,
	// §11; intents.go): a transaction's writes for a user of another
	// partition are deferred to that partition's writer. Nil PartitionOf
	// (a single node, a cluster of one partition): every user is this
	// store's.
	Partition   int
	PartitionOf func(user string) int
	// OnIntents is called, when this view has written a log entry that
	// carries intents, with the partitions they are for: their owners
	// Receive them. It must not block.
	OnIntents func(targets []int)
	// OnChange hears of a user whose account, profile, mute, friends or
	// blacklist a commit changed that the command layer did not make on
	// this node: an applied log entry, or an intent run here. With
	// partitions, a node's command caches are kept by it. It must not
	// block.
	OnChange func(user string)
}

// SharedCursors keeps device cursors where every node of a cluster sees
// them (docs/cluster.md §13.2). Values only ever move forward.
type SharedCursors interface {
	Cursor(user, device string) (seq uint64, seen bool, err error)
	HighWater(user string) (uint64, error)
	SetCursor(user, device string, seq uint64) error
}

// Bounds of the per-user caches (internal/usercache). An entry costs
// about 85 bytes with a short user ID, so all four full take about 92 MiB
// (measured: touching a million users' four facts kept 280 MiB before
// the bounds, and grew on). lastSeq is the largest because a miss there
// costs an iterator seek on the send path; a kick time is read once per
// login.
const (
	maxAccountsCached  = 1 << 18
	maxLastSeqCached   = 1 << 19
	maxKicksCached     = 1 << 16
	maxTokenlessCached = 1 << 18
)

// Store is Duet's durable state. It is safe for concurrent use.
type Store struct {
	db   *pebble.DB
	log  *slog.Logger
	opts Options

	queue   chan *txn
	done    chan struct{}
	stopped chan struct{} // closed when the writer has returned (writer.go)
	wg      sync.WaitGroup

	mu     sync.RWMutex // guards closed
	closed bool

	// Facts about users read on hot paths, bounded (cache.go).
	accounts *usercache.Cache[bool]      // AccountExists answers
	kicks    *usercache.Cache[time.Time] // KickedAt answers (accounts_admin.go)
	// lastSeq is each user's highest committed Seq. Set only by the
	// writer goroutine (and Apply, in a view), filled by any reader.
	lastSeq *usercache.Cache[uint64]

	cursorMu sync.Mutex // serialises SetCursor so the high-water mark never moves back

	hot   map[string]hotValue // writer-owned cache of hot keys (writer.go)
	dedup *dedupFilter        // resend records written: most first sends need no read (dedup.go)

	repl *replication // cluster mode (log.go); nil on a single node

	tokenless *usercache.Cache[struct{}] // users known to have no push token (push.go)

	// parts are the partitions of a node's store in a cluster with
	// several (OpenPartitions, partitions.go); nil otherwise.
	parts []*Store

	Metrics Metrics
}

// Open opens (creating when missing) the store in dir.
func Open(dir string, o Options) (*Store, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxGroup <= 0 {
		o.MaxGroup = 2048
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 128 << 20
	}
	if o.PartitionOf != nil && !o.Replicated {
		// Deferred writes travel in log entries: without a log they would
		// be lost.
		return nil, errors.New("store: PartitionOf needs a Replicated store")
	}
	cache := pebble.NewCache(o.CacheSize)
	defer cache.Unref()
	popts := &pebble.Options{
		Logger:       pebbleLogger{o.Logger},
		MemTableSize: cmp.Or(o.memTableSize, 64<<20),
		Cache:        cache,
		Levels:       make([]pebble.LevelOptions, 7),
	}
	// Most point reads on the send path look for keys that do not exist
	// (a resend's record, a new conversation): bloom filters answer those
	// without reading table blocks.
	for i := range popts.Levels {
		popts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		popts.Levels[i].FilterType = pebble.TableFilter
	}
	db, err := pebble.Open(dir, popts)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	s := &Store{
		db:        db,
		log:       o.Logger,
		opts:      o,
		queue:     make(chan *txn, 4096),
		done:      make(chan struct{}),
		stopped:   make(chan struct{}),
		accounts:  usercache.New[bool](maxAccountsCached),
		kicks:     usercache.New[time.Time](maxKicksCached),
		lastSeq:   usercache.New[uint64](maxLastSeqCached),
		tokenless: usercache.New[struct{}](maxTokenlessCached),
		hot:       make(map[string]hotValue),
		dedup:     newDedupFilter(o.Clock(), cmp.Or(o.dedupBits, dedupFilterBits)),
	}
	if o.Replicated {
		if err := finishRebuild(db); err != nil {
			db.Close()
			return nil, fmt.Errorf("store: %s: finishing an interrupted rebuild: %w", dir, err)
		}
	}
	applied, err := openMode(db, dir, o.Replicated)
	if err != nil {
		db.Close()
		return nil, err
	}
	if o.Replicated {
		s.repl = &replication{advanced: make(chan struct{})}
		s.repl.applied.Store(applied)
	} else if err := fillRelIndex(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: %s: filling the relationship indexes: %w", dir, err)
	}
	s.wg.Add(2)
	go s.writer()
	go s.loadDedup()
	if o.SweepEvery > 0 {
		s.wg.Add(1)
		go s.sweeper(o.SweepEvery)
	}
	return s, nil
}

// Close stops the writer after it has committed what was queued, then
// closes the database.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	if s.parts != nil {
		return s.closeParts()
	}
	close(s.done)
	s.wg.Wait()
	return s.db.Close()
}

// Now is the store's clock.
func (s *Store) Now() time.Time { return s.opts.Clock() }

type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}
func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
}
func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
	panic(fmt.Sprintf(format, args...))
}

// ---- keys ----

func key(parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	k := make([]byte, 0, n)
	for _, p := range parts {
		k = append(k, p...)
	}
	return k
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func accountKey(user string) []byte { return key([]byte("a/"), []byte(user)) }

func timelinePrefix(user string) []byte { return key([]byte("t/"), []byte(user), []byte{sep}) }

func timelineKey(user string, seq uint64) []byte { return append(timelinePrefix(user), u64(seq)...) }

// timelineUser is the user of a timeline key.
func timelineUser(k []byte) (string, bool) {
	if len(k) < 2+1+8 || !bytes.HasPrefix(k, []byte("t/")) || k[len(k)-9] != sep {
		return "", false
	}
	return string(k[2 : len(k)-9]), true
}

// convPair orders two users so a conversation has one name.
func convPair(a, b string) (string, string) {
	if a < b {
		return a, b
	}
	return b, a
}

func historyPrefix(a, b string) []byte {
	lo, hi := convPair(a, b)
	return key([]byte("h/"), []byte(lo), []byte{sep}, []byte(hi), []byte{sep})
}

func historyKey(a, b string, t int64, msgSeq, random uint32) []byte {
	return key(historyPrefix(a, b), u64(uint64(t)), u32(msgSeq), u32(random))
}

// historyKeyOf is the history key of the message of conversation a–b
// whose MsgKey is msgKey, or nil when msgKey is not one Duet makes. Every
// MsgKey is "{MsgSeq}_{MsgRandom}_{MsgTimeStamp}" (reference §3), which is
// exactly what orders history, so no index is kept for it.
func historyKeyOf(a, b, msgKey string) []byte {
	seqS, rest, ok1 := strings.Cut(msgKey, "_")
	randS, timeS, ok2 := strings.Cut(rest, "_")
	if !ok1 || !ok2 {
		return nil
	}
	msgSeq, err1 := strconv.ParseUint(seqS, 10, 32)
	random, err2 := strconv.ParseUint(randS, 10, 32)
	t, err3 := strconv.ParseInt(timeS, 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || t < 0 {
		return nil
	}
	return historyKey(a, b, t, uint32(msgSeq), uint32(random))
}

func dedupKey(from, to string, random, msgSeq uint32) []byte {
	return key([]byte("d/"), []byte(from), []byte{sep}, []byte(to), []byte{sep}, u32(random), u32(msgSeq))
}

func cursorKey(user, device string) []byte {
	return key([]byte("c/"), []byte(user), []byte{sep}, []byte(device))
}

func highWaterKey(user string) []byte { return key([]byte("w/"), []byte(user)) }

func lastSeqKey(user string) []byte { return key([]byte("s/"), []byte(user)) }

func timeIndexKey(a, b string, t int64, msgSeq, random uint32) []byte {
	lo, hi := convPair(a, b)
	return key([]byte("m/"), u64(uint64(t)), []byte(lo), []byte{sep}, []byte(hi), []byte{sep}, u32(msgSeq), u32(random))
}

// prefixEnd is the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}

// get reads one value through r (the DB or an indexed batch); nil, nil when absent.
func get(r pebble.Reader, k []byte) ([]byte, error) {
	v, closer, err := r.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := bytes.Clone(v)
	closer.Close()
	return out, nil
}

// ---- accounts ----

// Account is the stored record of a user.
type Account struct {
	UserID  string `json:"UserID"`
	Created int64  `json:"Created"`
	Nick    string `json:"Nick,omitempty"`
	FaceURL string `json:"FaceUrl,omitempty"`
}

// AccountExists reports whether user was imported. Answers come from memory
// after the first look-up, so the send path does no read for it.
func (s *Store) AccountExists(user string) (bool, error) {
	if o := s.part(user); o != s {
		return o.AccountExists(user)
	}
	if known, ok := s.accounts.Get(user); ok {
		return known, nil
	}
	gen := s.accounts.Begin()
	v, err := get(s.db, accountKey(user))
	if err != nil {
		return false, err
	}
	if v == nil {
		// Not cached: any caller can name any ID (a send's To_Account),
		// and remembering each would grow the map without bound.
		return false, nil
	}
	// An import or deletion that committed after our read has already
	// recorded the newer answer; ours must not overwrite it.
	return s.accounts.Fill(user, true, gen, nil), nil
}

// GetAccount returns the account record of user, or ErrNotFound.
func (s *Store) GetAccount(user string) (*Account, error) {
	if o := s.part(user); o != s {
		return o.GetAccount(user)
	}
	v, err := get(s.db, accountKey(user))
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, ErrNotFound
	}
	var a Account
	if err := json.Unmarshal(v, &a); err != nil {
		return nil, fmt.Errorf("store: account %s: %w", user, err)
	}
	return &a, nil
}

// ImportAccount creates user (or updates Nick/FaceURL of an existing one),
// durably. It reports whether the account is new.
func (s *Store) ImportAccount(a Account) (created bool, err error) {
	if o := s.part(a.UserID); o != s {
		return o.ImportAccount(a)
	}
	err = s.Update(func(tx *Tx) error {
		k := accountKey(a.UserID)
		old, err := tx.Get(k)
		if err != nil {
			return err
		}
		if old != nil {
			var prev Account
			if err := json.Unmarshal(old, &prev); err == nil {
				a.Created = prev.Created
			}
		} else {
			created = true
			a.Created = s.Now().Unix()
		}
		b, err := json.Marshal(a)
		if err != nil {
			return err
		}
		tx.Put(k, b)
		return nil
	})
	if err == nil {
		s.accounts.Set(a.UserID, true)
	}
	return created, err
}

// ---- timeline ----

// LastSeq is the highest committed Seq of user's timeline (0 when empty).
func (s *Store) LastSeq(user string) (uint64, error) {
	if o := s.part(user); o != s {
		return o.LastSeq(user)
	}
	if seq, ok := s.lastSeq.Get(user); ok {
		return seq, nil
	}
	return s.loadLastSeq(user)
}

// loadLastSeq reads user's last assigned Seq from disk and caches it: the
// timeline's last key, or s/ when retention deleted what came after it.
// (Writing s/ with every commit cost two memtable inserts per message.)
func (s *Store) loadLastSeq(user string) (uint64, error) {
	var seq uint64
	gen := s.lastSeq.Begin()
	v, err := get(s.db, lastSeqKey(user))
	if err != nil {
		return 0, err
	}
	if v != nil {
		seq = binary.BigEndian.Uint64(v)
	}
	p := timelinePrefix(user)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	if it.Last() {
		seq = max(seq, binary.BigEndian.Uint64(it.Key()[len(p):]))
	}
	if err := it.Error(); err != nil {
		return 0, err
	}
	// The writer may have appended since we read: never move backwards.
	return s.lastSeq.Fill(user, seq, gen, seqNewer), nil
}

func seqNewer(old, v uint64) bool { return v > old }

// Event is one stored timeline event.
type Event struct {
	Seq  uint64
	Data []byte // the JSON delivered on im/{user}/in
}

// ReadTimeline returns up to max events of user with Seq > after, in order.
func (s *Store) ReadTimeline(user string, after uint64, max int) ([]Event, error) {
	if o := s.part(user); o != s {
		return o.ReadTimeline(user, after, max)
	}
	p := timelinePrefix(user)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: timelineKey(user, after+1), UpperBound: prefixEnd(p)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []Event
	for ok := it.First(); ok && len(out) < max; ok = it.Next() {
		seq := binary.BigEndian.Uint64(it.Key()[len(p):])
		data := bytes.Clone(it.Value())
		if isEventRef(data) {
			if data, err = s.resolveRef(seq, data); err != nil {
				return nil, err
			}
			if data == nil {
				continue // the copy it names has expired: so has this one
			}
		}
		out = append(out, Event{Seq: seq, Data: data})
	}
	return out, it.Error()
}

// A timeline value is an event's JSON (`{"Seq":…`) or a reference to the
// same event in another timeline (AppendCopy): refMark, the other copy's
// Seq (uvarint), then its user.
const refMark = 0x01

func eventRef(of string, ofSeq uint64) []byte {
	b := binary.AppendUvarint([]byte{refMark}, ofSeq)
	return append(b, of...)
}

func isEventRef(v []byte) bool { return len(v) > 0 && v[0] == refMark }

// resolveRef reads the copy ref names and gives it the Seq seq; nil when that
// copy is gone.
func (s *Store) resolveRef(seq uint64, ref []byte) ([]byte, error) {
	ofSeq, n := binary.Uvarint(ref[1:])
	if n <= 0 {
		return nil, fmt.Errorf("store: damaged timeline reference %x", ref)
	}
	v, err := get(s.db, timelineKey(string(ref[1+n:]), ofSeq))
	if err != nil || v == nil {
		return nil, err
	}
	// The copy starts {"Seq":<its seq>, and the rest is the shared tail.
	i := bytes.IndexByte(v, ',')
	if !bytes.HasPrefix(v, []byte(`{"Seq":`)) || i < 0 {
		return nil, fmt.Errorf("store: timeline reference to a malformed event %q", v)
	}
	out := make([]byte, 0, len(v)+8)
	out = append(out, `{"Seq":`...)
	out = strconv.AppendUint(out, seq, 10)
	return append(out, v[i:]...), nil
}

// ---- cursors ----

// Cursor is the highest Seq device has acknowledged, and whether the device
// was ever seen.
func (s *Store) Cursor(user, device string) (seq uint64, seen bool, err error) {
	if o := s.part(user); o != s {
		return o.Cursor(user, device)
	}
	v, err := get(s.db, cursorKey(user, device))
	if err != nil {
		return 0, false, err
	}
	if v != nil {
		seq, seen = binary.BigEndian.Uint64(v), true
	}
	if s.opts.Cursors != nil {
		shared, sseen, err := s.opts.Cursors.Cursor(user, device)
		if err != nil {
			return 0, false, err
		}
		seq, seen = max(seq, shared), seen || sseen
	}
	return seq, seen, nil
}

// HighWater is the highest Seq any device of user has acknowledged.
func (s *Store) HighWater(user string) (uint64, error) {
	if o := s.part(user); o != s {
		return o.HighWater(user)
	}
	hw, err := s.localHighWater(user)
	if err != nil {
		return 0, err
	}
	if s.opts.Cursors != nil {
		shared, err := s.opts.Cursors.HighWater(user)
		if err != nil {
			return 0, err
		}
		hw = max(hw, shared)
	}
	return hw, nil
}

func (s *Store) localHighWater(user string) (uint64, error) {
	v, err := get(s.db, highWaterKey(user))
	if err != nil || v == nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(v), nil
}

// SetCursor records that device acknowledged everything up to seq. It is
// written without fsync: a cursor lost in a crash only re-delivers events.
// With shared cursors it is written there too, outside cursorMu (a network
// round trip must not queue every other device's flush behind it).
func (s *Store) SetCursor(user, device string, seq uint64) error {
	if o := s.part(user); o != s {
		return o.SetCursor(user, device, seq)
	}
	if err := s.setLocalCursor(user, device, seq); err != nil {
		return err
	}
	if s.opts.Cursors != nil {
		return s.opts.Cursors.SetCursor(user, device, seq)
	}
	return nil
}

func (s *Store) setLocalCursor(user, device string, seq uint64) error {
	s.cursorMu.Lock()
	defer s.cursorMu.Unlock()
	b := s.db.NewBatch()
	defer b.Close()
	b.Set(cursorKey(user, device), u64(seq), nil)
	hw, err := s.localHighWater(user)
	if err != nil {
		return err
	}
	if seq > hw {
		b.Set(highWaterKey(user), u64(seq), nil)
	}
	return b.Commit(pebble.NoSync)
}
