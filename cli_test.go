package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/duet-im/duet/usersig"

	"github.com/duet-im/duet/internal/logcapture"
	"github.com/duet-im/duet/internal/wait"
)

// The command line as a user meets it: every test runs the built binary.

// duetRun runs the binary with args and returns its stdout, stderr and
// exit code.
func duetRun(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(buildDuet(t), args...)
	cmd.Env = append(os.Environ(), "DUET_DATA=", "DUET_SECRET=")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("duet %q still running after 30 s (did it start a server?)\nstderr: %s", args, errb.String())
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// duetServe starts `duet serve` with args on loopback ports of its own and
// waits for its start-up line; the process is stopped at the end of the test.
func duetServe(t *testing.T, args ...string) (*exec.Cmd, *logcapture.Buffer) {
	t.Helper()
	cmd := exec.Command(buildDuet(t), append([]string{"serve", "--mqtt", "127.0.0.1:0", "--ws", "", "--http", "127.0.0.1:0"}, args...)...)
	logs := &logcapture.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	wait.For(t, 30*time.Second, 20*time.Millisecond, func() error {
		if strings.Contains(logs.String(), "duet started") {
			return nil
		}
		if cmd.ProcessState != nil {
			return fmt.Errorf("exited: %s", logs)
		}
		return fmt.Errorf("no start-up line yet:\n%s", logs)
	})
	return cmd, logs
}

func TestTopLevelHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help"}, {"-h"}, {"--data", "x", "--help"}} {
		out, errOut, code := duetRun(t, args...)
		if code != 0 {
			t.Errorf("duet %q exited %d: %s", args, code, errOut)
		}
		for _, want := range []string{"serve", "usersig", "account import", "import", "version", "duet COMMAND --help"} {
			if !strings.Contains(out, want) {
				t.Errorf("duet %q: usage does not name %q:\n%s", args, want, out)
			}
		}
	}
	v1, _, code1 := duetRun(t, "version")
	v2, _, code2 := duetRun(t, "--version")
	if code1 != 0 || code2 != 0 || v1 != v2 {
		t.Errorf("version %q (%d) and --version %q (%d) differ", v1, code1, v2, code2)
	}
}

// Each subcommand's --help lists its own flags, not the server's.
func TestSubcommandHelpListsOwnFlags(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		want, not []string
	}{
		{[]string{"usersig", "--help"}, []string{"-user", "-expire", "-data", "-secret", "-sdkappid"}, []string{"-mqtt", "-window", "-s3-endpoint"}},
		{[]string{"help", "usersig"}, []string{"-user", "-expire"}, []string{"-mqtt"}},
		{[]string{"import", "--help"}, []string{"-url", "-admin", "-workers", "-data", "-secret"}, []string{"-mqtt", "-window"}},
		{[]string{"account", "import", "--help"}, []string{"-data"}, []string{"-mqtt", "-secret"}},
		{[]string{"serve", "--help"}, []string{"-mqtt", "-window", "-data"}, []string{"-user"}},
	} {
		out, errOut, code := duetRun(t, tc.args...)
		all := out + errOut
		if code != 0 {
			t.Errorf("duet %q exited %d", tc.args, code)
		}
		for _, w := range tc.want {
			if !regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(w) + `\b`).MatchString(all) {
				t.Errorf("duet %q does not list %s:\n%s", tc.args, w, all)
			}
		}
		for _, n := range tc.not {
			if regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(n) + `\b`).MatchString(all) {
				t.Errorf("duet %q lists the server's %s:\n%s", tc.args, n, all)
			}
		}
	}
}

// Flags before a subcommand are that subcommand's: they neither start a
// server nor drop the subcommand.
func TestFlagsBeforeSubcommand(t *testing.T) {
	out, errOut, code := duetRun(t, "--data", t.TempDir(), "--secret", "before-secret", "usersig", "--user", "bob")
	if code != 0 {
		t.Fatalf("exited %d: %s", code, errOut)
	}
	if _, err := usersig.Verify(strings.TrimSpace(out), 1400000000, "before-secret", "bob", time.Now()); err != nil {
		t.Fatalf("printed %q, not a UserSig for bob with the given secret: %v", out, err)
	}
	// A flag's value that happens to be a command's name is a value.
	dir := filepath.Join(t.TempDir(), "usersig")
	if _, errOut, code := duetRun(t, "--data", dir, "--secret", "s", "usersig", "--user", "bob"); code != 0 {
		t.Fatalf("--data usersig usersig: exited %d: %s", code, errOut)
	}
	if _, errOut, code := duetRun(t, "bogus"); code == 0 || !strings.Contains(errOut, "unknown command") {
		t.Fatalf("duet bogus: exit %d, %q", code, errOut)
	}
}

func TestVersionFromBuildInfo(t *testing.T) {
	out, _, code := duetRun(t, "version")
	if code != 0 {
		t.Fatal(code)
	}
	if !regexp.MustCompile(`^duet \S+ .*go1\.\d+`).MatchString(out) {
		t.Fatalf("version line %q does not name the version and the Go version", out)
	}
	// Built from a git checkout (CI's), the line names the revision.
	if fi, err := os.Stat(".git"); err == nil && fi.IsDir() {
		head, err := exec.Command("git", "rev-parse", "HEAD").Output()
		if err == nil && !strings.Contains(out, "revision "+strings.TrimSpace(string(head))) {
			t.Fatalf("version line %q does not name the revision %s", out, head)
		}
	}
}

// Only serve makes a secret: usersig and import on a directory without one
// say so and create nothing.
func TestSubcommandsNeverCreateASecret(t *testing.T) {
	for _, args := range [][]string{
		{"usersig", "--user", "bob"},
		{"import", "--url", "http://127.0.0.1:1", "nothing.jsonl"},
	} {
		dir := filepath.Join(t.TempDir(), "data")
		_, errOut, code := duetRun(t, append([]string{"--data", dir}, args...)...)
		if code == 0 {
			t.Errorf("%q succeeded without a secret", args)
		}
		want := "no secret in " + filepath.Join(dir, "secret.key") + " — is --data the server's data directory? (or pass --secret)"
		if !strings.Contains(errOut, want) {
			t.Errorf("%q said %q, want %q", args, errOut, want)
		}
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("%q created %s", args, dir)
		}
	}
}

func TestDataDirInUse(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	first, _ := duetServe(t, "--data", dir, "--secret", "s")
	_, errOut, code := duetRun(t, "serve", "--data", dir, "--secret", "s", "--mqtt", "127.0.0.1:0", "--ws", "", "--http", "")
	want := fmt.Sprintf("%s is in use by another duet process (pid %d)", dir, first.Process.Pid)
	if code == 0 || !strings.Contains(errOut, want) {
		t.Fatalf("second serve: exit %d, %q; want %q", code, errOut, want)
	}
	_, errOut, code = duetRun(t, "account", "import", "--data", dir, "carol")
	if code == 0 || !strings.Contains(errOut, want) {
		t.Fatalf("account import: exit %d, %q; want %q", code, errOut, want)
	}
}

// A busy port of any listener stops start-up, naming the address and the
// flag that moves it.
func TestBusyListenerPort(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	for _, flag := range []string{"--mqtt", "--ws", "--http"} {
		args := map[string]string{"--mqtt": "127.0.0.1:0", "--ws": "", "--http": ""}
		args[flag] = addr
		_, errOut, code := duetRun(t, "serve", "--data", t.TempDir(), "--secret", "s",
			"--mqtt", args["--mqtt"], "--ws", args["--ws"], "--http", args["--http"])
		if code == 0 || !strings.Contains(errOut, addr) || !strings.Contains(errOut, "change "+flag) {
			t.Errorf("%s on a busy port: exit %d, %q", flag, code, errOut)
		}
	}
}

func TestUnknownConfigKeys(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"auto_accounts: true\n", "unknown key auto_accounts; did you mean auto-accounts?"},
		{"mqtt: 127.0.0.1:0\nwindw: 3\n", "unknown key windw; did you mean window?"},
		{"push:\n  apns:\n    bundleid: x\n", "unknown key push.apns.bundleid; did you mean bundle_id?"},
		{"push:\n  gcm: {}\n", "unknown key push.gcm"},
	} {
		file := filepath.Join(t.TempDir(), "duet.yaml")
		os.WriteFile(file, []byte(tc.yaml), 0o600)
		_, errOut, code := duetRun(t, "serve", "--config", file, "--data", t.TempDir(), "--secret", "s")
		if code == 0 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d, %q; want %q", tc.yaml, code, errOut, tc.want)
		}
	}
	if _, errOut, code := duetRun(t, "serve", "--log-level", "verbose", "--data", t.TempDir(), "--secret", "s"); code == 0 || !strings.Contains(errOut, "log-level") {
		t.Errorf("a bad log-level: exit %d, %q", code, errOut)
	}
}

// The start-up line says what a user needs to know.
func TestStartupLine(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	_, logs := duetServe(t, "--data", dir, "--auto-accounts")
	var line string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "duet started") {
			line = l
		}
	}
	for _, want := range []string{"mqtt=127.0.0.1:", "ws=off", "tls=off", "http=127.0.0.1:", "data=" + dir,
		"secret=" + filepath.Join(dir, "secret.key"), "auto-accounts=true", "friends-only=false", "push=none",
		"media=\"embedded S3 in " + filepath.Join(dir, "s3") + "\"", "version=\"duet "} {
		if !strings.Contains(line, want) {
			t.Errorf("start-up line lacks %q:\n%s", want, line)
		}
	}
}

// Flags may follow a command's arguments, as people type them (`duet
// account import carol --data DIR`): Go's flag package stops at the first
// argument that is not a flag, which made the flag and its value two more
// arguments (here, two invalid user IDs).
func TestFlagsAfterArguments(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if out, errOut, code := duetRun(t, "account", "import", "carol", "--data", dir, "dave"); code != 0 || out != "carol\tcreated\ndave\tcreated\n" {
		t.Fatalf("duet account import carol --data DIR dave: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := duetRun(t, "account", "import", "--data", dir, "erin", "carol"); code != 0 || out != "erin\tcreated\ncarol\texists\n" {
		t.Fatalf("duet account import --data DIR erin carol: exit %d\n%s%s", code, out, errOut)
	}
	// import FILE --url URL reaches the URL (nothing listens there), not
	// the usage message.
	file := filepath.Join(t.TempDir(), "h.jsonl")
	if err := os.WriteFile(file, []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := duetRun(t, "import", file, "--url", "http://127.0.0.1:1", "--secret", "s")
	if code == 0 || strings.Contains(errOut, "usage:") {
		t.Fatalf("duet import FILE --url URL: exit %d, stderr %q; want a failure to reach the URL", code, errOut)
	}
}
