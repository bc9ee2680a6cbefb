package rest_test

import (
	"bytes"
	"compress/zlib"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/rest"
	"github.com/duet-im/duet/store"
)

const (
	testAppID = 1400000000
	testKey   = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"
	admin     = "administrator"
)

// tlsSig is a TLSSigAPIv2 signer written from reference §2 alone, without
// package usersig, so the server is checked against an independent client.
func tlsSig(sdkappid uint64, key, identifier string, issued, expire int64) string {
	text := "TLS.identifier:" + identifier + "\n" +
		"TLS.sdkappid:" + strconv.FormatUint(sdkappid, 10) + "\n" +
		"TLS.time:" + strconv.FormatInt(issued, 10) + "\n" +
		"TLS.expire:" + strconv.FormatInt(expire, 10) + "\n"
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write([]byte(text))
	doc := map[string]any{ // a Go map: keys come out sorted, as dobyte's client sends them
		"TLS.ver": "2.0", "TLS.identifier": identifier, "TLS.sdkappid": sdkappid,
		"TLS.expire": expire, "TLS.time": issued, "TLS.sig": base64.StdEncoding.EncodeToString(mac.Sum(nil)),
	}
	raw, _ := json.Marshal(doc)
	var z bytes.Buffer
	w := zlib.NewWriter(&z)
	w.Write(raw)
	w.Close()
	s := base64.StdEncoding.EncodeToString(z.Bytes())
	return strings.NewReplacer("+", "*", "/", "-", "=", "_").Replace(s)
}

func TestSignerMatchesReferenceVector(t *testing.T) {
	// §2.6 row 4's full UserSig decodes to the same TLS.sig our signer
	// computes; check the HMAC part by decoding our own output.
	sig := tlsSig(88888888, testKey, "admin", 1600000000, 3600)
	b, err := base64.StdEncoding.DecodeString(strings.NewReplacer("*", "+", "-", "/", "_", "=").Replace(sig))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := zlib.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(zr)
	var doc map[string]any
	json.Unmarshal(raw, &doc)
	if got := doc["TLS.sig"]; got != "65APxErVR5T5q/E80qH0DcOzuP7j0O0ZrXtBGa+mlYI=" {
		t.Fatalf("TLS.sig = %v, want the reference vector", got)
	}
}

type env struct {
	t     testing.TB
	st    *store.Store
	svc   *command.Service
	srv   *httptest.Server
	now   time.Time
	clock func() time.Time
	mu    sync.Mutex
}

type envOpts struct {
	rate    int
	maxBody int64
	fixed   bool         // a clock that only moves when the test moves it (the store's too)
	log     *slog.Logger // the server's log, for a test that reads it
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	e := &env{t: t, now: time.Now()}
	e.clock = time.Now
	if o.fixed {
		e.clock = func() time.Time { e.mu.Lock(); defer e.mu.Unlock(); return e.now }
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if o.log != nil {
		log = o.log
	}
	opts := store.Options{Logger: log}
	if o.fixed {
		opts.Clock = e.clock
	}
	st, err := store.Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	cfg := command.DefaultConfig()
	cfg.SDKAppID = testAppID
	cfg.Admins = []string{admin, "admin2"}
	e.st, e.svc = st, command.New(cfg, st, log)
	if o.rate == 0 {
		o.rate = -1
	}
	e.srv = httptest.NewServer(rest.New(rest.Config{
		Service: e.svc, Key: testKey, KickedAt: st.KickedAt, Rate: o.rate, MaxBody: o.maxBody, Clock: e.clock, Log: log,
	}))
	t.Cleanup(func() { e.srv.Close(); st.Close() })
	return e
}

func (e *env) advance(d time.Duration) { e.mu.Lock(); e.now = e.now.Add(d); e.mu.Unlock() }

func (e *env) users(ids ...string) {
	for _, id := range ids {
		if _, err := e.st.ImportAccount(store.Account{UserID: id}); err != nil {
			e.t.Fatal(err)
		}
	}
}

// query is the URL query of a well-formed call, in the order real clients
// send it.
func (e *env) query(identifier string) string {
	return "sdkappid=" + strconv.Itoa(testAppID) + "&identifier=" + identifier +
		"&usersig=" + tlsSig(testAppID, testKey, identifier, e.clock().Unix()-10, 86400) +
		"&random=" + strconv.FormatUint(3000000000, 10) + "&contenttype=json"
}

// post sends body to /v4/{cmd}?{query} and decodes the reply.
func (e *env) post(cmd, query, body string) (int, map[string]any, string) {
	e.t.Helper()
	resp, err := http.Post(e.srv.URL+"/v4/"+cmd+"?"+query, "application/json", strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		e.t.Fatalf("%s: reply is not JSON: %s", cmd, raw)
	}
	return resp.StatusCode, m, string(raw)
}

func (e *env) call(cmd, body string) map[string]any {
	e.t.Helper()
	_, m, _ := e.post(cmd, e.query(admin), body)
	return m
}

func code(m map[string]any) int { f, _ := m["ErrorCode"].(float64); return int(f) }

// expectCode checks the envelope of a failure: FAIL, the code, an ErrorInfo.
func expectCode(t *testing.T, m map[string]any, want int) {
	t.Helper()
	if code(m) != want {
		t.Fatalf("ErrorCode %d, want %d: %v", code(m), want, m)
	}
	if want == 0 {
		if m["ActionStatus"] != "OK" {
			t.Fatalf("ActionStatus %v on success", m["ActionStatus"])
		}
		return
	}
	if m["ActionStatus"] != "FAIL" || m["ErrorInfo"] == "" {
		t.Fatalf("failure without FAIL and an ErrorInfo: %v", m)
	}
}

// sameJSON compares a reply with a golden one, ignoring key order.
func sameJSON(t *testing.T, got string, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("reply %s: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("golden %s: %v", want, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("reply\n  %s\nwant\n  %s", got, want)
	}
}

func TestAuthMatrix(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.users("bob")
	now := time.Now().Unix()
	sigFor := func(app uint64, key, id string, issued, expire int64) string {
		return tlsSig(app, key, id, issued, expire)
	}
	base := func(id, sig string) string {
		return "sdkappid=1400000000&identifier=" + id + "&usersig=" + sig + "&random=1&contenttype=json"
	}
	good := sigFor(testAppID, testKey, admin, now-10, 86400)
	body := `{"To_Account":["bob"]}`
	cases := []struct {
		name   string
		method string
		cmd    string
		query  string
		ctype  string
		body   string
		code   int
		status int
	}{
		{name: "ok", query: base(admin, good), code: 0},
		{name: "missing random, text/plain, extra apn=0", query: "sdkappid=1400000000&identifier=" + admin + "&usersig=" + good + "&apn=0", ctype: "text/plain", code: 0},
		{name: "second admin", query: base("admin2", sigFor(testAppID, testKey, "admin2", now-10, 86400)), code: 0},
		{name: "sdkappid missing", query: "identifier=" + admin + "&usersig=" + good, code: 60012},
		{name: "sdkappid wrong", query: strings.Replace(base(admin, good), "1400000000", "1400000001", 1), code: 60006},
		{name: "sdkappid not a number", query: strings.Replace(base(admin, good), "1400000000", "abc", 1), code: 60006},
		{name: "identifier missing", query: "sdkappid=1400000000&usersig=" + good, code: 60004},
		{name: "usersig missing", query: "sdkappid=1400000000&identifier=" + admin, code: 70002},
		{name: "usersig garbage", query: base(admin, "not-a-sig"), code: 70003},
		{name: "usersig expired", query: base(admin, sigFor(testAppID, testKey, admin, now-7200, 3600)), code: 70001},
		{name: "usersig wrong key", query: base(admin, sigFor(testAppID, "other-key", admin, now-10, 86400)), code: 70009},
		{name: "usersig of another identifier", query: base(admin, sigFor(testAppID, testKey, "admin2", now-10, 86400)), code: 70013},
		{name: "usersig of another sdkappid", query: base(admin, sigFor(1400000001, testKey, admin, now-10, 86400)), code: 70014},
		{name: "non-admin openim", query: base("bob", sigFor(testAppID, testKey, "bob", now-10, 86400)), code: 90009},
		{name: "non-admin im_open_login_svc", cmd: "im_open_login_svc/account_check", body: `{"CheckItem":[{"UserID":"bob"}]}`, query: base("bob", sigFor(testAppID, testKey, "bob", now-10, 86400)), code: 70403},
		{name: "non-admin profile", cmd: "profile/portrait_get", query: base("bob", sigFor(testAppID, testKey, "bob", now-10, 86400)), code: 40004},
		{name: "non-admin sns", cmd: "sns/friend_get", query: base("bob", sigFor(testAppID, testKey, "bob", now-10, 86400)), code: 30004},
		{name: "non-admin recentcontact", cmd: "recentcontact/get_list", query: base("bob", sigFor(testAppID, testKey, "bob", now-10, 86400)), code: 50003},
		{name: "non-admin other service", cmd: "group_open_http_svc/create_group", query: base("bob", sigFor(testAppID, testKey, "bob", now-10, 86400)), code: 60010},
		{name: "GET", method: http.MethodGet, query: base(admin, good), code: 60008, status: http.StatusMethodNotAllowed},
		{name: "PUT", method: http.MethodPut, query: base(admin, good), code: 60008, status: http.StatusMethodNotAllowed},
		{name: "unknown command", cmd: "openim/no_such_command", query: base(admin, good), code: 60009},
		{name: "bad path", cmd: "openim", query: base(admin, good), code: 60002},
		{name: "path too deep", cmd: "openim/querystate/x", query: base(admin, good), code: 60002},
		{name: "empty body", query: base(admin, good), body: " ", code: 60003},
		{name: "body not JSON", query: base(admin, good), body: "{", code: 90001},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.method == "" {
				tc.method = http.MethodPost
			}
			if tc.cmd == "" {
				tc.cmd = "openim/querystate"
			}
			if tc.body == "" {
				tc.body = body
			}
			if tc.ctype == "" {
				tc.ctype = "application/json"
			}
			if tc.status == 0 {
				tc.status = http.StatusOK
			}
			req, _ := http.NewRequest(tc.method, e.srv.URL+"/v4/"+tc.cmd+"?"+tc.query, strings.NewReader(tc.body))
			req.Header.Set("Content-Type", tc.ctype)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("HTTP %d, want %d", resp.StatusCode, tc.status)
			}
			var m map[string]any
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatalf("not JSON: %s", raw)
			}
			expectCode(t, m, tc.code)
		})
	}
}

func TestErrorDisplayOnProfileSnsRecentContact(t *testing.T) {
	e := newEnv(t, envOpts{})
	for _, cmd := range []string{"profile/portrait_get", "sns/friend_check", "recentcontact/get_list"} {
		m := e.call(cmd, `{"Bogus":1}`)
		if _, ok := m["ErrorDisplay"]; !ok {
			t.Errorf("%s: no ErrorDisplay in %v", cmd, m)
		}
	}
	if m := e.call("openim/querystate", `{"To_Account":["x"]}`); m["ErrorDisplay"] != nil {
		t.Errorf("openim reply carries ErrorDisplay: %v", m)
	}
}

func TestBodyLimit(t *testing.T) {
	e := newEnv(t, envOpts{maxBody: 1 << 20})
	huge := `{"To_Account":"bob","MsgRandom":1,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"` + strings.Repeat("x", 5<<20) + `"}}]}`
	m := e.call("openim/sendmsg", huge)
	expectCode(t, m, 93000)
	// Without Content-Length (chunked) the limit holds too.
	pr, pw := io.Pipe()
	go func() { pw.Write([]byte(huge)); pw.Close() }()
	resp, err := http.Post(e.srv.URL+"/v4/openim/sendmsg?"+e.query(admin), "application/json", pr)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var r map[string]any
	json.Unmarshal(raw, &r)
	expectCode(t, r, 93000)
	// The server keeps serving.
	e.users("bob")
	expectCode(t, e.call("openim/querystate", `{"To_Account":["bob"]}`), 0)
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t, envOpts{rate: 4, fixed: true})
	e.users("bob")
	q := e.query(admin)
	for i := range 4 {
		if _, m, _ := e.post("openim/querystate", q, `{"To_Account":["bob"]}`); code(m) != 0 {
			t.Fatalf("call %d refused: %v", i, m)
		}
	}
	_, m, _ := e.post("openim/querystate", q, `{"To_Account":["bob"]}`)
	expectCode(t, m, 60007)
	// Limits are per command.
	_, m, _ = e.post("openim/query_online_status", q, `{"To_Account":["bob"]}`)
	expectCode(t, m, 0)
	// Account batch commands get half the rate (§1.5).
	for i := range 2 {
		if _, m, _ := e.post("im_open_login_svc/account_check", q, `{"CheckItem":[{"UserID":"bob"}]}`); code(m) != 0 {
			t.Fatalf("account_check %d refused: %v", i, m)
		}
	}
	_, m, _ = e.post("im_open_login_svc/account_check", q, `{"CheckItem":[{"UserID":"bob"}]}`)
	expectCode(t, m, 60007)
	e.advance(time.Second)
	_, m, _ = e.post("openim/querystate", q, `{"To_Account":["bob"]}`)
	expectCode(t, m, 0)
}

func TestGoldenAccounts(t *testing.T) {
	e := newEnv(t, envOpts{})
	steps := []struct {
		cmd, body, want string
	}{
		{"im_open_login_svc/account_import", `{"UserID":"test","Nick":"test","FaceUrl":"http://www.qq.com"}`,
			`{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}`},
		{"im_open_login_svc/account_import", `{"Identifier":"test2"}`,
			`{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}`},
		{"im_open_login_svc/multiaccount_import", `{"Accounts":["test1","test2","bad id!"]}`,
			`{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"FailAccounts":["bad id!"]}`},
		{"im_open_login_svc/multiaccount_import", `{"AccountList":[{"UserID":"test3","Nick":"three","FaceUrl":"http://x/3.png"},{"UserID":"test4"}]}`,
			`{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"FailAccounts":[]}`},
		{"im_open_login_svc/account_check", `{"CheckItem":[{"UserID":"test1"},{"UserID":"nobody"}]}`,
			`{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"ResultItem":[
			 {"UserID":"test1","ResultCode":0,"ResultInfo":"","AccountStatus":"Imported"},
			 {"UserID":"nobody","ResultCode":0,"ResultInfo":"","AccountStatus":"NotImported"}]}`},
		{"im_open_login_svc/account_delete", `{"DeleteItem":[{"UserID":"test1"},{"UserID":"nobody"}]}`,
			`{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"ResultItem":[
			 {"UserID":"test1","ResultCode":0,"ResultInfo":""},
			 {"UserID":"nobody","ResultCode":70107,"ResultInfo":"Err_TLS_PT_Open_Login_Account_Not_Exist"}]}`},
		{"im_open_login_svc/account_check", `{"CheckItem":[{"UserID":"test1"}]}`,
			`{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"ResultItem":[
			 {"UserID":"test1","ResultCode":0,"ResultInfo":"","AccountStatus":"NotImported"}]}`},
		{"im_open_login_svc/kick", `{"UserID":"test"}`, `{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}`},
		{"im_open_login_svc/kick", `{"Identifier":"test2"}`, `{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}`},
		{"openim/querystate", `{"To_Account":["test","nobody"]}`,
			`{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"QueryResult":[{"To_Account":"test","State":"Offline"}],
			 "ErrorList":[{"To_Account":"nobody","ErrorCode":70107}]}`},
		{"openim/query_online_status", `{"To_Account":["test"],"IsNeedDetail":1}`,
			`{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"QueryResult":[{"To_Account":"test","Status":"Offline","Detail":[]}]}`},
	}
	for _, s := range steps {
		_, _, raw := e.post(s.cmd, e.query(admin), s.body)
		sameJSON(t, raw, s.want)
	}
	a, err := e.st.GetAccount("test")
	if err != nil || a.Nick != "test" || a.FaceURL != "http://www.qq.com" {
		t.Fatalf("account_import lost Nick/FaceUrl: %+v %v", a, err)
	}
	// Re-importing by UserID alone keeps the profile.
	e.call("im_open_login_svc/multiaccount_import", `{"Accounts":["test3"]}`)
	if a, _ := e.st.GetAccount("test3"); a.Nick != "three" || a.FaceURL != "http://x/3.png" {
		t.Fatalf("re-import wiped the profile: %+v", a)
	}
	if ok, _ := e.st.AccountExists("test1"); ok {
		t.Fatal("deleted account still exists")
	}
	if e.st.KickedAt("test").IsZero() {
		t.Fatal("kick left no kick time")
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.users("alice", "bob")
	many := func(n int, item string) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = fmt.Sprintf(item, i)
		}
		return strings.Join(parts, ",")
	}
	text := `[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]`
	cases := []struct {
		cmd, body string
		code      int
	}{
		{"openim/sendmsg", `{"To_Account":42,"MsgRandom":1,"MsgBody":` + text + `}`, 90003},
		{"openim/sendmsg", `{"To_Account":"bob","MsgRandom":"1","MsgBody":` + text + `}`, 90005},
		{"openim/sendmsg", `{"To_Account":"nobody","MsgRandom":1,"MsgBody":` + text + `}`, 90012},
		{"openim/sendmsg", `{"To_Account":"bob","MsgRandom":1,"MsgBody":{}}`, 90007},
		{"openim/sendmsg", `{"To_Account":"bob","MsgRandom":1,"MsgBody":[{"MsgType":"TIMNoSuchElem","MsgContent":{}}]}`, 90010},
		{"openim/sendmsg", `[1,2]`, 90001},
		{"im_open_login_svc/account_import", `{"UserID":5}`, 70402},
		{"im_open_login_svc/account_import", `{"UserID":"has space"}`, 70402},
		{"im_open_login_svc/account_import", `{"UserID":"` + strings.Repeat("a", 33) + `"}`, 70402},
		{"im_open_login_svc/account_import", `{}`, 70402},
		{"im_open_login_svc/account_import", `{"UserID":"ok","Nick":"` + strings.Repeat("n", 501) + `"}`, 40601},
		{"im_open_login_svc/account_import", `not json`, 70402},
		{"im_open_login_svc/multiaccount_import", `{"Accounts":[` + many(101, `"u%d"`) + `]}`, 70402},
		{"im_open_login_svc/multiaccount_import", `{"Accounts":[]}`, 70402},
		{"im_open_login_svc/multiaccount_import", `{"Accounts":"u1"}`, 70402},
		{"im_open_login_svc/account_delete", `{"DeleteItem":[` + many(101, `{"UserID":"u%d"}`) + `]}`, 70402},
		{"im_open_login_svc/account_delete", `{"DeleteItem":[{"UserID":7}]}`, 70402},
		{"im_open_login_svc/account_check", `{"CheckItem":"bob"}`, 70402},
		{"im_open_login_svc/kick", `{"UserID":"nobody"}`, 70107},
		{"im_open_login_svc/kick", `{"UserID":["bob"]}`, 70402},
		{"openim/querystate", `{"To_Account":[]}`, 90001},
		{"openim/querystate", `{"To_Account":"bob"}`, 90003},
		{"openim/querystate", `{}`, 90003},
		{"openim/query_online_status", `{"To_Account":[` + many(501, `"u%d"`) + `]}`, 90011},
		{"openim/query_online_status", `{"To_Account":["bob"],"IsNeedDetail":"yes"}`, 90001},
		{"openim/importmsg", `{"From_Account":"alice","To_Account":"bob","MsgRandom":1,"MsgTimeStamp":1600000000,"MsgBody":` + text + `}`, 90030},
		{"openim/importmsg", `{"SyncFromOldSystem":3,"From_Account":"alice","To_Account":"bob","MsgRandom":1,"MsgTimeStamp":1600000000,"MsgBody":` + text + `}`, 90030},
		{"openim/importmsg", `{"SyncFromOldSystem":2,"To_Account":"bob","MsgRandom":1,"MsgTimeStamp":1600000000,"MsgBody":` + text + `}`, 90008},
		{"openim/importmsg", `{"SyncFromOldSystem":2,"From_Account":"nobody","To_Account":"bob","MsgRandom":1,"MsgTimeStamp":1600000000,"MsgBody":` + text + `}`, 90008},
		{"openim/importmsg", `{"SyncFromOldSystem":2,"From_Account":"alice","To_Account":42,"MsgRandom":1,"MsgTimeStamp":1600000000,"MsgBody":` + text + `}`, 90003},
		{"openim/importmsg", `{"SyncFromOldSystem":2,"From_Account":"alice","To_Account":"nobody","MsgRandom":1,"MsgTimeStamp":1600000000,"MsgBody":` + text + `}`, 90012},
		{"openim/importmsg", `{"SyncFromOldSystem":2,"From_Account":"alice","To_Account":"bob","MsgTimeStamp":1600000000,"MsgBody":` + text + `}`, 90005},
		{"openim/importmsg", `{"SyncFromOldSystem":2,"From_Account":"alice","To_Account":"bob","MsgRandom":1,"MsgBody":` + text + `}`, 90006},
		{"openim/importmsg", `{"SyncFromOldSystem":2,"From_Account":"alice","To_Account":"bob","MsgRandom":1,"MsgTimeStamp":"x","MsgBody":` + text + `}`, 90006},
		{"openim/importmsg", `{"SyncFromOldSystem":2,"From_Account":"alice","To_Account":"bob","MsgRandom":1,"MsgTimeStamp":1600000000}`, 90007},
		{"openim/importmsg", `{"SyncFromOldSystem":2,"From_Account":"alice","To_Account":"bob","MsgRandom":1,"MsgTimeStamp":1600000000,"MsgBody":[]}`, 90002},
		{"openim/importmsg", `{"SyncFromOldSystem":2,"From_Account":"alice","To_Account":"bob","MsgRandom":1,"MsgTimeStamp":1600000000,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"` + strings.Repeat("x", 13<<10) + `"}}]}`, 93000},
	}
	for _, tc := range cases {
		t.Run(tc.cmd+" "+tc.body[:min(len(tc.body), 60)], func(t *testing.T) {
			expectCode(t, e.call(tc.cmd, tc.body), tc.code)
		})
	}
	// Nothing was written by any of them.
	for _, u := range []string{"ok", "u0", "nobody"} {
		if ok, _ := e.st.AccountExists(u); ok {
			t.Errorf("refused request created account %s", u)
		}
	}
	for _, u := range []string{"alice", "bob"} {
		if seq, _ := e.st.LastSeq(u); seq != 0 {
			t.Errorf("refused request appended to %s's timeline", u)
		}
	}
}

func TestGoldenSendmsg(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.users("lumotuwe1", "lumotuwe2")
	// §12's request (newer sample with MsgSeq and CloudCustomData).
	_, _, raw := e.post("openim/sendmsg", e.query(admin), `{"SyncOtherMachine": 1, "From_Account": "lumotuwe1", "To_Account": "lumotuwe2",
		"MsgLifeTime": 60, "MsgSeq": 93847636, "MsgRandom": 1287657, "MsgTimeStamp": 1557387418,
		"MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "hi, beauty"}}],
		"CloudCustomData": "your cloud custom data", "SupportMessageExtension": 0}`)
	sameJSON(t, raw, `{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"MsgTime":1557387418,"MsgKey":"93847636_1287657_1557387418","Seq":1}`)
	m, err := e.st.GetMessage("lumotuwe1", "lumotuwe2", "93847636_1287657_1557387418")
	if err != nil || m.CloudCustomData != "your cloud custom data" {
		t.Fatalf("message not stored: %+v %v", m, err)
	}
	// §12's failure sample.
	_, _, raw = e.post("openim/sendmsg", e.query(admin), `{"To_Account": "lumotuwe2", "MsgRandom": `)
	var f map[string]any
	json.Unmarshal([]byte(raw), &f)
	expectCode(t, f, 90001)
	if !strings.HasPrefix(f["ErrorInfo"].(string), "Fail to Parse json data of body, Please check it") {
		t.Fatalf("ErrorInfo %q", f["ErrorInfo"])
	}
	// MsgRandom above 2^31 (seen from a real client).
	expectCode(t, e.call("openim/sendmsg", `{"To_Account":"lumotuwe2","MsgRandom":4000000000,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"x"}}]}`), 0)
}

func TestImportMsg(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.users("alice", "bob")
	now := time.Now().Unix()
	line := func(mode int, from, to string, seq, random int, ts int64, text string) string {
		return fmt.Sprintf(`{"SyncFromOldSystem":%d,"From_Account":%q,"To_Account":%q,"MsgSeq":%d,"MsgRandom":%d,"MsgTimeStamp":%d,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":%q}}],"CloudCustomData":"ccd"}`,
			mode, from, to, seq, random, ts, text)
	}
	// History mode: stored, nothing in any timeline.
	_, _, raw := e.post("openim/importmsg", e.query(admin), line(2, "alice", "bob", 1, 11, now-100, "first"))
	sameJSON(t, raw, `{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}`)
	key := fmt.Sprintf("1_11_%d", now-100)
	m, err := e.st.GetMessage("bob", "alice", key)
	if err != nil || string(m.MsgBody) != `[{"MsgType":"TIMTextElem","MsgContent":{"Text":"first"}}]` || m.Expire != now-100+7*86400 {
		t.Fatalf("history import: %+v %v", m, err)
	}
	if seq, _ := e.st.LastSeq("bob"); seq != 0 {
		t.Fatalf("history import reached bob's timeline (Seq %d)", seq)
	}
	// Same conversation and triple, swapped direction and new content: a
	// duplicate; the first import wins.
	_, _, raw = e.post("openim/importmsg", e.query(admin), line(2, "bob", "alice", 1, 11, now-100, "second"))
	sameJSON(t, raw, `{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"Duplicate":1}`)
	if m, _ := e.st.GetMessage("bob", "alice", key); !strings.Contains(string(m.MsgBody), "first") {
		t.Fatalf("duplicate overwrote the first import: %s", m.MsgBody)
	}
	// Real-time modes reach the recipient's timeline, once.
	for i, mode := range []int{1, 5, 5} {
		e.call("openim/importmsg", line(mode, "alice", "bob", 2, 22+min(i, 1), now-50, "live"))
	}
	if seq, _ := e.st.LastSeq("bob"); seq != 2 {
		t.Fatalf("bob's timeline has %d events after two real-time imports and a duplicate, want 2", seq)
	}
	evs, _ := e.st.ReadTimeline("bob", 0, 10)
	var ev map[string]any
	json.Unmarshal(evs[0].Data, &ev)
	if ev["Event"] != "msg" || ev["From_Account"] != "alice" || ev["MsgKey"] != fmt.Sprintf("2_22_%d", now-50) {
		t.Fatalf("timeline event %s", evs[0].Data)
	}
	// Conversations: both sides list it; only real-time imports are unread.
	for owner, unread := range map[string]int{"bob": 2, "alice": 0} {
		c, err := e.st.GetConversation(owner, map[string]string{"bob": "alice", "alice": "bob"}[owner])
		if err != nil || c == nil || c.Unread != unread || c.MsgTime != now-50 {
			t.Fatalf("%s's conversation after imports: %+v %v (want Unread %d, MsgTime %d)", owner, c, err, unread, now-50)
		}
	}
	// Without MsgSeq the same line is still recognised on a replay.
	noSeq := `{"SyncFromOldSystem":2,"From_Account":"alice","To_Account":"bob","MsgRandom":7,"MsgTimeStamp":1600000000,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"n"}}]}`
	if m := e.call("openim/importmsg", noSeq); code(m) != 0 || m["Duplicate"] != nil {
		t.Fatalf("first import without MsgSeq: %v", m)
	}
	if m := e.call("openim/importmsg", noSeq); m["Duplicate"] != float64(1) {
		t.Fatalf("replay without MsgSeq not recognised: %v", m)
	}
}
