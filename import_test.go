package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/duet-im/duet/internal/server"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/wait"
	"github.com/duet-im/duet/store"
)

// startImportTarget runs a server in dir with accounts alice and bob, at
// rate REST calls per second (0: the default).
func startImportTarget(t *testing.T, dir string, rate int) (*server.Server, Config) {
	t.Helper()
	cfg := defaultConfig()
	cfg.Data, cfg.MQTT, cfg.WS, cfg.HTTP = filepath.Join(dir, "data"), "127.0.0.1:0", "", "127.0.0.1:0"
	cfg.Secret = "import-test-secret"
	if rate > 0 {
		cfg.RESTRate = rate
	}
	srv, err := start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	for _, u := range []string{"alice", "bob"} {
		if _, err := srv.Store().ImportAccount(store.Account{UserID: u}); err != nil {
			t.Fatal(err)
		}
	}
	return srv, cfg
}

// TestImportToolResumesAfterKill runs `duet import` as a real process
// against a running server, kills it mid-way with SIGKILL, runs it again,
// and checks that every line landed exactly once.
func TestImportToolResumesAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := buildDuet(t)

	// Slow enough that the kill lands mid-way: 2000 lines at 400 calls/s.
	srv, cfg := startImportTarget(t, dir, 400)

	const n = 2000
	badLine := n - 5 // far enough in that the first run never reaches it
	var in bytes.Buffer
	base := time.Now().Unix() - 3600
	for i := 1; i <= n; i++ {
		to := "bob"
		if i == badLine {
			to = "nobody"
		}
		fmt.Fprintf(&in, `{"SyncFromOldSystem":5,"From_Account":"alice","To_Account":%q,"MsgSeq":%d,"MsgRandom":%d,"MsgTimeStamp":%d,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"old message %d"}}]}`+"\n",
			to, i, 7000+i, base+int64(i), i)
		if i == 100 {
			in.WriteString("\n") // blank lines are skipped
		}
	}
	file := filepath.Join(dir, "export.jsonl")
	if err := os.WriteFile(file, in.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"import", "--url", "http://" + srv.HTTPAddr(), "--secret", cfg.Secret, "--admins", "administrator", "--workers", "4", file}

	// First run: killed once it has durably recorded some progress.
	first := exec.Command(bin, args...)
	var firstErr bytes.Buffer
	first.Stderr = &firstErr
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	var atKill importProgress
	wait.For(t, 20*time.Second, 10*time.Millisecond, func() error {
		raw, err := os.ReadFile(file + ".progress")
		if err != nil {
			return err
		}
		if err := json.Unmarshal(raw, &atKill); err != nil || atKill.Line == 0 {
			return errors.New("no progress yet")
		}
		return nil
	})
	first.Process.Kill()
	first.Wait()
	if atKill.Line >= int64(badLine) {
		t.Fatalf("the first run got to line %d before the kill; the test needs it mid-way", atKill.Line)
	}
	if !strings.Contains(firstErr.String(), "lines/s") || !strings.Contains(firstErr.String(), "ETA") {
		t.Errorf("no progress bar on stderr: %q", firstErr.String())
	}

	// Second run: resumes and finishes.
	second := exec.Command(bin, args...)
	var out, errOut bytes.Buffer
	second.Stdout, second.Stderr = &out, &errOut
	err := second.Run()
	if err == nil {
		t.Fatalf("a run with a failed line exited 0:\n%s", out.String())
	}
	if !strings.Contains(errOut.String(), "resuming") {
		t.Errorf("second run did not say it resumed: %s", errOut.String())
	}
	m := regexp.MustCompile(`lines (\d+), imported (\d+), duplicates (\d+), failed (\d+)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no summary: %s", out.String())
	}
	var lines, imported, dups, failed int
	fmt.Sscan(m[1]+" "+m[2]+" "+m[3]+" "+m[4], &lines, &imported, &dups, &failed)
	if failed != 1 || !strings.Contains(out.String(), fmt.Sprintf("line %d: 90012", badLine+1)) { // +1: the blank line
		t.Fatalf("failed line not reported: %s", out.String())
	}
	if lines < n-int(atKill.Line) || imported+dups+failed != lines {
		t.Fatalf("second run counted %d lines (%d+%d+%d) after a kill at line %d", lines, imported, dups, failed, atKill.Line)
	}

	// Every valid line is in bob's timeline exactly once: the real-time
	// mode appends one event per new message, and replays append nothing.
	if seq, _ := srv.Store().LastSeq("bob"); seq != n-1 {
		t.Fatalf("bob's timeline has %d events, want %d (no duplicates, no gaps)", seq, n-1)
	}
	for _, i := range []int{1, int(atKill.Line), n} {
		key := fmt.Sprintf("%d_%d_%d", i, 7000+i, base+int64(i))
		if _, err := srv.Store().GetMessage("alice", "bob", key); err != nil {
			t.Fatalf("line %d (%s) not in history: %v", i, key, err)
		}
	}

	// Importing the whole file again from scratch changes nothing.
	os.Remove(file + ".progress")
	out.Reset()
	again := exec.Command(bin, append(args[:len(args)-1], "--quiet", file)...)
	again.Stdout = &out
	again.Run()
	if !strings.Contains(out.String(), fmt.Sprintf("lines %d, imported 0, duplicates %d, failed 1", n, n-1)) {
		t.Fatalf("re-import: %s", out.String())
	}
	if seq, _ := srv.Store().LastSeq("bob"); seq != n-1 {
		t.Fatalf("re-import added events: %d", seq)
	}
}

// TestImportRetriesFixedLines: a line the server refuses is reported; the
// user fixes it in the file and runs the same command again, which imports
// it (issue 16: "failed lines are retried on the next run, not skipped as
// done"). The fix changes the line's length, as real fixes do.
func TestImportRetriesFixedLines(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := buildDuet(t)
	srv, cfg := startImportTarget(t, dir, 0)
	base := time.Now().Unix() - 3600
	line := func(i int, to string) string {
		return fmt.Sprintf(`{"SyncFromOldSystem":1,"From_Account":"alice","To_Account":%q,"MsgSeq":%d,"MsgRandom":%d,"MsgTimeStamp":%d,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"old %d"}}]}`+"\n",
			to, i, 100+i, base+int64(i), i)
	}
	// The sample line of docs/rest.md comes first: it must import.
	doc, err := os.ReadFile(filepath.Join(startDir, "docs", "rest.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, _ := strings.Cut(string(doc), "A line of the file:\n\n```json\n")
	sample, _, ok := strings.Cut(after, "\n```")
	if !ok || !strings.HasPrefix(sample, "{") {
		t.Fatal("no sample line in docs/rest.md")
	}
	write := func(bad string) string {
		var b strings.Builder
		b.WriteString(sample + "\n")
		for i := 1; i <= 6; i++ {
			to := "bob"
			if i == 3 {
				to = bad
			}
			b.WriteString(line(i, to))
		}
		return b.String()
	}
	file := filepath.Join(dir, "export.jsonl")
	if err := os.WriteFile(file, []byte(write("nobody-at-all")), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func() (string, error) {
		var out bytes.Buffer
		cmd := exec.Command(bin, "import", "--url", "http://"+srv.HTTPAddr(), "--secret", cfg.Secret,
			"--admins", "administrator", "--quiet", file)
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}

	out, err := run()
	if err == nil || !strings.Contains(out, "imported 6, duplicates 0, failed 1") || !strings.Contains(out, "line 4: ") {
		t.Fatalf("first run (err %v):\n%s", err, out)
	}
	if seq, _ := srv.Store().LastSeq("bob"); seq != 5 {
		t.Fatalf("bob has %d events after the first run, want 5", seq)
	}

	if err := os.WriteFile(file, []byte(write("bob")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = run()
	if err != nil {
		t.Fatalf("run after the fix failed: %v\n%s", err, out)
	}
	if !strings.Contains(out, "imported 1,") || !strings.Contains(out, "failed 0") {
		t.Fatalf("run after the fix did not import the fixed line:\n%s", out)
	}
	if seq, _ := srv.Store().LastSeq("bob"); seq != 6 {
		t.Fatalf("bob has %d events after the fix, want 6", seq)
	}
	key := fmt.Sprintf("%d_%d_%d", 3, 103, base+3)
	if _, err := srv.Store().GetMessage("alice", "bob", key); err != nil {
		t.Fatalf("the fixed line is not in history: %v", err)
	}
	// A third run has nothing left to do.
	if out, err = run(); err != nil || !strings.Contains(out, "imported 0") {
		t.Fatalf("third run (err %v):\n%s", err, out)
	}
}

// TestImportDeadServer: `duet import --url` to a port nobody listens on
// gives up after a few retries it shows, says what to check, and never
// prints the UserSig (it travels in the URL's query).
func TestImportDeadServer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := buildDuet(t)
	file := filepath.Join(dir, "export.jsonl")
	if err := os.WriteFile(file, []byte(`{"SyncFromOldSystem":1,"From_Account":"a","To_Account":"b","MsgSeq":1,"MsgRandom":1,"MsgTimeStamp":1,"MsgBody":[]}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t) // closed again: connections are refused
	const sig = "usersig-that-must-never-be-printed"
	var out bytes.Buffer
	cmd := exec.Command(bin, "import", "--url", "http://"+addr, "--usersig", sig, "--data", filepath.Join(dir, "data"), file)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	began := time.Now()
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("exit 0 against a dead server:\n%s", out.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("still retrying after 30s:\n%s", out.String())
	}
	took := time.Since(began)
	text := out.String()
	t.Logf("gave up after %v:\n%s", took.Round(time.Millisecond), text)
	if took > 15*time.Second {
		t.Errorf("took %v to give up", took)
	}
	if strings.Contains(text, sig) || strings.Contains(strings.ToLower(text), "usersig=") {
		t.Errorf("the UserSig is printed:\n%s", text)
	}
	if n := len(regexp.MustCompile(`retry \d+ of \d+`).FindAllString(text, -1)); n < 2 {
		t.Errorf("retries not shown (%d lines):\n%s", n, text)
	}
	if !strings.Contains(text, "cannot reach http://"+addr) || !strings.Contains(text, "connection refused") {
		t.Errorf("no clear message naming the server:\n%s", text)
	}
}
