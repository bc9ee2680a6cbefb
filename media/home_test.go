package media_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/command/commandtest"
	"github.com/duet-im/duet/media"
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
		{Name: "get_history", Caller: adm, Command: "open_msg_svc/get_history", Body: `{"ChatType":"Group","MsgTime":"2026031415"}`, Home: "administrator", Code: media.CodeBadRequest},
	})
}
