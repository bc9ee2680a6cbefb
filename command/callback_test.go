package command_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/internal/callback"
	"github.com/duet-im/duet/store"
)

// The callbacks are checked against a real local HTTP server that plays the
// app's back-end and records exactly what it was sent.

type hookCall struct {
	query url.Values
	body  map[string]any
}

type hookServer struct {
	srv   *httptest.Server
	calls chan hookCall
	mu    sync.Mutex
	// answer decides the reply to a callback; nil = allow.
	answer func(cmd string, body map[string]any) (status int, reply string)
	block  chan struct{} // closed at cleanup; handlers told to block wait on it
}

func newHookServer(t *testing.T) *hookServer {
	h := &hookServer{calls: make(chan hookCall, 1000), block: make(chan struct{})}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var body map[string]any
		if err := json.Unmarshal(raw, &body); err != nil || r.Method != http.MethodPost {
			t.Errorf("callback request %s is not a JSON POST: %s", r.Method, raw)
		}
		h.calls <- hookCall{query: r.URL.Query(), body: body}
		h.mu.Lock()
		answer := h.answer
		h.mu.Unlock()
		status, reply := 200, `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`
		if answer != nil {
			status, reply = answer(r.URL.Query().Get("CallbackCommand"), body)
		}
		if status < 0 {
			<-h.block
			return
		}
		w.WriteHeader(status)
		io.WriteString(w, reply)
	}))
	t.Cleanup(func() { close(h.block); h.srv.Close() })
	return h
}

func (h *hookServer) set(f func(cmd string, body map[string]any) (int, string)) {
	h.mu.Lock()
	h.answer = f
	h.mu.Unlock()
}

// next returns the next callback of command cmd, skipping others.
func (h *hookServer) next(t *testing.T, cmd string) hookCall {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case c := <-h.calls:
			if c.query.Get("CallbackCommand") == cmd {
				return c
			}
		case <-deadline:
			t.Fatalf("no %s callback", cmd)
		}
	}
}

// none checks that no callback of cmd is waiting. The after-callback of a
// later, allowed send acts as the barrier: notifications are queued in
// order, so one that was going to come would have come first.
func (h *hookServer) noneBefore(t *testing.T, cmd, barrierKey string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case c := <-h.calls:
			if c.query.Get("CallbackCommand") == "C2C.CallbackAfterSendMsg" && c.body["MsgKey"] == barrierKey {
				return
			}
			if c.query.Get("CallbackCommand") == cmd {
				t.Fatalf("unexpected %s callback: %v", cmd, c.body)
			}
		case <-deadline:
			t.Fatal("barrier callback never came")
		}
	}
}

type cbEnv struct {
	st   *store.Store
	svc  *command.Service
	pool *callback.Pool
	h    *hookServer
	n    int
}

func newCBEnv(t *testing.T, cfg callback.Config, refuse bool) *cbEnv {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(t.TempDir(), store.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h := newHookServer(t)
	if cfg.URL == "" {
		cfg.URL = h.srv.URL + "/im/callback?app=duet"
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 300 * time.Millisecond
	}
	cfg.SDKAppID, cfg.Log = command.DefaultConfig().SDKAppID, log
	pool := callback.New(cfg)
	t.Cleanup(pool.Close)
	ccfg := command.DefaultConfig()
	ccfg.Callbacks, ccfg.CallbackRefuse = pool, refuse
	svc := command.New(ccfg, st, log)
	for _, u := range []string{"alice", "bob"} {
		if _, err := st.ImportAccount(store.Account{UserID: u}); err != nil {
			t.Fatal(err)
		}
	}
	return &cbEnv{st: st, svc: svc, pool: pool, h: h}
}

var restAdmin = &command.Caller{UserID: "administrator", Admin: true, Transport: command.REST}

// send posts one REST sendmsg from alice to bob; extra is spliced into the body.
func (e *cbEnv) send(t *testing.T, extra string) (map[string]any, string) {
	t.Helper()
	e.n++
	body := fmt.Sprintf(`{"From_Account":"alice","To_Account":"bob","MsgSeq":%d,"MsgRandom":%d,"MsgTimeStamp":1700000000,
		"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hello %d"}}],"CloudCustomData":"ccd"%s}`, e.n, 1000+e.n, e.n, extra)
	ctx := command.WithClientIP(context.Background(), "203.0.113.9")
	var m map[string]any
	json.Unmarshal(e.svc.Exec(ctx, restAdmin, "openim/sendmsg", []byte(body)).Encode(), &m)
	return m, fmt.Sprintf("%d_%d_1700000000", e.n, 1000+e.n)
}

func (e *cbEnv) stored(key string) *store.Message {
	m, err := e.st.GetMessage("alice", "bob", key)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return m
}

func errCode(m map[string]any) int { f, _ := m["ErrorCode"].(float64); return int(f) }

func TestBeforeSendAllowAndRequestShape(t *testing.T) {
	e := newCBEnv(t, callback.Config{Token: "xxxxyyyy"}, false)
	rep, key := e.send(t, "")
	if errCode(rep) != 0 || rep["MsgKey"] != key {
		t.Fatalf("send: %v", rep)
	}
	c := e.h.next(t, "C2C.CallbackBeforeSendMsg")
	q := c.query
	for k, want := range map[string]string{
		"app": "duet", "SdkAppid": "1400000000", "CallbackCommand": "C2C.CallbackBeforeSendMsg",
		"contenttype": "json", "ClientIP": "203.0.113.9", "OptPlatform": "RESTAPI",
	} {
		if q.Get(k) != want {
			t.Errorf("query %s = %q, want %q", k, q.Get(k), want)
		}
	}
	rt, _ := strconv.ParseInt(q.Get("RequestTime"), 10, 64)
	sum := sha256.Sum256([]byte("xxxxyyyy" + q.Get("RequestTime")))
	if q.Get("Sign") != hex.EncodeToString(sum[:]) || time.Since(time.Unix(rt, 0)).Abs() > time.Minute {
		t.Errorf("Sign %q / RequestTime %q do not verify", q.Get("Sign"), q.Get("RequestTime"))
	}
	b := c.body
	want := map[string]any{
		"CallbackCommand": "C2C.CallbackBeforeSendMsg", "From_Account": "alice", "To_Account": "bob",
		"MsgSeq": float64(1), "MsgRandom": float64(1001), "MsgTime": float64(1700000000), "MsgKey": key,
		"OnlineOnlyFlag": float64(0), "CloudCustomData": "ccd",
	}
	for k, v := range want {
		if b[k] != v {
			t.Errorf("body %s = %v, want %v", k, b[k], v)
		}
	}
	if fmt.Sprint(b["MsgBody"]) != "[map[MsgContent:map[Text:hello 1] MsgType:TIMTextElem]]" {
		t.Errorf("MsgBody %v", b["MsgBody"])
	}
	after := e.h.next(t, "C2C.CallbackAfterSendMsg").body
	if after["SendMsgResult"] != float64(0) || after["ErrorInfo"] != "send msg succeed" || after["MsgKey"] != key || after["UnreadMsgNum"] != float64(1) {
		t.Errorf("after-send body %v", after)
	}
	if e.stored(key) == nil {
		t.Fatal("allowed message not stored")
	}
}

func TestBeforeSendDecisions(t *testing.T) {
	cases := []struct {
		name     string
		status   int
		reply    string
		refuse   bool // RefuseOnFailure
		code     int
		stored   bool
		wantText string // stored text when stored
		after    bool
	}{
		{name: "reject", reply: `{"ActionStatus":"OK","ErrorCode":1,"ErrorInfo":"no"}`, code: 20006},
		{name: "drop", reply: `{"ActionStatus":"OK","ErrorCode":2,"ErrorInfo":""}`, code: 0},
		{name: "custom code", reply: `{"ActionStatus":"FAIL","ErrorCode":120005,"ErrorInfo":"no swearing"}`, code: 120005},
		{name: "rewrite", reply: `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"***"}}],"CloudCustomData":"new"}`,
			stored: true, wantText: "***", after: true},
		{name: "invalid rewrite delivers the original", reply: `{"ErrorCode":0,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":5}}]}`,
			stored: true, wantText: "hello 1", after: true},
		{name: "invalid rewrite refused", refuse: true, reply: `{"ErrorCode":0,"MsgBody":"x"}`, code: 80003},
		{name: "HTTP 500 delivers", status: 500, reply: `oops`, stored: true, wantText: "hello 1", after: true},
		{name: "HTTP 500 refused", status: 500, refuse: true, reply: `oops`, code: 80003},
		{name: "timeout delivers", status: -1, stored: true, wantText: "hello 1", after: true},
		{name: "timeout refused", status: -1, refuse: true, code: 80003},
		{name: "not JSON refused", reply: `<html>`, refuse: true, code: 80003},
		{name: "meaningless code refused", reply: `{"ErrorCode":7}`, refuse: true, code: 80003},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newCBEnv(t, callback.Config{}, tc.refuse)
			e.h.set(func(cmd string, _ map[string]any) (int, string) {
				if cmd != "C2C.CallbackBeforeSendMsg" {
					return 200, `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`
				}
				if tc.status == 0 {
					return 200, tc.reply
				}
				return tc.status, tc.reply
			})
			start := time.Now()
			rep, key := e.send(t, "")
			if errCode(rep) != tc.code {
				t.Fatalf("ErrorCode %d, want %d: %v", errCode(rep), tc.code, rep)
			}
			if tc.code != 0 && rep["ErrorInfo"] == "" {
				t.Fatalf("no ErrorInfo: %v", rep)
			}
			if tc.name == "custom code" && rep["ErrorInfo"] != "no swearing" {
				t.Fatalf("custom ErrorInfo not passed on: %v", rep)
			}
			if tc.status == -1 && time.Since(start) > 3*time.Second {
				t.Fatalf("timeout of 300ms took %v", time.Since(start))
			}
			if tc.name == "drop" && rep["MsgKey"] != key {
				t.Fatalf("dropped send not answered like a sent one: %v", rep)
			}
			m := e.stored(key)
			if (m != nil) != tc.stored {
				t.Fatalf("stored = %v, want %v", m != nil, tc.stored)
			}
			if seq, _ := e.st.LastSeq("bob"); (seq > 0) != tc.stored {
				t.Fatalf("bob's timeline Seq %d, stored %v", seq, tc.stored)
			}
			if m != nil {
				var body []struct{ MsgContent struct{ Text string } }
				json.Unmarshal(m.MsgBody, &body)
				if body[0].MsgContent.Text != tc.wantText {
					t.Fatalf("stored text %q, want %q", body[0].MsgContent.Text, tc.wantText)
				}
				if tc.name == "rewrite" && m.CloudCustomData != "new" {
					t.Fatalf("CloudCustomData not rewritten: %q", m.CloudCustomData)
				}
			}
			if tc.after {
				after := e.h.next(t, "C2C.CallbackAfterSendMsg").body
				if tc.name == "rewrite" && fmt.Sprint(after["MsgBody"]) != "[map[MsgContent:map[Text:***] MsgType:TIMTextElem]]" {
					t.Fatalf("after-send saw %v, not the rewritten body", after["MsgBody"])
				}
				return
			}
			// No after-callback for a refused or dropped send: allow the
			// next one and use its after-callback as a barrier.
			e.h.set(nil)
			_, barrier := e.send(t, "")
			e.h.noneBefore(t, "C2C.CallbackAfterSendMsg", barrier)
		})
	}
}

func TestForbidCallbackControl(t *testing.T) {
	e := newCBEnv(t, callback.Config{}, false)
	rep, key := e.send(t, `,"ForbidCallbackControl":["ForbidBeforeSendMsgCallback"]`)
	if errCode(rep) != 0 {
		t.Fatal(rep)
	}
	c := e.h.next(t, "C2C.CallbackAfterSendMsg")
	if c.body["MsgKey"] != key {
		t.Fatalf("first callback %v", c.body)
	}
	select {
	case c := <-e.h.calls:
		t.Fatalf("unexpected callback %v", c.query.Get("CallbackCommand"))
	default:
	}
	rep, key = e.send(t, `,"ForbidCallbackControl":["ForbidBeforeSendMsgCallback","ForbidAfterSendMsgCallback"]`)
	if errCode(rep) != 0 || e.stored(key) == nil {
		t.Fatal(rep)
	}
	_, barrier := e.send(t, `,"ForbidCallbackControl":["ForbidBeforeSendMsgCallback"]`)
	e.h.noneBefore(t, "C2C.CallbackAfterSendMsg", barrier)
	rep, _ = e.send(t, `,"ForbidCallbackControl":"all"`)
	if errCode(rep) != 90001 {
		t.Fatalf("bad ForbidCallbackControl: %v", rep)
	}
}

// A dead-slow callback server holds up the before-callback of one send at
// a time; the after-callbacks queue and overflow, and sends go on.
func TestSlowAfterCallbacksNeverStallSends(t *testing.T) {
	e := newCBEnv(t, callback.Config{Queue: 4, Workers: 1, Timeout: 10 * time.Second}, false)
	e.h.set(func(cmd string, _ map[string]any) (int, string) {
		if cmd == "C2C.CallbackAfterSendMsg" {
			return -1, "" // never answers
		}
		return 200, `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`
	})
	for i := range 40 {
		if rep, _ := e.send(t, ""); errCode(rep) != 0 {
			t.Fatalf("send %d: %v", i, rep)
		}
	}
	if e.pool.Dropped() == 0 {
		t.Fatal("a full notification queue dropped nothing")
	}
}

func TestStateChangeAndWithdrawCallbacks(t *testing.T) {
	e := newCBEnv(t, callback.Config{}, false)
	e.svc.StateChanged("alice", "alice:phone", true)
	c := e.h.next(t, "State.StateChange")
	info, _ := c.body["Info"].(map[string]any)
	if info["Action"] != "Login" || info["To_Account"] != "alice" || c.body["EventTime"] == nil {
		t.Fatalf("State.StateChange %v", c.body)
	}
	e.svc.StateChanged("alice", "alice:phone", false)
	if info, _ := e.h.next(t, "State.StateChange").body["Info"].(map[string]any); info["Action"] != "Logout" {
		t.Fatalf("logout %v", info)
	}
	_, key := e.send(t, "")
	rep := e.svc.Exec(context.Background(), restAdmin, "openim/admin_msgwithdraw",
		[]byte(`{"From_Account":"alice","To_Account":"bob","MsgKey":"`+key+`"}`))
	if rep.Err != nil {
		t.Fatal(rep.Err)
	}
	w := e.h.next(t, "C2C.CallbackAfterMsgWithDraw").body
	if w["From_Account"] != "alice" || w["To_Account"] != "bob" || w["MsgKey"] != key {
		t.Fatalf("withdraw callback %v", w)
	}
}

// A device's own send over MQTT goes through the same callbacks.
func TestCallbacksForMQTTSends(t *testing.T) {
	e := newCBEnv(t, callback.Config{}, false)
	e.h.set(func(cmd string, _ map[string]any) (int, string) {
		if cmd == "C2C.CallbackBeforeSendMsg" {
			return 200, `{"ActionStatus":"OK","ErrorCode":1,"ErrorInfo":"not today"}`
		}
		return 200, `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`
	})
	alice := &command.Caller{UserID: "alice", Device: "alice:phone", Transport: command.MQTT}
	rep := e.svc.Exec(context.Background(), alice, "openim/sendmsg",
		[]byte(`{"To_Account":"bob","MsgRandom":5,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]}`))
	if rep.Err == nil || rep.Err.Code != 20006 {
		t.Fatalf("MQTT send past a refusing callback: %+v", rep)
	}
	c := e.h.next(t, "C2C.CallbackBeforeSendMsg")
	if c.query.Get("OptPlatform") != "Unknown" || c.body["From_Account"] != "alice" {
		t.Fatalf("MQTT before-send callback: %v %v", c.query, c.body)
	}
	if seq, _ := e.st.LastSeq("bob"); seq != 0 {
		t.Fatal("refused MQTT send reached bob")
	}
}

// A resend (PROTOCOL §3) is answered from the first send's record and fires
// no callback again: neither before-send (nothing will be stored) nor
// after-send (the message was stored once). With MsgSeq and MsgTimeStamp
// given, the resend computes the very MsgKey it was stored under, which is
// how the after-send callback used to fire twice.
func TestResendFiresNoCallbacks(t *testing.T) {
	// One notification worker: notifications arrive in the order they were
	// queued, so the barrier's after-send comes after any of the resend's.
	e := newCBEnv(t, callback.Config{Workers: 1}, false)
	body := []byte(`{"From_Account":"alice","To_Account":"bob","MsgSeq":77,"MsgRandom":1287657,"MsgTimeStamp":1700000000,
		"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"once"}}]}`)
	const key = "77_1287657_1700000000"
	for i := range 2 {
		var m map[string]any
		json.Unmarshal(e.svc.Exec(context.Background(), restAdmin, "openim/sendmsg", body).Encode(), &m)
		if errCode(m) != 0 || m["MsgKey"] != key {
			t.Fatalf("send %d: %v", i, m)
		}
	}
	_, barrier := e.send(t, "")
	counts := map[string]int{}
	deadline := time.After(5 * time.Second)
	for counts["barrier"] == 0 {
		select {
		case c := <-e.h.calls:
			switch cmd := c.query.Get("CallbackCommand"); {
			case c.body["MsgKey"] == key:
				counts[cmd]++
			case cmd == "C2C.CallbackAfterSendMsg" && c.body["MsgKey"] == barrier:
				counts["barrier"]++
			}
		case <-deadline:
			t.Fatal("the barrier's after-send callback never came")
		}
	}
	if counts["C2C.CallbackBeforeSendMsg"] != 1 || counts["C2C.CallbackAfterSendMsg"] != 1 {
		t.Fatalf("a send and its resend fired %v, want one of each", counts)
	}
	if seq, _ := e.st.LastSeq("bob"); seq != 2 {
		t.Fatalf("bob's timeline has %d events, want 2 (the message and the barrier)", seq)
	}
}
