package main

import (
	"bytes"
	"encoding/json"
	"github.com/duet-im/duet/internal/server"
	"image"
	"image/jpeg"
	"image/png"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/duet-im/duet/usersig"
)

// TestMediaOverREST runs the real server with its defaults for media (the
// embedded S3 gateway) and drives an image upload over the REST API, then
// fetches the thumbnail through the HTTP listener's /media/ route.
func TestMediaOverREST(t *testing.T) {
	srv, cfg, httpAddr := startOnLoopback(t, "media-rest-secret")
	defer srv.Close()
	imageRoundTrip(t, cfg, httpAddr)
}

// A large photo is committed over REST although making its renditions takes
// longer than a REST command's 3 s (Tencent's server-side timeout, which
// bounds every other command): the commit's work is bounded by the media
// service's own budget, not the transport's, or a back-end could never
// commit a big image, retry or not (under load it failed with "media
// storage is unreachable, retry later (context deadline exceeded)").
func TestMediaCommitLargeImageOverREST(t *testing.T) {
	if testing.Short() {
		t.Skip("decodes a 48-megapixel image")
	}
	srv, cfg, httpAddr := startOnLoopback(t, "media-large-secret")
	defer srv.Close()
	var img bytes.Buffer
	if err := jpeg.Encode(&img, image.NewGray(image.Rect(0, 0, 8000, 6000)), nil); err != nil {
		t.Fatal(err)
	}
	uploadAndCommit(t, cfg, httpAddr, img.Bytes(), "image/jpeg")
}

// uploadAndCommit applies for an image upload, PUTs data to the presigned
// URL and commits it; it returns the committed element.
func uploadAndCommit(t *testing.T, cfg Config, httpAddr string, data []byte, contentType string) map[string]any {
	t.Helper()
	call := func(cmd string, body any) map[string]any {
		t.Helper()
		out := restAdmin(t, cfg, httpAddr, cmd, body)
		if out["ErrorCode"] != 0.0 {
			t.Fatalf("%s: %v", cmd, out)
		}
		return out
	}
	tk := call("media/apply_upload", map[string]any{"Type": "image", "Size": len(data), "ContentType": contentType})
	req, _ := http.NewRequest(tk["Method"].(string), tk["UploadUrl"].(string), bytes.NewReader(data))
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("upload: %v %v", resp, err)
	}
	resp.Body.Close()
	return call("media/commit_upload", map[string]any{"UUID": tk["UUID"]})
}

// imageRoundTrip uploads an image through the media commands and the store's
// presigned URL, commits it and fetches its thumbnail over /media/.
func imageRoundTrip(t *testing.T, cfg Config, httpAddr string) {
	t.Helper()
	sig, _ := usersig.Gen(cfg.SDKAppID, cfg.Secret, "administrator", 3600, time.Now())
	var img bytes.Buffer
	png.Encode(&img, image.NewGray(image.Rect(0, 0, 640, 480)))
	el := uploadAndCommit(t, cfg, httpAddr, img.Bytes(), "image/png")
	thumb := el["ImageInfoArray"].([]any)[2].(map[string]any)["URL"].(string)
	resp, err := http.Get(thumb + "?identifier=administrator&usersig=" + url.QueryEscape(sig))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	cfgImg, _, err := image.DecodeConfig(resp.Body)
	if resp.StatusCode != 200 || err != nil || cfgImg.Width != 198 || cfgImg.Height != 148 {
		t.Fatalf("thumbnail: %d %v %dx%d", resp.StatusCode, err, cfgImg.Width, cfgImg.Height)
	}
}

// The embedded S3 gateway's backend changes its process's working
// directory (os.Chdir); it runs in a child process, so the server's working
// directory stays where it was at every moment: while the server starts,
// while uploads and downloads go through the gateway, and after it stops.
func TestGatewayLeavesWorkingDirectory(t *testing.T) {
	before, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chdir(before) }) // later tests run from here whatever happens
	var polls atomic.Int64
	moved := make(chan string, 1)
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			if now, _ := os.Getwd(); now != before {
				select {
				case moved <- now:
				default:
				}
			}
			polls.Add(1)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	srv, cfg, httpAddr := startOnLoopback(t, "media-cwd-secret")
	for range 3 {
		imageRoundTrip(t, cfg, httpAddr)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	<-stopped
	select {
	case now := <-moved:
		t.Fatalf("the working directory moved to %s (was %s)", now, before)
	default:
	}
	if polls.Load() < 2 {
		t.Fatalf("the working directory was polled %d times", polls.Load())
	}
}

// startOnLoopback runs the real server with its media defaults (the
// embedded S3 gateway), MQTT and HTTP on loopback ports, and returns it with
// its configuration and HTTP address.
func startOnLoopback(t *testing.T, secret string) (*server.Server, Config, string) {
	t.Helper()
	httpAddr := freeAddr(t)
	cfg := defaultConfig()
	cfg.Data, cfg.MQTT, cfg.WS, cfg.HTTP = filepath.Join(t.TempDir(), "data"), "127.0.0.1:0", "", httpAddr
	cfg.Secret = secret
	srv, err := start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return srv, cfg, httpAddr
}

// restAdmin posts a REST command as the App admin to the server's HTTP
// listener and returns the decoded answer.
func restAdmin(t *testing.T, cfg Config, httpAddr, cmd string, body any) map[string]any {
	t.Helper()
	sig, _ := usersig.Gen(cfg.SDKAppID, cfg.Secret, "administrator", 3600, time.Now())
	raw, _ := json.Marshal(body)
	u := "http://" + httpAddr + "/v4/" + cmd + "?sdkappid=1400000000&identifier=administrator&usersig=" + url.QueryEscape(sig) + "&random=1&contenttype=json"
	resp, err := http.Post(u, "application/json", bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	return out
}

// With --http on a wildcard address, links would name 0.0.0.0, which no
// device can reach: the server refuses to start without --media-url, and
// with it the links name the given URL (issue 12 §6).
func TestWildcardHTTPNeedsMediaURL(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, c := range []struct {
		name, http, mediaURL string
		refused              bool
	}{
		{"0.0.0.0 without media-url", "0.0.0.0:0", "", true},
		{"[::] without media-url", "[::]:0", "", true},
		{"no host without media-url", ":0", "", true},
		{"media-url not http", "127.0.0.1:0", "ftp://im.example.com/", true},
		{"0.0.0.0 with media-url", "0.0.0.0:0", "http://im.example.com:8080", false},
		{"loopback without media-url", "127.0.0.1:0", "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := defaultConfig()
			cfg.Data, cfg.MQTT, cfg.WS, cfg.HTTP = filepath.Join(t.TempDir(), "data"), "127.0.0.1:0", "", c.http
			cfg.Secret, cfg.MediaURL = "wildcard-secret", c.mediaURL
			srv, err := start(cfg, log)
			if c.refused {
				if err == nil {
					srv.Close()
					t.Fatal("started")
				}
				if !strings.Contains(err.Error(), "media-url") {
					t.Fatalf("the refusal does not name media-url: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			_, port, _ := net.SplitHostPort(srv.HTTPAddr())
			tk := restAdmin(t, cfg, "127.0.0.1:"+port, "media/apply_upload", map[string]any{"Type": "file", "Size": 5})
			req, _ := http.NewRequest("PUT", tk["UploadUrl"].(string), strings.NewReader("hello"))
			req.Header.Set("Content-Type", "application/octet-stream")
			resp, err := http.DefaultClient.Do(req)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("upload: %v %v", resp, err)
			}
			resp.Body.Close()
			el := restAdmin(t, cfg, "127.0.0.1:"+port, "media/commit_upload", map[string]any{"UUID": tk["UUID"]})
			link, _ := el["Url"].(string)
			want := c.mediaURL
			if want == "" {
				want = "http://" + c.http
			}
			if !strings.HasPrefix(link, want+"/media/") {
				t.Fatalf("link %q, want it under %s", link, want)
			}
		})
	}
}

// An admin identity over MQTT may send media the app hosts elsewhere; an
// ordinary user may not (issue 12 §4). The recipient gets the element as
// sent.
func TestAdminExternalMediaOverMQTT(t *testing.T) {
	srv, cfg, httpAddr := startOnLoopback(t, "media-mqtt-secret")
	defer srv.Close()
	if r := restAdmin(t, cfg, httpAddr, "im_open_login_svc/multiaccount_import", map[string]any{"Accounts": []string{"administrator", "alice", "bob"}}); r["ErrorCode"] != 0.0 {
		t.Fatal(r)
	}
	connect := func(user string, topic string) (pahov3.Client, chan []byte) {
		t.Helper()
		sig, _ := usersig.Gen(cfg.SDKAppID, cfg.Secret, user, 3600, time.Now())
		got := make(chan []byte, 16)
		c := pahov3.NewClient(pahov3.NewClientOptions().AddBroker("tcp://" + srv.Broker().Addr("tcp")).
			SetClientID(user + ":test").SetUsername(user).SetPassword(sig).SetCleanSession(true).SetAutoReconnect(false))
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("%s connect: %v", user, tok.Error())
		}
		t.Cleanup(func() { c.Disconnect(100) })
		if tok := c.Subscribe(topic, 1, func(_ pahov3.Client, m pahov3.Message) { got <- m.Payload() }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("%s subscribe: %v", user, tok.Error())
		}
		return c, got
	}
	request := func(c pahov3.Client, rsp chan []byte, user string, body any) map[string]any {
		t.Helper()
		raw, _ := json.Marshal(body)
		if tok := c.Publish("im/"+user+"/req/openim/sendmsg", 1, false, raw); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
		select {
		case b := <-rsp:
			var r map[string]any
			json.Unmarshal(b, &r)
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("no reply")
		}
		return nil
	}
	const cdn = "https://cdn.example.com/im/cat.jpg"
	el := map[string]any{"MsgType": "TIMImageElem", "MsgContent": map[string]any{"UUID": "cdn-cat", "ImageFormat": 1,
		"ImageInfoArray": []any{map[string]any{"Type": 1, "Size": 1000, "Width": 640, "Height": 480, "URL": cdn}}}}
	_, bobIn := connect("bob", "im/bob/in")
	admin, adminRsp := connect("administrator", "im/administrator/rsp")
	if r := request(admin, adminRsp, "administrator", map[string]any{"From_Account": "alice", "To_Account": "bob", "MsgRandom": 1, "MsgBody": []any{el}}); r["ErrorCode"] != 0.0 {
		t.Fatalf("admin over MQTT: %v", r)
	}
	deadline := time.After(10 * time.Second)
	for delivered := false; !delivered; {
		select {
		case b := <-bobIn:
			delivered = bytes.Contains(b, []byte(cdn))
		case <-deadline:
			t.Fatal("bob never got the message")
		}
	}
	alice, aliceRsp := connect("alice", "im/alice/rsp")
	if r := request(alice, aliceRsp, "alice", map[string]any{"To_Account": "bob", "MsgRandom": 2, "MsgBody": []any{el}}); r["ErrorCode"] != 90010.0 {
		t.Fatalf("a device sending media hosted elsewhere: %v", r)
	}
}
