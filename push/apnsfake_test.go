package push

import (
	"crypto/ecdsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// APNsFake is the local APNs endpoint of fakes_test.go (apnsServer) for
// the tests of package push_test, which assemble whole servers and cannot
// be in package push (internal/server imports it). Each request is checked
// as Apple documents it — "Sending notification requests to APNs": POST
// /3/device/{token} over HTTP/2, `authorization: bearer` + a provider token
// (ES256 JWT, header kid, claims iss and iat: "Establishing a token-based
// connection to APNs") that verifies with the configured key, `apns-topic`
// the bundle id, `apns-push-type: alert` with `apns-priority: 10`, a JSON
// payload with aps.alert, or a background update ("Pushing background
// updates to your App": `background`, priority 5, aps.content-available
// only) — and answered 200 (recorded) or, for a token in
// Dead, 410 Unregistered ("Handling notification responses from APNs").
type APNsFake struct {
	srv *httptest.Server
	key *ecdsa.PrivateKey
	pem string
	// Arrived counts requests as they arrive, answered or not.
	Arrived atomic.Int64

	mu   sync.Mutex
	got  []APNsPush
	dead map[string]bool
	hold chan struct{} // non-nil: requests wait for it to close (or their client to give up)
}

// APNsPush is one notification APNsFake accepted.
type APNsPush struct {
	Token, Title, Body string
	// Background: a background update (a recall's), taking back the
	// notification of message Withdraw.
	Background bool
	Withdraw   string
}

// NewAPNsFake starts a local APNs endpoint for the test.
func NewAPNsFake(t testing.TB) *APNsFake {
	ec, _ := testKeys()
	f := &APNsFake{key: ec, pem: pemPKCS8(t, ec), dead: map[string]bool{}}
	f.srv = apnsServer(t, func(r *http.Request, payload []byte) answer {
		f.Arrived.Add(1)
		f.mu.Lock()
		hold := f.hold
		f.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				return answer{503, `{"reason":"ServiceUnavailable"}`} // the client gave up: not delivered
			}
		}
		if r.ProtoMajor != 2 || r.Method != http.MethodPost {
			t.Errorf("APNs: %s %s, want POST over HTTP/2", r.Method, r.Proto)
		}
		token, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
		if !ok || token == "" {
			t.Errorf("APNs: path %q, want /3/device/{token}", r.URL.Path)
		}
		if claims := checkAPNsAuth(t, r, ec); claims != nil {
			if _, ok := claims["iat"].(float64); !ok {
				t.Errorf("APNs: provider token without iat: %v", claims)
			}
		}
		expect(t, "apns-topic", r.Header.Get("apns-topic"), "com.example.im")
		var p map[string]any
		if err := json.Unmarshal(payload, &p); err != nil {
			t.Errorf("APNs: payload is not JSON: %q", payload)
		}
		push := APNsPush{Token: token}
		if r.Header.Get("apns-push-type") == "background" {
			// "Pushing background updates to your App": push type
			// background, priority 5, aps.content-available 1 and no
			// alert, sound or badge.
			expect(t, "apns-priority", r.Header.Get("apns-priority"), "5")
			if dig(p, "aps", "content-available") != float64(1) || dig(p, "aps", "alert") != nil || dig(p, "aps", "sound") != nil || dig(p, "aps", "badge") != nil {
				t.Errorf("APNs: background payload %s, want aps.content-available 1 and nothing shown", payload)
			}
			push.Background = true
			push.Withdraw, _ = p["withdraw"].(string)
		} else {
			expect(t, "apns-push-type", r.Header.Get("apns-push-type"), "alert")
			expect(t, "apns-priority", r.Header.Get("apns-priority"), "10")
			push.Title, _ = dig(p, "aps", "alert", "title").(string)
			push.Body, _ = dig(p, "aps", "alert", "body").(string)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.dead[token] {
			return answer{410, `{"reason":"Unregistered","timestamp":1764230000000}`}
		}
		f.got = append(f.got, push)
		return answer{200, ``}
	})
	return f
}

// Config is the `push: apns:` section that sends here.
func (f *APNsFake) Config() *APNsConfig {
	return &APNsConfig{KeyID: "KEY123", TeamID: "TEAM456", Key: f.pem, BundleID: "com.example.im", Endpoint: f.srv.URL}
}

// Client trusts the endpoint's certificate (server.Config.PushHTTPClient).
func (f *APNsFake) Client() *http.Client { return f.srv.Client() }

// Received lists the notifications accepted so far, in order.
func (f *APNsFake) Received() []APNsPush {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]APNsPush(nil), f.got...)
}

// Dead makes token answer 410 Unregistered from now on.
func (f *APNsFake) Dead(token string) {
	f.mu.Lock()
	f.dead[token] = true
	f.mu.Unlock()
}

// Hold makes requests wait, unanswered, until Release (or until their
// client gives up, which delivers nothing): a push in flight.
func (f *APNsFake) Hold() {
	f.mu.Lock()
	f.hold = make(chan struct{})
	f.mu.Unlock()
}

// Release answers the requests waiting since Hold, and the next ones at once.
func (f *APNsFake) Release() {
	f.mu.Lock()
	if f.hold != nil {
		close(f.hold)
		f.hold = nil
	}
	f.mu.Unlock()
}
