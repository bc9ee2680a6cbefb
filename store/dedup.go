package store

import (
	"hash/maphash"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble"
)

// The resend filter.
//
// Every send first asks whether the same (from, to, MsgRandom, MsgSeq) was
// stored in the last DedupWindow. Almost always it was not, and a Pebble
// point read that finds nothing is not cheap: v1 never consults the bloom
// filters of L6 tables on Get, and under a steady write load compactions
// keep replacing tables, so their index blocks are seldom cached. That miss
// cost about 11 µs, on the single writer goroutine, per message.
//
// So the writer keeps an in-memory bloom filter of the resend records it
// wrote: a key the filter has never seen was not written, and no read is
// needed. The filter has no false negatives, so it never changes an
// answer, only how it is found:
//
//   - records are added when a transaction writes them, before any later
//     transaction (of the same group or not) can ask; a transaction that
//     then fails leaves a key the filter "may contain", which only costs a
//     read.
//   - two generations, each covering at least DedupWindow of writes: the
//     current one takes new records; when it is DedupWindow old it becomes
//     the previous one and the one before is dropped. A record younger than
//     DedupWindow is therefore always in one of them.
//   - records written before this process started are loaded by a scan in
//     the background; until it has finished, every lookup reads the store.
//   - a generation is a blocked bloom filter (each key's bits in one 64-byte
//     line: one cache miss per lookup) of fixed size. Past its capacity its
//     false-positive rate grows and more lookups read the store: it degrades
//     to the old cost, never to a wrong answer.

// dedupFilterBits is the size of one generation: 2^27 bits (16 MiB) hold
// about 13 million records a day at a false-positive rate near 1%.
const dedupFilterBits = 1 << 27

type dedupFilter struct {
	seed  maphash.Seed
	ready atomic.Bool // records stored before Open are in the filter

	mu         sync.Mutex // guards the generation fields below (not their bits)
	cur, prev  *bloomGen
	curStarted time.Time
}

type bloomGen struct{ words []uint64 }

func newBloomGen(bits int) *bloomGen { return &bloomGen{words: make([]uint64, bits/64)} }

func newDedupFilter(now time.Time, bits int) *dedupFilter {
	return &dedupFilter{seed: maphash.MakeSeed(), cur: newBloomGen(bits), curStarted: now}
}

// dedupProbes is how many bits a key sets in its line.
const dedupProbes = 7

// line picks the 512-bit line of a key's hash h (from its low bits) and the
// bits to set in it (from its high bits, mixed, nine bits each: a word of
// the line and a bit of the word).
func (g *bloomGen) line(h uint64) (base int, probes [dedupProbes]uint64) {
	lines := uint64(len(g.words) / 8)
	base = int(h%lines) * 8
	x := bits.RotateLeft64(h, 32) * 0x9e3779b97f4a7c15
	for i := range probes {
		probes[i] = (x >> (9 * i)) & 511
	}
	return base, probes
}

func (g *bloomGen) add(h uint64) {
	base, probes := g.line(h)
	for _, p := range probes {
		atomic.OrUint64(&g.words[base+int(p>>6)], 1<<(p&63))
	}
}

func (g *bloomGen) mayContain(h uint64) bool {
	base, probes := g.line(h)
	for _, p := range probes {
		if atomic.LoadUint64(&g.words[base+int(p>>6)])&(1<<(p&63)) == 0 {
			return false
		}
	}
	return true
}

func (f *dedupFilter) hash(k []byte) uint64 { return maphash.Bytes(f.seed, k) }

// gens returns the live generations, rotating them when the current one
// has covered DedupWindow.
func (f *dedupFilter) gens(now time.Time) (cur, prev *bloomGen) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now.Sub(f.curStarted) >= DedupWindow {
		f.prev, f.cur, f.curStarted = f.cur, newBloomGen(len(f.cur.words)*64), now
	}
	return f.cur, f.prev
}

func (f *dedupFilter) add(k []byte, now time.Time) {
	cur, _ := f.gens(now)
	cur.add(f.hash(k))
}

// absent reports whether k was certainly not written in the last
// DedupWindow.
func (f *dedupFilter) absent(k []byte, now time.Time) bool {
	if !f.ready.Load() {
		return false
	}
	h := f.hash(k)
	cur, prev := f.gens(now)
	return !cur.mayContain(h) && (prev == nil || !prev.mayContain(h))
}

// loadDedup adds the resend records already stored to the filter, then
// marks it ready. It runs once, in the background, from Open.
func (s *Store) loadDedup() {
	defer s.wg.Done()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte("d/"), UpperBound: []byte("d0")})
	if err != nil {
		s.log.Error("resend filter: scan failed; every send reads the store", "error", err)
		return
	}
	defer it.Close()
	now, n := s.Now(), 0
	for ok := it.First(); ok; ok = it.Next() {
		s.dedup.add(it.Key(), now)
		if n++; n%4096 == 0 {
			select {
			case <-s.done:
				return
			default:
			}
		}
	}
	if err := it.Error(); err != nil {
		s.log.Error("resend filter: scan failed; every send reads the store", "error", err)
		return
	}
	s.dedup.ready.Store(true)
	s.log.Debug("resend filter loaded", "records", n)
}
