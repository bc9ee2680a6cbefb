package sdk

import (
	"bufio"
	"context"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBotProcess is the echo bot of the README, run in a process of its
// own by TestBotStartStop (it is skipped otherwise): it answers each
// message, using the message's MsgKey as the answer's Outgoing.ID so that
// an answer is sent once even when the message is delivered again after a
// crash, and logs out on SIGINT.
func TestBotProcess(t *testing.T) {
	dir := os.Getenv("DUET_SDK_BOT_DIR")
	if dir == "" {
		t.Skip("run by TestBotStartStop")
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt)
	fmt.Println("ready") // the parent's SIGINT is handled from now on
	// Listeners that use the client are set once Login returned it.
	c, err := Login(context.Background(), Options{
		Addr: os.Getenv("DUET_SDK_BOT_ADDR"), UserID: "bot", UserSig: os.Getenv("DUET_SDK_BOT_SIG"), DeviceID: "d1", Dir: dir,
		RequestTimeout: 3 * time.Second, MinBackoff: 20 * time.Millisecond, MaxBackoff: 300 * time.Millisecond, Logger: testLogger(),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bot login:", err)
		os.Exit(2)
	}
	c.SetListeners(Listeners{OnNewMessage: func(m *Message) {
		time.Sleep(10 * time.Millisecond) // the bot's work
		_, _ = c.Send(context.Background(), Outgoing{ID: "re:" + m.MsgKey, To: m.From, Body: []Elem{Text("re: " + m.Text())}})
		time.Sleep(40 * time.Millisecond) // more work after answering: a stop here re-delivers an answered message
	}})
	<-stop
	if err := c.Logout(); err != nil {
		fmt.Fprintln(os.Stderr, "bot logout:", err)
		os.Exit(3)
	}
	os.Exit(0)
}

// Issue 18 "done when": a bot stopped and started at random (SIGINT and
// SIGKILL, 20 rounds) handles every message sent to it at least once and
// answers none twice when it uses the documented idempotency key.
func TestBotStartStop(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 21 processes")
	}
	s := startServer(t)
	s.users("alice", "bot")
	alice := s.login(t, "alice", "phone", "", MQTT5)
	dir := t.TempDir()
	seed := time.Now().UnixNano()
	rnd := mrand.New(mrand.NewPCG(uint64(seed), 0))
	t.Logf("seed %d", seed)
	start := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestBotProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), "DUET_SDK_BOT_DIR="+dir, "DUET_SDK_BOT_ADDR="+s.addr, "DUET_SDK_BOT_SIG="+s.sig(t, "bot"))
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Wait until it handles SIGINT (a SIGINT before would just kill it).
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || line != "ready\n" {
			t.Fatalf("bot process: %q %v", line, err)
		}
		go io.Copy(io.Discard, out)
		return cmd
	}
	sent := 0
	send := func(k int) {
		for range k {
			if _, err := alice.SendText(ctxT(t), "bot", fmt.Sprintf("q%03d", sent)); err != nil {
				t.Fatal(err)
			}
			sent++
		}
	}
	kills := map[string]int{}
	for round := range 20 {
		cmd := start()
		send(3 + rnd.IntN(8))
		time.Sleep(time.Duration(50+rnd.IntN(400)) * time.Millisecond) // a random moment to stop it, not synchronisation
		sig := os.Signal(os.Interrupt)
		if rnd.IntN(2) == 1 {
			sig = syscall.SIGKILL
		}
		kills[sig.String()]++
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		err := cmd.Wait()
		if sig == os.Interrupt && err != nil {
			t.Fatalf("round %d: the bot did not log out cleanly on SIGINT: %v", round, err)
		}
	}
	t.Logf("%d messages; stops: %v", sent, kills)
	cmd := start()
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}()
	checkFor(t, 60*time.Second, func() error {
		_, msgs, _ := alice.rec.snapshot()
		answered := map[string]bool{}
		for _, m := range msgs {
			answered[m.Text()] = true
		}
		for i := range sent {
			if q := fmt.Sprintf("re: q%03d", i); !answered[q] {
				return fmt.Errorf("%d answers for %d messages; %q missing", len(answered), sent, q)
			}
		}
		return nil
	})
	_, msgs, _ := alice.rec.snapshot()
	seen := map[string]int{}
	for _, m := range msgs {
		if seen[m.Text()]++; seen[m.Text()] > 1 || !strings.HasPrefix(m.Text(), "re: q") {
			t.Errorf("answer %q (%s) received %d times", m.Text(), m.MsgKey, seen[m.Text()])
		}
	}
}
