package main

import (
	"bytes"
	"encoding/json"
	"image"
	"image/png"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/duet-im/duet/usersig"
)

// TestMediaOverREST runs the real server with its defaults for media (the
// embedded S3 gateway) and drives an image upload over the REST API, then
// fetches the thumbnail through the HTTP listener's /media/ route.
func TestMediaOverREST(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := ln.Addr().String()
	ln.Close()
	cfg := defaultConfig()
	cfg.Data, cfg.MQTT, cfg.WS, cfg.HTTP = filepath.Join(dir, "data"), "127.0.0.1:0", "", httpAddr
	cfg.Secret = "media-rest-secret"
	srv, err := start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	sig, _ := usersig.Gen(cfg.SDKAppID, cfg.Secret, "administrator", 3600, time.Now())
	call := func(cmd string, body any) map[string]any {
		t.Helper()
		raw, _ := json.Marshal(body)
		u := "http://" + httpAddr + "/v4/" + cmd + "?sdkappid=1400000000&identifier=administrator&usersig=" + url.QueryEscape(sig) + "&random=1&contenttype=json"
		resp, err := http.Post(u, "application/json", bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out["ErrorCode"] != 0.0 {
			t.Fatalf("%s: %v %v", cmd, out, err)
		}
		return out
	}
	var img bytes.Buffer
	png.Encode(&img, image.NewGray(image.Rect(0, 0, 640, 480)))
	tk := call("media/apply_upload", map[string]any{"Type": "image", "Size": img.Len(), "ContentType": "image/png"})
	req, _ := http.NewRequest(tk["Method"].(string), tk["UploadUrl"].(string), bytes.NewReader(img.Bytes()))
	req.Header.Set("Content-Type", "image/png")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("upload: %v %v", resp, err)
	}
	resp.Body.Close()
	el := call("media/commit_upload", map[string]any{"UUID": tk["UUID"]})
	thumb := el["ImageInfoArray"].([]any)[2].(map[string]any)["URL"].(string)
	resp, err = http.Get(thumb + "?identifier=administrator&usersig=" + url.QueryEscape(sig))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	cfgImg, _, err := image.DecodeConfig(resp.Body)
	if resp.StatusCode != 200 || err != nil || cfgImg.Width != 198 || cfgImg.Height != 148 {
		t.Fatalf("thumbnail: %d %v %dx%d", resp.StatusCode, err, cfgImg.Width, cfgImg.Height)
	}
}
