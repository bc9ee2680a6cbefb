package push

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/rest"
	"github.com/duet-im/duet/store"
	"github.com/duet-im/duet/usersig"
)

// The REST twin of push/set_token and push/delete_token: the REST transport
// serves every registered command; the admin names user and device.
func TestTokensOverREST(t *testing.T) {
	const appID, key = 1400000000, "rest-secret"
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(t.TempDir(), store.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.ImportAccount(store.Account{UserID: "bob"})
	cfg := command.DefaultConfig()
	cfg.SDKAppID = appID
	svc := command.New(cfg, st, log)
	p, err := New(Options{Store: st, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	p.Register(svc)
	srv := httptest.NewServer(rest.New(rest.Config{Service: svc, Key: key, Rate: -1, Log: log}))
	defer srv.Close()
	sig, err := usersig.Gen(appID, key, "administrator", 3600, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	call := func(cmd, body string) map[string]any {
		t.Helper()
		resp, err := http.Post(srv.URL+"/v4/push/"+cmd+"?sdkappid=1400000000&identifier=administrator&usersig="+sig+"&random=1&contenttype=json", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	for _, c := range []struct {
		name, cmd, body string
		code            float64
	}{
		{"no device", "set_token", `{"From_Account":"bob","Vendor":"fcm","Token":"t1"}`, 90001},
		{"bad vendor", "set_token", `{"From_Account":"bob","Device":"bob:phone","Vendor":"blackberry","Token":"t1"}`, 90001},
		{"not an object", "set_token", `[1]`, 90001},
		{"ok", "set_token", `{"From_Account":"bob","Device":"bob:phone","Vendor":"fcm","Token":"t1"}`, 0},
	} {
		if got := call(c.cmd, c.body); got["ErrorCode"] != c.code {
			t.Errorf("%s: %v", c.name, got)
		}
	}
	if toks, _ := st.PushTokens("bob"); len(toks) != 1 || toks[0].Device != "bob:phone" || toks[0].Vendor != "fcm" {
		t.Fatalf("tokens %+v", toks)
	}
	if got := call("delete_token", `{"From_Account":"bob","Device":"bob:phone"}`); got["ErrorCode"] != 0.0 {
		t.Errorf("delete_token: %v", got)
	}
	if toks, _ := st.PushTokens("bob"); len(toks) != 0 {
		t.Errorf("left %+v", toks)
	}
}
