package broker_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/duet-im/duet/broker"

	"github.com/duet-im/duet/internal/wait"
)

// logRecord is one captured log line: its level, message and every
// attribute (those of With included) flattened to text.
type logRecord struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func (r logRecord) String() string {
	return fmt.Sprintf("%s %q %v", r.level, r.msg, r.attrs)
}

// captureLog is a slog.Handler that keeps every record it is given.
type captureLog struct {
	mu      *sync.Mutex
	records *[]logRecord
	with    []slog.Attr
	group   string
}

func newCaptureLog() *captureLog {
	return &captureLog{mu: &sync.Mutex{}, records: &[]logRecord{}}
}

func (c *captureLog) Enabled(context.Context, slog.Level) bool { return true }

func (c *captureLog) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	var add func(prefix string, a slog.Attr)
	add = func(prefix string, a slog.Attr) {
		if a.Value.Kind() == slog.KindGroup {
			for _, g := range a.Value.Group() {
				add(prefix+a.Key+".", g)
			}
			return
		}
		rec.attrs[prefix+a.Key] = a.Value.String()
	}
	for _, a := range c.with {
		add("", a)
	}
	prefix := ""
	if c.group != "" {
		prefix = c.group + "."
	}
	r.Attrs(func(a slog.Attr) bool { add(prefix, a); return true })
	c.mu.Lock()
	*c.records = append(*c.records, rec)
	c.mu.Unlock()
	return nil
}

func (c *captureLog) WithAttrs(as []slog.Attr) slog.Handler {
	n := *c
	n.with = append(append([]slog.Attr{}, c.with...), as...)
	return &n
}

func (c *captureLog) WithGroup(name string) slog.Handler {
	n := *c
	n.group = name
	return &n
}

func (c *captureLog) all() []logRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]logRecord(nil), *c.records...)
}

// TestLogLinesFitDuet checks what mochi writes into Duet's log (issue 16:
// "no empty-message warning lines, no stray third-party lines at start"):
// a real server, real MQTT 3.1.1 and 5 clients that connect and go.
func TestLogLinesFitDuet(t *testing.T) {
	logs := newCaptureLog()
	s := startServer(t, serverOpts{autoAccounts: true, broker: func(c *broker.Config) { c.Log = slog.New(logs) }})

	// Start-up: nothing of mochi's above debug (Duet's own line says what
	// listens where).
	for _, r := range logs.all() {
		if r.level >= slog.LevelInfo && r.attrs["component"] == "mqtt" {
			t.Errorf("start-up line from mochi at %s: %v", r.level, r)
		}
	}

	v3 := s.connect("alice", connectOpts{})
	v3.close()
	v5 := s.connect("bob", connectOpts{v5: true})
	v5.close()
	// A drop without DISCONNECT, as a phone losing its network.
	drop, _ := rawConnect(t, s, "carol", "carol:phone", 4)
	drop.conn.Close()

	wait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		n := 0
		for _, r := range logs.all() {
			if r.msg == "client disconnected" {
				n++
			}
		}
		if n < 3 {
			return fmt.Errorf("%d disconnect lines, want 3", n)
		}
		return nil
	})

	// A packet the ACL refuses closes an MQTT 3.1.1 connection; the log
	// says so without the packet's payload.
	eve, _ := rawConnect(t, s, "eve", "eve:dev", 4)
	const secret = "payload-that-must-not-be-logged"
	eve.publish(1, "im/alice/req/openim/sendmsg", 0, false, secret)
	eve.expectClosed()
	wait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		for _, r := range logs.all() {
			if r.attrs["client"] == "eve:dev" && r.msg == "connection closed on a refused packet" {
				return nil
			}
		}
		return fmt.Errorf("no line for eve's refused publish")
	})

	for _, r := range logs.all() {
		if r.msg == "" {
			t.Errorf("record with an empty message: %v", r)
		}
		if r.msg == "client disconnected" && r.level != slog.LevelDebug {
			t.Errorf("a disconnect at %s, want DEBUG: %v", r.level, r)
		}
		if r.level >= slog.LevelWarn && r.attrs["component"] == "mqtt" {
			t.Errorf("a client's doing logged as a server warning: %v", r)
		}
		for k, v := range r.attrs {
			if strings.Contains(v, secret) || strings.Contains(v, "Payload:") {
				t.Errorf("packet dump in %s: %v", k, r)
			}
		}
	}
}

// TestRefusedV3ConnectLoggedOnce: MQTT 3.1.1 has only a return code for a
// refused login, so the log is where an operator finds why: one INFO line
// with the reason, the user and the client id.
func TestRefusedV3ConnectLoggedOnce(t *testing.T) {
	logs := newCaptureLog()
	s := startServer(t, serverOpts{broker: func(c *broker.Config) { c.Log = slog.New(logs) }})
	s.users("alice")
	cases := []struct {
		name, user, client, password, reason string
	}{
		{"bad signature", "alice", "alice:phone", "not-a-usersig", "bad signature"},
		{"unknown user", "mallory", "mallory:pc", "", "unknown user"},
		{"foreign client id", "alice", "bob:phone", "", "client id must be alice:{DeviceID}"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(logs.all())
			_, err := s.dial(c.user, connectOpts{clientID: c.client, password: c.password})
			if err == nil {
				t.Fatal("login accepted")
			}
			// The refusal's lines are written before the socket closes; wait
			// until the connection's end is logged too.
			var mine []logRecord
			wait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
				mine = logs.all()[before:]
				for _, r := range mine {
					if r.level == slog.LevelDebug && strings.Contains(fmt.Sprint(r.attrs), c.reason) && r.msg != "login refused" {
						return nil
					}
				}
				return fmt.Errorf("connection end not logged yet: %v", mine)
			})
			var info []logRecord
			for _, r := range mine {
				if r.level >= slog.LevelInfo {
					info = append(info, r)
				}
			}
			if len(info) != 1 {
				t.Fatalf("want one INFO line for the refusal, got %d: %v", len(info), info)
			}
			r := info[0]
			if r.level != slog.LevelInfo || r.attrs["reason"] != c.reason || r.attrs["user"] != c.user || r.attrs["client"] != c.client {
				t.Errorf("refusal line %v, want INFO with reason %q user %q client %q", r, c.reason, c.user, c.client)
			}
		})
	}
}
