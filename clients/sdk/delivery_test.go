package sdk

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// slowBot is an app whose OnNewMessage takes 50 ms, as a bot's handler
// might; it counts what it handled and fails the test when a listener runs
// after Logout returned.
type slowBot struct {
	t       *testing.T
	mu      *sync.Mutex
	handled map[string]int // text → times handled
	closed  atomic.Bool    // Logout returned
}

// restarted is the same app in a new process: it shares what was handled.
func (b *slowBot) restarted() *slowBot {
	return &slowBot{t: b.t, mu: b.mu, handled: b.handled}
}

func (b *slowBot) listeners() Listeners {
	return Listeners{OnNewMessage: func(m *Message) {
		if b.closed.Load() {
			// As if the process had exited: it is not handled.
			b.t.Errorf("OnNewMessage(%q) ran after Logout returned", m.Text())
			return
		}
		time.Sleep(50 * time.Millisecond) // the app's work, not synchronisation
		b.mu.Lock()
		b.handled[m.Text()]++
		b.mu.Unlock()
	}}
}

func (b *slowBot) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.handled)
}

// Issue 18 §1: what the SDK stored but the app had not handled at Logout
// is delivered at the next Login; no listener runs after Logout returns.
func TestUnhandledRedeliveredAtLogin(t *testing.T) {
	s := startServer(t)
	s.users("alice", "bot")
	alice := s.login(t, "alice", "phone", "", MQTT5)
	const n = 60
	for i := range n {
		if _, err := alice.SendText(ctxT(t), "bot", fmt.Sprintf("m%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	b := &slowBot{t: t, mu: new(sync.Mutex), handled: map[string]int{}}
	bot := s.login(t, "bot", "d1", dir, MQTT5, func(o *Options) { o.Listeners = b.listeners() })
	// Stop the bot once it handled a few: the rest is stored but queued.
	checkFor(t, 10*time.Second, func() error {
		if got := b.count(); got < 5 {
			return fmt.Errorf("%d handled", got)
		}
		return nil
	})
	s.waitHighWater("bot", n) // every message is in the bot's store and acknowledged
	if err := bot.Logout(); err != nil {
		t.Fatal(err)
	}
	b.closed.Store(true)
	first := b.count()
	if first >= n {
		t.Fatalf("all %d handled before Logout: the test proves nothing", first)
	}
	b2 := b.restarted()
	s.login(t, "bot", "d1", dir, MQTT5, func(o *Options) { o.Listeners = b2.listeners() })
	checkFor(t, 20*time.Second, func() error {
		if got := b2.count(); got < n {
			return fmt.Errorf("%d of %d messages handled (%d before Logout)", got, n, first)
		}
		return nil
	})
}

// Issue 18 §2: a send the server refuses fails at once with the server's
// code, even with a context that never ends.
func TestRefusedSendFailsAtOnce(t *testing.T) {
	for _, pr := range protocols {
		t.Run(pr.name, func(t *testing.T) {
			s := startServer(t)
			s.users("alice", "bob")
			alice := s.login(t, "alice", "phone", "", pr.p)
			done := make(chan error, 1)
			go func() {
				_, err := alice.SendText(context.Background(), "bob", strings.Repeat("x", 70<<10))
				done <- err
			}()
			select {
			case err := <-done:
				var e *Error
				if !errors.As(err, &e) || e.Code != 93000 {
					t.Fatalf("SendText of 70 kB: %v, want *Error 93000", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("SendText of 70 kB still waiting after 5 s")
			}
		})
	}
}

// Issue 18 §2: a send is kept in the outbox until the server answered it:
// a send whose call ended without an answer is sent after the next Login,
// once; its status is queryable and reported to OnSendStatus.
func TestOutboxResendsAfterRestart(t *testing.T) {
	s := startServer(t)
	s.users("alice", "bob")
	bob := s.login(t, "bob", "phone", "", MQTT5)
	dir := t.TempDir()
	alice := s.login(t, "alice", "phone", dir, MQTT5)

	s.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := alice.Send(ctx, Outgoing{ID: "greeting", To: "bob", Body: []Elem{Text("sent while down")}})
	cancel()
	if err == nil {
		t.Fatal("Send with the server down succeeded")
	}
	if st, ok, err := alice.SendStatus(ctxT(t), "greeting"); err != nil || !ok || st.State != Sending {
		t.Fatalf("status after an unanswered send: %+v %v %v, want sending", st, ok, err)
	}
	if err := alice.Logout(); err != nil {
		t.Fatal(err)
	}
	s.start()

	var mu sync.Mutex
	var reported []SendStatus
	alice2 := s.login(t, "alice", "phone", dir, MQTT5, func(o *Options) {
		o.OnSendStatus = func(st SendStatus) {
			mu.Lock()
			reported = append(reported, st)
			mu.Unlock()
		}
	})
	msgs := bob.rec.waitMsgs(1)
	if msgs[0].Text() != "sent while down" {
		t.Fatalf("bob got %q", msgs[0].Text())
	}
	checkFor(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(reported) != 1 || reported[0].ID != "greeting" || reported[0].State != Sent || reported[0].MsgKey != msgs[0].MsgKey {
			return fmt.Errorf("OnSendStatus got %+v, want greeting sent as %s", reported, msgs[0].MsgKey)
		}
		return nil
	})
	// The same ID again: answered from the outbox, not sent twice.
	m, err := alice2.Send(ctxT(t), Outgoing{ID: "greeting", To: "bob", Body: []Elem{Text("sent while down")}})
	if err != nil || m.MsgKey != msgs[0].MsgKey {
		t.Fatalf("Send with a known ID: %+v %v, want the stored %s", m, err, msgs[0].MsgKey)
	}
	// A refusal is recorded with its code.
	if _, err := alice2.Send(ctxT(t), Outgoing{ID: "huge", To: "bob", Body: []Elem{Text(strings.Repeat("x", 20<<10))}}); err == nil {
		t.Fatal("a 20 kB text was accepted")
	}
	if st, ok, _ := alice2.SendStatus(ctxT(t), "huge"); !ok || st.State != Failed || st.Code != 93000 {
		t.Fatalf("status of a refused send: %+v, want failed 93000", st)
	}
}
