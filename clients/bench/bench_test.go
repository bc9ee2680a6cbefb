package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/duet-im/duet/usersig"
)

// startBroker runs an in-process mochi broker on a free loopback port, with
// extra hooks (AllowHook if none), and returns its tcp:// address. AddListener
// binds the socket, so the broker accepts connections once this returns.
//
// The MQTT 5 runs here leave Config.V5ReceiveMax at 0 (property omitted).
// mochi v2.7.9 deadlocks a subscriber's connection when its client sent a
// Receive Maximum: after any packet from that client the broker calls
// Inflight.NextImmediate, which read-locks the inflight map and then, via
// GetAll, read-locks it again; a publisher's Inflight.Set queued in between
// blocks both forever. Without the property mochi's send quota is 0 and that
// path is skipped. MQTT 3.1.1 clients never take it.
func startBroker(t *testing.T, inline bool, hooks ...mqtt.Hook) (*mqtt.Server, string) {
	t.Helper()
	s := mqtt.New(&mqtt.Options{
		InlineClient: inline,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if len(hooks) == 0 {
		hooks = []mqtt.Hook{new(auth.AllowHook)}
	}
	for _, h := range hooks {
		if err := s.AddHook(h, nil); err != nil {
			t.Fatal(err)
		}
	}
	l := &trackedTCP{TCP: listeners.NewTCP(listeners.Config{ID: "t1", Address: "127.0.0.1:0"})}
	if err := s.AddListener(l); err != nil { // binds the socket
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// mochi's Close does not wait for connection goroutines (and races
		// with them), so first let every connection finish: the tool has
		// disconnected all its clients by the time Run returns.
		deadline := time.Now().Add(10 * time.Second)
		for l.active.Load() > 0 {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("%d broker connections still running 10s after the test:\n%s",
					l.active.Load(), buf[:runtime.Stack(buf, true)])
				return // leave the broker running rather than hang in Close
			}
			time.Sleep(5 * time.Millisecond) // poll interval
		}
		_ = s.Close()
	})
	return s, "tcp://" + l.Address() // the bound port, known after AddListener
}

// trackedTCP is mochi's TCP listener counting live connection handlers.
type trackedTCP struct {
	*listeners.TCP
	active atomic.Int64
}

func (l *trackedTCP) Serve(establish listeners.EstablishFn) {
	l.TCP.Serve(func(id string, c net.Conn) error {
		l.active.Add(1)
		defer l.active.Add(-1)
		return establish(id, c)
	})
}

func checkComplete(t *testing.T, res *Result, wantSent, wantDelivered int64) {
	t.Helper()
	if res.Sent != wantSent || res.Delivered != wantDelivered || res.Lost != 0 {
		t.Errorf("sent=%d delivered=%d lost=%d, want sent=%d delivered=%d lost=0",
			res.Sent, res.Delivered, res.Lost, wantSent, wantDelivered)
	}
	if !res.Drained || res.Interrupted {
		t.Errorf("drained=%v interrupted=%v", res.Drained, res.Interrupted)
	}
	if res.Latency.N != uint64(wantDelivered) {
		t.Errorf("latency samples %d, want %d", res.Latency.N, wantDelivered)
	}
	l := res.Latency
	if !(l.Min > 0 && l.P50 > 0 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.Max) {
		t.Errorf("implausible latencies %+v", l)
	}
	if res.DeliveredRate <= 0 {
		t.Errorf("delivered rate %v", res.DeliveredRate)
	}
}

func TestRawEndToEnd(t *testing.T) {
	_, addr := startBroker(t, false)
	for _, tc := range []struct {
		name    string
		v5      bool
		client  string
		window  int
		payload int
	}{
		{"mqtt3-wire-window1", false, "wire", 1, 16},
		{"mqtt3-wire-window8", false, "wire", 8, 16},
		{"mqtt3-wire-big", false, "wire", 4, 3 * wireReadBuf}, // bodies past the read buffer
		{"mqtt3-paho-window1", false, "paho", 1, 16},
		{"mqtt3-paho-window8", false, "paho", 8, 16},
		{"mqtt3-paho-big", false, "paho", 4, 3 * wireReadBuf},
		{"mqtt5-window1", true, "paho", 1, 16},
		{"mqtt5-window8", true, "paho", 8, 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log bytes.Buffer
			res, err := Run(t.Context(), Config{
				Mode:     "raw",
				Addr:     addr,
				Pairs:    5,
				Messages: 50,
				Duration: 30 * time.Second, // upper bound; 50 messages end the run
				Window:   tc.window,
				Payload:  tc.payload,
				V5:       tc.v5,
				Client:   tc.client,
				Prefix:   "t-" + tc.name,
				Drain:    10 * time.Second,
				Log:      &log,
			})
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, log.String())
			}
			if res.Client != tc.client {
				t.Errorf("result client %q, want %q", res.Client, tc.client)
			}
			checkComplete(t, res, 250, 250)
			if res.Errors != 0 {
				t.Errorf("errors=%d: %v", res.Errors, res.FirstErrors)
			}
			if res.SendSecs >= 30 {
				t.Errorf("send window %vs: message count did not end the run", res.SendSecs)
			}
		})
	}
}

// v3Clients are the MQTT 3.1.1 implementations every end-to-end test runs.
var v3Clients = []string{"wire", "paho"}

func TestRateCap(t *testing.T) {
	_, addr := startBroker(t, false)
	for _, cl := range v3Clients {
		t.Run(cl, func(t *testing.T) {
			res, err := Run(t.Context(), Config{
				Mode: "raw", Addr: addr, Pairs: 2, Duration: 500 * time.Millisecond, Rate: 20, Client: cl, Prefix: "rate-" + cl,
			})
			if err != nil {
				t.Fatal(err)
			}
			// 20/s for 0.5 s is 10 per sender (+1 for the slot at t=0).
			if res.Sent < 2*5 || res.Sent > 2*11 {
				t.Errorf("sent %d with -rate 20 over 0.5 s on 2 senders", res.Sent)
			}
			checkComplete(t, res, res.Sent, res.Sent)
		})
	}
}

func TestRefusesRemoteAddr(t *testing.T) {
	for _, addr := range []string{"tcp://192.0.2.1:1883", "tcp://example.invalid:1883", "http://127.0.0.1:1883"} {
		if _, err := Run(t.Context(), Config{Mode: "raw", Addr: addr, Pairs: 1, Duration: time.Second}); err == nil {
			t.Errorf("%s: accepted", addr)
		}
	}
}

func TestInterrupt(t *testing.T) {
	_, addr := startBroker(t, false)
	for _, cl := range v3Clients {
		t.Run(cl, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			// Cancel (as Ctrl-C would) at the first progress line, 1 s into sending.
			log := writerFunc(func(p []byte) (int, error) {
				if bytes.Contains(p, []byte(" delivered ")) {
					cancel()
				}
				return len(p), nil
			})
			start := time.Now()
			res, err := Run(ctx, Config{Mode: "raw", Addr: addr, Pairs: 3, Duration: time.Minute, Client: cl,
				Prefix: "intr-" + cl, Log: log, Progress: true})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Interrupted || time.Since(start) > 20*time.Second {
				t.Errorf("interrupted=%v after %v", res.Interrupted, time.Since(start))
			}
			// Publishes in flight finish and the drain runs, so nothing is lost.
			if res.Sent == 0 || res.Delivered != res.Sent || res.Lost != 0 || !res.Drained || res.Errors != 0 {
				t.Errorf("after interrupt: sent=%d delivered=%d lost=%d drained=%v errors=%v",
					res.Sent, res.Delivered, res.Lost, res.Drained, res.FirstErrors)
			}
		})
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// fakeDuet is the slice of Duet's MQTT contract the load tool relies on,
// built from mochi's inline client: UserSig logins, sendmsg replies, msg
// events to the recipient (and the sender's own sync copy), sync_complete
// after subscribing, plus one replayed old message per receiver.
type fakeDuet struct {
	mqtt.HookBase
	srv      *mqtt.Server
	secret   string
	sdkappid uint64
	refuseTo string // sendmsg to accounts ending in this is refused with 20003
	seq      atomic.Int64
}

func (h *fakeDuet) ID() string { return "fake-duet" }

func (h *fakeDuet) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck || b == mqtt.OnSubscribed
}

func (h *fakeDuet) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	user := string(pk.Connect.Username)
	if cl.ID != user+":bench" {
		return false
	}
	_, err := usersig.Verify(string(pk.Connect.Password), h.sdkappid, h.secret, user, time.Now())
	return err == nil
}

func (h *fakeDuet) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	user, _, _ := strings.Cut(cl.ID, ":")
	return strings.HasPrefix(topic, "im/"+user+"/")
}

func (h *fakeDuet) OnSubscribed(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	user, _, ok := strings.Cut(cl.ID, ":")
	if !ok || !strings.Contains(user, "-r-") {
		return
	}
	// A message from an earlier run: the tool must not count it.
	old, _ := json.Marshal(map[string]any{
		"Seq": h.seq.Add(1), "Event": "msg", "From_Account": strings.Replace(user, "-r-", "-s-", 1), "To_Account": user,
		"MsgBody": []map[string]any{{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": "1000"}}},
	})
	_ = h.srv.Publish("im/"+user+"/in", old, false, 1)
	done, _ := json.Marshal(map[string]any{"Event": "sync_complete", "LastSeq": h.seq.Load()})
	_ = h.srv.Publish("im/"+user+"/in", done, false, 1)
}

func (h *fakeDuet) onSendMsg(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
	from := strings.Split(pk.TopicName, "/")[1]
	var req struct {
		ReqId      string
		To_Account string
		MsgRandom  uint32
		MsgBody    json.RawMessage
	}
	reply := map[string]any{"Command": "openim/sendmsg", "ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": ""}
	if err := json.Unmarshal(pk.Payload, &req); err != nil {
		reply["ActionStatus"], reply["ErrorCode"], reply["ErrorInfo"] = "FAIL", 90001, "bad json"
	} else if strings.HasSuffix(req.To_Account, h.refuseTo) {
		reply["ActionStatus"], reply["ErrorCode"], reply["ErrorInfo"] = "FAIL", 20003, "To_Account invalid"
	}
	reply["ReqId"] = req.ReqId
	if reply["ErrorCode"] == 0 {
		seq := h.seq.Add(1)
		key := fmt.Sprintf("%d_%d", seq, req.MsgRandom)
		reply["MsgKey"], reply["MsgTime"], reply["Seq"] = key, time.Now().Unix(), seq
		ev := map[string]any{"Seq": seq, "Event": "msg", "From_Account": from, "To_Account": req.To_Account,
			"MsgKey": key, "MsgBody": req.MsgBody}
		b, _ := json.Marshal(ev)
		_ = h.srv.Publish("im/"+req.To_Account+"/in", b, false, 1)
		_ = h.srv.Publish("im/"+from+"/in", b, false, 1) // multi-device sync copy
	}
	b, _ := json.Marshal(reply)
	_ = h.srv.Publish("im/"+from+"/rsp", b, false, 1)
}

func TestDuetModeAgainstFake(t *testing.T) {
	const secret = "test-secret"
	h := &fakeDuet{secret: secret, sdkappid: defaultSDKAppID, refuseTo: "-r-4"}
	srv, addr := startBroker(t, true, h)
	h.srv = srv
	if err := srv.Subscribe("im/+/req/openim/sendmsg", 1, h.onSendMsg); err != nil {
		t.Fatal(err)
	}
	// Each run logs in its own users: mochi v2.7.9 can lose the routing of a
	// client that reconnects with the id of one still being torn down.
	for i, tc := range []struct {
		name   string
		v5     bool
		client string
	}{{"mqtt3-wire", false, "wire"}, {"mqtt3-paho", false, "paho"}, {"mqtt5", true, "paho"}} {
		t.Run(tc.name, func(t *testing.T) {
			var log bytes.Buffer
			res, err := Run(t.Context(), Config{
				Mode: "duet", Addr: addr, Pairs: 5, Messages: 50, Duration: 30 * time.Second,
				Window: 4, V5: tc.v5, Client: tc.client, Prefix: fmt.Sprintf("d%d", i), Secret: secret,
				ReadyTimeout: 5 * time.Second, Log: &log,
			})
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, log.String())
			}
			if strings.Contains(log.String(), "sync_complete") {
				t.Errorf("receivers not ready: %s", log.String())
			}
			checkComplete(t, res, 250, 200) // pair 4's 50 messages are refused
			if res.Rejected != 50 || res.Accepted != 200 || res.Errors != 50 {
				t.Errorf("rejected=%d accepted=%d errors=%d", res.Rejected, res.Accepted, res.Errors)
			}
			if res.Stale != 5 {
				t.Errorf("stale_ignored=%d, want 5 (one replayed message per receiver)", res.Stale)
			}
			if len(res.FirstErrors) == 0 || !strings.Contains(res.FirstErrors[0], "20003 To_Account invalid") {
				t.Errorf("first errors %q", res.FirstErrors)
			}
		})
	}
	for _, cl := range v3Clients {
		t.Run("bad-secret-"+cl, func(t *testing.T) {
			_, err := Run(t.Context(), Config{Mode: "duet", Addr: addr, Pairs: 1, Duration: time.Second,
				Client: cl, Prefix: "dbad-" + cl, Secret: "wrong", Timeout: 5 * time.Second})
			if err == nil {
				t.Fatal("login with a wrong secret succeeded")
			}
			// mochi answers a failed MQTT 3.1.1 login with return code 5.
			if cl == "wire" && !strings.Contains(err.Error(), "0x05 (not authorized)") {
				t.Errorf("error %q does not name the CONNACK return code", err)
			}
		})
	}
}

func TestHistogram(t *testing.T) {
	for _, v := range []int64{0, 1, 127, 128, 129, 255, 256, 1000, 123456789, maxTracked} {
		lo, hi := bucketRange(bucketOf(v))
		if v < lo || v > hi {
			t.Errorf("value %d in bucket [%d,%d]", v, lo, hi)
		}
		if v >= 128 && float64(hi-lo+1)/float64(lo) > 1.0/64+1e-9 {
			t.Errorf("bucket [%d,%d] wider than 1/64", lo, hi)
		}
	}
	if b := bucketOf(maxTracked); b != numBuckets-1 {
		t.Errorf("last bucket %d, want %d", b, numBuckets-1)
	}
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.9, 900 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {1, time.Millisecond}} {
		got := h.quantile(c.q)
		if d := got - c.want; d < -c.want/60 || d > c.want/60 {
			t.Errorf("q%.2f = %v, want ~%v", c.q, got, c.want)
		}
	}
	var m histogram
	m.merge(&h)
	m.merge(&histogram{})
	if m.n != 1000 || m.min != int64(time.Microsecond) || m.max != int64(time.Millisecond) {
		t.Errorf("merge: n=%d min=%d max=%d", m.n, m.min, m.max)
	}
}

func TestStamp(t *testing.T) {
	for _, pad := range []int{0, 1, 100} {
		b := stamp(1234567890123, pad)
		if got, ok := parseStamp(string(b)); !ok || got != 1234567890123 {
			t.Errorf("pad %d: %q -> %d %v", pad, b, got, ok)
		}
	}
	for _, bad := range []string{"", "x", "-5", " 12"} {
		if _, ok := parseStamp(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestDuetRequestShape(t *testing.T) {
	m := &duetMode{prefix: "bench", device: "bench", secret: "k", sdkappid: defaultSDKAppID, sigExpire: time.Hour, now: time.Now}
	topic, body := m.request(17, 3, 42)
	if topic != "im/bench-s-17/req/openim/sendmsg" {
		t.Errorf("topic %q", topic)
	}
	var req map[string]any
	if err := json.Unmarshal(body, &req); err != nil {
		t.Fatal(err)
	}
	if req["To_Account"] != "bench-r-17" || req["ReqId"] == "" {
		t.Errorf("request %s", body)
	}
	if !strings.Contains(string(body), `"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"42"}}]`) {
		t.Errorf("body %s", body)
	}
	cid, user, pass, err := m.login("bench-s-17")
	if err != nil || cid != "bench-s-17:bench" || user != "bench-s-17" {
		t.Fatalf("login %q %q %v", cid, user, err)
	}
	if _, err := usersig.Verify(pass, defaultSDKAppID, "k", user, time.Now()); err != nil {
		t.Errorf("sig: %v", err)
	}
}

func TestFlags(t *testing.T) {
	var stderr bytes.Buffer
	t.Setenv("DUET_SECRET", "")
	if code := realMain([]string{"-mode", "duet"}, &bytes.Buffer{}, &stderr); code != 2 || !strings.Contains(stderr.String(), "secret") {
		t.Errorf("missing secret: code %d, %q", code, stderr.String())
	}
	for _, args := range [][]string{{"-mode", "x"}, {"-mode", "raw", "-pairs", "0"}, {"-mode", "raw", "-window", "0", "-duration", "0s"},
		{"-mode", "raw", "extra"}, {"-mode", "raw", "-client", "mosquitto"}} {
		if code := realMain(args, &bytes.Buffer{}, &bytes.Buffer{}); code != 2 {
			t.Errorf("%v: code %d, want 2", args, code)
		}
	}
	stderr.Reset()
	if code := realMain([]string{"-mode", "raw", "-client", "wire", "-v5"}, &bytes.Buffer{}, &stderr); code != 2 ||
		!strings.Contains(stderr.String(), "MQTT 3.1.1 only") {
		t.Errorf("-client wire -v5: code %d, %q", code, stderr.String())
	}
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Mode: "raw", Pairs: 1, Duration: time.Second}, "wire"},
		{Config{Mode: "raw", Pairs: 1, Duration: time.Second, V5: true}, "paho"},
		{Config{Mode: "raw", Pairs: 1, Duration: time.Second, Client: "paho"}, "paho"},
	} {
		if err := c.cfg.normalize(); err != nil || c.cfg.Client != c.want {
			t.Errorf("v5=%v: client %q (%v), want %q", c.cfg.V5, c.cfg.Client, err, c.want)
		}
	}
}

func TestMainJSON(t *testing.T) {
	_, addr := startBroker(t, false)
	var out, errb bytes.Buffer
	code := realMain([]string{"-mode", "raw", "-addr", addr, "-pairs", "2", "-messages", "10", "-duration", "20s", "-json", "-q", "-prefix", "mj"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var res Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if res.Sent != 20 || res.Delivered != 20 || res.Client != "wire" {
		t.Errorf("json result %+v", res)
	}
	out.Reset()
	if code := realMain([]string{"-mode", "raw", "-addr", addr, "-pairs", "1", "-messages", "3", "-q", "-prefix", "mt"}, &out, &errb); code != 0 ||
		!strings.Contains(out.String(), "sent=3 delivered=3 lost=0") || !strings.Contains(out.String(), "latency ms: p50=") {
		t.Errorf("text summary (exit %d):\n%s", code, out.String())
	}
}

// receiveMaxHook records the Receive Maximum each client sent in CONNECT.
type receiveMaxHook struct {
	auth.AllowHook
	got chan uint16
}

func (h *receiveMaxHook) Provides(b byte) bool {
	return b == mqtt.OnConnect || h.AllowHook.Provides(b)
}

func (h *receiveMaxHook) OnConnect(_ *mqtt.Client, pk packets.Packet) error {
	h.got <- pk.Properties.ReceiveMaximum
	return nil
}

func TestV5ReceiveMaximum(t *testing.T) {
	h := &receiveMaxHook{got: make(chan uint16, 2)}
	_, addr := startBroker(t, false, h)
	hostport := strings.TrimPrefix(addr, "tcp://")
	for _, want := range []uint16{77, 0} {
		c, err := dial(t.Context(), dialOptions{hostport: hostport, v5: true, clientID: fmt.Sprintf("rm-%d", want),
			timeout: 5 * time.Second, keepAlive: time.Minute, receiveMax: want, onMessage: func(string, []byte) {}})
		if err != nil {
			t.Fatal(err)
		}
		c.close()
		select {
		case got := <-h.got: // OnConnect ran before the CONNACK dial waited for
			if got != want {
				t.Errorf("broker saw Receive Maximum %d, want %d", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("OnConnect not called")
		}
	}
}

// procCPU reads a live process's CPU time, which only grows; a process that
// does not exist is refused before the run starts; a run names the CPU the
// broker (here this very process) and the tool spent per message.
func TestBrokerCPU(t *testing.T) {
	cfg := Config{Mode: "raw", Pairs: 1, Duration: time.Second, BrokerPID: 1 << 30}
	if err := cfg.normalize(); err == nil {
		t.Fatal("a broker pid that names no process was accepted")
	}
	_, addr := startBroker(t, false)
	res, err := Run(t.Context(), Config{Mode: "raw", Addr: addr, Pairs: 4, Messages: 2000, Duration: 30 * time.Second,
		Window: 8, Prefix: "cpu", BrokerPID: os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	if res.Delivered != 8000 || res.BrokerCPUSecs <= 0 || res.BrokerCPUPerMsg <= 0 || res.ToolCPUSecs <= 0 || res.ToolCPUPerMsg <= 0 {
		t.Fatalf("delivered %d; broker %.3fs (%.1f µs/msg), tool %.3fs (%.1f µs/msg)",
			res.Delivered, res.BrokerCPUSecs, res.BrokerCPUPerMsg, res.ToolCPUSecs, res.ToolCPUPerMsg)
	}
}
