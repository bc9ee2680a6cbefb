package media_test

import (
	"bytes"
	"context"
	"net/http"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/duet-im/duet/media"
)

// restUpload applies for an upload as the App admin over REST, sends data
// to the presigned URL and commits it, all over HTTP.
func (e *env) restUpload(typ, ct string, data []byte) (ticket, element reply) {
	e.t.Helper()
	tk := e.restCall("media/apply_upload", map[string]any{"Type": typ, "Size": len(data), "ContentType": ct})
	if tk.code() != 0 {
		e.t.Fatalf("apply_upload: %v", tk)
	}
	if st, msg := upload(e.t, tk, data); st/100 != 2 {
		e.t.Fatalf("upload: %d %s", st, msg)
	}
	el := e.restCall("media/commit_upload", map[string]any{"UUID": tk.str("UUID")})
	if el.code() != 0 {
		e.t.Fatalf("commit_upload: %v", el)
	}
	return tk, el
}

// Media goes with the last message that carries it (issue 12 §6): an
// upload sent to bob in a 1-hour message and to carol in a 1-day message
// stays while either lives and is gone from S3 once both have expired; bob's
// download grant ends with his message; a committed upload never sent goes
// at its deadline, like one never committed.
func TestMediaGoesWithItsLastMessage(t *testing.T) {
	e := newEnv(t, envOpts{})
	_, img := e.restUpload("image", "image/png", pngOf(800, 600))
	id := img.str("UUID")
	thumb := img["ImageInfoArray"].([]any)[2].(map[string]any)["URL"].(string)
	unsent := e.uploadAndCommit("alice", "file", "text/plain", []byte("never sent"))
	for i, to := range []string{"bob", "carol"} {
		r := e.restCall("openim/sendmsg", map[string]any{"From_Account": "alice", "To_Account": to, "MsgRandom": 100 + i,
			"MsgLifeTime": []int{3600, 86400}[i], "MsgBody": []any{imageElem(img)}})
		if r.code() != 0 {
			t.Fatalf("sendmsg: %v", r)
		}
	}
	for _, user := range []string{"bob", "carol"} {
		if st, _, _ := e.get(thumb, user); st != http.StatusOK {
			t.Fatalf("%s's download while the messages live: %d", user, st)
		}
	}
	objects := countObjects(t, e, id)
	if objects != 3 {
		t.Fatalf("%d objects for the image, want 3 (original, large, thumbnail)", objects)
	}
	clean := func() {
		t.Helper()
		if _, err := e.st.Sweep(e.clock.now(), 0); err != nil {
			t.Fatal(err)
		}
		if _, err := e.m.Clean(context.Background()); err != nil {
			t.Fatal(err)
		}
	}

	// After 2 hours: bob's 1-hour message is gone, and his grant with it;
	// carol's 1-day message still carries the image.
	e.clock.advance(2 * time.Hour)
	clean()
	if n := countObjects(t, e, id); n != objects {
		t.Fatalf("after the first message expired: %d objects, want %d", n, objects)
	}
	if st, _, _ := e.get(thumb, "carol"); st != http.StatusOK {
		t.Fatalf("carol's download while her message lives: %d", st)
	}
	if st, _, _ := e.get(thumb, "bob"); st != http.StatusForbidden {
		t.Fatalf("bob's download after his message expired: %d", st)
	}
	if n := countObjects(t, e, unsent.str("UUID")); n != 0 {
		t.Fatalf("a committed upload never sent is kept past its deadline: %d objects", n)
	}

	// After a day: both messages have expired, and so has the image.
	e.clock.advance(22*time.Hour + time.Second)
	clean()
	if n := countObjects(t, e, id); n != 0 {
		t.Fatalf("after its last message expired: %d objects left in S3", n)
	}
	for _, user := range []string{"carol", "administrator"} {
		if st, _, _ := e.get(thumb, user); st != http.StatusNotFound {
			t.Fatalf("%s's download after the media went: %d", user, st)
		}
	}
	if r := e.restCall("openim/sendmsg", map[string]any{"From_Account": "alice", "To_Account": "bob", "MsgRandom": 200,
		"MsgBody": []any{imageElem(img)}}); r.code() != media.CodeElement {
		t.Fatalf("sending the removed upload again: %v", r)
	}
}

// After commit_upload, the upload URL (still valid for minutes) cannot
// change what was checked and is served (issue 12 §6).
func TestUploadURLAfterCommitChangesNothing(t *testing.T) {
	e := newEnv(t, envOpts{})
	for _, method := range []string{"PUT", "POST"} {
		t.Run(method, func(t *testing.T) {
			good := pngOf(300, 200)
			tk := e.apply("alice", "image", len(good), "image/png", method)
			if st, msg := upload(t, tk, good); st/100 != 2 {
				t.Fatalf("upload: %d %s", st, msg)
			}
			el := e.exec("alice", "media/commit_upload", map[string]any{"UUID": tk.str("UUID")})
			if el.code() != 0 {
				t.Fatal(el)
			}
			// The same size and type, other bytes: what a swap would send.
			evil := bytes.Clone(good)
			copy(evil[len(evil)/2:], bytes.Repeat([]byte("SWAPPED!"), 64))
			if st, msg := upload(t, tk, evil); st/100 != 2 {
				t.Logf("the store refused the second upload (%d %s): fine too", st, msg)
			}
			orig := el["ImageInfoArray"].([]any)[0].(map[string]any)["URL"].(string)
			if st, got, _ := e.get(orig, "alice"); st != 200 || !bytes.Equal(got, good) {
				t.Fatalf("the original after a second upload: %d, changed %v", st, !bytes.Equal(got, good))
			}
			if again := e.exec("alice", "media/commit_upload", map[string]any{"UUID": tk.str("UUID")}); again.code() != 0 ||
				again["ImageInfoArray"].([]any)[0].(map[string]any)["Size"] != float64(len(good)) {
				t.Fatalf("a second commit: %v", again)
			}
		})
	}
}

// heapObjects is the bytes of live and not yet swept heap objects.
func heapObjects() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// Twenty 28 MB image commits at once hold at most a few images' worth of
// memory (issue 12 §6): images are streamed to the decoder under the
// rendition semaphore, never read whole before it. Stated bound: peak heap
// growth under 100 MB (reading them whole took 20 × 28 MB and more).
func TestConcurrentImageCommitsBoundMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("uploads 560 MB")
	}
	const n, size, bound = 20, 28 << 20, 100 << 20
	e := newEnv(t, envOpts{})
	// A real PNG padded to 28 MB: the decoder needs its first kilobytes, a
	// whole-file read takes all 28 MB.
	data := make([]byte, size)
	copy(data, pngOf(64, 64))
	tickets := make([]reply, n)
	for i := range tickets {
		tickets[i] = e.restCall("media/apply_upload", map[string]any{"Type": "image", "Size": size, "ContentType": "image/png"})
		if st, msg := upload(t, tickets[i], data); st/100 != 2 {
			t.Fatalf("upload %d: %d %s", i, st, msg)
		}
	}
	data = nil
	runtime.GC()
	base := heapObjects()
	var peak atomic.Uint64
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		for {
			if h := heapObjects(); h > peak.Load() {
				peak.Store(h)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for _, tk := range tickets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := e.restCall("media/commit_upload", map[string]any{"UUID": tk.str("UUID")}); r.code() != 0 {
				errs <- r.str("ErrorInfo")
			}
		}()
	}
	wg.Wait()
	close(stop)
	sampler.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("commit: %s", err)
	}
	grow := int64(peak.Load()) - int64(base)
	t.Logf("%d concurrent commits of %d MB images: peak heap growth %.1f MB", n, size>>20, float64(grow)/(1<<20))
	if grow > bound {
		t.Fatalf("peak heap growth %.0f MB, over the %d MB bound", float64(grow)/(1<<20), bound>>20)
	}
}
