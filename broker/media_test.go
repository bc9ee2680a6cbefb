package broker_test

import (
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	srvpkg "github.com/duet-im/duet/internal/server"
	"github.com/duet-im/duet/media"
	"github.com/duet-im/duet/usersig"
)

// startMediaServer runs Duet with the media service on the embedded S3
// gateway (real SigV4 checks) and an HTTP server for download links.
func startMediaServer(t *testing.T) (*testServer, *httptest.Server) {
	t.Helper()
	gw, err := media.StartGateway(t.TempDir(), "", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	var handler atomic.Pointer[http.Handler]
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*handler.Load()).ServeHTTP(w, r) }))
	t.Cleanup(web.Close)
	s := startServer(t, serverOpts{
		server: func(c *srvpkg.Config) {
			c.NoMedia = false
			c.S3Endpoint, c.S3AccessKey, c.S3SecretKey, c.S3Bucket = gw.S3.Endpoint, gw.S3.AccessKey, gw.S3.SecretKey, gw.S3.Bucket
			c.S3Secure, c.S3PublicEndpoint = gw.S3.Secure, gw.S3.PublicEndpoint
			c.MediaURL, c.MediaCleanEvery, c.MediaArchiveEvery = web.URL, -1, -1
		},
		started: func(srv *srvpkg.Server) {
			h := srv.Handler()
			handler.Store(&h)
		},
	})
	return s, web
}

// putUpload sends data to an apply_upload ticket's presigned URL as a
// device does.
func putUpload(t *testing.T, ticket event, data []byte) {
	t.Helper()
	req, _ := http.NewRequest(ticket.str("Method"), ticket.str("UploadUrl"), bytes.NewReader(data))
	for k, v := range ticket["Headers"].(map[string]any) {
		req.Header.Set(k, v.(string))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("upload: %d %s", resp.StatusCode, msg)
	}
}

func (d *device) uploadMedia(typ, ct string, data []byte) event {
	d.t.Helper()
	tk, _ := d.request("media/apply_upload", map[string]any{"Type": typ, "Size": len(data), "ContentType": ct, "FileName": "x"})
	if tk.str("ActionStatus") != "OK" || tk.str("Method") != "PUT" {
		d.t.Fatalf("apply_upload: %v", tk)
	}
	putUpload(d.t.(*testing.T), tk, data)
	el, _ := d.request("media/commit_upload", map[string]any{"UUID": tk.str("UUID")})
	if el.str("ActionStatus") != "OK" {
		d.t.Fatalf("commit_upload: %v", el)
	}
	return el
}

func fetch(t *testing.T, link, user string) (int, []byte) {
	t.Helper()
	sig, _ := usersig.Gen(testAppID, testKey, user, 3600, time.Now())
	resp, err := http.Get(link + "?identifier=" + user + "&usersig=" + url.QueryEscape(sig))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestImageMessageFlow: alice uploads a PNG, commits it, sends it over MQTT;
// bob receives the message and downloads the original and the thumbnail;
// carol, who was not sent it, is refused.
func TestImageMessageFlow(t *testing.T) {
	s, _ := startMediaServer(t)
	s.users("alice", "bob", "carol")
	alice := s.connect("alice", connectOpts{v5: true})
	bob := s.connect("bob", connectOpts{})
	alice.syncComplete()
	bob.syncComplete()

	img := image.NewNRGBA(image.Rect(0, 0, 1024, 768))
	for x := 0; x < 1024; x++ {
		img.Set(x, x%768, color.NRGBA{255, 0, 0, 255})
	}
	var pngData bytes.Buffer
	png.Encode(&pngData, img)
	el := alice.uploadMedia("image", "image/png", pngData.Bytes())

	content := map[string]any{"UUID": el["UUID"], "ImageFormat": el["ImageFormat"], "ImageInfoArray": el["ImageInfoArray"]}
	alice.send("bob", 7, map[string]any{"MsgType": "TIMImageElem", "MsgContent": content})
	msg := bob.nextMsg()
	var body []struct {
		MsgType    string
		MsgContent struct {
			UUID           string
			ImageFormat    int
			ImageInfoArray []struct {
				Type, Size, Width, Height int
				URL                       string
			}
		}
	}
	raw, _ := json.Marshal(msg["MsgBody"])
	if err := json.Unmarshal(raw, &body); err != nil || len(body) != 1 || body[0].MsgType != "TIMImageElem" {
		t.Fatalf("received %v", msg)
	}
	got := body[0].MsgContent
	if got.ImageFormat != 3 || len(got.ImageInfoArray) != 3 {
		t.Fatalf("received element %+v", got)
	}
	want := map[int][2]int{1: {1024, 768}, 3: {198, 148}}
	for _, info := range got.ImageInfoArray {
		dims, check := want[info.Type]
		if !check {
			continue
		}
		st, data := fetch(t, info.URL, "bob")
		if st != 200 {
			t.Fatalf("bob downloading type %d: %d %s", info.Type, st, data)
		}
		cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
		if err != nil || cfg.Width != dims[0] || cfg.Height != dims[1] || info.Width != dims[0] || info.Height != dims[1] {
			t.Fatalf("type %d: decoded %dx%d (%v), listed %dx%d, want %v", info.Type, cfg.Width, cfg.Height, err, info.Width, info.Height, dims)
		}
		if info.Type == 1 && !bytes.Equal(data, pngData.Bytes()) {
			t.Fatal("the original came back changed")
		}
		if st, _ := fetch(t, info.URL, "carol"); st != http.StatusForbidden {
			t.Fatalf("carol downloading type %d: %d", info.Type, st)
		}
	}

	// A file upload sent as an image is refused with 90010, and nothing reaches bob.
	file := alice.uploadMedia("file", "text/plain", []byte("not a picture"))
	r, _ := alice.request("openim/sendmsg", map[string]any{"To_Account": "bob", "MsgRandom": 8, "MsgBody": []any{map[string]any{
		"MsgType": "TIMImageElem", "MsgContent": map[string]any{"UUID": file["UUID"], "ImageInfoArray": []any{
			map[string]any{"Type": 1, "Width": 1, "Height": 1, "URL": file["Url"]}}}}}})
	if r.num("ErrorCode") != 90010 {
		t.Fatalf("file sent as an image: %v", r)
	}
	alice.send("bob", 9)
	if m := bob.nextMsg(); m.num("MsgRandom") != 9 {
		t.Fatalf("bob got %v, want only the text message 9", m)
	}
}
