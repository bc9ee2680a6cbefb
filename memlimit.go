package main

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"
)

// The server runs with GOGC=400 (main.go): its live heap is small and it
// allocates fast, so collecting less often buys throughput. But GOGC alone
// lets the heap grow to five times what is live, and with many connected
// devices what is live is large. A soft memory limit bounds it: the
// collector runs as often as it must to stay under it (issue 11 §4).

// defaultMemoryLimit is the --memory-limit default: a share of the
// machine's memory, leaving room for what Go does not count (Pebble's
// cache and memtables outside the heap, the page cache, other processes).
const defaultMemoryLimit = "75%"

// memoryLimit resolves a --memory-limit value to bytes: "0" or "off" for
// none (returned as math.MaxInt64, the runtime's "no limit"), a percentage
// of the machine's memory, or a size (bytes, or with KB, MB, GB, KiB, MiB,
// GiB; KB and KiB alike are 1024). machine is the machine's memory in bytes
// (0 if unknown).
func memoryLimit(s string, machine int64) (int64, error) {
	s = strings.TrimSpace(s)
	switch strings.ToLower(s) {
	case "0", "off", "none":
		return math.MaxInt64, nil
	}
	if pct, ok := strings.CutSuffix(s, "%"); ok {
		p, err := strconv.ParseFloat(pct, 64)
		if err != nil || p <= 0 || p > 100 {
			return 0, fmt.Errorf("memory limit %q: a percentage must be in (0, 100]", s)
		}
		if machine <= 0 {
			return math.MaxInt64, nil // nothing to take a share of
		}
		return int64(float64(machine) * p / 100), nil
	}
	num := strings.TrimRightFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	unit := strings.ToUpper(strings.TrimSpace(s[len(num):]))
	mult, ok := map[string]int64{"": 1, "B": 1, "KB": 1 << 10, "KIB": 1 << 10, "MB": 1 << 20, "MIB": 1 << 20, "GB": 1 << 30, "GIB": 1 << 30, "TB": 1 << 40, "TIB": 1 << 40}[unit]
	n, err := strconv.ParseInt(num, 10, 64)
	if !ok || err != nil || n <= 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("memory limit %q: want a size such as 3GiB, a percentage such as 75%%, or 0 for none", s)
	}
	return n * mult, nil
}

// machineMemory is the memory this process may use: the cgroup's limit
// (v2, else v1) when it has one, else the machine's total (/proc/meminfo);
// 0 when neither can be read. root is "/" except in tests.
func machineMemory(root string) int64 {
	total := meminfoTotal(filepath.Join(root, "proc/meminfo"))
	for _, f := range []string{"sys/fs/cgroup/memory.max", "sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		raw, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			continue
		}
		// "max" (v2) or a huge number (v1) means no limit.
		if n, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64); err == nil && n > 0 && (total == 0 || n < total) {
			return n
		}
		break
	}
	return total
}

func meminfoTotal(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			fields := strings.Fields(v) // "24684012 kB"
			if len(fields) >= 1 {
				if kb, err := strconv.ParseInt(fields[0], 10, 64); err == nil {
					return kb << 10
				}
			}
		}
	}
	return 0
}

// applyMemoryLimit sets the runtime's soft memory limit from the setting,
// unless GOMEMLIMIT is set (the runtime applied it already and it wins, as
// GOGC does over the default GC percentage). It returns the limit in force.
func applyMemoryLimit(setting string) (int64, error) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return debug.SetMemoryLimit(-1), nil
	}
	limit, err := memoryLimit(setting, machineMemory("/"))
	if err != nil {
		return 0, err
	}
	debug.SetMemoryLimit(limit)
	return limit, nil
}

// Returning memory when idle. GOGC=400 and a limit of a share of the
// machine are for throughput under load: between collections the heap may
// grow to five times what is live, and the runtime keeps what it freed
// resident, expecting to need it again. A server holding many idle
// devices then stays at the size its logins took it to, twice or more
// what the connections keep alive (issue 11 §4: 62 KB resident per idle
// connection for 31 KB live). So when the server has been quiet for a
// while (it allocated little) and a good amount of freed memory is still
// resident, that memory is given back to the system (a collection and a
// scavenge, debug.FreeOSMemory). Under load nothing changes: the server
// is not idle then.

// idleTrim are the idle trimmer's settings.
type idleTrim struct {
	every time.Duration // how often the server is looked at
	quiet uint64        // allocating less than this in `every` is idle
	// Garbage and free heap under max(worthFree, live heap/8) are left alone.
	worthFree uint64
}

// defaultIdleTrim looks every 10 s; a server with 15,000 idle devices
// allocates well under 1 MB a second (cursor flushes, metrics), a loaded
// one hundreds of MB.
var defaultIdleTrim = idleTrim{every: 10 * time.Second, quiet: 64 << 20, worthFree: 32 << 20}

// trimWhenIdle runs until stop is closed. trimmed, if not nil, is told
// what each trim found to give back.
func trimWhenIdle(cfg idleTrim, stop <-chan struct{}, trimmed func(reclaimable uint64)) {
	samples := []metrics.Sample{
		{Name: "/gc/heap/allocs:bytes"},              // allocated since start
		{Name: "/memory/classes/heap/free:bytes"},    // free and resident
		{Name: "/memory/classes/heap/objects:bytes"}, // objects, dead ones not yet swept included
		{Name: "/gc/heap/live:bytes"},                // objects the last collection kept
	}
	read := func() (allocs, reclaimable, live uint64) {
		metrics.Read(samples)
		allocs, free, objects, live := samples[0].Value.Uint64(), samples[1].Value.Uint64(), samples[2].Value.Uint64(), samples[3].Value.Uint64()
		if objects > live {
			free += objects - live // garbage since the last collection
		}
		return allocs, free, live
	}
	last, _, _ := read()
	t := time.NewTicker(cfg.every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		allocs, reclaimable, live := read()
		quiet := allocs-last < cfg.quiet
		last = allocs
		if !quiet || reclaimable < max(cfg.worthFree, live/8) {
			continue
		}
		debug.FreeOSMemory()
		last, _, _ = read()
		if trimmed != nil {
			trimmed(reclaimable)
		}
	}
}

// Collecting as the live memory grows. GOGC=400 lets the heap grow by four
// times what the collector must scan (live heap, goroutine stacks,
// globals) before the next collection: cheap collections for a server
// whose live memory is small, which is what the send path needs. With many
// devices connected the live memory is large and that growth is not
// headroom but waste: 15,000 idle devices live in ~470 MB and GOGC=400
// let the heap reach 2 GB before collecting once. And a burst of logins
// that no collection interrupts leaves each device's long-lived objects
// scattered among the dead ones of its login, in spans that stay in use
// (3.5 KB of the 10.4 KB of heap an idle device held, against 0.9 KB when
// collections ran during the burst). So after each collection the GC
// percentage is set for a growth of max(gcHeadroom, a quarter of the
// memory in use) before the next, and never above gcPercent: a server
// holding few devices keeps GOGC=400.

// gcHeadroom is the heap growth between collections that the server always
// allows itself (the send path's garbage at a few thousand messages a
// second is a few hundred MB a second).
const gcHeadroom = 256 << 20

// gcPercentFor is the GC percentage for a heap growth of max(gcHeadroom,
// inUse/4), where scanned is what the percentage multiplies (live heap,
// stacks and globals scanned) and inUse the memory in use after the
// collection; between 25 and ceiling.
func gcPercentFor(scanned, inUse uint64, ceiling int) int {
	if scanned == 0 {
		return ceiling
	}
	growth := max(gcHeadroom, inUse/4)
	p := growth * 100 / scanned
	return int(min(max(p, 25), uint64(ceiling)))
}

// tuneGC sets the GC percentage after every collection until stop is
// closed. The caller leaves it alone when GOGC is set.
func tuneGC(ceiling int, stop <-chan struct{}) {
	samples := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/scan/stack:bytes"},
		{Name: "/gc/scan/globals:bytes"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
	}
	afterEveryGC(func() bool {
		select {
		case <-stop:
			debug.SetGCPercent(ceiling)
			return false
		default:
		}
		metrics.Read(samples)
		v := func(i int) uint64 { return samples[i].Value.Uint64() }
		live := v(0)
		scanned := live + v(1) + v(2)
		// In use: what the runtime holds from the system, less what is
		// free or returned, with the dead objects not yet swept counted
		// as free.
		inUse := v(3) - v(4) - v(5)
		if objects := v(6); objects > live && inUse > objects-live {
			inUse -= objects - live
		}
		debug.SetGCPercent(gcPercentFor(scanned, inUse, ceiling))
		return true
	})
}

// gcSentinel is allocated on the heap (it holds a pointer: never from the
// tiny allocator, whose objects may never be finalized).
type gcSentinel struct{ _ *byte }

// afterEveryGC calls f on the finalizer goroutine after each collection,
// for as long as f returns true.
func afterEveryGC(f func() bool) {
	s := &gcSentinel{}
	runtime.SetFinalizer(s, func(*gcSentinel) {
		if f() {
			afterEveryGC(f)
		}
	})
}
