package media_test

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/duet-im/duet/usersig"
)

// A kick revokes the UserSigs issued before it (REST and MQTT refuse them):
// media downloads refuse them too, so a kicked device (a stolen phone)
// cannot keep fetching the user's pictures with its old UserSig.
func TestDownloadRefusesSigFromBeforeKick(t *testing.T) {
	e := newEnv(t, envOpts{})
	img := e.uploadAndCommit("alice", "image", "image/png", pngOf(800, 600))
	link := img["ImageInfoArray"].([]any)[2].(map[string]any)["URL"].(string)
	old, _ := usersig.Gen(appID, key, "alice", 3600, time.Now())
	status := func(sig string) int {
		t.Helper()
		resp, err := http.Get(link + "?identifier=alice&usersig=" + url.QueryEscape(sig))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := status(old); st != http.StatusOK {
		t.Fatalf("before the kick: %d", st)
	}
	e.clock.set(time.Now()) // the store's clock dates the kick
	if _, err := e.st.Kick("alice"); err != nil {
		t.Fatal(err)
	}
	if st := status(old); st != http.StatusUnauthorized {
		t.Fatalf("a UserSig issued before the kick: %d, want 401", st)
	}
	fresh, _ := usersig.Gen(appID, key, "alice", 3600, e.st.KickedAt("alice"))
	if st := status(fresh); st != http.StatusOK {
		t.Fatalf("a UserSig issued after the kick: %d", st)
	}
}
