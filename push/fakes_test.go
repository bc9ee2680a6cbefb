package push

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"
)

// Local vendor servers for the rules of issue 17. Each takes a handler that
// sees the decoded request as the vendor would and answers it; the rules
// themselves are in the tests that use them, each citing its doc.

var (
	keysOnce sync.Once
	testEC   *ecdsa.PrivateKey
	testRSA  *rsa.PrivateKey
)

func testKeys() (*ecdsa.PrivateKey, *rsa.PrivateKey) {
	keysOnce.Do(func() {
		testEC, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		testRSA, _ = rsa.GenerateKey(rand.Reader, 2048)
	})
	return testEC, testRSA
}

// testClock is an injected clock the tests move by hand.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock { return &testClock{t: fixedNow} }

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func writeAnswer(w http.ResponseWriter, a answer) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(a.status)
	io.WriteString(w, a.body)
}

// apnsServer is an HTTP/2 APNs endpoint: handle gets the request and its
// payload.
func apnsServer(t testing.TB, handle func(r *http.Request, payload []byte) answer) *httptest.Server {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		writeAnswer(w, handle(r, b))
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func apnsFake(t testing.TB, now func() time.Time, handle func(r *http.Request, payload []byte) answer) *apns {
	ec, _ := testKeys()
	srv := apnsServer(t, handle)
	a, err := newAPNs(APNsConfig{KeyID: "KEY123", TeamID: "TEAM456", Key: pemPKCS8(t, ec), BundleID: "com.example.app", Endpoint: srv.URL}, srv.Client(), now)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// fcmFake answers the OAuth exchange and hands each send's message to handle.
func fcmFake(t testing.TB, handle func(msg map[string]any) answer) *fcm {
	_, rk := testKeys()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/token":
			io.WriteString(w, `{"access_token":"ya29.test","expires_in":3599,"token_type":"Bearer"}`)
		case "/v1/projects/demo/messages:send":
			m, _ := readJSON(t, r)["message"].(map[string]any)
			writeAnswer(w, handle(m))
		default:
			w.WriteHeader(404)
		}
	}))
	t.Cleanup(srv.Close)
	f, err := newFCM(FCMConfig{ProjectID: "demo", ClientEmail: "push@demo.iam.gserviceaccount.com",
		PrivateKey: pemPKCS8(t, rk), TokenURI: srv.URL + "/token", Endpoint: srv.URL}, srv.Client(), clock)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func huaweiFake(t testing.TB, cfg HuaweiConfig, handle func(msg map[string]any) answer) *huawei {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/oauth2/v3/token":
			io.WriteString(w, `{"access_token":"hw-at","expires_in":3600,"token_type":"Bearer"}`)
		case "/v1/10086/messages:send":
			m, _ := readJSON(t, r)["message"].(map[string]any)
			writeAnswer(w, handle(m))
		default:
			w.WriteHeader(404)
		}
	}))
	t.Cleanup(srv.Close)
	cfg.AppID, cfg.AppSecret, cfg.Endpoint = "10086", "hw-secret", srv.URL
	h, err := newHuawei(cfg, srv.Client(), clock)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func xiaomiFake(t testing.TB, cfg XiaomiConfig, handle func(f url.Values) answer) *xiaomi {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		writeAnswer(w, handle(r.PostForm))
	}))
	t.Cleanup(srv.Close)
	cfg.AppSecret, cfg.PackageName, cfg.Endpoint = "mi-secret", "com.example.app", srv.URL
	x, err := newXiaomi(cfg, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// oppoFake hands handle the decoded `message` of each unicast.
func oppoFake(t testing.TB, cfg OPPOConfig, handle func(msg map[string]any) answer) *oppo {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		switch r.URL.Path {
		case "/server/v1/auth":
			io.WriteString(w, `{"code":0,"message":"Success","data":{"auth_token":"op-at"}}`)
		case "/server/v1/message/notification/unicast":
			var m map[string]any
			if err := json.Unmarshal([]byte(r.PostForm.Get("message")), &m); err != nil {
				writeAnswer(w, answer{200, `{"code":14,"message":"Invalid Param: message"}`})
				return
			}
			writeAnswer(w, handle(m))
		default:
			w.WriteHeader(404)
		}
	}))
	t.Cleanup(srv.Close)
	cfg.AppKey, cfg.MasterSecret, cfg.Endpoint = "op-key", "op-master", srv.URL
	o, err := newOPPO(cfg, srv.Client(), clock)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// vivoFake issues auth tokens (counting them) and hands each send to handle.
func vivoFake(t testing.TB, cfg VIVOConfig, now func() time.Time, handle func(body map[string]any) answer) (*vivo, func() int) {
	var mu sync.Mutex
	auths := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := readJSON(t, r)
		switch r.URL.Path {
		case "/message/auth":
			mu.Lock()
			auths++
			mu.Unlock()
			io.WriteString(w, `{"result":0,"desc":"请求成功","authToken":"vv-at"}`)
		case "/message/send":
			writeAnswer(w, handle(b))
		default:
			w.WriteHeader(404)
		}
	}))
	t.Cleanup(srv.Close)
	cfg.AppID, cfg.AppKey, cfg.AppSecret, cfg.Endpoint = "10004", "vv-key", "vv-secret", srv.URL
	v, err := newVIVO(cfg, srv.Client(), now)
	if err != nil {
		t.Fatal(err)
	}
	return v, func() int { mu.Lock(); defer mu.Unlock(); return auths }
}

// meizuFake hands handle the decoded messageJson and the push id.
func meizuFake(t testing.TB, cfg MeizuConfig, handle func(msg map[string]any, pushID string) answer) *meizu {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		var m map[string]any
		json.Unmarshal([]byte(r.PostForm.Get("messageJson")), &m)
		writeAnswer(w, handle(m, r.PostForm.Get("pushIds")))
	}))
	t.Cleanup(srv.Close)
	cfg.AppID, cfg.AppSecret, cfg.Endpoint = "110000", "mz-secret", srv.URL
	m, err := newMeizu(cfg, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	return m
}
