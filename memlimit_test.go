package main

import (
	"bufio"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/wait"
)

func TestMemoryLimitSetting(t *testing.T) {
	const machine = 8 << 30
	cases := []struct {
		in   string
		want int64 // -1: refused
	}{
		{"75%", 6 << 30},
		{"50%", 4 << 30},
		{"100%", 8 << 30},
		{"3GiB", 3 << 30},
		{"3GB", 3 << 30},
		{"512MiB", 512 << 20},
		{"512mb", 512 << 20},
		{"1048576", 1 << 20},
		{" 2 GiB ", 2 << 30},
		{"0", math.MaxInt64},
		{"off", math.MaxInt64},
		{"", -1},
		{"0%", -1},
		{"150%", -1},
		{"lots", -1},
		{"3XB", -1},
		{"-1GiB", -1},
		{"99999999999TiB", -1},
	}
	for _, c := range cases {
		got, err := memoryLimit(c.in, machine)
		if c.want == -1 {
			if err == nil {
				t.Errorf("%q: accepted as %d", c.in, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%q: %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	// A share of an unknown machine is no limit rather than a tiny one.
	if got, err := memoryLimit("75%", 0); err != nil || got != math.MaxInt64 {
		t.Errorf("75%% of an unknown machine: %d, %v", got, err)
	}
}

// The machine's memory is the cgroup's limit when it has one below the
// total, else /proc/meminfo's MemTotal.
func TestMachineMemory(t *testing.T) {
	const meminfo = "MemTotal:       24684012 kB\nMemFree:        22544000 kB\n"
	cases := []struct {
		name  string
		files map[string]string
		want  int64
	}{
		{"meminfo only", map[string]string{"proc/meminfo": meminfo}, 24684012 << 10},
		{"cgroup v2 limit", map[string]string{"proc/meminfo": meminfo, "sys/fs/cgroup/memory.max": "2147483648\n"}, 2 << 30},
		{"cgroup v2 without limit", map[string]string{"proc/meminfo": meminfo, "sys/fs/cgroup/memory.max": "max\n"}, 24684012 << 10},
		{"cgroup v1 limit", map[string]string{"proc/meminfo": meminfo, "sys/fs/cgroup/memory/memory.limit_in_bytes": "1073741824\n"}, 1 << 30},
		{"cgroup v1 without limit", map[string]string{"proc/meminfo": meminfo, "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"}, 24684012 << 10},
		{"nothing readable", map[string]string{}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			for name, body := range c.files {
				p := filepath.Join(root, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got := machineMemory(root); got != c.want {
				t.Fatalf("%d, want %d", got, c.want)
			}
		})
	}
}

// `duet serve` runs with the limit the setting names (flag, environment,
// default), and GOMEMLIMIT beats the setting. The runtime's limit is read
// back from /metrics (go_gc_gomemlimit_bytes).
func TestServeAppliesMemoryLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := buildDuet(t)
	machineDefault, _ := memoryLimit(defaultMemoryLimit, machineMemory("/"))
	cases := []struct {
		name string
		args []string
		env  []string
		want int64
	}{
		{"default", nil, nil, machineDefault},
		{"flag", []string{"--memory-limit", "512MiB"}, nil, 512 << 20},
		{"environment", nil, []string{"DUET_MEMORY_LIMIT=1GiB"}, 1 << 30},
		{"off", []string{"--memory-limit", "0"}, nil, math.MaxInt64},
		{"GOMEMLIMIT wins", []string{"--memory-limit", "512MiB"}, []string{"GOMEMLIMIT=300MiB"}, 300 << 20},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			httpAddr := freeAddr(t)
			args := append([]string{"serve", "--data", filepath.Join(dir, fmt.Sprint("data", i)), "--mqtt", "127.0.0.1:0", "--ws", "",
				"--http", httpAddr, "--secret", "memlimit-test"}, c.args...)
			cmd := exec.Command(bin, args...)
			cmd.Env = append(os.Environ(), c.env...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				_ = cmd.Process.Signal(os.Interrupt)
				_ = cmd.Wait()
			}()
			var got float64
			wait.For(t, 30*time.Second, 50*time.Millisecond, func() error {
				resp, err := http.Get("http://" + httpAddr + "/metrics")
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				sc := bufio.NewScanner(resp.Body)
				for sc.Scan() {
					if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "go_gc_gomemlimit_bytes" {
						got, err = strconv.ParseFloat(f[1], 64)
						return err
					}
				}
				return fmt.Errorf("no go_gc_gomemlimit_bytes in /metrics")
			})
			if got != float64(c.want) {
				t.Fatalf("memory limit %.0f, want %d", got, c.want)
			}
		})
	}
}

var sink []byte

// A quiet server gives back the memory it freed; a busy one keeps it for
// its next allocations (trimWhenIdle).
func TestTrimWhenIdle(t *testing.T) {
	cfg := idleTrim{every: 20 * time.Millisecond, quiet: 4 << 20, worthFree: 1 << 20}
	var trims atomic.Int64
	var reclaimed atomic.Uint64
	stop, done := make(chan struct{}), make(chan struct{})
	busy, idle := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(idle)
		for {
			select {
			case <-busy:
				sink = nil
				return
			default:
				sink = make([]byte, 1<<20) // far over 4 MiB per 20 ms
			}
		}
	}()
	go func() {
		defer close(done)
		trimWhenIdle(cfg, stop, func(reclaimable uint64) {
			reclaimed.Store(reclaimable)
			trims.Add(1)
		})
	}()
	defer func() { close(stop); <-done }()
	wait.Quiet(t, 300*time.Millisecond, 10*time.Millisecond, func() error {
		if n := trims.Load(); n > 0 {
			return fmt.Errorf("memory returned %d times while the process allocated", n)
		}
		return nil
	})
	close(busy)
	<-idle
	wait.Until(t, 10*time.Second, "memory returned once idle", func() bool { return trims.Load() > 0 })
	if got := reclaimed.Load(); got < cfg.worthFree {
		t.Fatalf("trimmed with %d bytes reclaimable, under the %d worth it", got, cfg.worthFree)
	}
}

// The GC percentage allows a growth of max(256 MiB, a quarter of the
// memory in use) between collections, within [25, the ceiling].
func TestGCPercentFor(t *testing.T) {
	const mib = 1 << 20
	cases := []struct {
		name           string
		scanned, inUse uint64
		want           int
	}{
		{"small server keeps the ceiling", 50 * mib, 120 * mib, 400},
		{"at the ceiling exactly", 64 * mib, 150 * mib, 400},
		{"15,000 idle devices", 256 * mib, 470 * mib, 100},
		{"a quarter of a large server", 1600 * mib, 3200 * mib, 50},
		{"never below 25", 8000 * mib, 8000 * mib, 25},
		{"nothing scanned yet", 0, 10 * mib, 400},
	}
	for _, c := range cases {
		if got := gcPercentFor(c.scanned, c.inUse, 400); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
}

// tuneGC sets the percentage after each collection until stopped.
func TestTuneGC(t *testing.T) {
	read := func() uint64 {
		s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)
	stop := make(chan struct{})
	tuneGC(400, stop) // a test binary's live memory is far under 64 MiB: 400
	wait.Until(t, 10*time.Second, "GOGC=400 after a collection", func() bool {
		runtime.GC()
		return read() == 400
	})
	// Stopped, it sets nothing any more: a percentage set by hand stays.
	close(stop)
	wait.Until(t, 10*time.Second, "GOGC left alone after tuneGC stopped", func() bool {
		debug.SetGCPercent(150)
		runtime.GC()
		runtime.GC()
		return read() == 150
	})
}
