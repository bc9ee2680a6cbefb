package media_test

// These tests run a real S3 server in-process (the embedded versitygw
// gateway, which verifies SigV4 signatures and POST policies), a real Pebble
// store and a real HTTP server for downloads. The gateway is one per process
// (a versitygw limit), so each test gets its own bucket.

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/internal/wait"
	"github.com/duet-im/duet/media"
	"github.com/duet-im/duet/rest"
	"github.com/duet-im/duet/store"
	"github.com/duet-im/duet/usersig"
	"golang.org/x/image/bmp"
)

const (
	appID = 1400000000
	key   = "media-test-secret"
)

var (
	gateway *media.Gateway
	// testDir is the package directory, where the repository's files are
	// found from (the gateway runs in a child process and never moves
	// this process's working directory).
	testDir string
)

func TestMain(m *testing.M) {
	testDir, _ = os.Getwd()
	dir, err := os.MkdirTemp("", "duet-media-gw-")
	if err != nil {
		panic(err)
	}
	gateway, err = media.StartGateway(dir, "", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	gateway.Close()
	os.RemoveAll(dir)
	os.Exit(code)
}

type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) set(t time.Time)         { c.ns.Store(t.UnixNano()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

type env struct {
	t     testing.TB
	st    *store.Store
	svc   *command.Service
	m     *media.Service
	web   *httptest.Server
	clock *clock
	s3    media.S3
}

type envOpts struct {
	limits      map[string]int64
	downloadTTL time.Duration
	s3          *media.S3 // default: the embedded gateway, a fresh bucket
	localOnly   bool
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	e := &env{t: t, clock: &clock{}}
	e.clock.set(time.Now())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(t.TempDir(), store.Options{Logger: log, Clock: e.clock.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := command.DefaultConfig()
	cfg.SDKAppID = appID
	svc := command.New(cfg, st, log)
	e.s3 = gateway.S3
	e.s3.Bucket = "t" + randHex(8)
	if o.s3 != nil {
		e.s3 = *o.s3
	}
	var handler atomic.Pointer[http.Handler]
	// The REST API on the same listener, as the server serves it: admin
	// commands are sent over real HTTP (restCall).
	// Its 3-second command timeout (Tencent's) is lifted: tests that load
	// the machine on purpose (twenty 28 MB commits at once) measure memory.
	api := rest.New(rest.Config{Service: svc, Key: key, Rate: -1, Timeout: time.Minute, Log: log})
	e.web = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v4/") {
			api.ServeHTTP(w, r)
			return
		}
		(*handler.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(e.web.Close)
	m, err := media.New(media.Config{
		S3: e.s3, PublicURL: e.web.URL, SDKAppID: appID, Key: key, Limits: o.limits,
		DownloadTTL: o.downloadTTL, CleanEvery: -1, ArchiveEvery: -1, Clock: e.clock.now, Log: log, LocalOnly: o.localOnly,
	}, st, svc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	h := m.Handler()
	handler.Store(&h)
	e.st, e.svc, e.m = st, svc, m
	for _, u := range []string{"alice", "bob", "carol"} {
		if _, err := st.ImportAccount(store.Account{UserID: u}); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

type reply map[string]any

func (r reply) code() int           { f, _ := r["ErrorCode"].(float64); return int(f) }
func (r reply) str(k string) string { s, _ := r[k].(string); return s }

func (e *env) exec(user, cmd string, body any) reply {
	e.t.Helper()
	raw, _ := json.Marshal(body)
	c := &command.Caller{UserID: user, Transport: command.MQTT, Admin: user == "administrator"}
	out := e.svc.Exec(context.Background(), c, cmd, raw).Encode()
	var r reply
	if err := json.Unmarshal(out, &r); err != nil {
		e.t.Fatalf("%s: %v: %s", cmd, err, out)
	}
	return r
}

// restCall sends a REST command as the App admin over HTTP, as an app
// back-end does.
func (e *env) restCall(cmd string, body any) reply {
	e.t.Helper()
	raw, _ := json.Marshal(body)
	sig, _ := usersig.Gen(appID, key, "administrator", 86400*30, time.Now())
	u := e.web.URL + "/v4/" + cmd + "?sdkappid=" + fmt.Sprint(appID) + "&identifier=administrator&usersig=" + url.QueryEscape(sig) + "&random=1&contenttype=json"
	resp, err := http.Post(u, "application/json", bytes.NewReader(raw))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var r reply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		e.t.Fatalf("%s: %v", cmd, err)
	}
	return r
}

// apply asks for an upload (PUT, or method) and fails the test unless it
// is granted.
func (e *env) apply(user, typ string, size int, ct string, method ...string) reply {
	e.t.Helper()
	body := map[string]any{"Type": typ, "Size": size, "ContentType": ct, "FileName": "f.bin"}
	if len(method) > 0 {
		body["Method"] = method[0]
	}
	r := e.exec(user, "media/apply_upload", body)
	if r.code() != 0 {
		e.t.Fatalf("apply_upload %s: %v", typ, r)
	}
	return r
}

// upload sends data to the presigned URL (PUT) or through the presigned
// POST policy (a form), as a device does.
func upload(t testing.TB, ticket reply, data []byte) (int, string) {
	t.Helper()
	var req *http.Request
	if ticket.str("Method") == "PUT" {
		req, _ = http.NewRequest("PUT", ticket.str("UploadUrl"), bytes.NewReader(data))
		for k, v := range ticket["Headers"].(map[string]any) {
			req.Header.Set(k, v.(string))
		}
	} else {
		var body bytes.Buffer
		w := multipart.NewWriter(&body)
		for k, v := range ticket["FormFields"].(map[string]any) {
			w.WriteField(k, v.(string))
		}
		fw, _ := w.CreateFormFile("file", "upload")
		fw.Write(data)
		w.Close()
		req, _ = http.NewRequest("POST", ticket.str("UploadUrl"), &body)
		req.Header.Set("Content-Type", w.FormDataContentType())
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(msg)
}

func (e *env) uploadAndCommit(user, typ, ct string, data []byte, method ...string) reply {
	e.t.Helper()
	tk := e.apply(user, typ, len(data), ct, method...)
	if st, msg := upload(e.t, tk, data); st/100 != 2 {
		e.t.Fatalf("upload: %d %s", st, msg)
	}
	r := e.exec(user, "media/commit_upload", map[string]any{"UUID": tk.str("UUID")})
	if r.code() != 0 {
		e.t.Fatalf("commit %s: %v", typ, r)
	}
	return r
}

func pngOf(w, h int) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y += 7 {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), 200, 255})
		}
	}
	var b bytes.Buffer
	png.Encode(&b, img)
	return b.Bytes()
}

func jpegOf(w, h int) []byte {
	var b bytes.Buffer
	jpeg.Encode(&b, image.NewRGBA(image.Rect(0, 0, w, h)), nil)
	return b.Bytes()
}

var (
	amr = append([]byte("#!AMR\n"), bytes.Repeat([]byte{0x3c, 0x55}, 300)...)
	mp4 = append([]byte("\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"), bytes.Repeat([]byte{0}, 2000)...)
)

// get fetches a media link as user (following the redirect to the store).
func (e *env) get(link, user string) (int, []byte, *http.Response) {
	e.t.Helper()
	u := link
	if user != "" {
		sig, _ := usersig.Gen(appID, key, user, 3600, time.Now())
		u += "?identifier=" + user + "&usersig=" + url.QueryEscape(sig)
	}
	resp, err := http.Get(u)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp
}

func TestEachMediaType(t *testing.T) {
	e := newEnv(t, envOpts{})
	cases := []struct {
		typ, ct string
		data    []byte
		want    map[string]any
	}{
		{"image", "image/png", pngOf(300, 200), map[string]any{"ImageFormat": 3.0}},
		{"image", "image/jpeg", jpegOf(64, 32), map[string]any{"ImageFormat": 1.0}},
		{"sound", "audio/amr", amr, map[string]any{"Size": float64(len(amr)), "Download_Flag": 2.0}},
		{"file", "text/plain", []byte("minutes of the meeting"), map[string]any{"FileSize": 22.0, "FileName": "f.bin", "Download_Flag": 2.0}},
		{"video", "video/mp4", mp4, map[string]any{"VideoSize": float64(len(mp4)), "VideoFormat": "mp4", "VideoDownloadFlag": 2.0}},
		{"video_thumb", "image/jpeg", jpegOf(120, 90), map[string]any{"ThumbWidth": 120.0, "ThumbHeight": 90.0, "ThumbFormat": "JPG"}},
	}
	for i, c := range cases {
		method := []string{"PUT", "POST"}[i%2]
		t.Run(c.typ+"/"+c.ct+"/"+method, func(t *testing.T) {
			r := e.uploadAndCommit("alice", c.typ, c.ct, c.data, method)
			for k, v := range c.want {
				if r[k] != v {
					t.Errorf("%s = %v, want %v (%v)", k, r[k], v, r)
				}
			}
			// The owner downloads exactly what was uploaded.
			link := ""
			for _, f := range []string{"Url", "VideoUrl", "ThumbUrl"} {
				if r.str(f) != "" {
					link = r.str(f)
				}
			}
			if c.typ == "image" {
				link = r["ImageInfoArray"].([]any)[0].(map[string]any)["URL"].(string)
			}
			st, got, _ := e.get(link, "alice")
			if st != 200 || !bytes.Equal(got, c.data) {
				t.Fatalf("download: %d, %d bytes (want %d)", st, len(got), len(c.data))
			}
		})
	}
}

func TestImageRenditions(t *testing.T) {
	e := newEnv(t, envOpts{})
	cases := []struct {
		name           string
		w, h           int
		large, thumb   [2]int
		largeIsOrginal bool
	}{
		{"landscape", 1600, 1200, [2]int{720, 540}, [2]int{198, 148}, false},
		{"portrait", 500, 1000, [2]int{360, 720}, [2]int{99, 198}, false},
		{"medium keeps original as large", 400, 300, [2]int{400, 300}, [2]int{198, 148}, true},
		{"small keeps original", 100, 50, [2]int{100, 50}, [2]int{100, 50}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.uploadAndCommit("alice", "image", "image/png", pngOf(c.w, c.h))
			infos := r["ImageInfoArray"].([]any)
			if len(infos) != 3 {
				t.Fatalf("ImageInfoArray has %d entries: %v", len(infos), r)
			}
			for i, want := range [][2]int{{c.w, c.h}, c.large, c.thumb} {
				info := infos[i].(map[string]any)
				if int(info["Type"].(float64)) != i+1 || int(info["Width"].(float64)) != want[0] || int(info["Height"].(float64)) != want[1] {
					t.Errorf("entry %d = %v, want Type %d %dx%d", i, info, i+1, want[0], want[1])
				}
				st, body, _ := e.get(info["URL"].(string), "alice")
				if st != 200 {
					t.Fatalf("download entry %d: %d %s", i, st, body)
				}
				cfg, _, err := image.DecodeConfig(bytes.NewReader(body))
				if err != nil || cfg.Width != want[0] || cfg.Height != want[1] {
					t.Errorf("entry %d decodes as %dx%d (%v), want %dx%d", i, cfg.Width, cfg.Height, err, want[0], want[1])
				}
				if int(info["Size"].(float64)) != len(body) {
					t.Errorf("entry %d Size %v, body %d bytes", i, info["Size"], len(body))
				}
			}
		})
	}
}

func TestUploadRefusals(t *testing.T) {
	e := newEnv(t, envOpts{limits: map[string]int64{"image": 4096, "sound": 1000}})
	// Refused at apply: nothing is stored.
	for _, c := range []struct {
		name string
		body map[string]any
		code int
	}{
		{"declared over the limit", map[string]any{"Type": "image", "Size": 4097, "ContentType": "image/png"}, media.CodeRefused},
		{"default 28 MB limit", map[string]any{"Type": "file", "Size": 28<<20 + 1}, media.CodeRefused},
		{"unknown type", map[string]any{"Type": "sticker", "Size": 10}, media.CodeRefused},
		{"content type of another kind", map[string]any{"Type": "image", "Size": 10, "ContentType": "video/mp4"}, media.CodeRefused},
		{"no size", map[string]any{"Type": "image"}, media.CodeBadRequest},
		{"negative size", map[string]any{"Type": "image", "Size": -1}, media.CodeBadRequest},
		{"path in file name", map[string]any{"Type": "file", "Size": 1, "FileName": "../x"}, media.CodeBadRequest},
		{"unknown method", map[string]any{"Type": "file", "Size": 1, "Method": "PATCH"}, media.CodeBadRequest},
	} {
		t.Run(c.name, func(t *testing.T) {
			if r := e.exec("alice", "media/apply_upload", c.body); r.code() != c.code {
				t.Fatalf("got %v, want code %d", r, c.code)
			}
		})
	}

	// Refused by the store itself (signature or policy): nothing lands.
	for _, c := range []struct {
		name, method string
		size         int
		tamper       func(tk reply)
	}{
		{"POST body larger than declared", "POST", 1001, nil},
		{"PUT body larger than declared", "PUT", 1001, nil},
		{"PUT body smaller than declared", "PUT", 999, nil},
		{"POST under another key", "POST", 500, func(tk reply) {
			ff := tk["FormFields"].(map[string]any)
			ff["key"] = strings.Replace(ff["key"].(string), "/upload", "/evil", 1)
		}},
		{"POST with another content type", "POST", 500, func(tk reply) { tk["FormFields"].(map[string]any)["Content-Type"] = "text/html" }},
		{"PUT with another content type", "PUT", 500, func(tk reply) { tk["Headers"].(map[string]any)["Content-Type"] = "text/html" }},
		{"PUT to another key", "PUT", 1000, func(tk reply) { tk["UploadUrl"] = strings.Replace(tk.str("UploadUrl"), "/upload?", "/evil?", 1) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			tk := e.apply("alice", "image", 1000, "image/png", c.method)
			if c.tamper != nil {
				c.tamper(tk)
			}
			if st, _ := upload(t, tk, make([]byte, c.size)); st/100 == 2 {
				t.Fatalf("upload answered %d", st)
			}
			if r := e.exec("alice", "media/commit_upload", map[string]any{"UUID": tk.str("UUID")}); r.code() != media.CodeNotUploaded {
				t.Fatalf("commit: %v", r)
			}
			if n := countObjects(t, e, tk.str("UUID")); n != 0 {
				t.Fatalf("%d objects stored", n)
			}
		})
	}

	t.Run("content not of the declared type is removed", func(t *testing.T) {
		for _, c := range []struct {
			typ, ct string
			data    []byte
		}{
			{"image", "image/png", []byte("this is not a picture at all, just text")},
			{"sound", "audio/amr", pngOf(4, 4)},
			{"video", "video/mp4", amr},
			{"video_thumb", "image/jpeg", mp4[:200]},
		} {
			tk := e.apply("alice", c.typ, len(c.data), c.ct)
			if st, msg := upload(t, tk, c.data); st/100 != 2 {
				t.Fatalf("upload: %d %s", st, msg)
			}
			id := tk.str("UUID")
			if r := e.exec("alice", "media/commit_upload", map[string]any{"UUID": id}); r.code() != media.CodeContent {
				t.Fatalf("%s commit: %v", c.typ, r)
			}
			if n := countObjects(t, e, id); n != 0 {
				t.Fatalf("%s: %d objects left after the refusal", c.typ, n)
			}
			if _, err := e.st.GetUpload(id); err != store.ErrNotFound {
				t.Fatalf("%s: record left after the refusal: %v", c.typ, err)
			}
		}
	})

	t.Run("someone else's upload", func(t *testing.T) {
		data := pngOf(10, 10)
		tk := e.apply("alice", "image", len(data), "image/png")
		upload(t, tk, data)
		if r := e.exec("bob", "media/commit_upload", map[string]any{"UUID": tk.str("UUID")}); r.code() != media.CodeUnknown {
			t.Fatalf("bob committing alice's upload: %v", r)
		}
		if r := e.exec("bob", "media/commit_upload", map[string]any{"UUID": "nope"}); r.code() != media.CodeUnknown {
			t.Fatalf("unknown UUID: %v", r)
		}
		if r := e.exec("alice", "media/commit_upload", map[string]any{"UUID": tk.str("UUID")}); r.code() != 0 {
			t.Fatalf("alice committing her own upload: %v", r)
		}
	})
}

func countObjects(t *testing.T, e *env, uuid string) int {
	t.Helper()
	n, err := media.CountObjects(context.Background(), e.s3, "media/"+uuid+"/")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCleanerRemovesUncommitted(t *testing.T) {
	e := newEnv(t, envOpts{})
	data := pngOf(20, 20)
	tk := e.apply("alice", "image", len(data), "image/png")
	upload(t, tk, data)
	id := tk.str("UUID")
	keep := e.uploadAndCommit("alice", "image", "image/png", data)
	// Committed and sent: it stays while the message does.
	if r := e.sendmsg("alice", "bob", imageElem(keep)); r.code() != 0 {
		t.Fatal(r)
	}
	if n, err := e.m.Clean(context.Background()); err != nil || n != 0 {
		t.Fatalf("clean before the deadline removed %d (%v)", n, err)
	}
	e.clock.advance(time.Hour + time.Second)
	if n, err := e.m.Clean(context.Background()); err != nil || n != 1 {
		t.Fatalf("clean after the deadline removed %d (%v), want 1", n, err)
	}
	if n := countObjects(t, e, id); n != 0 {
		t.Fatalf("%d objects left", n)
	}
	if r := e.exec("alice", "media/commit_upload", map[string]any{"UUID": id}); r.code() != media.CodeUnknown {
		t.Fatalf("commit after the cleaner: %v", r)
	}
	if n := countObjects(t, e, keep.str("UUID")); n == 0 {
		t.Fatal("the cleaner removed a committed upload a message carries")
	}
}

func imageElem(r reply) map[string]any {
	return map[string]any{"MsgType": "TIMImageElem", "MsgContent": map[string]any{
		"UUID": r["UUID"], "ImageFormat": r["ImageFormat"], "ImageInfoArray": r["ImageInfoArray"]}}
}

func (e *env) sendmsg(from, to string, els ...map[string]any) reply {
	e.t.Helper()
	return e.exec(from, "openim/sendmsg", map[string]any{"To_Account": to, "MsgRandom": time.Now().UnixNano() & 0xffffff, "MsgBody": els})
}

func TestSendChecksMedia(t *testing.T) {
	e := newEnv(t, envOpts{})
	img := e.uploadAndCommit("alice", "image", "image/png", pngOf(30, 30))
	file := e.uploadAndCommit("alice", "file", "text/plain", []byte("plain text"))
	bobs := e.uploadAndCommit("bob", "image", "image/png", pngOf(30, 30))
	pending := e.apply("alice", "image", 10, "image/png")

	forged := imageElem(img)
	infos := forged["MsgContent"].(map[string]any)["ImageInfoArray"].([]any)
	forgedInfos := []any{map[string]any{"Type": 1, "Width": 1, "Height": 1, "URL": "https://evil.example/x.png"}, infos[1], infos[2]}
	forged = map[string]any{"MsgType": "TIMImageElem", "MsgContent": map[string]any{"UUID": img["UUID"], "ImageInfoArray": forgedInfos}}
	asImage := map[string]any{"MsgType": "TIMImageElem", "MsgContent": map[string]any{
		"UUID": file["UUID"], "ImageInfoArray": []any{map[string]any{"Type": 1, "Width": 1, "Height": 1, "URL": file["Url"]}}}}
	fileElem := map[string]any{"MsgType": "TIMFileElem", "MsgContent": map[string]any{
		"UUID": file["UUID"], "Url": file["Url"], "FileSize": file["FileSize"], "FileName": "notes.txt", "Download_Flag": 2}}
	badURL := map[string]any{"MsgType": "TIMFileElem", "MsgContent": map[string]any{
		"UUID": file["UUID"], "Url": "https://evil.example/", "Download_Flag": 2}}
	unknown := imageElem(img)
	unknown["MsgContent"] = map[string]any{"UUID": "0123", "ImageInfoArray": infos}
	uncommitted := imageElem(img)
	uncommitted["MsgContent"] = map[string]any{"UUID": pending["UUID"], "ImageInfoArray": infos}

	for _, c := range []struct {
		name string
		from string
		el   map[string]any
		code int
	}{
		{"own committed image", "alice", imageElem(img), 0},
		{"own committed file", "alice", fileElem, 0},
		{"unknown UUID", "alice", unknown, media.CodeElement},
		{"uncommitted UUID", "alice", uncommitted, media.CodeElement},
		{"another user's UUID", "alice", imageElem(bobs), media.CodeElement},
		{"a file sent as an image", "alice", asImage, media.CodeElement},
		{"forged image URL", "alice", forged, media.CodeElement},
		{"forged file URL", "alice", badURL, media.CodeElement},
	} {
		t.Run(c.name, func(t *testing.T) {
			if r := e.sendmsg(c.from, "bob", c.el); r.code() != c.code {
				t.Fatalf("got %v, want code %d", r, c.code)
			}
		})
	}
}

func TestDownloadAccess(t *testing.T) {
	e := newEnv(t, envOpts{downloadTTL: 2 * time.Second})
	img := e.uploadAndCommit("alice", "image", "image/png", pngOf(800, 600))
	link := img["ImageInfoArray"].([]any)[2].(map[string]any)["URL"].(string)

	// Before any message, only alice may fetch it.
	if st, _, _ := e.get(link, "bob"); st != http.StatusForbidden {
		t.Fatalf("bob before the message: %d", st)
	}
	if r := e.sendmsg("alice", "bob", imageElem(img)); r.code() != 0 {
		t.Fatalf("send: %v", r)
	}
	for _, c := range []struct {
		name string
		link string
		user string
		want int
	}{
		{"owner", link, "alice", 200},
		{"recipient", link, "bob", 200},
		{"recipient again (remembered)", link, "bob", 200},
		{"a third user", link, "carol", http.StatusForbidden},
		{"no usersig", link, "", http.StatusUnauthorized},
		{"unknown rendition", strings.Replace(link, "/thumb", "/secret", 1), "alice", http.StatusNotFound},
		{"unknown upload", e.web.URL + "/media/0000/orig", "alice", http.StatusNotFound},
	} {
		t.Run(c.name, func(t *testing.T) {
			if st, body, _ := e.get(c.link, c.user); st != c.want {
				t.Fatalf("got %d %s, want %d", st, body, c.want)
			}
		})
	}
	t.Run("usersig in the Authorization header", func(t *testing.T) {
		sig, _ := usersig.Gen(appID, key, "bob", 3600, time.Now())
		req, _ := http.NewRequest("GET", link, nil)
		req.Header.Set("Authorization", "UserSig bob:"+sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("got %d", resp.StatusCode)
		}
	})
	t.Run("forged usersig", func(t *testing.T) {
		sig, _ := usersig.Gen(appID, "another-key", "carol", 3600, time.Now())
		resp, err := http.Get(link + "?identifier=carol&usersig=" + url.QueryEscape(sig))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("got %d", resp.StatusCode)
		}
	})

	// The redirect target is a presigned GET: tampering with it fails, and
	// so does using it after it expired.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	sig, _ := usersig.Gen(appID, key, "bob", 3600, time.Now())
	resp, err := noRedirect.Get(link + "?identifier=bob&usersig=" + url.QueryEscape(sig))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	presigned := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.Contains(presigned, "X-Amz-Signature=") {
		t.Fatalf("redirect: %d %q", resp.StatusCode, presigned)
	}
	status := func(u string) int {
		r, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		return r.StatusCode
	}
	if st := status(presigned); st != 200 {
		t.Fatalf("presigned GET: %d", st)
	}
	for name, u := range map[string]string{
		"other object":    strings.Replace(presigned, "/thumb?", "/orig?", 1),
		"other signature": presigned[:len(presigned)-4] + "0000",
		"longer expiry":   strings.Replace(presigned, "X-Amz-Expires=2", "X-Amz-Expires=9", 1),
	} {
		if st := status(u); st != http.StatusForbidden {
			t.Errorf("tampered (%s) presigned GET: %d", name, st)
		}
	}
	wait.Until(t, 10*time.Second, "the presigned GET to stop working after its 2 s expiry", func() bool { return status(presigned) != 200 })
}

func TestStoreUnreachable(t *testing.T) {
	// A closed loopback port: connections are refused at once.
	dead := media.S3{Endpoint: "127.0.0.1:1", AccessKey: "x", SecretKey: "y", Bucket: "duet"}
	e := newEnv(t, envOpts{s3: &dead})
	if r := e.exec("alice", "media/apply_upload", map[string]any{"Type": "image", "Size": 10}); r.code() != media.CodeUnavailable {
		t.Fatalf("apply with the store down: %v", r)
	}
	if r := e.exec("alice", "media/commit_upload", map[string]any{"UUID": "x"}); r.code() != media.CodeUnknown {
		t.Fatalf("commit with the store down: %v", r)
	}
	// Text keeps flowing.
	if r := e.sendmsg("alice", "bob", map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": "still here"}}); r.code() != 0 {
		t.Fatalf("text with the store down: %v", r)
	}
}

func TestHourlyArchive(t *testing.T) {
	e := newEnv(t, envOpts{})
	hour := time.Date(2026, 3, 14, 15, 0, 0, 0, time.UTC)
	put := func(at time.Time, from, to, text string, seq uint32) {
		t.Helper()
		body, _ := json.Marshal([]any{map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": text}}})
		err := e.st.Update(func(tx *store.Tx) error {
			return tx.PutMessage(&store.Message{From: from, To: to, MsgSeq: seq, MsgRandom: seq * 7, MsgTime: at.Unix(),
				MsgKey: fmt.Sprintf("%d_%d_%d", seq, seq*7, at.Unix()), MsgBody: body})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	put(hour.Add(-time.Second), "alice", "bob", "the hour before", 1)
	put(hour, "alice", "bob", "first <of> the hour", 2)
	put(hour.Add(30*time.Minute), "bob", "alice", "second", 3)
	put(hour.Add(59*time.Minute+59*time.Second), "carol", "alice", "last", 4)
	put(hour.Add(time.Hour), "alice", "carol", "next hour", 5)

	history := func(user, msgTime string) reply {
		return e.exec(user, "open_msg_svc/get_history", map[string]any{"ChatType": "C2C", "MsgTime": msgTime})
	}
	e.clock.set(hour.Add(time.Hour + 30*time.Minute))
	if err := e.m.ArchiveDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, user, msgTime string
		code                int
	}{
		{"an hour not over yet", "administrator", "2026031416", media.CodeNoArchive},
		{"not an admin", "alice", "2026031415", 90009},
		{"malformed hour", "administrator", "2026-03-14", media.CodeBadRequest},
		{"hour out of range", "administrator", "2026031425", media.CodeBadRequest},
	} {
		t.Run(c.name, func(t *testing.T) {
			if r := history(c.user, c.msgTime); r.code() != c.code {
				t.Fatalf("got %v, want %d", r, c.code)
			}
		})
	}
	if r := e.exec("administrator", "open_msg_svc/get_history", map[string]any{"ChatType": "Group", "MsgTime": "2026031415"}); r.code() != media.CodeBadRequest {
		t.Fatalf("Group: %v", r)
	}
	// The hour before has its own archive of one message.
	if files := history("administrator", "2026031414")["File_List"].([]any); len(files) != 1 {
		t.Fatalf("hour 14: %v", files)
	}

	r := history("administrator", "2026031415")
	files := r["File_List"].([]any)
	if r.code() != 0 || len(files) != 1 || len(r["File"].([]any)) != 1 {
		t.Fatalf("get_history: %v", r)
	}
	f := files[0].(map[string]any)
	resp, err := http.Get(f["URL"].(string))
	if err != nil {
		t.Fatal(err)
	}
	gz, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("download: %d %s", resp.StatusCode, gz)
	}
	if md5hex(gz) != f["GzipMD5"] || float64(len(gz)) != f["GzipSize"] {
		t.Fatalf("gzip %d bytes md5 %s; listed %v", len(gz), md5hex(gz), f)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if md5hex(raw) != f["FileMD5"] || float64(len(raw)) != f["FileSize"] {
		t.Fatalf("file %d bytes md5 %s; listed %v", len(raw), md5hex(raw), f)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	var texts []string
	for _, l := range lines {
		var m struct {
			ChatType string
			MsgBody  []struct{ MsgContent struct{ Text string } }
		}
		if err := json.Unmarshal([]byte(l), &m); err != nil || m.ChatType != "C2C" {
			t.Fatalf("line %q: %v", l, err)
		}
		texts = append(texts, m.MsgBody[0].MsgContent.Text)
	}
	if got := strings.Join(texts, "|"); got != "first <of> the hour|second|last" {
		t.Fatalf("archived %q", got)
	}
	expire, err := time.Parse("2006-01-02 15:04:05", f["ExpireTime"].(string))
	if err != nil || expire.Before(time.Now()) {
		t.Fatalf("ExpireTime %v", f["ExpireTime"])
	}

	// A restart (a new service on the same store) archives the next hour
	// once it is over, and neither redoes nor loses the first.
	e.m.Close()
	m2, err := media.New(media.Config{S3: e.s3, PublicURL: e.web.URL, SDKAppID: appID, Key: key,
		CleanEvery: -1, ArchiveEvery: -1, Clock: e.clock.now}, e.st, e.svc)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if err := m2.ArchiveDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := history("administrator", "2026031416"); r.code() != media.CodeNoArchive {
		t.Fatalf("hour 16 archived before it was over: %v", r)
	}
	e.clock.advance(time.Hour)
	if err := m2.ArchiveDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if again := history("administrator", "2026031415")["File_List"].([]any)[0].(map[string]any); again["GzipMD5"] != f["GzipMD5"] {
		t.Fatalf("hour 15 changed after the restart: %v vs %v", again, f)
	}
	next := history("administrator", "2026031416")
	if nf := next["File_List"].([]any); next.code() != 0 || len(nf) != 1 {
		t.Fatalf("hour 16: %v", next)
	}
	if n, err := media.CountObjects(context.Background(), e.s3, "archive/"); err != nil || n != 3 {
		t.Fatalf("%d archive objects (%v), want 3 (hours 14, 15, 16)", n, err)
	}
	// An hour without messages is archived as an empty list.
	e.clock.advance(time.Hour)
	if err := m2.ArchiveDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := history("administrator", "2026031417"); r.code() != 0 || len(r["File_List"].([]any)) != 0 {
		t.Fatalf("empty hour: %v", r)
	}
}

func md5hex(b []byte) string {
	s := md5.Sum(b)
	return hex.EncodeToString(s[:])
}

func TestImageFormats(t *testing.T) {
	e := newEnv(t, envOpts{})
	// A two-frame animated GIF.
	pal := color.Palette{color.Black, color.White}
	anim := &gif.GIF{Image: []*image.Paletted{image.NewPaletted(image.Rect(0, 0, 800, 400), pal), image.NewPaletted(image.Rect(0, 0, 800, 400), pal)}, Delay: []int{10, 10}}
	var animData bytes.Buffer
	gif.EncodeAll(&animData, anim)
	// A still GIF, a BMP, and a PNG with transparency.
	var still, bmpData, alpha bytes.Buffer
	gif.Encode(&still, image.NewPaletted(image.Rect(0, 0, 800, 400), pal), nil)
	bmp.Encode(&bmpData, image.NewRGBA(image.Rect(0, 0, 1000, 500)))
	png.Encode(&alpha, image.NewNRGBA(image.Rect(0, 0, 1000, 500))) // all transparent
	// A PNG that claims 60000 × 60000 pixels in a few bytes.
	var bomb bytes.Buffer
	png.Encode(&bomb, image.NewGray(image.Rect(0, 0, 1, 1)))
	bombData := bomb.Bytes()
	binary.BigEndian.PutUint32(bombData[16:], 60000)
	binary.BigEndian.PutUint32(bombData[20:], 60000)
	binary.BigEndian.PutUint32(bombData[29:], crc32.ChecksumIEEE(bombData[12:29]))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, w, h, _, _, ok := media.Renditions(bombData); ok || w != 60000 || h != 60000 {
		t.Fatalf("bomb: ok %v, %dx%d", ok, w, h)
	}
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 64<<20 {
		t.Fatalf("looking at the bomb allocated %d MB", n>>20)
	}
	// An HEIF container: an image, but not one Go decodes.
	heic := append([]byte("\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"), make([]byte, 100)...)

	for _, c := range []struct {
		name     string
		data     []byte
		format   int
		entries  int
		resized  bool   // large and thumb are their own renditions
		renderCT string // their content type
	}{
		{"animated GIF keeps its original", animData.Bytes(), 2, 3, false, ""},
		{"still GIF", still.Bytes(), 2, 3, true, "image/jpeg"},
		{"BMP", bmpData.Bytes(), 4, 3, true, "image/jpeg"},
		{"transparent PNG stays PNG", alpha.Bytes(), 3, 3, true, "image/png"},
		{"undecodable format keeps only the original", heic, 255, 1, false, ""},
		{"decompression bomb is not decoded", bombData, 3, 1, false, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := e.uploadAndCommit("alice", "image", "image/png", c.data)
			infos := r["ImageInfoArray"].([]any)
			if int(r["ImageFormat"].(float64)) != c.format || len(infos) != c.entries {
				t.Fatalf("ImageFormat %v, %d entries: %v", r["ImageFormat"], len(infos), r)
			}
			orig := infos[0].(map[string]any)["URL"].(string)
			for _, info := range infos[1:] {
				u := info.(map[string]any)["URL"].(string)
				if (u != orig) != c.resized {
					t.Errorf("entry %v: resized=%v, want %v", info, u != orig, c.resized)
				}
				if c.resized {
					_, body, resp := e.get(u, "alice")
					if ct := resp.Header.Get("Content-Type"); ct != c.renderCT || len(body) == 0 {
						t.Errorf("rendition %s is %q", u, ct)
					}
				}
			}
		})
	}
}

// proxy forwards TCP connections to target until it is closed: an S3 store
// that can be taken down in the middle of a test.
type proxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

func TestStoreGoesDown(t *testing.T) {
	p := newProxy(t, gateway.S3.Endpoint)
	s3 := gateway.S3
	s3.Endpoint, s3.Bucket = p.ln.Addr().String(), "t"+randHex(8)
	e := newEnv(t, envOpts{s3: &s3})
	data := pngOf(50, 50)
	tk := e.apply("alice", "image", len(data), "image/png")
	if st, msg := upload(t, tk, data); st != 200 {
		t.Fatalf("upload: %d %s", st, msg)
	}
	p.close()
	id := tk.str("UUID")
	if r := e.exec("alice", "media/commit_upload", map[string]any{"UUID": id}); r.code() != media.CodeUnavailable {
		t.Fatalf("commit with the store down: %v", r)
	}
	if r := e.exec("alice", "media/apply_upload", map[string]any{"Type": "image", "Size": 10}); r.code() != 0 {
		// The bucket is known to exist and presigning needs no network, so
		// a new upload URL is still given out; its upload will wait.
		t.Fatalf("apply with the store down: %v", r)
	}
	// The cleaner cannot remove the object: it keeps the record to retry.
	e.clock.advance(2 * time.Hour)
	if _, err := e.m.Clean(context.Background()); err == nil {
		t.Fatal("clean with the store down reported success")
	}
	if _, err := e.st.GetUpload(id); err != nil {
		t.Fatalf("the cleaner dropped the record of an object it could not remove: %v", err)
	}
	if r := e.sendmsg("alice", "bob", map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": "still here"}}); r.code() != 0 {
		t.Fatalf("text with the store down: %v", r)
	}
	// The object is still there, and so is the record that names it, for a
	// later run: nothing is orphaned.
	back := s3
	back.Endpoint = gateway.S3.Endpoint
	if n, err := media.CountObjects(context.Background(), back, "media/"+id+"/"); err != nil || n != 1 {
		t.Fatalf("object before the retry: %d %v", n, err)
	}
}

// An App admin's upload, sent in a message between two users (REST sendmsg
// with From_Account), is downloadable by those two and nobody else.
func TestAdminUploadDownload(t *testing.T) {
	e := newEnv(t, envOpts{})
	img := e.uploadAndCommit("administrator", "image", "image/png", pngOf(300, 300))
	link := img["ImageInfoArray"].([]any)[2].(map[string]any)["URL"].(string)
	if st, _, _ := e.get(link, "bob"); st != http.StatusForbidden {
		t.Fatalf("bob before any message: %d", st)
	}
	r := e.exec("administrator", "openim/sendmsg", map[string]any{"From_Account": "alice", "To_Account": "bob",
		"MsgRandom": 77, "MsgBody": []any{imageElem(img)}})
	if r.code() != 0 {
		t.Fatalf("admin send: %v", r)
	}
	for user, want := range map[string]int{"bob": 200, "alice": 200, "carol": http.StatusForbidden, "administrator": 200} {
		if st, _, _ := e.get(link, user); st != want {
			t.Errorf("%s: %d, want %d", user, st, want)
		}
	}
}

// The embedded gateway keeps its key and, when free, its port across
// restarts, so upload URLs handed out before a restart keep working.
func TestGatewayRestartKeepsKeyAndPort(t *testing.T) {
	// Each gateway is a process of its own: this one runs beside the
	// package's.
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	g1, err := media.StartGateway(dir, "", quiet)
	if err != nil {
		t.Fatal(err)
	}
	first := g1.S3
	if err := g1.Close(); err != nil {
		t.Fatal(err)
	}
	g2, err := media.StartGateway(dir, "", quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer g2.Close()
	if g2.S3.Endpoint != first.Endpoint || g2.S3.AccessKey != first.AccessKey || g2.S3.SecretKey != first.SecretKey {
		t.Fatalf("after a restart %+v, before %+v", g2.S3, first)
	}
}

// An archive's bytes depend only on the hour's messages: an hour archived
// again after a crash (object written, completion not recorded) overwrites
// its object with the same bytes under the same name.
func TestArchiveIsDeterministic(t *testing.T) {
	hour := time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC)
	var md5s []any
	for i := 0; i < 2; i++ {
		e := newEnv(t, envOpts{})
		for j := 0; j < 50; j++ {
			at := hour.Add(time.Duration(j) * time.Minute)
			err := e.st.Update(func(tx *store.Tx) error {
				return tx.PutMessage(&store.Message{From: "alice", To: "bob", MsgSeq: uint32(j), MsgRandom: 1, MsgTime: at.Unix(),
					MsgKey: fmt.Sprintf("%d_1_%d", j, at.Unix()), MsgBody: []byte(`[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]`)})
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		e.clock.set(hour.Add(2 * time.Hour))
		if err := e.m.ArchiveDue(context.Background()); err != nil {
			t.Fatal(err)
		}
		r := e.exec("administrator", "open_msg_svc/get_history", map[string]any{"ChatType": "C2C", "MsgTime": "2026050108"})
		files, _ := r["File"].([]any)
		if len(files) != 1 {
			t.Fatalf("get_history: %v", r)
		}
		md5s = append(md5s, files[0].(map[string]any)["GzipMD5"])
	}
	if md5s[0] != md5s[1] {
		t.Fatalf("the same hour archived twice gave %v", md5s)
	}
}
