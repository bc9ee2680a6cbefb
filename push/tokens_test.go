package push

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/logcapture"
	"github.com/duet-im/duet/internal/wait"
	"github.com/duet-im/duet/store"
)

// apnsRig is a Pusher with APNs (answering per token, as a local HTTP/2
// server) and Xiaomi, over a real store.
type apnsRig struct {
	*rig
	log  *logcapture.Buffer
	mu   sync.Mutex
	hits map[string]int // APNs requests per device token
}

func newAPNsRig(t *testing.T, answers map[string]answer) *apnsRig {
	r := &apnsRig{log: &logcapture.Buffer{}, hits: map[string]int{}}
	srv := apnsServer(t, func(req *http.Request, _ []byte) answer {
		tok := strings.TrimPrefix(req.URL.Path, "/3/device/")
		r.mu.Lock()
		r.hits[tok]++
		r.mu.Unlock()
		if a, ok := answers[tok]; ok {
			return a
		}
		return answer{200, ``}
	})
	mi := newFakeMi(t)
	st, err := store.Open(t.TempDir(), store.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ec, _ := testKeys()
	p, err := New(Options{Store: st, HTTPClient: srv.Client(), Log: slog.New(slog.NewTextHandler(r.log, nil)),
		Config: Config{Grace: time.Millisecond, RetryBase: time.Millisecond,
			APNs:   &APNsConfig{KeyID: "K", TeamID: "T", Key: pemPKCS8(t, ec), BundleID: "com.example.app", Endpoint: srv.URL},
			Xiaomi: &XiaomiConfig{AppSecret: "s", PackageName: "p", ChannelID: "c", Endpoint: mi.URL}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(); st.Close() })
	r.rig = &rig{st: st, p: p, mi: mi}
	return r
}

func (r *apnsRig) requests(tok string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hits[tok]
}

// TestAPNsConfigErrorsKeepTokens: Apple, "Handling notification responses
// from APNs": 400 BadDeviceToken is also a token of the other environment
// (sandbox vs production), 400 DeviceTokenNotForTopic a token of another
// bundle id; only 410 Unregistered is a dead token. A misconfigured
// `production` or `bundle_id` must not delete every iOS token: the tokens
// stay, the error is logged once and counted, and the vendor stops.
func TestAPNsConfigErrorsKeepTokens(t *testing.T) {
	hex := func(c string) string { return strings.Repeat(c, 64) }
	r := newAPNsRig(t, map[string]answer{
		hex("1"): {400, `{"reason":"BadDeviceToken"}`},
		hex("2"): {400, `{"reason":"DeviceTokenNotForTopic"}`},
		hex("3"): {400, `{"reason":"BadDeviceToken"}`},
		hex("5"): {410, `{"reason":"Unregistered","timestamp":1764230000000}`},
	})
	m := r.p.Metrics().Vendor("apns")
	users := []string{"u1", "u2", "u3"}
	for i, u := range users {
		tok := hex(string(rune('1' + i)))
		if err := r.st.SetPushToken(store.PushToken{User: u, Device: u + ":phone", Vendor: "apns", Token: tok}); err != nil {
			t.Fatal(err)
		}
		r.message(t, u, "k"+u, "hello")
		wait.Until(t, 10*time.Second, u+"'s push settled", func() bool { return m.Failed() == int64(i+1) && r.p.Pending() == 0 })
		if toks, _ := r.st.PushTokens(u); len(toks) != 1 {
			t.Errorf("%s's token was deleted on a configuration error", u)
		}
		expect(t, "config errors", m.ConfigErrors(), i+1)
		expect(t, "stopped", m.Stopped(), i == len(users)-1)
	}
	if m.TokensRemoved() != 0 {
		t.Errorf("%d tokens removed", m.TokensRemoved())
	}
	if n := strings.Count(r.log.String(), "push configuration error"); n != 1 {
		t.Errorf("configuration error logged %d times, want once:\n%s", n, r.log.String())
	}
	if !strings.Contains(r.log.String(), "stopped until the config is fixed") {
		t.Errorf("no log says the vendor stopped:\n%s", r.log.String())
	}
	// Stopped: nothing more goes to APNs, while other vendors go on.
	r.st.SetPushToken(store.PushToken{User: "u4", Device: "u4:phone", Vendor: "apns", Token: hex("4")})
	r.st.SetPushToken(store.PushToken{User: "u4", Device: "u4:android", Vendor: "xiaomi", Token: "rid"})
	r.message(t, "u4", "k4", "hello")
	wait.Until(t, 10*time.Second, "the xiaomi push", func() bool { return len(r.mi.sent()) == 1 && r.p.Pending() == 0 })
	expect(t, "APNs requests for u4", r.requests(hex("4")), 0)

	t.Run("410 Unregistered deletes", func(t *testing.T) {
		r := newAPNsRig(t, map[string]answer{hex("5"): {410, `{"reason":"Unregistered","timestamp":1764230000000}`}})
		r.st.SetPushToken(store.PushToken{User: "u5", Device: "u5:phone", Vendor: "apns", Token: hex("5")})
		r.message(t, "u5", "k5", "hello")
		m := r.p.Metrics().Vendor("apns")
		wait.Until(t, 10*time.Second, "token removed", func() bool { return m.TokensRemoved() == 1 })
		if toks, _ := r.st.PushTokens("u5"); len(toks) != 0 {
			t.Errorf("dead token kept: %+v", toks)
		}
	})
	t.Run("one misconfigured device does not stop the vendor", func(t *testing.T) {
		r := newAPNsRig(t, map[string]answer{hex("1"): {400, `{"reason":"BadDeviceToken"}`}})
		for i, u := range []string{"a", "b", "a", "c", "a", "d"} {
			tok := hex("6")
			if u == "a" {
				tok = hex("1") // a developer's sandbox build on the production server
			}
			r.st.SetPushToken(store.PushToken{User: u, Device: u + ":phone", Vendor: "apns", Token: tok})
			r.message(t, u, "k"+string(rune('0'+i)), "hello")
			m := r.p.Metrics().Vendor("apns")
			wait.Until(t, 10*time.Second, "settled", func() bool { return m.Sent()+m.Failed() == int64(i+1) && r.p.Pending() == 0 })
		}
		if m := r.p.Metrics().Vendor("apns"); m.Stopped() || m.Sent() != 3 {
			t.Errorf("stopped %v, sent %d", m.Stopped(), m.Sent())
		}
	})
}
