package media_test

import (
	"net/http"
	"testing"

	"github.com/duet-im/duet/command"
)

// media/grant_download is how a cluster node has the owner record a
// download grant (docs/cluster.md §14.3). Only a media service can make
// its request: a user over MQTT, or the App admin over REST, who names it
// is told there is no such command — with or without a signature of their
// own — and gains no access by it.
func TestGrantCommandIsNotForClients(t *testing.T) {
	e := newEnv(t, envOpts{})
	img := e.uploadAndCommit("alice", "image", "image/png", pngOf(40, 30))
	uuid := img.str("UUID")
	link := img["ImageInfoArray"].([]any)[0].(map[string]any)["URL"].(string)
	for _, body := range []map[string]any{
		{"UUID": uuid, "User": "carol", "Expire": 0},
		{"UUID": uuid, "User": "carol", "Expire": 0, "Sig": "00"},
		{"UUID": uuid, "User": "carol", "Expire": 0, "Sig": randHex(32)},
	} {
		if r := e.exec("carol", "media/grant_download", body); r.code() != command.CodeUnknownCommand {
			t.Errorf("carol over MQTT, %v: %v, want %d", body, r, command.CodeUnknownCommand)
		}
		if r := e.restCall("media/grant_download", body); r.code() != command.CodeUnknownCommand {
			t.Errorf("the admin over REST, %v: %v, want %d", body, r, command.CodeUnknownCommand)
		}
	}
	if ok, err := e.st.Granted(uuid, "carol"); ok || err != nil {
		t.Fatalf("carol holds a grant (%v)", err)
	}
	if st, _, _ := e.get(link, "carol"); st != http.StatusForbidden {
		t.Fatalf("carol's download: %d, want 403", st)
	}
}
