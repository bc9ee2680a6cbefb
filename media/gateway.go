package media

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// The embedded S3 gateway (versitygw over its posix backend) runs in a
// child process of the same binary: the posix backend resolves every bucket
// and object against the working directory and so changes it (os.Chdir in
// posix.New) for its whole process. In a child, no other part of Duet ever
// sees a moved working directory, and a crash of the gateway is not a crash
// of the server.
//
// Protocol between the two (all of it over pipes, nothing secret on the
// command line that ps shows):
//   - the parent runs `<its own executable> s3-gateway --dir D [--listen A]`
//     with gatewayChildEnv=1 in the environment (the hook that turns the
//     process into the gateway is an init function of this package, so any
//     binary that links package media can serve as the child: duet and the
//     test binaries alike);
//   - the child answers with one JSON line on stdout (gatewayReport): the
//     address it listens on and the credentials from D/s3.key, or an error;
//     from then on its stdout goes to stderr;
//   - the child's stderr is logged by the parent at debug level;
//   - the child stops when its stdin reaches EOF (the parent closed it or
//     died, however it died) and, on Linux, when it gets the parent-death
//     signal (SIGTERM). It ignores SIGINT and SIGHUP, which a terminal sends
//     to the whole process group: the parent decides when it stops.
const (
	gatewayCommand  = "s3-gateway"
	gatewayChildEnv = "DUET_S3_GATEWAY_CHILD"
)

// gatewayReport is the child's answer on its stdout.
type gatewayReport struct {
	Addr      string `json:",omitempty"`
	AccessKey string `json:",omitempty"`
	SecretKey string `json:",omitempty"`
	Error     string `json:",omitempty"`
}

// gatewayStartTimeout bounds a child's start (a race-enabled build under
// load needs seconds).
const gatewayStartTimeout = 60 * time.Second

// Gateway is the embedded S3 server that stands in when no S3 endpoint is
// configured. It runs in a child process (see above) that is restarted on
// the same address and credentials if it dies.
type Gateway struct {
	S3  S3
	dir string
	log *slog.Logger

	mu    sync.Mutex
	child *gatewayChild

	stopOnce sync.Once
	stop     chan struct{} // closed by Close
	done     chan error    // the supervisor's result, once stopped
}

// gatewayChild is one run of the child process.
type gatewayChild struct {
	cmd    *exec.Cmd
	stdin  *os.File      // the parent's end; closing it stops the child
	exited chan struct{} // closed once the process is reaped
	err    error         // cmd.Wait's, valid after exited
	tail   *tailLog
}

// StartGateway runs the embedded gateway on a loopback port, keeping objects
// under dir/objects and its root credentials in dir/s3.key (generated on
// first start, mode 0600). The port of the last run is taken again when
// free, so upload URLs handed out before a restart keep working.
func StartGateway(dir, bucket string, log *slog.Logger) (*Gateway, error) {
	if log == nil {
		log = slog.Default()
	}
	if !embeddedGateway {
		return nil, errors.New("media: this binary was built without the embedded S3 gateway (tag nos3gateway): set --s3-endpoint (DUET_S3_ENDPOINT) to an S3 store")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	g := &Gateway{dir: dir, log: log, stop: make(chan struct{}), done: make(chan error, 1)}
	c, rep, err := g.spawn("")
	if err != nil {
		return nil, err
	}
	g.child = c
	g.S3 = S3{Endpoint: rep.Addr, AccessKey: rep.AccessKey, SecretKey: rep.SecretKey, Bucket: bucket}
	go g.supervise()
	log.Info("embedded S3 gateway started", "endpoint", rep.Addr, "dir", filepath.Join(dir, "objects"), "pid", c.cmd.Process.Pid)
	return g, nil
}

// PID is the gateway child's process id (diagnostics and tests).
func (g *Gateway) PID() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.child.cmd.Process.Pid
}

// spawn starts a child listening on listen ("": the port of the last run
// when free, else any loopback port) and waits for its report.
func (g *Gateway) spawn(listen string) (*gatewayChild, gatewayReport, error) {
	var rep gatewayReport
	exe, err := os.Executable()
	if err != nil {
		return nil, rep, fmt.Errorf("media: embedded S3 gateway: %w", err)
	}
	args := []string{gatewayCommand, "--dir", g.dir}
	if listen != "" {
		args = append(args, "--listen", listen)
	}
	// Own pipes rather than cmd.StdoutPipe: Wait may then run while the
	// report is read, and a report written just before an exit is not lost.
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, rep, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, rep, err
	}
	defer outR.Close()
	c := &gatewayChild{stdin: inW, exited: make(chan struct{}), tail: &tailLog{log: g.log}}
	c.cmd = exec.Command(exe, args...)
	// The running binary even if its file was replaced since (an upgrade
	// on disk): parent and child must speak the same protocol.
	if self := selfExecutable(); self != "" {
		c.cmd.Path = self
	}
	c.cmd.Env = append(os.Environ(), gatewayChildEnv+"=1")
	c.cmd.Stdin, c.cmd.Stdout, c.cmd.Stderr = inR, outW, c.tail
	c.cmd.SysProcAttr = gatewaySysProcAttr()
	err = c.cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		return nil, rep, fmt.Errorf("media: embedded S3 gateway: %w", err)
	}
	go func() { c.err = c.cmd.Wait(); close(c.exited) }()

	got := make(chan error, 1)
	go func() { got <- json.NewDecoder(outR).Decode(&rep) }()
	fail := func(err error) (*gatewayChild, gatewayReport, error) {
		if exit := c.stop(5 * time.Second); exit != nil {
			err = fmt.Errorf("%w (%v)", err, exit)
		}
		if t := c.tail.String(); t != "" {
			err = fmt.Errorf("%w\n%s", err, t)
		}
		return nil, rep, fmt.Errorf("media: embedded S3 gateway: %w", err)
	}
	select {
	case err := <-got:
		switch {
		case err != nil:
			return fail(fmt.Errorf("no start report: %v", err))
		case rep.Error != "":
			return fail(errors.New(rep.Error))
		case rep.Addr == "" || rep.AccessKey == "" || rep.SecretKey == "":
			return fail(fmt.Errorf("incomplete start report %+v", rep))
		}
		return c, rep, nil
	case <-time.After(gatewayStartTimeout):
		return fail(fmt.Errorf("not listening after %s", gatewayStartTimeout))
	}
}

// stop closes the child's stdin (its signal to shut down), waits up to
// grace for it to exit, then kills it; it returns how the process ended.
func (c *gatewayChild) stop(grace time.Duration) error {
	c.stdin.Close()
	select {
	case <-c.exited:
	case <-time.After(grace):
		c.cmd.Process.Kill()
		<-c.exited
		return errors.New("media: embedded S3 gateway did not stop; killed")
	}
	return c.err
}

// supervise restarts the child if it dies before Close, on the same address
// (the S3 clients and the URLs handed out name it) and with the same key
// file, so a crash costs only the requests in flight.
func (g *Gateway) supervise() {
	backoff := 100 * time.Millisecond
	for {
		g.mu.Lock()
		c := g.child
		g.mu.Unlock()
		select {
		case <-g.stop:
			g.done <- c.stop(10 * time.Second)
			return
		case <-c.exited:
			c.stdin.Close()
		}
		g.log.Error("embedded S3 gateway exited; restarting it", "err", c.err, "output", c.tail.String())
		for {
			select {
			case <-g.stop:
				g.done <- nil
				return
			case <-time.After(backoff):
			}
			next, _, err := g.spawn(g.S3.Endpoint)
			if err == nil {
				g.mu.Lock()
				g.child = next
				g.mu.Unlock()
				g.log.Info("embedded S3 gateway restarted", "endpoint", g.S3.Endpoint, "pid", next.cmd.Process.Pid)
				backoff = 100 * time.Millisecond
				break
			}
			g.log.Error("embedded S3 gateway restart failed", "err", err)
			backoff = min(2*backoff, 5*time.Second)
		}
	}
}

// Close stops the gateway's child process and waits for it.
func (g *Gateway) Close() error {
	first := false
	g.stopOnce.Do(func() { first = true; close(g.stop) })
	if !first {
		return nil
	}
	err := <-g.done
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return fmt.Errorf("media: embedded S3 gateway: %w", err)
	}
	return err
}

// tailLog passes the child's stderr, line by line, to the parent's log at
// debug level and keeps the last lines for error messages.
type tailLog struct {
	log *slog.Logger

	mu    sync.Mutex
	part  []byte
	lines []string
}

const (
	tailLines   = 20
	maxTailLine = 64 << 10
)

func (t *tailLog) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.part = append(t.part, p...)
	for {
		i := bytes.IndexByte(t.part, '\n')
		if i < 0 {
			break
		}
		t.take(strings.TrimRight(string(t.part[:i]), "\r"))
		t.part = t.part[i+1:]
	}
	if len(t.part) > maxTailLine { // no newline in sight: keep memory bounded
		t.take(string(t.part))
		t.part = nil
	}
	return len(p), nil
}

func (t *tailLog) take(line string) {
	if line == "" {
		return
	}
	t.log.Debug("s3 gateway: " + line)
	if t.lines = append(t.lines, line); len(t.lines) > tailLines {
		t.lines = t.lines[1:]
	}
}

// String is the last lines the child wrote to stderr.
func (t *tailLog) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := t.lines
	if len(t.part) > 0 {
		lines = append(lines[:len(lines):len(lines)], string(t.part))
	}
	return strings.Join(lines, "\n")
}
