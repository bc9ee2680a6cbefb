package push

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/wait"
	"github.com/duet-im/duet/store"
)

func TestContent(t *testing.T) {
	text := func(s string) string { return `{"MsgType":"TIMTextElem","MsgContent":{"Text":"` + s + `"}}` }
	media := func(typ string) string { return `{"MsgType":"` + typ + `","MsgContent":{"UUID":"u"}}` }
	cases := []struct {
		name, body, opi string
		nick            string
		ok              bool
		title, text     string
		ext, sound      string
	}{
		{name: "text", body: text("hi"), ok: true, title: "alice", text: "hi"},
		{name: "nick is the title", body: text("hi"), nick: "Alice", ok: true, title: "Alice", text: "hi"},
		{name: "concatenated", body: text("a") + `,{"MsgType":"TIMFaceElem","MsgContent":{"Index":1}},` + text("b"), ok: true, title: "alice", text: "a[Face]b"},
		{name: "location", body: `{"MsgType":"TIMLocationElem","MsgContent":{"Desc":"x","Latitude":1,"Longitude":2}}`, ok: true, title: "alice", text: "[Location]"},
		{name: "image", body: media("TIMImageElem"), ok: true, title: "alice", text: "[Image]"},
		{name: "sound", body: media("TIMSoundElem"), ok: true, title: "alice", text: "[Voice]"},
		{name: "file", body: media("TIMFileElem"), ok: true, title: "alice", text: "[File]"},
		{name: "video", body: media("TIMVideoFileElem"), ok: true, title: "alice", text: "[Video]"},
		{name: "custom with desc", body: `{"MsgType":"TIMCustomElem","MsgContent":{"Data":"d","Desc":"ring","Ext":"e","Sound":"s.caf"}}`, ok: true, title: "alice", text: "ring", ext: "e", sound: "s.caf"},
		{name: "lone custom without desc", body: `{"MsgType":"TIMCustomElem","MsgContent":{"Data":"d"}}`, ok: false},
		{name: "lone custom, OfflinePushInfo.Desc", body: `{"MsgType":"TIMCustomElem","MsgContent":{"Data":"d","Ext":"ignored"}}`, opi: `{"Desc":"from opi","Ext":"x"}`, ok: true, title: "alice", text: "from opi", ext: "x"},
		{name: "PushFlag 1", body: text("hi"), opi: `{"PushFlag":1}`, ok: false},
		{name: "opi title and desc", body: text("hi"), opi: `{"Title":"T","Desc":"D","ApnsInfo":{"Sound":"a.caf"}}`, ok: true, title: "T", text: "D", sound: "a.caf"},
		{name: "custom beside text", body: text("hi") + `,{"MsgType":"TIMCustomElem","MsgContent":{"Data":"d"}}`, ok: true, title: "alice", text: "hi"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := `{"Seq":1,"Event":"msg","From_Account":"alice","To_Account":"bob","MsgKey":"k","MsgBody":[` + c.body + `]`
			if c.opi != "" {
				raw += `,"OfflinePushInfo":` + c.opi
			}
			if c.nick != "" {
				raw += `,"SenderProfile":{"Tag_Profile_IM_Nick":"` + c.nick + `"}`
			}
			var ev msgEvent
			if err := json.Unmarshal([]byte(raw+"}"), &ev); err != nil {
				t.Fatal(err)
			}
			got, ok := contentOf(&ev)
			if ok != c.ok {
				t.Fatalf("pushed = %v, want %v", ok, c.ok)
			}
			if ok && (got.title != c.title || got.body != c.text || got.ext != c.ext || got.sound != c.sound) {
				t.Errorf("got %+v", got)
			}
		})
	}
}

func TestClip(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"hello", 5, "hello"},
		{"hello!", 5, "hell…"},
		{"你好世界啊", 3, "你好…"},
	} {
		if got := clip(c.in, c.n); got != c.want {
			t.Errorf("clip(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}

func TestAPNsPayloadLimit(t *testing.T) {
	n := sampleNote("apns", "ab")
	n.Body = strings.Repeat("長", 3000) // 9000 bytes of UTF-8
	b, err := apnsPayload(n)
	if err != nil || len(b) > apnsMaxBytes || !json.Valid(b) {
		t.Fatalf("payload %d bytes, valid %v, err %v", len(b), json.Valid(b), err)
	}
}

// fakeMi is a scripted Xiaomi endpoint for scheduler tests.
type fakeMi struct {
	*httptest.Server
	mu      sync.Mutex
	script  []answer // consumed in order; then 200 ok
	got     []url.Values
	blocked chan struct{}
	arrived atomic.Int64
}

func newFakeMi(t testing.TB, script ...answer) *fakeMi {
	f := &fakeMi{script: script}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Reading the body first lets the server notice a client that gives up.
		r.ParseForm()
		f.arrived.Add(1)
		if f.blocked != nil && r.PostForm.Get("pass_through") == "0" {
			select {
			case <-f.blocked:
			case <-r.Context().Done():
			}
			if r.Context().Err() != nil {
				return // the client gave up: it was not delivered
			}
		}
		f.mu.Lock()
		a := answer{200, `{"result":"ok","code":0,"data":{"id":"m"}}`}
		if len(f.script) > 0 {
			a, f.script = f.script[0], f.script[1:]
		}
		if a.status == 200 && strings.Contains(a.body, `"ok"`) {
			f.got = append(f.got, r.PostForm)
		}
		f.mu.Unlock()
		w.WriteHeader(a.status)
		io.WriteString(w, a.body)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeMi) sent() []url.Values {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]url.Values(nil), f.got...)
}

type rig struct {
	st *store.Store
	p  *Pusher
	mi *fakeMi
}

func newRig(t testing.TB, mi *fakeMi, cfg Config) *rig {
	st, err := store.Open(t.TempDir(), store.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Xiaomi = &XiaomiConfig{AppSecret: "s", PackageName: "p", Endpoint: mi.URL}
	if cfg.Grace == 0 {
		cfg.Grace = time.Millisecond
	}
	if cfg.RetryBase == 0 {
		cfg.RetryBase = time.Millisecond
	}
	p, err := New(Options{Config: cfg, Store: st, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(); st.Close() })
	return &rig{st: st, p: p, mi: mi}
}

// message appends a msg event for to, as sendmsg would, and returns its Seq.
func (r *rig) message(t testing.TB, to, key, text string) {
	t.Helper()
	tail := fmt.Sprintf(`"Event":"msg","From_Account":"alice","To_Account":%q,"MsgKey":%q,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":%q}}]}`, to, key, text)
	var app []store.Appended
	err := r.st.Update(func(tx *store.Tx) error {
		seq, err := tx.Append(to, []byte(tail))
		app = append(app, store.Appended{User: to, Seq: seq, Data: []byte(fmt.Sprintf(`{"Seq":%d,%s`, seq, tail))})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	r.p.Committed(app)
}

func TestSchedulerOutcomes(t *testing.T) {
	cases := []struct {
		name                           string
		script                         []answer
		maxAttempts                    int
		sent, failed, retried, removed int64
		tokenLeft                      bool
	}{
		{name: "success", sent: 1, tokenLeft: true},
		{name: "retried then sent", script: []answer{{503, `{}`}, {429, `{}`}}, sent: 1, retried: 2, tokenLeft: true},
		{name: "not JSON then sent", script: []answer{{200, `<html>`}}, sent: 1, retried: 1, tokenLeft: true},
		{name: "invalid token removed", script: []answer{{200, `{"result":"error","code":20301,"reason":"No valid targets!"}`}}, failed: 1, removed: 1},
		{name: "refused, counted", script: []answer{{200, `{"result":"error","code":10017,"reason":"bad param"}`}}, failed: 1, tokenLeft: true},
		{name: "out of retries", script: []answer{{500, `{}`}, {500, `{}`}, {500, `{}`}}, maxAttempts: 3, failed: 1, retried: 2, tokenLeft: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, newFakeMi(t, c.script...), Config{MaxAttempts: c.maxAttempts})
			if err := r.st.SetPushToken(store.PushToken{User: "bob", Device: "bob:p", Vendor: "xiaomi", Token: "rid"}); err != nil {
				t.Fatal(err)
			}
			r.message(t, "bob", "k1", "hello")
			m := r.p.Metrics().Vendor("xiaomi")
			wait.Until(t, 10*time.Second, "settled", func() bool { return m.Sent()+m.Failed() == 1 && r.p.Pending() == 0 })
			if m.Sent() != c.sent || m.Failed() != c.failed || m.Retried() != c.retried || m.TokensRemoved() != c.removed {
				t.Errorf("sent %d failed %d retried %d removed %d", m.Sent(), m.Failed(), m.Retried(), m.TokensRemoved())
			}
			toks, _ := r.st.PushTokens("bob")
			if (len(toks) == 1) != c.tokenLeft {
				t.Errorf("tokens left: %+v", toks)
			}
			// Settled means gone from the durable queue too.
			wait.Until(t, 10*time.Second, "queue emptied", func() bool { q, _ := r.st.QueuedPushes(0, 10); return len(q) == 0 })
		})
	}
}

func TestAcknowledgedWithinGraceIsCancelled(t *testing.T) {
	r := newRig(t, newFakeMi(t), Config{Grace: 300 * time.Millisecond})
	r.st.SetPushToken(store.PushToken{User: "bob", Device: "bob:p", Vendor: "xiaomi", Token: "rid"})
	r.message(t, "bob", "k1", "hello")
	wait.Until(t, 10*time.Second, "queued", func() bool { return r.p.Pending() == 1 })
	// The device came back and PUBACKed the event before the grace ended.
	if err := r.st.SetCursor("bob", "bob:p", 1); err != nil {
		t.Fatal(err)
	}
	m := r.p.Metrics().Vendor("xiaomi")
	wait.Until(t, 10*time.Second, "cancelled", func() bool { return m.Cancelled() == 1 && r.p.Pending() == 0 })
	if len(r.mi.sent()) != 0 {
		t.Errorf("sent %v", r.mi.sent())
	}
}

func TestWithdrawn(t *testing.T) {
	t.Run("waiting push is cancelled", func(t *testing.T) {
		r := newRig(t, newFakeMi(t), Config{Grace: time.Hour})
		r.st.SetPushToken(store.PushToken{User: "bob", Device: "bob:p", Vendor: "xiaomi", Token: "rid"})
		r.message(t, "bob", "k1", "hello")
		wait.Until(t, 10*time.Second, "queued", func() bool { return r.p.Pending() == 1 })
		r.p.Withdrawn("bob", "k1")
		wait.Until(t, 10*time.Second, "cancelled", func() bool { return r.p.Pending() == 0 })
		wait.Until(t, 10*time.Second, "queue emptied", func() bool { q, _ := r.st.QueuedPushes(0, 10); return len(q) == 0 })
	})
	t.Run("shown push gets a silent update", func(t *testing.T) {
		r := newRig(t, newFakeMi(t), Config{})
		r.st.SetPushToken(store.PushToken{User: "bob", Device: "bob:p", Vendor: "xiaomi", Token: "rid"})
		r.message(t, "bob", "k1", "hello")
		wait.Until(t, 10*time.Second, "sent", func() bool { return len(r.mi.sent()) == 1 })
		r.p.Withdrawn("bob", "k1")
		wait.Until(t, 10*time.Second, "silent update", func() bool { return len(r.mi.sent()) == 2 })
		s := r.mi.sent()[1]
		if s.Get("pass_through") != "1" || s.Get("title") != "" || !strings.Contains(s.Get("payload"), "k1") {
			t.Errorf("recall push %v is not a silent pass-through", s)
		}
	})
	t.Run("recalled while being sent", func(t *testing.T) {
		mi := newFakeMi(t)
		mi.blocked = make(chan struct{})
		r := newRig(t, mi, Config{})
		r.st.SetPushToken(store.PushToken{User: "bob", Device: "bob:p", Vendor: "xiaomi", Token: "rid"})
		r.message(t, "bob", "k1", "hello")
		wait.Until(t, 10*time.Second, "request in flight", func() bool { return mi.arrived.Load() == 1 })
		r.p.Withdrawn("bob", "k1")
		close(mi.blocked)
		wait.Until(t, 10*time.Second, "alert and silent update", func() bool { return len(r.mi.sent()) == 2 && r.p.Pending() == 0 })
		if s := r.mi.sent()[1]; s.Get("pass_through") != "1" || !strings.Contains(s.Get("payload"), "k1") {
			t.Errorf("second push %v is not the silent recall", s)
		}
	})
}

// openMiPusher opens the store in dir and starts a pusher on it that sends
// to mi: one process's start, for the tests that restart it.
func openMiPusher(t *testing.T, dir string, mi *fakeMi) (*store.Store, *Pusher) {
	t.Helper()
	st, err := store.Open(dir, store.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Options{Store: st, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Config: Config{Grace: time.Millisecond, Xiaomi: &XiaomiConfig{AppSecret: "s", PackageName: "p", Endpoint: mi.URL}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	return st, p
}

func TestRestartResendsQueued(t *testing.T) {
	mi := newFakeMi(t)
	mi.blocked = make(chan struct{})
	dir := t.TempDir()
	open := func() (*store.Store, *Pusher) { return openMiPusher(t, dir, mi) }
	st, p := open()
	r := &rig{st: st, p: p, mi: mi}
	st.SetPushToken(store.PushToken{User: "bob", Device: "bob:p", Vendor: "xiaomi", Token: "rid"})
	r.message(t, "bob", "k1", "hello")
	wait.Until(t, 10*time.Second, "queued", func() bool { q, _ := st.QueuedPushes(0, 10); return len(q) == 1 })
	p.Close() // the vendor hung: nothing was settled
	st.Close()
	close(mi.blocked)
	st, p = open()
	defer func() { p.Close(); st.Close() }()
	wait.Until(t, 10*time.Second, "resent", func() bool { return len(mi.sent()) == 1 && p.Pending() == 0 })
	if got := mi.sent()[0].Get("description"); got != "hello" {
		t.Errorf("resent %q", got)
	}
}

// A notification shown before a restart is taken back by a recall after
// it: what was shown is kept in the store (for as long as a message can
// be recalled), not only in the memory of the process that sent it.
func TestWithdrawnAfterRestart(t *testing.T) {
	mi := newFakeMi(t)
	dir := t.TempDir()
	open := func() (*store.Store, *Pusher) { return openMiPusher(t, dir, mi) }
	st, p := open()
	r := &rig{st: st, p: p, mi: mi}
	st.SetPushToken(store.PushToken{User: "bob", Device: "bob:p", Vendor: "xiaomi", Token: "rid"})
	r.message(t, "bob", "k1", "hello")
	wait.Until(t, 10*time.Second, "shown and settled", func() bool {
		q, _ := st.QueuedPushes(0, 10)
		return len(mi.sent()) == 1 && len(q) == 0
	})
	p.Close()
	st.Close()
	st, p = open()
	defer func() { p.Close(); st.Close() }()
	p.Withdrawn("bob", "k1")
	wait.Until(t, 10*time.Second, "silent update after the restart", func() bool { return len(mi.sent()) == 2 })
	if s := mi.sent()[1]; s.Get("pass_through") != "1" || !strings.Contains(s.Get("payload"), "k1") {
		t.Errorf("recall push %v is not a silent pass-through for k1", s)
	}
	// Once taken back, a second recall sends nothing more.
	p.Withdrawn("bob", "k1")
	wait.Until(t, 10*time.Second, "nothing pending", func() bool { return p.Pending() == 0 })
	if n := len(mi.sent()); n != 2 {
		t.Errorf("%d pushes after a second recall, want 2", n)
	}
}

func TestTokenMoves(t *testing.T) {
	st, err := store.Open(t.TempDir(), store.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.SetPushToken(store.PushToken{User: "bob", Device: "bob:p", Vendor: "fcm", Token: "T1"}))
	must(st.SetPushToken(store.PushToken{User: "carol", Device: "carol:p", Vendor: "fcm", Token: "T1"}))
	if b, _ := st.PushTokens("bob"); len(b) != 0 {
		t.Errorf("bob kept the token: %+v", b)
	}
	// The device's new token replaces its old one; the old one's index goes.
	must(st.SetPushToken(store.PushToken{User: "carol", Device: "carol:p", Vendor: "fcm", Token: "T2"}))
	must(st.SetPushToken(store.PushToken{User: "dave", Device: "dave:p", Vendor: "fcm", Token: "T1"}))
	if c, _ := st.PushTokens("carol"); len(c) != 1 || c[0].Token != "T2" {
		t.Errorf("carol: %+v", c)
	}
	// A stale "unregistered" answer must not remove a newer token.
	if removed, _ := st.DeletePushTokenIf("carol", "carol:p", "T1"); removed {
		t.Errorf("removed carol's newer token")
	}
	if n, _ := st.DeleteUserPushTokens("carol"); n != 1 {
		t.Errorf("DeleteUserPushTokens = %d", n)
	}
	if d, _ := st.PushTokens("dave"); len(d) != 1 {
		t.Errorf("dave: %+v", d)
	}
}
