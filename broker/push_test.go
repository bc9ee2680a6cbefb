package broker_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	srvpkg "github.com/duet-im/duet/internal/server"
	"github.com/duet-im/duet/internal/wait"
	"github.com/duet-im/duet/push"
)

// apnsServer is a local APNs endpoint (HTTP/2 over TLS) that records every
// accepted notification as token, title, body, badge, ext; status decides
// its answer.
type apnsServer struct {
	*httptest.Server
	mu     sync.Mutex
	got    []url.Values
	status int // 0 = 200
}

func newAPNsServer(t testing.TB) *apnsServer {
	m := &apnsServer{}
	m.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
		if !ok || r.ProtoMajor != 2 || !strings.HasPrefix(r.Header.Get("authorization"), "bearer ") || r.Header.Get("apns-topic") != "com.example.im" {
			t.Errorf("unexpected request %s %s %v", r.Proto, r.URL.Path, r.Header)
		}
		var p struct {
			APS struct {
				Alert struct{ Title, Body string } `json:"alert"`
				Badge *int                         `json:"badge"`
			} `json:"aps"`
			Ext string `json:"ext"`
		}
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			t.Errorf("payload: %v", err)
		}
		v := url.Values{"token": {token}, "title": {p.APS.Alert.Title}, "body": {p.APS.Alert.Body}, "ext": {p.Ext}}
		if p.APS.Badge != nil {
			v.Set("badge", fmt.Sprint(*p.APS.Badge))
		}
		m.mu.Lock()
		status := m.status
		if status == 0 {
			m.got = append(m.got, v)
		}
		m.mu.Unlock()
		if status != 0 {
			w.WriteHeader(status)
			io.WriteString(w, `{"reason":"ServiceUnavailable"}`)
		}
	}))
	m.EnableHTTP2 = true
	m.StartTLS()
	t.Cleanup(m.Close)
	return m
}

func (m *apnsServer) setStatus(s int) {
	m.mu.Lock()
	m.status = s
	m.mu.Unlock()
}

func (m *apnsServer) received() []url.Values {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]url.Values(nil), m.got...)
}

func apnsKey(t testing.TB) string {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

var (
	bobToken   = strings.Repeat("b0", 32)
	carolToken = strings.Repeat("c0", 32)
)

type pushRig struct {
	s      *testServer
	apns   *apnsServer
	mu     sync.Mutex
	pusher *push.Pusher
}

func (r *pushRig) p() *push.Pusher {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pusher
}

// startPushServer runs a Duet whose pusher sends to a local APNs server
// after grace, with the user's total unread count as the badge.
func startPushServer(t *testing.T, grace, retryBase time.Duration) *pushRig {
	rig := &pushRig{apns: newAPNsServer(t)}
	key := apnsKey(t)
	rig.s = startServer(t, serverOpts{
		server: func(c *srvpkg.Config) {
			c.Push = push.Config{Grace: grace, RetryBase: retryBase,
				APNs: &push.APNsConfig{KeyID: "K1", TeamID: "T1", Key: key, BundleID: "com.example.im", Endpoint: rig.apns.URL}}
			c.PushHTTPClient = rig.apns.Client()
		},
		started: func(srv *srvpkg.Server) {
			rig.mu.Lock()
			rig.pusher = srv.Pusher()
			rig.mu.Unlock()
		},
	})
	if o := rig.s.ownerOf("bob"); o != nil {
		// In -cluster mode only the owner (of the recipient's partition)
		// queues and sends notifications (docs/cluster.md §14.2): its
		// pusher is the one whose queue, counters and kicks the tests
		// read. The tests' recipient is bob.
		rig.mu.Lock()
		rig.pusher = o.Pusher()
		rig.mu.Unlock()
	}
	rig.s.users("alice", "bob", "carol")
	return rig
}

// offlineWithToken registers a token for user's device and disconnects it.
func (r *pushRig) offlineWithToken(t *testing.T, user, token string) {
	d := r.s.connect(user, connectOpts{clientID: user + ":phone"})
	rep, _ := d.request("push/set_token", map[string]any{"Vendor": "apns", "Token": token})
	if rep.str("ActionStatus") != "OK" {
		t.Fatalf("set_token: %v", rep)
	}
	d.close()
	wait.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		if r.s.broker.Devices.Connected(user, user+":phone") {
			return fmt.Errorf("%s still connected", user)
		}
		return nil
	})
}

func (r *pushRig) waitPushes(t *testing.T, n int) []url.Values {
	t.Helper()
	wait.For(t, 10*time.Second, 5*time.Millisecond, func() error {
		if got := len(r.apns.received()); got < n {
			return fmt.Errorf("%d notifications, want %d", got, n)
		}
		if p := r.p().Pending(); p != 0 {
			return fmt.Errorf("%d pushes pending", p)
		}
		return nil
	})
	got := r.apns.received()
	if len(got) != n {
		t.Fatalf("%d notifications, want exactly %d: %v", len(got), n, got)
	}
	return got
}

func TestPushOfflineDeviceGetsOnePerMessage(t *testing.T) {
	rig := startPushServer(t, 20*time.Millisecond, time.Second)
	rig.offlineWithToken(t, "bob", bobToken)
	alice := rig.s.connect("alice", connectOpts{})
	alice.drainToSync()

	// One at a time, so each badge shows the unread count when it was sent.
	alice.send("bob", 1)
	rig.waitPushes(t, 1)
	alice.request("openim/sendmsg", map[string]any{"To_Account": "bob", "MsgRandom": 2,
		"MsgBody":         []any{map[string]any{"MsgType": "TIMImageElem", "MsgContent": map[string]any{"UUID": "u", "ImageInfoArray": []any{map[string]any{"Type": 1, "Width": 1, "Height": 1, "URL": "https://x/y"}}}}},
		"OfflinePushInfo": map[string]any{"Title": "Custom title", "Desc": "custom text", "Ext": `{"a":1}`, "AndroidInfo": map[string]any{"XiaoMiChannelID": "im"}}})
	rig.waitPushes(t, 2)
	alice.send("bob", 3, map[string]any{"MsgType": "TIMLocationElem", "MsgContent": map[string]any{"Desc": "here", "Latitude": 1, "Longitude": 2}},
		map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": " see you"}})

	got := rig.waitPushes(t, 3)
	want := []struct{ title, text, badge, ext string }{
		{"alice", "hello 1", "1", ""},
		{"Custom title", "custom text", "2", `{"a":1}`},
		{"alice", "[Location] see you", "3", ""},
	}
	for i, w := range want {
		g := got[i]
		if g.Get("token") != bobToken || g.Get("title") != w.title || g.Get("body") != w.text ||
			g.Get("badge") != w.badge || g.Get("ext") != w.ext {
			t.Errorf("push %d = %v, want %+v", i, g, w)
		}
	}
	if c := rig.p().Metrics().Vendor("apns"); c.Sent() != 3 || c.Failed() != 0 {
		t.Errorf("metrics sent %d failed %d", c.Sent(), c.Failed())
	}
}

func TestPushSkipped(t *testing.T) {
	rig := startPushServer(t, 20*time.Millisecond, time.Second)
	rig.offlineWithToken(t, "bob", bobToken)
	// carol is online with a token: she reads her messages live.
	carol := rig.s.connect("carol", connectOpts{clientID: "carol:phone"})
	if rep, _ := carol.request("push/set_token", map[string]any{"Vendor": "apns", "Token": carolToken}); rep.str("ActionStatus") != "OK" {
		t.Fatal(rep)
	}
	alice := rig.s.connect("alice", connectOpts{})
	alice.drainToSync()

	alice.send("carol", 1)
	// PushFlag 1, a lone custom element without Desc, an online-only message.
	alice.request("openim/sendmsg", map[string]any{"To_Account": "bob", "MsgRandom": 2, "MsgBody": []any{textElem("quiet")},
		"OfflinePushInfo": map[string]any{"PushFlag": 1}})
	alice.send("bob", 3, map[string]any{"MsgType": "TIMCustomElem", "MsgContent": map[string]any{"Data": "signal"}})
	alice.request("openim/sendmsg", map[string]any{"To_Account": "bob", "MsgRandom": 4, "MsgBody": []any{textElem("live")}, "MsgLifeTime": 0})
	// The marker: pushes are planned in commit order, so when it arrives the
	// others have been decided.
	alice.send("bob", 5, map[string]any{"MsgType": "TIMCustomElem", "MsgContent": map[string]any{"Data": "d", "Desc": "marker"}})

	got := rig.waitPushes(t, 1)
	if got[0].Get("token") != bobToken || got[0].Get("body") != "marker" {
		t.Errorf("got %v", got[0])
	}
}

func textElem(s string) map[string]any {
	return map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": s}}
}

func TestPushCancelledWhenDeviceReturns(t *testing.T) {
	rig := startPushServer(t, 2*time.Second, time.Second)
	rig.offlineWithToken(t, "bob", bobToken)
	alice := rig.s.connect("alice", connectOpts{})
	alice.drainToSync()
	alice.send("bob", 1)
	wait.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		if rig.p().Pending() != 1 {
			return fmt.Errorf("not queued yet")
		}
		return nil
	})
	bob := rig.s.connect("bob", connectOpts{clientID: "bob:phone"})
	if e := bob.nextMsg(); e.str("MsgKey") == "" {
		t.Fatalf("bob got %v", e)
	}
	wait.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		if c := rig.p().Metrics().Vendor("apns").Cancelled(); c != 1 {
			return fmt.Errorf("cancelled %d", c)
		}
		return nil
	})
	if n := len(rig.apns.received()); n != 0 || rig.p().Pending() != 0 {
		t.Errorf("%d sent, %d pending after the device came back", n, rig.p().Pending())
	}
}

func TestPushQueueSurvivesRestart(t *testing.T) {
	// The vendor fails until the server restarts; the restarted server
	// finds the notification in the durable queue and delivers it once.
	rig := startPushServer(t, 10*time.Millisecond, 100*time.Millisecond)
	rig.apns.setStatus(http.StatusServiceUnavailable)
	rig.offlineWithToken(t, "bob", bobToken)
	alice := rig.s.connect("alice", connectOpts{})
	alice.drainToSync()
	alice.send("bob", 1)
	wait.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		if rig.p().Metrics().Vendor("apns").Retried() == 0 {
			return fmt.Errorf("no attempt yet")
		}
		return nil
	})
	alice.close()
	rig.s.stop()
	rig.apns.setStatus(0) // only the restarted server can succeed
	rig.s.start()
	got := rig.waitPushes(t, 1)
	if got[0].Get("body") != "hello 1" {
		t.Errorf("got %v", got[0])
	}
}

func TestPushTokens(t *testing.T) {
	rig := startPushServer(t, 20*time.Millisecond, time.Second)
	st := rig.s.store
	bob := rig.s.connect("bob", connectOpts{clientID: "bob:phone"})
	cases := []struct {
		name string
		body map[string]any
		code int64
		info string
	}{
		{"unknown vendor", map[string]any{"Vendor": "nokia", "Token": "t"}, 90001, "Vendor"},
		{"no vendor", map[string]any{"Token": "t"}, 90001, "Vendor"},
		{"empty token", map[string]any{"Vendor": "fcm", "Token": ""}, 90001, "Token"},
		{"token not a string", map[string]any{"Vendor": "fcm", "Token": 5}, 90001, "Token"},
		{"oversize token", map[string]any{"Vendor": "fcm", "Token": strings.Repeat("a", 513)}, 90001, "513"},
		{"token with a space", map[string]any{"Vendor": "fcm", "Token": "a b"}, 90001, "Token"},
		{"apns token not hex", map[string]any{"Vendor": "apns", "Token": "zz"}, 90001, "hexadecimal"},
		{"bundle id not a string", map[string]any{"Vendor": "apns", "Token": "ab", "BundleID": 1}, 90001, "BundleID"},
		{"someone else's user", map[string]any{"Vendor": "fcm", "Token": "t", "From_Account": "carol"}, 90009, "admin"},
		{"ok", map[string]any{"Vendor": "apns", "Token": "abcd", "BundleID": "com.x"}, 0, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rep, _ := bob.request("push/set_token", c.body)
			if rep.num("ErrorCode") != c.code || !strings.Contains(rep.str("ErrorInfo"), c.info) {
				t.Errorf("got %v", rep)
			}
		})
	}
	toks, _ := st.PushTokens("bob")
	if len(toks) != 1 || toks[0].Token != "abcd" || toks[0].Device != "bob:phone" || toks[0].BundleID != "com.x" {
		t.Fatalf("bob's tokens: %+v", toks)
	}

	// A disconnect keeps the token; carol logging in on the same phone
	// (the same vendor token, her own client id) takes it.
	bob.close()
	wait.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		if toks, _ := st.PushTokens("bob"); len(toks) != 1 {
			return fmt.Errorf("disconnect removed the token: %+v", toks)
		}
		if rig.s.broker.Devices.Connected("bob", "bob:phone") {
			return fmt.Errorf("still connected")
		}
		return nil
	})
	carol := rig.s.connect("carol", connectOpts{clientID: "carol:phone"})
	if rep, _ := carol.request("push/set_token", map[string]any{"Vendor": "apns", "Token": "abcd"}); rep.str("ActionStatus") != "OK" {
		t.Fatal(rep)
	}
	// bob's side of the move is his partition's, a moment later when the
	// two are in different partitions (docs/cluster.md §11.3).
	wait.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		if toks, _ := st.PushTokens("bob"); len(toks) != 0 {
			return fmt.Errorf("token did not move: bob still has %+v", toks)
		}
		return nil
	})
	if toks, _ := st.PushTokens("carol"); len(toks) != 1 {
		t.Errorf("carol's tokens: %+v", toks)
	}
	// Logout (delete_token) and kick remove it.
	if rep, _ := carol.request("push/delete_token", map[string]any{}); rep.str("ActionStatus") != "OK" {
		t.Fatal(rep)
	}
	if toks, _ := st.PushTokens("carol"); len(toks) != 0 {
		t.Errorf("delete_token left %+v", toks)
	}
	carol.request("push/set_token", map[string]any{"Vendor": "fcm", "Token": "f1"})
	kicked := ""
	rig.p().Kicker(kickFunc(func(u string) { kicked = u })).Kick("carol")
	if toks, _ := st.PushTokens("carol"); len(toks) != 0 || kicked != "carol" {
		t.Errorf("kick left %+v (kicked %q)", toks, kicked)
	}
}

type kickFunc func(string)

func (f kickFunc) Kick(u string) { f(u) }

func TestOfflinePushInfoValidation(t *testing.T) {
	s := startServer(t, serverOpts{})
	s.users("alice", "bob")
	alice := s.connect("alice", connectOpts{})
	for _, c := range []struct {
		name string
		opi  any
		info string
	}{
		{"not an object", "x", "not an object"},
		{"Title a number", map[string]any{"Title": 5}, "Title"},
		{"PushFlag a string", map[string]any{"PushFlag": "1"}, "PushFlag"},
		{"PushFlag 7", map[string]any{"PushFlag": 7}, "PushFlag"},
		{"AndroidInfo a string", map[string]any{"AndroidInfo": "x"}, "AndroidInfo"},
		{"VIVOClassification a string", map[string]any{"AndroidInfo": map[string]any{"VIVOClassification": "1"}}, "VIVOClassification"},
		{"ApnsInfo.BadgeMode a float", map[string]any{"ApnsInfo": map[string]any{"BadgeMode": 0.5}}, "BadgeMode"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rep, _ := alice.request("openim/sendmsg", map[string]any{"To_Account": "bob", "MsgRandom": 1, "MsgBody": []any{textElem("x")}, "OfflinePushInfo": c.opi})
			if rep.num("ErrorCode") != 90043 || !strings.Contains(rep.str("ErrorInfo"), c.info) {
				t.Errorf("got %v", rep)
			}
		})
	}
	if last, _ := s.store.LastSeq("bob"); last != 0 {
		t.Errorf("a refused message was stored (bob's last Seq %d)", last)
	}
}
