package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/duet-im/duet/usersig"
	"github.com/duet-im/duet/web"
)

// The web chat is served at / from the binary's embedded files; --web=false
// removes it; the name-only development sign-in exists only on a development
// server (--auto-accounts with the HTTP listener on loopback), since it signs
// a UserSig for anyone who asks.
func TestWebChatServed(t *testing.T) {
	for _, c := range []struct {
		name     string
		http     string
		web      bool
		auto     bool
		devLogin bool
	}{
		{"dev server", "127.0.0.1:0", true, true, true},
		{"web off", "127.0.0.1:0", false, true, false},
		{"no auto-accounts", "127.0.0.1:0", true, false, false},
		{"all interfaces", "0.0.0.0:0", true, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := defaultConfig()
			cfg.Data, cfg.MQTT, cfg.WS, cfg.HTTP = filepath.Join(t.TempDir(), "data"), "", "127.0.0.1:0", c.http
			cfg.Secret, cfg.Web, cfg.AutoAccounts = "web-test", c.web, c.auto
			// A wildcard HTTP address needs the URL devices reach it at.
			cfg.MediaURL = "http://im.example.com:8080"
			srv, err := start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			_, port, _ := net.SplitHostPort(srv.HTTPAddr())
			base := "http://127.0.0.1:" + port
			get := func(path string) (int, string) {
				t.Helper()
				resp, err := http.Get(base + path)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(b)
			}
			if code, _ := get("/healthz"); code != 200 {
				t.Fatalf("/healthz: %d", code)
			}
			code, body := get("/")
			if !c.web {
				for _, p := range []string{"/", "/web/config.json", "/web/app/main.js", "/web/vendor/mqtt.esm.js"} {
					if code, _ := get(p); code != http.StatusNotFound {
						t.Errorf("--web=false: %s answered %d", p, code)
					}
				}
			} else {
				if code != 200 || !strings.Contains(body, `src="web/app/main.js"`) {
					t.Fatalf("/: %d %.200s", code, body)
				}
				for _, p := range []string{"/web/app/main.js", "/web/app/session.js", "/web/app/style.css", "/web/vendor/mqtt.esm.js"} {
					if code, body := get(p); code != 200 || len(body) < 100 {
						t.Errorf("%s: %d, %d bytes", p, code, len(body))
					}
				}
				// MQTT.js goes gzipped to browsers that take it, and
				// revalidates with its ETag.
				req, _ := http.NewRequest("GET", base+"/web/vendor/mqtt.esm.js", nil)
				req.Header.Set("Accept-Encoding", "gzip")
				resp, err := http.DefaultTransport.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				zipped, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.Header.Get("Content-Encoding") != "gzip" || len(zipped) > 150<<10 || resp.Header.Get("ETag") == "" {
					t.Errorf("mqtt.esm.js: %q, %d bytes, ETag %q", resp.Header.Get("Content-Encoding"), len(zipped), resp.Header.Get("ETag"))
				}
				req.Header.Set("If-None-Match", resp.Header.Get("ETag"))
				if resp, err := http.DefaultTransport.RoundTrip(req); err != nil || resp.StatusCode != http.StatusNotModified {
					t.Errorf("revalidation: %v %v", resp, err)
				} else {
					resp.Body.Close()
				}
				if code, _ := get("/no-such-page"); code != http.StatusNotFound {
					t.Errorf("/no-such-page: %d", code)
				}
				code, body = get("/web/config.json")
				var wc web.Config
				if err := json.Unmarshal([]byte(body), &wc); code != 200 || err != nil {
					t.Fatalf("config.json: %d %v %s", code, err, body)
				}
				if _, wsPort, _ := net.SplitHostPort(srv.Broker().Addr("ws")); wc.WSPort != wsPort || wc.WSPath != "/mqtt" || wc.DevLogin != c.devLogin {
					t.Errorf("config.json %+v, want WSPort %s, DevLogin %v", wc, wsPort, c.devLogin)
				}
			}
			resp, err := http.Post(base+"/web/dev-login", "application/json", strings.NewReader(`{"UserID":"alice"}`))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !c.devLogin {
				if resp.StatusCode != http.StatusNotFound {
					t.Errorf("dev-login exists: %d %s", resp.StatusCode, b)
				}
				return
			}
			var got struct{ UserID, UserSig string }
			if err := json.Unmarshal(b, &got); resp.StatusCode != 200 || err != nil {
				t.Fatalf("dev-login: %d %s", resp.StatusCode, b)
			}
			if _, err := usersig.Verify(got.UserSig, cfg.SDKAppID, cfg.Secret, "alice", time.Now()); err != nil || got.UserID != "alice" {
				t.Errorf("dev-login sig: %v (%+v)", err, got)
			}
			for _, bad := range []string{`{"UserID":"administrator"}`, `{"UserID":"a b"}`, `{"UserID":""}`, `not json`} {
				resp, err := http.Post(base+"/web/dev-login", "application/json", strings.NewReader(bad))
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusBadRequest {
					t.Errorf("dev-login %s: %d, want 400", bad, resp.StatusCode)
				}
			}
			// Through a reverse proxy on the same host the listener is
			// loopback but the client is not: still no sign-in for it.
			r := httptest.NewRequest(http.MethodPost, "/web/dev-login", strings.NewReader(`{"UserID":"alice"}`))
			r.RemoteAddr = "203.0.113.7:40000"
			w := httptest.NewRecorder()
			srv.Handler().ServeHTTP(w, r)
			if w.Code != http.StatusNotFound {
				t.Errorf("dev-login from a remote address: %d", w.Code)
			}
		})
	}
}
