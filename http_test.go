package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
)

// The profiles expose the process's memory (the UserSig key, message text)
// and cost CPU, while the HTTP listener is public wherever devices fetch
// media or back-ends call REST (the Docker image listens on 0.0.0.0): they
// are served to clients on this machine only.
func TestProfilesAreLoopbackOnly(t *testing.T) {
	cfg := defaultConfig()
	cfg.Data, cfg.MQTT, cfg.WS, cfg.HTTP = filepath.Join(t.TempDir(), "data"), "127.0.0.1:0", "", "127.0.0.1:0"
	cfg.Secret = "pprof-test"
	srv, err := start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	h := srv.Handler()
	for _, c := range []struct {
		path, remote string
		want         int
	}{
		{"/debug/pprof/", "127.0.0.1:40000", http.StatusOK},
		{"/debug/pprof/heap?debug=1", "[::1]:40000", http.StatusOK},
		{"/debug/pprof/", "203.0.113.7:40000", http.StatusNotFound},
		{"/debug/pprof/heap?debug=1", "203.0.113.7:40000", http.StatusNotFound},
		{"/debug/pprof/goroutine?debug=2", "[2001:db8::1]:40000", http.StatusNotFound},
		{"/healthz", "203.0.113.7:40000", http.StatusOK},
	} {
		r := httptest.NewRequest(http.MethodGet, c.path, nil)
		r.RemoteAddr = c.remote
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != c.want {
			t.Errorf("%s from %s: %d, want %d", c.path, c.remote, w.Code, c.want)
		}
	}
}
