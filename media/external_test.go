package media_test

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/duet-im/duet/media"
)

// externalElements are media elements whose URLs the app hosts itself (a
// CDN): Tencent's REST API takes them, and migrations carry them.
func externalElements() map[string]map[string]any {
	cdn := "https://cdn.example.com/im/"
	return map[string]map[string]any{
		"image": {"MsgType": "TIMImageElem", "MsgContent": map[string]any{"UUID": "cdn-image-1", "ImageFormat": 1.0,
			"ImageInfoArray": []any{
				map[string]any{"Type": 1.0, "Size": 81234.0, "Width": 1280.0, "Height": 960.0, "URL": cdn + "a.jpg"},
				map[string]any{"Type": 2.0, "Size": 30000.0, "Width": 720.0, "Height": 540.0, "URL": cdn + "a_720.jpg"},
				map[string]any{"Type": 3.0, "Size": 5000.0, "Width": 198.0, "Height": 148.0, "URL": cdn + "a_198.jpg"},
			}}},
		"file": {"MsgType": "TIMFileElem", "MsgContent": map[string]any{"UUID": "cdn-file-1", "Url": cdn + "minutes.pdf",
			"FileSize": 1234.0, "FileName": "minutes.pdf", "Download_Flag": 2.0}},
		"sound": {"MsgType": "TIMSoundElem", "MsgContent": map[string]any{"UUID": "cdn-sound-1", "Url": "http://cdn.example.com/v.amr",
			"Size": 4000.0, "Second": 3.0, "Download_Flag": 2.0}},
		"video": {"MsgType": "TIMVideoFileElem", "MsgContent": map[string]any{"VideoUUID": "cdn-video-1", "VideoUrl": cdn + "v.mp4",
			"VideoSize": 900000.0, "VideoSecond": 12.0, "VideoFormat": "mp4", "VideoDownloadFlag": 2.0,
			"ThumbUUID": "cdn-thumb-1", "ThumbUrl": cdn + "v.jpg", "ThumbSize": 3000.0, "ThumbWidth": 320.0, "ThumbHeight": 240.0,
			"ThumbFormat": "JPG", "ThumbDownloadFlag": 2.0}},
	}
}

// An App admin sends and imports media elements that name no upload of
// Duet's (issue 12 §4) over REST: sendmsg, batchsendmsg and importmsg
// store them as given, and history gives them back unchanged.
func TestAdminSendsExternalMedia(t *testing.T) {
	e := newEnv(t, envOpts{})
	els := externalElements()
	random := time.Now().Unix() & 0xffffff
	for name, el := range els {
		t.Run(name, func(t *testing.T) {
			body := []any{el}
			random++
			for _, c := range []struct {
				cmd string
				req map[string]any
			}{
				{"openim/sendmsg", map[string]any{"From_Account": "alice", "To_Account": "bob", "MsgRandom": random, "MsgBody": body}},
				{"openim/batchsendmsg", map[string]any{"From_Account": "alice", "To_Account": []string{"bob", "carol"}, "MsgRandom": random + 1000, "MsgBody": body}},
				{"openim/importmsg", map[string]any{"From_Account": "alice", "To_Account": "bob", "MsgRandom": random + 2000,
					"MsgTimeStamp": e.clock.now().Unix() - 3600, "SyncFromOldSystem": 1, "MsgBody": body}},
			} {
				if r := e.restCall(c.cmd, c.req); r.code() != 0 || r["ErrorList"] != nil {
					t.Fatalf("%s: %v", c.cmd, r)
				}
			}
			// Stored as given: the same element comes back from history.
			r := e.restCall("openim/admin_getroammsg", map[string]any{"Operator_Account": "alice", "Peer_Account": "bob",
				"MaxCnt": 100, "MinTime": 0, "MaxTime": e.clock.now().Unix() + 60})
			found := 0
			for _, m := range r["MsgList"].([]any) {
				var got []map[string]any
				raw, _ := json.Marshal(m.(map[string]any)["MsgBody"])
				json.Unmarshal(raw, &got)
				if len(got) == 1 && got[0]["MsgType"] == el["MsgType"] {
					if !reflect.DeepEqual(got[0], el) {
						t.Fatalf("stored %v\nsent   %v", got[0], el)
					}
					found++
				}
			}
			if found != 3 {
				t.Fatalf("history holds %d of the 3 messages: %v", found, r)
			}
		})
	}

	// Devices keep the strict rule: only their own committed uploads.
	for name, el := range els {
		if r := e.sendmsg("alice", "bob", el); r.code() != media.CodeElement {
			t.Errorf("a device sending an external %s: %v", name, r)
		}
	}
	// What an admin names must be a URL a device can fetch.
	bad := map[string]any{"MsgType": "TIMFileElem", "MsgContent": map[string]any{"UUID": "cdn-file-2", "Url": "javascript:alert(1)", "Download_Flag": 2}}
	if r := e.restCall("openim/sendmsg", map[string]any{"From_Account": "alice", "To_Account": "bob", "MsgRandom": 7, "MsgBody": []any{bad}}); r.code() != media.CodeElement {
		t.Errorf("javascript: URL: %v", r)
	}
	// An admin still may not point a Duet upload's element elsewhere.
	img := e.uploadAndCommit("alice", "image", "image/png", pngOf(30, 30))
	forged := imageElem(img)
	forged["MsgContent"].(map[string]any)["ImageInfoArray"] = els["image"]["MsgContent"].(map[string]any)["ImageInfoArray"]
	if r := e.restCall("openim/sendmsg", map[string]any{"From_Account": "alice", "To_Account": "bob", "MsgRandom": 8, "MsgBody": []any{forged}}); r.code() != media.CodeElement {
		t.Errorf("an upload's element with foreign URLs: %v", r)
	}
}

// With --media-local-only even an App admin may send only Duet's uploads.
func TestLocalOnlyRefusesExternalMedia(t *testing.T) {
	e := newEnv(t, envOpts{localOnly: true})
	for name, el := range externalElements() {
		for _, cmd := range []string{"openim/sendmsg", "openim/importmsg"} {
			r := e.restCall(cmd, map[string]any{"From_Account": "alice", "To_Account": "bob", "MsgRandom": 9,
				"MsgTimeStamp": e.clock.now().Unix(), "SyncFromOldSystem": 2, "MsgBody": []any{el}})
			if r.code() != media.CodeElement {
				t.Errorf("%s %s: %v", cmd, name, r)
			}
		}
	}
	// Duet's own uploads still go.
	img := e.uploadAndCommit("administrator", "image", "image/png", pngOf(30, 30))
	if r := e.restCall("openim/sendmsg", map[string]any{"From_Account": "alice", "To_Account": "bob", "MsgRandom": 10, "MsgBody": []any{imageElem(img)}}); r.code() != 0 {
		t.Errorf("an admin upload: %v", r)
	}
}
