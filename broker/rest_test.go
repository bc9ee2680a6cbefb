package broker_test

// REST and MQTT on one command layer: an app back-end's REST call reaches
// devices, online state reflects connections, and kick disconnects devices
// and invalidates their UserSigs. A local HTTP server plays the app's
// callback endpoint for State.StateChange.

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	srvpkg "github.com/duet-im/duet/internal/server"
	"github.com/duet-im/duet/internal/wait"
	"github.com/duet-im/duet/usersig"
)

type restServer struct {
	*testServer
	rest   *httptest.Server
	states chan map[string]any // State.StateChange bodies
}

// startRESTServer starts Duet as main runs it (internal/server), with the
// callbacks going to a local app back-end and the server's HTTP handler
// (REST under /v4/) on an HTTP server of the test's.
func startRESTServer(t *testing.T) *restServer {
	t.Helper()
	s := &restServer{states: make(chan map[string]any, 100)}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b map[string]any
		json.NewDecoder(r.Body).Decode(&b)
		if r.URL.Query().Get("CallbackCommand") == "State.StateChange" {
			s.states <- b
		}
		io.WriteString(w, `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}`)
	}))
	t.Cleanup(hook.Close)
	s.testServer = startServer(t, serverOpts{server: func(c *srvpkg.Config) { c.CallbackURL, c.RESTRate = hook.URL, -1 }})
	s.rest = httptest.NewServer(s.srv.Handler())
	t.Cleanup(s.rest.Close)
	return s
}

// call is an app back-end's REST call as the admin.
func (s *restServer) call(cmd string, body string) map[string]any {
	s.t.Helper()
	q := url.Values{"sdkappid": {"1400000000"}, "identifier": {"administrator"},
		"usersig": {sig(s.t, "administrator")}, "random": {"77"}, "contenttype": {"json"}}
	resp, err := http.Post(s.rest.URL+"/v4/"+cmd+"?"+q.Encode(), "application/json", strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		s.t.Fatal(err)
	}
	return m
}

func (s *restServer) nextState(action, user string) {
	s.t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case b := <-s.states:
			info, _ := b["Info"].(map[string]any)
			if info["Action"] == action && info["To_Account"] == user {
				return
			}
		case <-deadline:
			s.t.Fatalf("no State.StateChange %s for %s", action, user)
		}
	}
}

func TestRESTSendReachesMQTTDevice(t *testing.T) {
	for _, v5 := range []bool{false, true} {
		t.Run(map[bool]string{false: "v3.1.1", true: "v5"}[v5], func(t *testing.T) {
			s := startRESTServer(t)
			s.users("alice", "bob")
			bob := s.connect("bob", connectOpts{v5: v5})
			bob.drainToSync()
			rep := s.call("openim/sendmsg", `{"SyncOtherMachine":2,"From_Account":"alice","To_Account":"bob","MsgRandom":4000000001,
				"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"from the back-end"}}]}`)
			if rep["ActionStatus"] != "OK" {
				t.Fatal(rep)
			}
			m := bob.nextMsg()
			body, _ := json.Marshal(m["MsgBody"])
			if m.str("From_Account") != "alice" || m.str("MsgKey") != rep["MsgKey"] || !strings.Contains(string(body), "from the back-end") {
				t.Fatalf("bob got %v", m)
			}
		})
	}
}

func TestRESTOnlineStateAndKick(t *testing.T) {
	s := startRESTServer(t)
	s.users("alice", "bob")
	bob := s.connect("bob", connectOpts{v5: true})
	bob.drainToSync()
	bobPhone := s.connect("bob", connectOpts{clientID: "bob:phone"})
	bobPhone.drainToSync()
	s.nextState("Login", "bob")

	rep := s.call("openim/query_online_status", `{"To_Account":["bob","alice"],"IsNeedDetail":1}`)
	raw, _ := json.Marshal(rep["QueryResult"])
	if string(raw) != `[{"Detail":[{"Platform":"Unknown","Status":"Online"},{"Platform":"Unknown","Status":"Online"}],"Status":"Online","To_Account":"bob"},{"Detail":[],"Status":"Offline","To_Account":"alice"}]` {
		t.Fatalf("QueryResult %s", raw)
	}
	rep = s.call("openim/querystate", `{"To_Account":["bob"]}`)
	if raw, _ := json.Marshal(rep["QueryResult"]); string(raw) != `[{"State":"Online","To_Account":"bob"}]` {
		t.Fatalf("querystate %s", raw)
	}

	oldSig := sig(t, "bob")
	if rep := s.call("im_open_login_svc/kick", `{"UserID":"bob"}`); rep["ActionStatus"] != "OK" {
		t.Fatal(rep)
	}
	kickSecond := time.Now().Unix()
	for _, d := range []*device{bob, bobPhone} {
		if e := d.next(); e.str("Event") != "kicked" || e["Seq"] != nil {
			t.Fatalf("%s: expected a kicked notice without Seq, got %v", d.user, e)
		}
	}
	wait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := s.broker.Devices.Online("bob"); n != 0 {
			return errors.New("bob still has devices online")
		}
		return nil
	})
	s.nextState("Logout", "bob")
	if rep := s.call("openim/querystate", `{"To_Account":["bob"]}`); !strings.Contains(mustJSON(rep), `"State":"Offline"`) {
		t.Fatalf("after kick: %v", rep)
	}
	// The old UserSig is refused on both protocol versions.
	for _, v5 := range []bool{false, true} {
		if _, err := s.dial("bob", connectOpts{v5: v5, password: oldSig}); err == nil {
			t.Fatalf("v5=%v: login with a UserSig issued before the kick succeeded", v5)
		}
	}
	// A UserSig from the kick's own second is refused too (1 s resolution);
	// one issued after it works.
	sameSecond, _ := usersig.Gen(testAppID, testKey, "bob", 3600, time.Unix(kickSecond, 0))
	if _, err := s.dial("bob", connectOpts{password: sameSecond}); err == nil {
		t.Fatal("a UserSig from the second of the kick was accepted")
	}
	wait.For(t, 3*time.Second, 20*time.Millisecond, func() error {
		if time.Now().Unix() <= kickSecond {
			return errors.New("still the second of the kick")
		}
		return nil
	})
	fresh := s.connect("bob", connectOpts{v5: true, clientID: "bob:new"})
	fresh.drainToSync()
	// Kicking a user nobody knows is 70107.
	if rep := s.call("im_open_login_svc/kick", `{"Identifier":"nobody"}`); rep["ErrorCode"] != float64(70107) {
		t.Fatalf("kick of unknown user: %v", rep)
	}
}

func TestRESTAccountDeleteDisconnectsAndRefuses(t *testing.T) {
	s := startRESTServer(t)
	s.users("carol")
	carol := s.connect("carol", connectOpts{})
	carol.drainToSync()
	rep := s.call("im_open_login_svc/account_delete", `{"DeleteItem":[{"UserID":"carol"}]}`)
	if mustJSON(rep["ResultItem"]) != `[{"ResultCode":0,"ResultInfo":"","UserID":"carol"}]` {
		t.Fatalf("account_delete: %v", rep)
	}
	wait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if s.broker.Devices.Online("carol") != 0 {
			return errors.New("carol still online")
		}
		return nil
	})
	if _, err := s.dial("carol", connectOpts{clientID: "carol:x"}); err == nil {
		t.Fatal("a deleted account logged in")
	}
	if rep := s.call("openim/sendmsg", `{"To_Account":"carol","MsgRandom":1,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"x"}}]}`); rep["ErrorCode"] != float64(90012) {
		t.Fatalf("send to a deleted account: %v", rep)
	}
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }
