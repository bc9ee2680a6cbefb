package main

// duet import: migrate C2C history exported from another system.
//
// The input is JSON lines, one `openim/importmsg` body per line (reference
// §5.3). The tool posts each line to a running Duet's REST API rather than
// opening the data directory itself: the store's directory lock admits one
// process, so a direct import would need the server stopped, and going
// through REST runs every line through exactly the validation, dedup and
// rate limit that any other importer gets. The server's importmsg dedup
// (same conversation and MsgSeq, MsgRandom, MsgTimeStamp: the first import
// wins) makes a replayed line harmless, which is what makes resuming safe.
//
// Progress — the byte offset and line number below which every line has
// been imported (or found a duplicate) — is kept in FILE.progress,
// rewritten and fsynced twice a second, so a killed import resumes where it
// stopped, replaying at most the lines that were in flight. It never moves
// past a line the server refused: the user fixes that line in the file and
// runs the same command again, which starts at the first refused line
// (the lines after it that were imported come back as duplicates). The
// fix may change the line's length; nothing before it moves.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/usersig"
)

// importProgress is the content of FILE.progress.
type importProgress struct {
	Offset int64 `json:"Offset"` // every line before this byte was answered
	Line   int64 `json:"Line"`   // lines before Offset
}

type importLine struct {
	idx  int64 // 0-based line number in the file
	end  int64 // byte offset just after the line
	body []byte
}

type importOutcome struct {
	idx  int64
	end  int64
	kind int // outcome*
	code int
	info string
}

const (
	outImported = iota
	outDuplicate
	outFailed
	outSkipped // blank line
)

type importStats struct {
	lines, imported, duplicates, failed int64
	firstErrors                         []string
}

func importCmd(args []string) error {
	cfg, fl, err := loadConfig("duet import", args, "data", "secret", "sdkappid", "http", "admins")
	if err != nil {
		return err
	}
	urlFlag := fl.String("url", "", "base URL of the running Duet (default: http://{--http})")
	admin := fl.String("admin", "", "admin identifier to call as (default: the first of --admins)")
	sigFlag := fl.String("usersig", "", "UserSig of the admin (default: made with the configured secret)")
	workers := fl.Int("workers", 4, "requests in flight")
	quiet := fl.Bool("quiet", false, "no progress bar")
	setUsage(fl, "import [--url URL] [--admin ID] FILE", "Imports C2C history, one openim/importmsg body per line, through a running server's REST API; resumable (docs/rest.md).")
	files, err := parseInterspersed(fl, args)
	if err != nil {
		return err
	}
	if len(files) != 1 {
		return errors.New("usage: duet import [--url URL] [--admin ID] FILE")
	}
	path := files[0]
	base := *urlFlag
	if base == "" {
		base = "http://" + cfg.HTTP
	}
	if *admin == "" {
		if list := cfg.adminList(); len(list) > 0 {
			*admin = list[0]
		}
	}
	sig := *sigFlag
	if sig == "" {
		key, err := cfg.existingSecret()
		if err != nil {
			return err
		}
		if sig, err = usersig.Gen(cfg.SDKAppID, key, *admin, 7*86400, time.Now()); err != nil {
			return err
		}
	}
	base = strings.TrimRight(base, "/")
	endpoint := base + "/v4/openim/importmsg?" + url.Values{
		"sdkappid": {strconv.FormatUint(cfg.SDKAppID, 10)}, "identifier": {*admin}, "usersig": {sig},
		"contenttype": {"json"},
	}.Encode()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	imp := &importer{endpoint: endpoint, base: base, path: path, workers: max(1, *workers), quiet: *quiet,
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: max(1, *workers)}}}
	return imp.run(ctx)
}

type importer struct {
	endpoint string // with the UserSig in its query: never printed
	base     string // the server's base URL, for messages
	path     string
	workers  int
	quiet    bool
	client   *http.Client
}

func (imp *importer) progressPath() string { return imp.path + ".progress" }

func (imp *importer) run(ctx context.Context) error {
	f, err := os.Open(imp.path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	var prog importProgress
	if raw, err := os.ReadFile(imp.progressPath()); err == nil {
		if err := json.Unmarshal(raw, &prog); err != nil || prog.Offset < 0 || prog.Offset > size {
			return fmt.Errorf("%s is damaged; delete it to start over (lines already imported are recognised as duplicates)", imp.progressPath())
		}
		fmt.Fprintf(os.Stderr, "resuming %s at line %d (byte %d of %d)\n", imp.path, prog.Line+1, prog.Offset, size)
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if _, err := f.Seek(prog.Offset, io.SeekStart); err != nil {
		return err
	}
	if err := imp.probe(ctx); err != nil {
		return err
	}

	lines := make(chan importLine, imp.workers*2)
	outcomes := make(chan importOutcome, imp.workers*2)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var fatal error
	var fatalOnce sync.Once
	abort := func(err error) {
		fatalOnce.Do(func() { fatal = err; cancel() })
	}

	// Reader: one line at a time, in order.
	go func() {
		defer close(lines)
		r := bufio.NewReaderSize(f, 64<<10)
		off, idx := prog.Offset, prog.Line
		for {
			raw, err := r.ReadBytes('\n')
			if len(raw) > 0 {
				off += int64(len(raw))
				select {
				case lines <- importLine{idx: idx, end: off, body: raw}:
				case <-wctx.Done():
					return
				}
				idx++
			}
			if err == io.EOF {
				return
			}
			if err != nil {
				abort(err)
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range imp.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for l := range lines {
				out, err := imp.post(wctx, l)
				if err != nil {
					abort(err)
					return
				}
				outcomes <- out
			}
		}()
	}
	go func() { wg.Wait(); close(outcomes) }()

	// Collector: counts, and moves the durable offset over the lines that
	// are answered without a gap before them.
	var stats importStats
	done := map[int64]importOutcome{}
	// held: a refused line was reached; progress stays at its start so the
	// next run retries it.
	held := false
	start := time.Now()
	startOff := prog.Offset
	lastSave, lastDraw := time.Now(), time.Time{}
	for out := range outcomes {
		switch out.kind {
		case outImported:
			stats.imported++
		case outDuplicate:
			stats.duplicates++
		case outFailed:
			stats.failed++
			if len(stats.firstErrors) < 10 {
				stats.firstErrors = append(stats.firstErrors, fmt.Sprintf("line %d: %d %s", out.idx+1, out.code, out.info))
			}
		}
		if out.kind != outSkipped {
			stats.lines++
		}
		done[out.idx] = out
		for !held {
			o, ok := done[prog.Line]
			if !ok {
				break
			}
			if o.kind == outFailed {
				held = true
				break
			}
			delete(done, prog.Line)
			prog.Line, prog.Offset = prog.Line+1, o.end
		}
		if time.Since(lastSave) >= 500*time.Millisecond {
			if err := imp.saveProgress(prog); err != nil {
				abort(err)
			}
			lastSave = time.Now()
		}
		if !imp.quiet && time.Since(lastDraw) >= 200*time.Millisecond {
			drawProgress(prog.Offset-startOff, size-startOff, stats.lines, time.Since(start))
			lastDraw = time.Now()
		}
	}
	saveErr := imp.saveProgress(prog)
	if !imp.quiet {
		drawProgress(prog.Offset-startOff, size-startOff, stats.lines, time.Since(start))
		fmt.Fprintln(os.Stderr)
	}
	fmt.Printf("lines %d, imported %d, duplicates %d, failed %d (%.1fs)\n",
		stats.lines, stats.imported, stats.duplicates, stats.failed, time.Since(start).Seconds())
	for _, e := range stats.firstErrors {
		fmt.Println("  " + e)
	}
	switch {
	case fatal != nil && ctx.Err() != nil:
		return fmt.Errorf("interrupted at line %d; run the same command again to resume", prog.Line+1)
	case fatal != nil:
		return fmt.Errorf("stopped at line %d: %w (run again to resume)", prog.Line+1, fatal)
	case saveErr != nil:
		return saveErr
	case stats.failed > 0:
		return fmt.Errorf("%d lines failed; fix them in %s and run the same command again: it starts at line %d, the first that failed (lines after it already imported count as duplicates)",
			stats.failed, imp.path, prog.Line+1)
	}
	return nil
}

// post imports one line, retrying what a retry can fix: rate limiting
// (60007), server-side retry codes and network errors. It returns an error
// only when the import cannot go on.
func (imp *importer) post(ctx context.Context, l importLine) (importOutcome, error) {
	out := importOutcome{idx: l.idx, end: l.end}
	body := bytes.TrimSpace(l.body)
	if len(body) == 0 {
		out.kind = outSkipped
		return out, nil
	}
	var lastErr error
	for attempt := 0; attempt < 50; attempt++ {
		if attempt > 0 {
			// Back off with jitter so workers do not hit the limit in step.
			d := time.Duration(min(attempt, 10)) * 50 * time.Millisecond
			d += rand.N(50 * time.Millisecond)
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return out, ctx.Err()
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, imp.endpoint+"&random="+strconv.FormatUint(uint64(rand.Uint32()), 10), bytes.NewReader(body))
		if err != nil {
			return out, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := imp.client.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return out, ctx.Err()
			}
			lastErr = imp.netError(err)
			continue
		}
		raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if err != nil {
			lastErr = err
			continue
		}
		var rep struct {
			ErrorCode int    `json:"ErrorCode"`
			ErrorInfo string `json:"ErrorInfo"`
			Duplicate int    `json:"Duplicate"`
		}
		if err := json.Unmarshal(raw, &rep); err != nil {
			lastErr = fmt.Errorf("HTTP %d, not a REST reply: %.100q", resp.StatusCode, raw)
			continue
		}
		if command.KindOf(rep.ErrorCode).Retryable() { // rate limits and server-side failures
			lastErr = fmt.Errorf("%d %s", rep.ErrorCode, rep.ErrorInfo)
			continue
		}
		switch rep.ErrorCode {
		case 0:
			out.kind = outImported
			if rep.Duplicate == 1 {
				out.kind = outDuplicate
			}
			return out, nil
		}
		if identityCodes[rep.ErrorCode] {
			return out, &identityRefused{rep.ErrorCode, rep.ErrorInfo}
		}
		out.kind, out.code, out.info = outFailed, rep.ErrorCode, rep.ErrorInfo
		return out, nil
	}
	return out, fmt.Errorf("line %d kept failing: %w", l.idx+1, lastErr)
}

// probeAttempts bounds how often the first contact is tried: an import
// pointed at the wrong address or a stopped server fails within seconds.
const probeAttempts = 5

// probe makes sure a Duet answers at the URL before any line is sent: it
// posts an empty importmsg, which the server refuses for its missing
// fields without storing anything. Unreachable servers are retried a few
// times, each retry shown on stderr; a refused admin identity stops the
// import at once.
func (imp *importer) probe(ctx context.Context) error {
	wait := 250 * time.Millisecond
	var lastErr error
	for attempt := 1; ; attempt++ {
		lastErr = imp.probeOnce(ctx)
		var fatal *identityRefused
		if lastErr == nil || errors.As(lastErr, &fatal) || ctx.Err() != nil {
			return lastErr
		}
		if attempt == probeAttempts {
			break
		}
		fmt.Fprintf(os.Stderr, "cannot reach %s: %v; retry %d of %d in %v\n", imp.base, lastErr, attempt, probeAttempts-1, wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		wait *= 2
	}
	return fmt.Errorf("cannot reach %s after %d attempts: %v; is `duet serve` running there, and is --url (or --http) its HTTP address?",
		imp.base, probeAttempts, lastErr)
}

// identityRefused is the server refusing the admin's identity or UserSig:
// every line would be refused too.
type identityRefused struct {
	code int
	info string
}

func (e *identityRefused) Error() string {
	return fmt.Sprintf("the server refused the admin identity: %d %s", e.code, e.info)
}

func (imp *importer) probeOnce(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, imp.endpoint+"&random="+strconv.FormatUint(uint64(rand.Uint32()), 10), strings.NewReader("{}"))
	if err != nil {
		return imp.netError(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := imp.client.Do(req)
	if err != nil {
		return imp.netError(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return imp.netError(err)
	}
	var rep struct {
		ErrorCode *int   `json:"ErrorCode"`
		ErrorInfo string `json:"ErrorInfo"`
	}
	if err := json.Unmarshal(raw, &rep); err != nil || rep.ErrorCode == nil {
		return fmt.Errorf("HTTP %d, not a Duet REST reply: %.100q", resp.StatusCode, raw)
	}
	if identityCodes[*rep.ErrorCode] {
		return &identityRefused{*rep.ErrorCode, rep.ErrorInfo}
	}
	return nil
}

// identityCodes refuse the caller (app id, admin, UserSig), not the line.
var identityCodes = map[int]bool{60006: true, 60010: true, 60012: true, 70001: true, 70002: true, 70003: true,
	70009: true, 70013: true, 70014: true, 90009: true}

// netError is err without the request URL, whose query holds the UserSig:
// net/http's errors quote the whole URL.
func (imp *importer) netError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	// Whatever else may quote the URL: never the signature.
	if q := strings.Index(imp.endpoint, "usersig="); q >= 0 {
		sig := imp.endpoint[q+len("usersig="):]
		if i := strings.IndexByte(sig, '&'); i >= 0 {
			sig = sig[:i]
		}
		if sig != "" && strings.Contains(err.Error(), sig) {
			return errors.New(strings.ReplaceAll(err.Error(), sig, "…"))
		}
	}
	return err
}

// saveProgress replaces FILE.progress durably: write, fsync, rename, fsync
// the directory.
func (imp *importer) saveProgress(p importProgress) error {
	b, _ := json.Marshal(p)
	tmp := imp.progressPath() + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, imp.progressPath()); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(imp.progressPath())); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// drawProgress draws `[=====>    ]  45.1%  12345 lines  350 lines/s  ETA 42s`
// on stderr; the rate and ETA count this run only.
func drawProgress(done, total, lines int64, elapsed time.Duration) {
	const width = 30
	frac := 1.0
	if total > 0 {
		frac = float64(done) / float64(total)
	}
	n := int(frac * width)
	bar := strings.Repeat("=", n)
	if n < width {
		bar += ">" + strings.Repeat(" ", width-n-1)
	}
	rate := float64(lines) / max(elapsed.Seconds(), 1e-3)
	eta := "?"
	if done > 0 && frac < 1 {
		left := time.Duration(float64(elapsed) * (1 - frac) / frac)
		eta = left.Round(time.Second).String()
	} else if frac >= 1 {
		eta = "0s"
	}
	fmt.Fprintf(os.Stderr, "\r[%s] %5.1f%%  %d lines  %.0f lines/s  ETA %s   ", bar, frac*100, lines, rate, eta)
}
