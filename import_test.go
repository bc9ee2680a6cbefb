package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
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

// TestImportToolResumesAfterKill runs `duet import` as a real process
// against a running server, kills it mid-way with SIGKILL, runs it again,
// and checks that every line landed exactly once.
func TestImportToolResumesAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := buildDuet(t)

	cfg := defaultConfig()
	cfg.Data, cfg.MQTT, cfg.WS, cfg.HTTP = filepath.Join(dir, "data"), "127.0.0.1:0", "", "127.0.0.1:0"
	cfg.Secret = "import-test-secret"
	// Slow enough that the kill lands mid-way: 2000 lines at 400 calls/s.
	cfg.RESTRate = 400
	srv, err := start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, u := range []string{"alice", "bob"} {
		if _, err := srv.store.ImportAccount(store.Account{UserID: u}); err != nil {
			t.Fatal(err)
		}
	}

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
	args := []string{"import", "--url", "http://" + srv.httpLn.Addr().String(), "--secret", cfg.Secret, "--admins", "administrator", "--workers", "4", file}

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
	err = second.Run()
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
	if seq, _ := srv.store.LastSeq("bob"); seq != n-1 {
		t.Fatalf("bob's timeline has %d events, want %d (no duplicates, no gaps)", seq, n-1)
	}
	for _, i := range []int{1, int(atKill.Line), n} {
		key := fmt.Sprintf("%d_%d_%d", i, 7000+i, base+int64(i))
		if _, err := srv.store.GetMessage("alice", "bob", key); err != nil {
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
	if seq, _ := srv.store.LastSeq("bob"); seq != n-1 {
		t.Fatalf("re-import added events: %d", seq)
	}
}
