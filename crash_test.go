package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/duet-im/duet/internal/freeport"
	"github.com/duet-im/duet/internal/wait"
	"github.com/duet-im/duet/usersig"
)

var crashRounds = flag.Int("crash.rounds", 5, "kill -9 rounds of TestCrashConsistency")

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// buildDuet builds the duet binary once per test process, for the tests
// that run it as a real process.
func buildDuet(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "duet-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "duet")
		// -buildvcs=auto: `duet version` reports the revision when the
		// checkout is a git repository, whatever GOFLAGS says.
		out, err := exec.Command("go", "build", "-buildvcs=auto", "-o", builtBin, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

func freeAddr(t *testing.T) string {
	return freeport.Addr(t)
}

// crashMsg is one message a sender means to send; a send that was in flight
// when the server died is sent again, unchanged, after the restart.
type crashMsg struct {
	random int
	text   string
}

// crashSender is one sender of the load, across every round.
type crashSender struct {
	i       int
	next    int
	sent    int // publishes, for unique ReqIds
	pending *crashMsg
	acked   map[string]bool // texts answered OK: durable by contract
	retried atomic.Int64    // answers 20005 ("retry"): sent again; read while the load runs
	timeout time.Duration   // longest wait for a PUBACK and answer (0: 20 s)
	pause   time.Duration   // between an acknowledgement and the next message (0: none)
	// okAt, when set, hears of each acknowledged send: when its attempt
	// started and when the OK came (the cluster test's takeover times).
	okAt func(started, at time.Time)
}

// TestCrashConsistency kills the server with SIGKILL at random points while
// 50 pairs send, restarts it on the same data directory, and finally checks
// every receiver's timeline: every PUBACKed message is there (0 acked lost),
// no text is there twice although in-flight sends were resent after each
// restart (0 stored twice), and Seqs run 1, 2, 3… (0 gaps). Rounds:
// -crash.rounds (5 by default; CI runs the default).
func TestCrashConsistency(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the server as a process")
	}
	bin := buildDuet(t)
	data := filepath.Join(t.TempDir(), "data")
	addr := freeAddr(t)
	const secret, pairs = "crash-test-secret", 50
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	t.Logf("seed %d, %d rounds", seed, *crashRounds)

	start := func() (*exec.Cmd, *bytes.Buffer) {
		t.Helper()
		cmd := exec.Command(bin, "serve", "--data", data, "--secret", secret, "--auto-accounts",
			"--mqtt", addr, "--ws", "", "--http", "", "--log-level", "warn")
		var logs bytes.Buffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		wait.For(t, 30*time.Second, 20*time.Millisecond, func() error {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
			}
			return err
		})
		return cmd, &logs
	}
	var connect crashConnect = func(user, device string, onLost func()) (pahov3.Client, error) {
		return crashDevice(addr, secret, user, device, onLost)
	}

	// Receivers log in once first, so that --auto-accounts creates them
	// before anyone sends to them; they subscribe only at the end.
	srv, logs := start()
	for i := range pairs {
		c, err := connect(fmt.Sprintf("r%d", i), "phone", nil)
		if err != nil {
			t.Fatal(err)
		}
		c.Disconnect(0)
	}
	senders := make([]*crashSender, pairs)
	for i := range senders {
		senders[i] = &crashSender{i: i, next: 1, acked: map[string]bool{}}
	}

	for round := 0; round < *crashRounds; round++ {
		if round > 0 {
			srv, logs = start()
		}
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for _, s := range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.run(t, connect, stop)
			}()
		}
		// Kill somewhere in the first 1.5 s of load.
		time.Sleep(time.Duration(200+rng.IntN(1300)) * time.Millisecond) // the kill point, not a synchronisation
		if err := srv.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		srv.Wait()
		close(stop)
		wg.Wait()
		acked := 0
		for _, s := range senders {
			acked += len(s.acked)
		}
		t.Logf("round %d: killed with %d messages acked so far", round+1, acked)
		if t.Failed() {
			t.Fatalf("server log:\n%s", logs)
		}
	}

	// Resend what was in flight at the last kill, then read every timeline.
	srv, logs = start()
	defer func() { srv.Process.Kill(); srv.Wait() }()
	stop := make(chan struct{})
	close(stop)
	for _, s := range senders {
		s.run(t, connect, stop) // sends only the pending message
	}
	var lost, twice, gaps, acked int
	for i, s := range senders {
		acked += len(s.acked)
		user := fmt.Sprintf("r%d", i)
		c, err := connect(user, "phone", nil)
		if err != nil {
			t.Fatal(err)
		}
		l, tw, g := checkTimeline(t, user, readTimeline(t, c, user, false), s.acked)
		c.Disconnect(0)
		lost, twice, gaps = lost+l, twice+tw, gaps+g
	}
	t.Logf("%d rounds: %d acked messages, %d lost, %d stored twice, %d Seq gaps", *crashRounds, acked, lost, twice, gaps)
	if acked == 0 {
		t.Fatal("no message was acked: the test measured nothing")
	}
	if t.Failed() {
		t.Logf("server log:\n%s", logs)
	}
}

// crashDevice connects user's device to the MQTT listener at addr, as
// MQTT 3.1.1 with a clean session and no automatic reconnect: the tests
// decide where and when it reconnects. onLost (may be nil) hears the
// connection drop.
func crashDevice(addr, secret, user, device string, onLost func()) (pahov3.Client, error) {
	sig, err := usersig.Gen(1400000000, secret, user, 3600, time.Now())
	if err != nil {
		return nil, err
	}
	o := pahov3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(user + ":" + device).
		SetUsername(user).SetPassword(sig).SetAutoReconnect(false).SetConnectRetry(false).
		SetCleanSession(true).SetConnectTimeout(5 * time.Second).SetWriteTimeout(5 * time.Second)
	if onLost != nil {
		o.SetConnectionLostHandler(func(pahov3.Client, error) { onLost() })
	}
	c := pahov3.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		c.Disconnect(0)
		return nil, fmt.Errorf("connect %s to %s: %v", user, addr, tok.Error())
	}
	return c, nil
}

// crashConnect connects a device of user; onLost (may be nil) hears the
// connection drop.
type crashConnect func(user, device string, onLost func()) (pahov3.Client, error)

// subscribeTimeline subscribes c to user's timeline; the events arrive on
// the channel.
func subscribeTimeline(c pahov3.Client, user string) (chan map[string]any, error) {
	events := make(chan map[string]any, 100000)
	if tok := c.Subscribe("im/"+user+"/in", 1, func(_ pahov3.Client, m pahov3.Message) {
		var e map[string]any
		json.Unmarshal(m.Payload(), &e)
		events <- e
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("%s: subscribe: %v", user, tok.Error())
	}
	return events, nil
}

// readTimeline subscribes c to user's timeline and returns the events of the
// replay that starts, up to and with its sync_complete. With fromZero it then
// asks openim/sync for the whole timeline (FromSeq 0) and returns that replay
// instead: a device that is not new starts after its cursor, or, on a cluster
// node where another device of the user received everything, at the end.
func readTimeline(t *testing.T, c pahov3.Client, user string, fromZero bool) []map[string]any {
	t.Helper()
	events, err := subscribeTimeline(c, user)
	if err != nil {
		t.Fatal(err)
	}
	return readSubscribed(t, c, events, user, fromZero)
}

// readSubscribed is readTimeline once c is subscribed and its events come
// on events.
func readSubscribed(t *testing.T, c pahov3.Client, events chan map[string]any, user string, fromZero bool) []map[string]any {
	t.Helper()
	replay := func() []map[string]any {
		var out []map[string]any
		for {
			select {
			case e := <-events:
				out = append(out, e)
				if e["Event"] == "sync_complete" {
					return out
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("%s: no sync_complete within 30 s (%d events)", user, len(out))
			}
		}
	}
	out := replay()
	if !fromZero {
		return out
	}
	if tok := c.Publish("im/"+user+"/req/openim/sync", 1, false, `{"FromSeq":0}`); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: openim/sync: %v", user, tok.Error())
	}
	return replay()
}

// checkTimeline checks user's replayed timeline (readTimeline): Seqs run 1,
// 2, 3… up to sync_complete's LastSeq, no message text is there twice, and
// every text in acked is there. It reports each finding as an error and
// returns the counts.
func checkTimeline(t *testing.T, user string, events []map[string]any, acked map[string]bool) (lost, twice, gaps int) {
	t.Helper()
	seen := map[string]int{}
	var last float64
	for _, e := range events {
		if e["Event"] == "sync_complete" {
			if e["LastSeq"] != last {
				t.Errorf("%s: sync_complete LastSeq %v after Seq %v", user, e["LastSeq"], last)
			}
			break
		}
		if seq, _ := e["Seq"].(float64); seq != last+1 {
			gaps++
			t.Errorf("%s: Seq %v after %v", user, seq, last)
			last = seq
		} else {
			last = seq
		}
		body, _ := e["MsgBody"].([]any)
		if len(body) == 1 {
			content, _ := body[0].(map[string]any)["MsgContent"].(map[string]any)
			text, _ := content["Text"].(string)
			seen[text]++
		}
	}
	for text := range acked {
		if seen[text] == 0 {
			lost++
			t.Errorf("%s: acked message %q is missing", user, text)
		}
	}
	for text, n := range seen {
		if n > 1 {
			twice++
			t.Errorf("%s: %q stored %d times", user, text, n)
		}
	}
	return lost, twice, gaps
}

// crashReply is the part of a request's answer on im/{me}/rsp the senders read.
type crashReply struct {
	ReqID     string `json:"ReqId"`
	ErrorCode int
	ErrorInfo string
}

// run sends s's messages one at a time, each at QoS 1, until stop is closed
// or the connection fails. A message counts as acknowledged when its PUBACK
// came and its answer on im/{me}/rsp says OK: over MQTT 3.1.1 a refused
// sendmsg is PUBACKed too, its answer carrying the error (PROTOCOL §3). A
// message not acknowledged stays pending and is sent again, unchanged, next
// time; one answered 20005 ("retry") is sent again at once, after a short
// back-off as a client would.
func (s *crashSender) run(t *testing.T, connect crashConnect, stop chan struct{}) {
	lost := make(chan struct{})
	var once sync.Once
	user := fmt.Sprintf("s%d", s.i)
	c, err := connect(user, "phone", func() { once.Do(func() { close(lost) }) })
	if err != nil {
		return // the server is already gone: this round's kill came first
	}
	defer c.Disconnect(0)
	replies := make(chan crashReply, 4)
	if tok := c.Subscribe("im/"+user+"/rsp", 0, func(_ pahov3.Client, m pahov3.Message) {
		var r crashReply
		json.Unmarshal(m.Payload(), &r)
		select {
		case replies <- r:
		default: // an answer to an attempt given up on
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return
	}
	timeout := s.timeout
	if timeout == 0 {
		timeout = 20 * time.Second
	}
	retries := 0
	for {
		m := s.pending
		if m == nil {
			m = &crashMsg{random: s.i*1_000_000 + s.next, text: fmt.Sprintf("s%d-%d", s.i, s.next)}
			s.next++
			s.pending = m
		}
		s.sent++
		reqID := fmt.Sprintf("%s#%d", m.text, s.sent)
		req, _ := json.Marshal(map[string]any{
			"ReqId": reqID, "To_Account": fmt.Sprintf("r%d", s.i), "MsgRandom": m.random,
			"MsgBody": []any{map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": m.text}}},
		})
		started := time.Now()
		deadline := time.After(timeout)
		tok := c.Publish(fmt.Sprintf("im/%s/req/openim/sendmsg", user), 1, false, req)
		select {
		case <-tok.Done():
		case <-lost:
			return
		case <-deadline:
			t.Errorf("%s: no PUBACK and no disconnect in %v", user, timeout)
			return
		}
		if tok.Error() != nil {
			return
		}
		// The answer is written just before the PUBACK, in the same write.
		var r crashReply
		for r.ReqID != reqID {
			select {
			case r = <-replies:
			case <-lost:
				return
			case <-deadline:
				t.Errorf("%s: PUBACK but no answer in %v", user, timeout)
				return
			}
		}
		switch r.ErrorCode {
		case 0:
			s.acked[m.text] = true
			s.pending = nil
			retries = 0
			if s.okAt != nil {
				s.okAt(started, time.Now())
			}
		case 20005:
			s.retried.Add(1)
			if retries++; retries > 300 {
				t.Errorf("%s: %q answered 20005 %d times in a row: %s", user, m.text, retries, r.ErrorInfo)
				return
			}
			select {
			case <-lost:
				return
			case <-time.After(100 * time.Millisecond): // a client's back-off, not a synchronisation
			}
			continue
		default:
			t.Errorf("%s: %q refused: %d %s", user, m.text, r.ErrorCode, r.ErrorInfo)
			return
		}
		select {
		case <-stop:
			return
		default:
		}
		if s.pause > 0 {
			select {
			case <-stop:
				return
			case <-lost:
				return
			case <-time.After(s.pause): // the load's pace, not a synchronisation
			}
		}
	}
}
