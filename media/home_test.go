package media_test

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/command/commandtest"
	"github.com/duet-im/duet/media"
	"github.com/duet-im/duet/store"
)

// The media commands' homes (docs/cluster.md §12.1, §14.3): an upload is
// its uploader's, a download grant the downloader's.
func TestHome(t *testing.T) {
	e := newEnv(t, envOpts{})
	var names []string
	for _, n := range e.svc.Commands() {
		if strings.HasPrefix(n, "media/") || n == "open_msg_svc/get_history" {
			names = append(names, n)
		}
	}
	if !slices.Contains(names, "media/apply_upload") {
		t.Fatalf("media commands %v", names)
	}
	alice := &command.Caller{UserID: "alice", Device: "alice:phone", Transport: command.MQTT}
	adm := &command.Caller{UserID: "administrator", Admin: true, Transport: command.REST}
	commandtest.CheckHomes(t, e.svc, e.st, names, []commandtest.HomeCase{
		{Name: "apply_upload", Caller: alice, Command: "media/apply_upload", Body: `{"Type":"file","Size":3,"ContentType":"text/plain","FileName":"f.txt"}`, Home: "alice", Write: true},
		{Name: "commit_upload", Caller: alice, Command: "media/commit_upload", Prep: func(t *testing.T) string {
			img := pngOf(40, 30)
			tk := e.apply("alice", "image", len(img), "image/png")
			if st, msg := upload(t, tk, img); st/100 != 2 {
				t.Fatalf("upload: %d %s", st, msg)
			}
			return `{"UUID":"` + tk.str("UUID") + `"}`
		}, Home: "alice", Write: true},
		// Only the media service signs a grant; the rule reads User all the same.
		{Name: "grant_download unsigned", Caller: alice, Command: "media/grant_download", Body: `{"UUID":"u","User":"bob","Expire":0,"Sig":"x"}`, Home: "bob", Write: true, Code: command.CodeUnknownCommand},
		// The archiver's request to a partition's owner (several partitions
		// only); only the media service signs one.
		{Name: "clear_archive_marks unsigned", Caller: adm, Command: "media/clear_archive_marks", Body: `{"Hour":0,"User":"bob","Marks":[],"Sig":"x"}`, Home: "bob", Write: true, Code: command.CodeUnknownCommand},
		{Name: "get_history", Caller: adm, Command: "open_msg_svc/get_history", Body: `{"ChatType":"Group","MsgTime":"2026031415"}`, Home: "administrator", Code: media.CodeBadRequest},
	})
}

// A download grant recorded on a single node (no router: the media service
// writes it itself) commits in the downloader's partition, as
// media/grant_download's home says.
func TestGrantHome(t *testing.T) {
	e := newEnv(t, envOpts{})
	img := e.uploadAndCommit("alice", "image", "image/png", pngOf(40, 30))
	if r := e.sendmsg("alice", "bob", imageElem(img)); r.code() != 0 {
		t.Fatalf("send: %v", r)
	}
	var homes []string
	var mu sync.Mutex
	stop := store.TraceHomes(e.st, func(h string) { mu.Lock(); homes = append(homes, h); mu.Unlock() })
	defer stop()
	link := img["ImageInfoArray"].([]any)[0].(map[string]any)["URL"].(string)
	if st, _, _ := e.get(link, "bob"); st != http.StatusOK {
		t.Fatalf("bob's download: %d", st)
	}
	if ok, err := e.st.Granted(img.str("UUID"), "bob"); !ok || err != nil {
		t.Fatalf("no grant for bob (%v)", err)
	}
	body := `{"UUID":"` + img.str("UUID") + `","User":"bob","Expire":0}`
	want, _ := e.svc.Home(&command.Caller{UserID: "bob", Transport: command.REST}, "media/grant_download", []byte(body))
	mu.Lock()
	defer mu.Unlock()
	if len(homes) != 1 || homes[0] != want {
		t.Fatalf("UpdateFor homes %q, want one, %q", homes, want)
	}
}
