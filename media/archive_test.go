package media_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/duet-im/duet/media"
)

// archivedTexts downloads hour's archive through get_history over REST,
// checks its sizes and MD5s against the listing, and returns its messages'
// texts in order (nil for an empty list).
func (e *env) archivedTexts(hour time.Time) ([]string, reply) {
	e.t.Helper()
	r := e.restCall("open_msg_svc/get_history", map[string]any{"ChatType": "C2C", "MsgTime": hour.UTC().Format("2006010215")})
	if r.code() != 0 {
		return nil, r
	}
	files := r["File_List"].([]any)
	if len(files) == 0 {
		return nil, r
	}
	f := files[0].(map[string]any)
	resp, err := http.Get(f["URL"].(string))
	if err != nil {
		e.t.Fatal(err)
	}
	gz, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || md5hex(gz) != f["GzipMD5"] || float64(len(gz)) != f["GzipSize"] {
		e.t.Fatalf("archive object: %d, %d bytes md5 %s; listed %v", resp.StatusCode, len(gz), md5hex(gz), f)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		e.t.Fatal(err)
	}
	raw, _ := io.ReadAll(zr)
	if md5hex(raw) != f["FileMD5"] || float64(len(raw)) != f["FileSize"] {
		e.t.Fatalf("archive content: %d bytes md5 %s; listed %v", len(raw), md5hex(raw), f)
	}
	var texts []string
	for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var m struct {
			MsgBody []struct{ MsgContent struct{ Text string } }
		}
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			e.t.Fatalf("line %q: %v", l, err)
		}
		texts = append(texts, m.MsgBody[0].MsgContent.Text)
	}
	return texts, r
}

// importText imports one text message at t over REST (openim/importmsg).
func (e *env) importText(from, to string, t time.Time, text string, random int) {
	e.t.Helper()
	r := e.restCall("openim/importmsg", map[string]any{"From_Account": from, "To_Account": to, "MsgRandom": random,
		"MsgTimeStamp": t.Unix(), "SyncFromOldSystem": 2,
		"MsgBody": []any{map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": text}}}})
	if r.code() != 0 {
		e.t.Fatalf("importmsg %q: %v", text, r)
	}
}

// get_history for an hour with no messages answers an empty list once the
// hour is over, whether it lies before the first message or after the last
// (issue 12 §5); an hour not over yet answers 95006.
func TestHistoryOfHoursWithoutMessages(t *testing.T) {
	e := newEnv(t, envOpts{})
	now := time.Now().UTC().Truncate(time.Hour)
	e.clock.set(now.Add(-5 * time.Hour).Add(10 * time.Minute))
	first := now.Add(-5 * time.Hour)
	e.importText("alice", "bob", first.Add(5*time.Minute), "the first message", 1)
	e.clock.set(now.Add(30 * time.Minute))
	if err := e.m.ArchiveDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		hour  time.Time
		code  int
		texts string
	}{
		{"a day before the first message", first.Add(-24 * time.Hour), 0, ""},
		{"the hour before the first message", first.Add(-time.Hour), 0, ""},
		{"the first message's hour", first, 0, "the first message"},
		{"an hour after it, without messages", first.Add(2 * time.Hour), 0, ""},
		{"the hour now under way", now, media.CodeNoArchive, ""},
		{"tomorrow", now.Add(24 * time.Hour), media.CodeNoArchive, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			texts, r := e.archivedTexts(c.hour)
			if r.code() != c.code || strings.Join(texts, "|") != c.texts {
				t.Fatalf("got %v %q, want code %d %q", r, texts, c.code, c.texts)
			}
			if c.code == 0 && (r["File_List"] == nil || r["File"] == nil) {
				t.Fatalf("no list: %v", r)
			}
		})
	}
}

// A message imported into an hour that was already archived, or into an
// hour before the archive began, appears in that hour's archive after the
// next run, with its sizes and MD5s right (issue 12 §5).
func TestImportIntoArchivedHour(t *testing.T) {
	e := newEnv(t, envOpts{})
	now := time.Now().UTC().Truncate(time.Hour)
	h := now.Add(-3 * time.Hour)
	e.importText("alice", "bob", h.Add(10*time.Minute), "b", 1)
	e.importText("bob", "alice", h.Add(40*time.Minute), "d", 2)
	e.clock.set(now.Add(5 * time.Minute))
	if err := e.m.ArchiveDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	before, _ := e.archivedTexts(h)
	if strings.Join(before, "|") != "b|d" {
		t.Fatalf("first archive: %q", before)
	}
	_, r0 := e.archivedTexts(h)
	md5Before := r0["File"].([]any)[0].(map[string]any)["GzipMD5"]

	// Imports into the archived hour (before, between and after its
	// messages), and into two hours before the archive's first.
	e.importText("carol", "alice", h.Add(time.Minute), "a", 3)
	e.importText("alice", "carol", h.Add(20*time.Minute), "c", 4)
	e.importText("bob", "carol", h.Add(59*time.Minute), "e", 5)
	e.importText("carol", "bob", h.Add(-2*time.Hour), "older", 6)
	e.importText("carol", "bob", h.Add(-48*time.Hour), "much older", 7)
	// Until the archiver runs, those older hours are not reported empty.
	if _, r := e.archivedTexts(h.Add(-2 * time.Hour)); r.code() != media.CodeNoArchive {
		t.Fatalf("an unarchived hour with an imported message: %v", r)
	}
	if err := e.m.ArchiveDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	after, r1 := e.archivedTexts(h)
	if strings.Join(after, "|") != "a|b|c|d|e" {
		t.Fatalf("archive after the imports: %q", after)
	}
	if r1["File"].([]any)[0].(map[string]any)["GzipMD5"] == md5Before {
		t.Fatal("the listed MD5 did not change with the archive")
	}
	for _, c := range []struct {
		hour time.Time
		want string
	}{{h.Add(-2 * time.Hour), "older"}, {h.Add(-48 * time.Hour), "much older"}, {h.Add(-time.Hour), ""}} {
		if got, r := e.archivedTexts(c.hour); strings.Join(got, "|") != c.want {
			t.Fatalf("hour %s: %q %v, want %q", c.hour.Format("2006010215"), got, r, c.want)
		}
	}
	// Nothing is archived twice: one object per hour with messages.
	n, err := media.CountObjects(context.Background(), e.s3, "archive/")
	if err != nil || n != 3 {
		t.Fatalf("%d archive objects (%v), want 3", n, err)
	}
	// A further run with nothing new changes nothing.
	if err := e.m.ArchiveDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, r2 := e.archivedTexts(h); r2["File"].([]any)[0].(map[string]any)["GzipMD5"] != r1["File"].([]any)[0].(map[string]any)["GzipMD5"] {
		t.Fatal("an idle run rewrote the archive")
	}
}
