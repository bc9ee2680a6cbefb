package push

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/md5"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Each vendor client is run against a local server that checks the request
// as the vendor documents it and answers, in turn: success, invalid token,
// rate limited, server error.

var fixedNow = time.Unix(1764230400, 0)

func clock() time.Time { return fixedNow }

func pemPKCS8(t testing.TB, k any) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// verifyJWT checks a compact JWS and returns its header and claims.
func verifyJWT(t testing.TB, tok string, verify func(input, sig []byte) bool) (hdr, claims map[string]any) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("JWT has %d parts", len(parts))
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil {
		t.Fatalf("JWT signature: %v", err)
	}
	if !verify([]byte(parts[0]+"."+parts[1]), sig) {
		t.Fatalf("JWT signature does not verify")
	}
	for i, dst := range []*map[string]any{&hdr, &claims} {
		raw, err := b64.DecodeString(parts[i])
		if err != nil || json.Unmarshal(raw, dst) != nil {
			t.Fatalf("JWT part %d undecodable", i)
		}
	}
	return hdr, claims
}

func readJSON(t testing.TB, r *http.Request) map[string]any {
	t.Helper()
	var m map[string]any
	b, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(b, &m); err != nil {
		t.Errorf("%s: body is not JSON: %q", r.URL.Path, b)
	}
	return m
}

// dig walks a decoded JSON value by keys.
func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, _ := v.(map[string]any)
		v = m[k]
	}
	return v
}

func expect(t testing.TB, what string, got, want any) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

type answer struct {
	status int
	body   string
}

// sequence answers the i-th send with answers[i].
type sequence struct {
	mu      sync.Mutex
	i       int
	answers []answer
}

func (s *sequence) next(w http.ResponseWriter) {
	s.mu.Lock()
	a := s.answers[s.i%len(s.answers)]
	s.i++
	s.mu.Unlock()
	if a.status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "7")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(a.status)
	io.WriteString(w, a.body)
}

var inTurn = []string{"success", "invalid token", "rate limited", "server error"}

// runTurns sends four notifications and checks the outcome of each.
func runTurns(t *testing.T, v vendor, n *Notification) {
	t.Helper()
	want := []error{nil, failf(invalidToken, ""), failf(retry, ""), failf(retry, "")}
	for i, w := range want {
		err := v.send(context.Background(), n)
		switch {
		case w == nil && err != nil:
			t.Errorf("%s: %s: got %v", v.name(), inTurn[i], err)
		case w != nil && err == nil:
			t.Errorf("%s: %s: got success", v.name(), inTurn[i])
		case w != nil && classify(err).kind != w.(*sendError).kind:
			t.Errorf("%s: %s: got kind %d (%v), want %d", v.name(), inTurn[i], classify(err).kind, err, w.(*sendError).kind)
		}
		if i == 2 && err != nil && classify(err).retryAfter != 7*time.Second {
			t.Errorf("%s: Retry-After not honoured: %v", v.name(), classify(err).retryAfter)
		}
	}
}

func sampleNote(vendor, token string) *Notification {
	five := 0
	return &Notification{
		User: "bob", Device: "bob:phone", Vendor: vendor, Token: token, MsgKey: "1_2_3", From: "alice",
		Title: "Alice", Body: "hello bob", Badge: 3, Ext: `{"k":"v"}`,
		Android: AndroidInfo{Sound: "ding.mp3", HuaWeiChannelID: "hw-ch", HuaWeiCategory: "IM", HuaWeiImportance: "NORMAL", XiaoMiChannelID: "mi-ch", OPPOChannelID: "op-ch",
			GoogleChannelID: "g-ch", VIVOClassification: &five},
		APNs: ApnsInfo{Sound: "bell.caf", SubTitle: "sub"},
	}
}

// checkAPNsAuth checks the provider token of an APNs request (Apple,
// "Establishing a token-based connection to APNs"): `authorization: bearer`
// and an ES256 JWT signed with key, header kid KEY123, claim iss TEAM456.
// It returns the claims.
func checkAPNsAuth(t testing.TB, r *http.Request, key *ecdsa.PrivateKey) map[string]any {
	t.Helper()
	auth, ok := strings.CutPrefix(r.Header.Get("authorization"), "bearer ")
	if !ok {
		t.Errorf("authorization = %q", r.Header.Get("authorization"))
		return nil
	}
	hdr, claims := verifyJWT(t, auth, func(in, sig []byte) bool {
		sum := sha256.Sum256(in)
		return len(sig) == 64 && ecdsa.Verify(&key.PublicKey, sum[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
	})
	expect(t, "alg", hdr["alg"], "ES256")
	expect(t, "kid", hdr["kid"], "KEY123")
	expect(t, "iss", claims["iss"], "TEAM456")
	return claims
}

func TestAPNs(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	token := strings.Repeat("ab", 32)
	seq := &sequence{answers: []answer{
		{200, ``}, {410, `{"reason":"Unregistered","timestamp":1764230000000}`},
		{429, `{"reason":"TooManyRequests"}`}, {503, `{"reason":"ServiceUnavailable"}`},
	}}
	var silent bool
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			t.Errorf("APNs needs HTTP/2, got %s", r.Proto)
		}
		expect(t, "method", r.Method, "POST")
		expect(t, "path", r.URL.Path, "/3/device/"+token)
		claims := checkAPNsAuth(t, r, key)
		expect(t, "iat", claims["iat"], float64(fixedNow.Unix()))
		expect(t, "apns-topic", r.Header.Get("apns-topic"), "com.example.app")
		body := readJSON(t, r)
		if silent {
			expect(t, "apns-push-type", r.Header.Get("apns-push-type"), "background")
			expect(t, "apns-priority", r.Header.Get("apns-priority"), "5")
			expect(t, "content-available", dig(body, "aps", "content-available"), 1)
			if dig(body, "aps", "alert") != nil {
				t.Errorf("a background push has an alert: %v", body)
			}
		} else {
			expect(t, "apns-push-type", r.Header.Get("apns-push-type"), "alert")
			expect(t, "apns-priority", r.Header.Get("apns-priority"), "10")
			expect(t, "alert.title", dig(body, "aps", "alert", "title"), "Alice")
			expect(t, "alert.subtitle", dig(body, "aps", "alert", "subtitle"), "sub")
			expect(t, "alert.body", dig(body, "aps", "alert", "body"), "hello bob")
			expect(t, "badge", dig(body, "aps", "badge"), 3)
			expect(t, "sound", dig(body, "aps", "sound"), "bell.caf")
			expect(t, "ext", body["ext"], `{"k":"v"}`)
		}
		seq.next(w)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	a, err := newAPNs(APNsConfig{KeyID: "KEY123", TeamID: "TEAM456", Key: pemPKCS8(t, key), BundleID: "com.example.app", Endpoint: srv.URL}, srv.Client(), clock)
	if err != nil {
		t.Fatal(err)
	}
	runTurns(t, a, sampleNote("apns", token))

	silent = true
	seq.i = 0
	n := sampleNote("apns", token)
	n.Silent = true
	if err := a.send(context.Background(), n); err != nil {
		t.Errorf("background push: %v", err)
	}

	t.Run("sandbox and production", func(t *testing.T) {
		for _, prod := range []bool{false, true} {
			a, _ := newAPNs(APNsConfig{KeyID: "K", TeamID: "T", Key: pemPKCS8(t, key), Production: prod}, nil, clock)
			want := map[bool]string{false: apnsSandbox, true: apnsProduction}[prod]
			expect(t, "base", a.base, want)
		}
	})
	t.Run("TLS error is retried", func(t *testing.T) {
		// A client that does not trust the server's certificate.
		a, _ := newAPNs(APNsConfig{KeyID: "K", TeamID: "T", Key: pemPKCS8(t, key), BundleID: "x", Endpoint: srv.URL}, nil, clock)
		err := a.send(context.Background(), sampleNote("apns", token))
		if se := classify(err); err == nil || se.kind != retry || !strings.Contains(se.msg, "TLS") {
			t.Errorf("got %v", err)
		}
	})
}

func TestFCM(t *testing.T) {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	var tokenCalls int
	var mu sync.Mutex
	seq := &sequence{answers: []answer{
		{200, `{"name":"projects/demo/messages/1"}`},
		{404, `{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}`},
		{429, `{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"QUOTA_EXCEEDED"}]}}`},
		{500, `{"error":{"code":500,"status":"INTERNAL"}}`},
	}}
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/token":
			mu.Lock()
			tokenCalls++
			mu.Unlock()
			expect(t, "content-type", r.Header.Get("Content-Type"), "application/x-www-form-urlencoded")
			r.ParseForm()
			expect(t, "grant_type", r.PostForm.Get("grant_type"), "urn:ietf:params:oauth:grant-type:jwt-bearer")
			hdr, claims := verifyJWT(t, r.PostForm.Get("assertion"), func(in, sig []byte) bool {
				sum := sha256.Sum256(in)
				return rsa.VerifyPKCS1v15(&key.PublicKey, crypto.SHA256, sum[:], sig) == nil
			})
			expect(t, "alg", hdr["alg"], "RS256")
			expect(t, "kid", hdr["kid"], "kid-1")
			expect(t, "iss", claims["iss"], "push@demo.iam.gserviceaccount.com")
			expect(t, "scope", claims["scope"], "https://www.googleapis.com/auth/firebase.messaging")
			expect(t, "aud", claims["aud"], srv.URL+"/token")
			expect(t, "exp-iat", claims["exp"].(float64)-claims["iat"].(float64), 3600)
			io.WriteString(w, `{"access_token":"ya29.test","expires_in":3599,"token_type":"Bearer"}`)
		case "/v1/projects/demo/messages:send":
			expect(t, "authorization", r.Header.Get("Authorization"), "Bearer ya29.test")
			m := readJSON(t, r)["message"]
			expect(t, "token", dig(m, "token"), "fcm-token")
			expect(t, "title", dig(m, "notification", "title"), "Alice")
			expect(t, "body", dig(m, "notification", "body"), "hello bob")
			expect(t, "channel_id", dig(m, "android", "notification", "channel_id"), "g-ch")
			expect(t, "notification_count", dig(m, "android", "notification", "notification_count"), 3)
			expect(t, "data.ext", dig(m, "data", "ext"), `{"k":"v"}`)
			expect(t, "data.sender", dig(m, "data", "sender"), "alice")
			if dig(m, "data", "from") != nil {
				t.Errorf("data uses the reserved key from")
			}
			seq.next(w)
		default:
			t.Errorf("unexpected path %s", r.URL.Path)
			w.WriteHeader(404)
		}
	}))
	defer srv.Close()
	f, err := newFCM(FCMConfig{ProjectID: "demo", ClientEmail: "push@demo.iam.gserviceaccount.com", PrivateKeyID: "kid-1",
		PrivateKey: pemPKCS8(t, key), TokenURI: srv.URL + "/token", Endpoint: srv.URL}, srv.Client(), clock)
	if err != nil {
		t.Fatal(err)
	}
	runTurns(t, f, sampleNote("fcm", "fcm-token"))
	if tokenCalls != 1 {
		t.Errorf("OAuth token fetched %d times for 4 sends; want 1 (cached until expiry)", tokenCalls)
	}
}

func TestHuawei(t *testing.T) {
	var tokenCalls int
	seq := &sequence{answers: []answer{
		{200, `{"code":"80000000","msg":"Success","requestId":"1"}`},
		{200, `{"code":"80300007","msg":"All the tokens are invalid","requestId":"2"}`},
		{503, `{"code":"80000000"}`}, // flow control
		{500, `{"code":"81000001","msg":"Internal error"}`},
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/oauth2/v3/token":
			tokenCalls++
			r.ParseForm()
			expect(t, "grant_type", r.PostForm.Get("grant_type"), "client_credentials")
			expect(t, "client_id", r.PostForm.Get("client_id"), "10086")
			expect(t, "client_secret", r.PostForm.Get("client_secret"), "hw-secret")
			io.WriteString(w, `{"access_token":"hw-at","expires_in":3600,"token_type":"Bearer"}`)
		case "/v1/10086/messages:send":
			expect(t, "authorization", r.Header.Get("Authorization"), "Bearer hw-at")
			b := readJSON(t, r)
			m := b["message"]
			expect(t, "token", dig(m, "token"), "[hw-token]")
			expect(t, "title", dig(m, "android", "notification", "title"), "Alice")
			expect(t, "body", dig(m, "android", "notification", "body"), "hello bob")
			expect(t, "channel_id", dig(m, "android", "notification", "channel_id"), "hw-ch")
			expect(t, "category", dig(m, "android", "category"), "IM")
			expect(t, "importance", dig(m, "android", "notification", "importance"), "NORMAL")
			// No click_action configured: a tap opens the app, Ext in data.
			expect(t, "click_action.type", dig(m, "android", "notification", "click_action", "type"), 3)
			var data map[string]string
			json.Unmarshal([]byte(dig(m, "data").(string)), &data)
			expect(t, "data.ext", data["ext"], `{"k":"v"}`)
			expect(t, "badge", dig(m, "android", "notification", "badge"), "map[class:com.example.Main set_num:3]")
			seq.next(w)
		default:
			t.Errorf("unexpected path %s", r.URL.Path)
		}
	}))
	defer srv.Close()
	h, err := newHuawei(HuaweiConfig{AppID: "10086", AppSecret: "hw-secret", BadgeClass: "com.example.Main", Endpoint: srv.URL}, srv.Client(), clock)
	if err != nil {
		t.Fatal(err)
	}
	runTurnsNoRetryAfter(t, h, sampleNote("huawei", "hw-token"))
	expect(t, "token fetches", tokenCalls, 1)
}

func TestXiaomi(t *testing.T) {
	seq := &sequence{answers: []answer{
		{200, `{"result":"ok","trace_id":"t","code":0,"data":{"id":"m1"},"description":"成功"}`},
		{200, `{"result":"error","code":20301,"reason":"No valid targets!","description":"发送消息失败"}`},
		{429, `{"result":"error","code":429}`},
		{500, `<html>gateway</html>`},
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		expect(t, "path", r.URL.Path, "/v3/message/regid")
		expect(t, "authorization", r.Header.Get("Authorization"), "key=mi-secret")
		r.ParseForm()
		f := r.PostForm
		expect(t, "registration_id", f.Get("registration_id"), "mi-regid")
		expect(t, "restricted_package_name", f.Get("restricted_package_name"), "com.example.app")
		expect(t, "title", f.Get("title"), "Alice")
		expect(t, "description", f.Get("description"), "hello bob")
		expect(t, "pass_through", f.Get("pass_through"), "0")
		expect(t, "extra.channel_id", f.Get("extra.channel_id"), "mi-ch")
		expect(t, "payload", f.Get("payload"), `{"k":"v"}`)
		seq.next(w)
	}))
	defer srv.Close()
	x, err := newXiaomi(XiaomiConfig{AppSecret: "mi-secret", PackageName: "com.example.app", Endpoint: srv.URL}, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	runTurns(t, x, sampleNote("xiaomi", "mi-regid"))

	t.Run("bad_regids on success", func(t *testing.T) {
		seq.answers = []answer{{200, `{"result":"ok","code":0,"data":{"id":"m","bad_regids":"mi-regid"}}`}}
		err := x.send(context.Background(), sampleNote("xiaomi", "mi-regid"))
		if classify(err).kind != invalidToken || err == nil {
			t.Errorf("got %v", err)
		}
	})
}

func TestOPPO(t *testing.T) {
	seq := &sequence{answers: []answer{
		{200, `{"code":0,"message":"Success","data":{"messageId":"m1"}}`},
		{200, `{"code":10000,"message":"Invalid RegistrationId"}`},
		{200, `{"code":-2,"message":"Service in Flow Control"}`},
		{500, `{"code":-1}`},
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		f := r.PostForm
		switch r.URL.Path {
		case "/server/v1/auth":
			ts := f.Get("timestamp")
			expect(t, "app_key", f.Get("app_key"), "op-key")
			expect(t, "timestamp", ts, strconv.FormatInt(fixedNow.UnixMilli(), 10))
			sum := sha256.Sum256([]byte("op-key" + ts + "op-master"))
			expect(t, "sign", f.Get("sign"), hex.EncodeToString(sum[:]))
			io.WriteString(w, `{"code":0,"message":"Success","data":{"auth_token":"op-at","create_time":1}}`)
		case "/server/v1/message/notification/unicast":
			expect(t, "auth_token", f.Get("auth_token"), "op-at")
			var m map[string]any
			if err := json.Unmarshal([]byte(f.Get("message")), &m); err != nil {
				t.Errorf("message is not JSON: %q", f.Get("message"))
			}
			expect(t, "target_type", m["target_type"], 2)
			expect(t, "target_value", m["target_value"], "op-regid")
			expect(t, "title", dig(m, "notification", "title"), "Alice")
			expect(t, "content", dig(m, "notification", "content"), "hello bob")
			expect(t, "channel_id", dig(m, "notification", "channel_id"), "op-ch")
			seq.next(w)
		default:
			t.Errorf("unexpected path %s", r.URL.Path)
		}
	}))
	defer srv.Close()
	o, err := newOPPO(OPPOConfig{AppKey: "op-key", MasterSecret: "op-master", Endpoint: srv.URL}, srv.Client(), clock)
	if err != nil {
		t.Fatal(err)
	}
	runTurnsNoRetryAfter(t, o, sampleNote("oppo", "op-regid"))
}

// runTurnsNoRetryAfter is runTurns for vendors that signal rate limits in
// the body (no Retry-After header to honour).
func runTurnsNoRetryAfter(t *testing.T, v vendor, n *Notification) {
	t.Helper()
	kinds := []failKind{-1, invalidToken, retry, retry}
	for i, k := range kinds {
		err := v.send(context.Background(), n)
		if k == -1 {
			if err != nil {
				t.Errorf("%s: %s: %v", v.name(), inTurn[i], err)
			}
			continue
		}
		if err == nil || classify(err).kind != k {
			t.Errorf("%s: %s: got %v", v.name(), inTurn[i], err)
		}
	}
}

func TestVIVO(t *testing.T) {
	seq := &sequence{answers: []answer{
		{200, `{"result":0,"desc":"请求成功","taskId":"1"}`},
		{200, `{"result":10302,"desc":"regId不合法","invalidUser":{"status":1,"userid":"vv-regid"}}`},
		{429, `{"result":10070}`},
		{500, `Internet server error!`},
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := readJSON(t, r)
		switch r.URL.Path {
		case "/message/auth":
			expect(t, "appId", b["appId"], 10004)
			expect(t, "appKey", b["appKey"], "vv-key")
			expect(t, "timestamp", int64(b["timestamp"].(float64)), fixedNow.UnixMilli())
			sum := md5.Sum([]byte("10004vv-key" + strconv.FormatInt(fixedNow.UnixMilli(), 10) + "vv-secret"))
			expect(t, "sign", b["sign"], hex.EncodeToString(sum[:]))
			io.WriteString(w, `{"result":0,"desc":"请求成功","authToken":"vv-at"}`)
		case "/message/send":
			expect(t, "authToken", r.Header.Get("authToken"), "vv-at")
			expect(t, "appId", b["appId"], 10004)
			expect(t, "regId", b["regId"], "vv-regid")
			expect(t, "title", b["title"], "Alice")
			expect(t, "content", b["content"], "hello bob")
			expect(t, "classification", b["classification"], 0)
			expect(t, "skipType", b["skipType"], 1)
			expect(t, "notifyType", b["notifyType"], 4)
			if s, _ := b["requestId"].(string); s == "" || len(s) > 64 {
				t.Errorf("requestId %q: want 1–64 characters", s)
			}
			seq.next(w)
		default:
			t.Errorf("unexpected path %s", r.URL.Path)
		}
	}))
	defer srv.Close()
	v, err := newVIVO(VIVOConfig{AppID: "10004", AppKey: "vv-key", AppSecret: "vv-secret", Endpoint: srv.URL}, srv.Client(), clock)
	if err != nil {
		t.Fatal(err)
	}
	n := sampleNote("vivo", "vv-regid")
	runTurns(t, v, n)
}

func TestMeizu(t *testing.T) {
	seq := &sequence{answers: []answer{
		{200, `{"code":"200","message":"","value":{},"msgId":"m1"}`},
		{200, `{"code":"200","message":"","value":{"110003":["mz-pushid"]},"msgId":"m2"}`},
		{429, `{"code":"110010","message":"应用请求频率超过限制","value":"","redirect":""}`},
		{500, `{"code":"1001","message":"系统错误"}`},
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		expect(t, "path", r.URL.Path, "/garcia/api/server/push/varnished/pushByPushId")
		r.ParseForm()
		f := r.PostForm
		expect(t, "appId", f.Get("appId"), "110000")
		expect(t, "pushIds", f.Get("pushIds"), "mz-pushid")
		// sign: MD5 of the other parameters as key=value sorted by key, then the secret.
		var keys []string
		for k := range f {
			if k != "sign" {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		var base strings.Builder
		for _, k := range keys {
			base.WriteString(k + "=" + f.Get(k))
		}
		sum := md5.Sum([]byte(base.String() + "mz-secret"))
		expect(t, "sign", f.Get("sign"), hex.EncodeToString(sum[:]))
		var m map[string]any
		if err := json.Unmarshal([]byte(f.Get("messageJson")), &m); err != nil {
			t.Errorf("messageJson is not JSON")
		}
		expect(t, "title", dig(m, "noticeBarInfo", "title"), "Alice")
		expect(t, "content", dig(m, "noticeBarInfo", "content"), "hello bob")
		seq.next(w)
	}))
	defer srv.Close()
	m, err := newMeizu(MeizuConfig{AppID: "110000", AppSecret: "mz-secret", Endpoint: srv.URL}, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	runTurns(t, m, sampleNote("meizu", "mz-pushid"))
}

func TestMeizuSignExample(t *testing.T) {
	// The worked example of Flyme's "PUSH HTTP API" signing section.
	got := meizuSign(map[string]string{
		"appId":       "10000",
		"pushIds":     "RA50c6348036344485d01776773577c64740465480a6b",
		"messageJson": `{"title": "title","content": "content","pushTimeInfo": {"offLine": 1,"validTime": 24}}`,
	}, "<APP_SECRET>")
	base := "appId=10000messageJson={\"title\": \"title\",\"content\": \"content\",\"pushTimeInfo\": {\"offLine\": 1,\"validTime\": 24}}pushIds=RA50c6348036344485d01776773577c64740465480a6b<APP_SECRET>"
	sum := md5.Sum([]byte(base))
	expect(t, "sign", got, hex.EncodeToString(sum[:]))
}

func TestNotJSONAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<html>captive portal</html>")
	}))
	defer srv.Close()
	x, _ := newXiaomi(XiaomiConfig{AppSecret: "s", PackageName: "p", Endpoint: srv.URL}, srv.Client())
	m, _ := newMeizu(MeizuConfig{AppID: "1", AppSecret: "s", Endpoint: srv.URL}, srv.Client())
	v, _ := newVIVO(VIVOConfig{AppID: "1", AppKey: "k", AppSecret: "s", Endpoint: srv.URL}, srv.Client(), clock)
	for _, vd := range []vendor{x, m, v} {
		err := vd.send(context.Background(), sampleNote(vd.name(), "tok"))
		if se := classify(err); err == nil || se.kind != retry || !strings.Contains(se.msg, "not JSON") {
			t.Errorf("%s: got %v", vd.name(), err)
		}
	}
}
