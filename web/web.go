// Package web is Duet's web chat: a page served at / on the HTTP listener,
// with its JavaScript, CSS and the vendored MQTT.js embedded in the binary.
// The page talks to Duet the way any device does: MQTT over the WebSocket
// listener (PROTOCOL.md), media through media/apply_upload, the presigned
// PUT and media/commit_upload. Its only HTTP calls are for its own files,
// /web/config.json (where the WebSocket listener is) and, on a development
// server, /web/dev-login. See docs/web.md.
package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"mime"
	"net"
	"net/http"
	"path"
	"strings"
)

//go:embed app vendor
var files embed.FS

// Options say what the page needs from the running server.
type Options struct {
	// WSAddr is the bound address of the MQTT-over-WebSocket listener
	// (path /mqtt); empty when it is off. The page connects to the host it
	// was loaded from, at this port.
	WSAddr string
	// MQTTURLs, when set, are the WebSocket URLs of every node of a cluster:
	// the page connects to the first and moves to the next when one fails.
	MQTTURLs []string
	// DevLogin, when set, signs a UserSig for any valid UserID: the page's
	// name-only sign-in. Only a development server (--auto-accounts, HTTP on
	// loopback) sets it; otherwise /web/dev-login does not exist.
	DevLogin func(user string) (sig string, err error)
}

// Config is /web/config.json.
type Config struct {
	WSPort   string `json:"WSPort"`   // "" when the WebSocket listener is off
	WSPath   string `json:"WSPath"`   // always /mqtt
	DevLogin bool   `json:"DevLogin"` // POST /web/dev-login exists
	// MQTTURLs: every node's WebSocket URL (--web-mqtt-urls); absent: the
	// page's own host at WSPort.
	MQTTURLs []string `json:"MQTTURLs,omitempty"`
}

// Handler serves the page at / and its parts under /web/.
func Handler(o Options) http.Handler {
	mux := http.NewServeMux()
	static := assets()
	index, _ := fs.ReadFile(files, "app/index.html")
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		// Nothing outside this server: no CDN, no fonts, no analytics.
		w.Header().Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss: http: https:; img-src 'self' data: blob: http: https:")
		w.Header().Set("Cache-Control", "no-cache")
		w.Write(index)
	})
	mux.Handle("GET /web/app/", http.StripPrefix("/web/", static))
	mux.Handle("GET /web/vendor/", http.StripPrefix("/web/", static))
	_, port, _ := net.SplitHostPort(o.WSAddr)
	cfg, _ := json.Marshal(Config{WSPort: port, WSPath: "/mqtt", DevLogin: o.DevLogin != nil, MQTTURLs: o.MQTTURLs})
	mux.HandleFunc("GET /web/config.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(cfg)
	})
	if o.DevLogin != nil {
		mux.HandleFunc("POST /web/dev-login", func(w http.ResponseWriter, r *http.Request) {
			var req struct{ UserID string }
			if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<10)).Decode(&req); err != nil {
				http.Error(w, "body must be {\"UserID\":\"…\"}", http.StatusBadRequest)
				return
			}
			sig, err := o.DevLogin(req.UserID)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			json.NewEncoder(w).Encode(map[string]string{"UserID": req.UserID, "UserSig": sig})
		})
	}
	return mux
}

// asset is one embedded file, compressed once at start-up: MQTT.js is most
// of the page's weight and shrinks to a third.
type asset struct {
	raw, gz []byte
	ctype   string
	etag    string
}

// assets serves the embedded files by path (app/…, vendor/…) with an ETag,
// gzip when the browser takes it, and revalidation on every load, so a new
// binary's page is never mixed with an old one's cached modules.
func assets() http.Handler {
	all := map[string]*asset{}
	fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		raw, err := fs.ReadFile(files, p)
		if err != nil {
			return err
		}
		var gz bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
		zw.Write(raw)
		zw.Close()
		sum := sha256.Sum256(raw)
		a := &asset{raw: raw, ctype: mime.TypeByExtension(path.Ext(p)), etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		if gz.Len() < len(raw) {
			a.gz = gz.Bytes()
		}
		if a.ctype == "" {
			a.ctype = "application/octet-stream"
		}
		all[p] = a
		return nil
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := all[r.URL.Path]
		if a == nil {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.ctype)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", a.etag)
		h.Set("Vary", "Accept-Encoding")
		if r.Header.Get("If-None-Match") == a.etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		body := a.raw
		if a.gz != nil && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			h.Set("Content-Encoding", "gzip")
			body = a.gz
		}
		w.Write(body)
	})
}
