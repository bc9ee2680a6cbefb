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
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

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
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
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
	pending *crashMsg
	acked   map[string]bool // texts whose PUBACK arrived: durable by contract
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
	connect := func(user, device string, onLost func()) (pahov3.Client, error) {
		sig, err := usersig.Gen(1400000000, secret, user, 3600, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		o := pahov3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(user + ":" + device).
			SetUsername(user).SetPassword(sig).SetAutoReconnect(false).SetConnectRetry(false).
			SetCleanSession(true).SetConnectTimeout(5 * time.Second).SetWriteTimeout(5 * time.Second)
		if onLost != nil {
			o.SetConnectionLostHandler(func(pahov3.Client, error) { onLost() })
		}
		c := pahov3.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return nil, fmt.Errorf("connect %s: %v", user, tok.Error())
		}
		return c, nil
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
		events := make(chan map[string]any, 100000)
		c, err := connect(fmt.Sprintf("r%d", i), "phone", nil)
		if err != nil {
			t.Fatal(err)
		}
		c.Subscribe(fmt.Sprintf("im/r%d/in", i), 1, func(_ pahov3.Client, m pahov3.Message) {
			var e map[string]any
			json.Unmarshal(m.Payload(), &e)
			events <- e
		}).WaitTimeout(10 * time.Second)
		seen := map[string]int{}
		var last float64
		func() {
			for {
				select {
				case e := <-events:
					if e["Event"] == "sync_complete" {
						if e["LastSeq"] != last {
							t.Errorf("r%d: sync_complete LastSeq %v after Seq %v", i, e["LastSeq"], last)
						}
						return
					}
					if seq, _ := e["Seq"].(float64); seq != last+1 {
						gaps++
						t.Errorf("r%d: Seq %v after %v", i, seq, last)
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
				case <-time.After(30 * time.Second):
					t.Fatalf("r%d: no sync_complete within 30 s (last Seq %v)", i, last)
				}
			}
		}()
		c.Disconnect(0)
		for text := range s.acked {
			if seen[text] == 0 {
				lost++
				t.Errorf("r%d: acked message %q is missing", i, text)
			}
		}
		for text, n := range seen {
			if n > 1 {
				twice++
				t.Errorf("r%d: %q stored %d times", i, text, n)
			}
		}
	}
	t.Logf("%d rounds: %d acked messages, %d lost, %d stored twice, %d Seq gaps", *crashRounds, acked, lost, twice, gaps)
	if acked == 0 {
		t.Fatal("no message was acked: the test measured nothing")
	}
	if t.Failed() {
		t.Logf("server log:\n%s", logs)
	}
}

// run sends s's messages one at a time, each at QoS 1, until stop is closed
// or the connection fails. A message whose PUBACK did not arrive stays
// pending and is sent again, unchanged, next time.
func (s *crashSender) run(t *testing.T, connect func(user, device string, onLost func()) (pahov3.Client, error), stop chan struct{}) {
	lost := make(chan struct{})
	var once sync.Once
	c, err := connect(fmt.Sprintf("s%d", s.i), "phone", func() { once.Do(func() { close(lost) }) })
	if err != nil {
		return // the server is already gone: this round's kill came first
	}
	defer c.Disconnect(0)
	for {
		m := s.pending
		if m == nil {
			m = &crashMsg{random: s.i*1_000_000 + s.next, text: fmt.Sprintf("s%d-%d", s.i, s.next)}
			s.next++
			s.pending = m
		}
		req, _ := json.Marshal(map[string]any{
			"To_Account": fmt.Sprintf("r%d", s.i), "MsgRandom": m.random,
			"MsgBody": []any{map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": m.text}}},
		})
		tok := c.Publish(fmt.Sprintf("im/s%d/req/openim/sendmsg", s.i), 1, false, req)
		select {
		case <-tok.Done():
		case <-lost:
			return
		case <-time.After(20 * time.Second):
			t.Errorf("s%d: no PUBACK and no disconnect in 20 s", s.i)
			return
		}
		if tok.Error() != nil {
			return
		}
		s.acked[m.text] = true
		s.pending = nil
		select {
		case <-stop:
			return
		default:
		}
	}
}
