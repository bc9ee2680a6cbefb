package media_test

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/duet-im/duet/media"
)

// The embedded gateway runs in a child process. A child that dies is started
// again on the same address with the same credentials, so the media service,
// its S3 clients and the links it handed out keep working; Close leaves no
// child behind.
func TestGatewayRestartsItsChild(t *testing.T) {
	g, err := media.StartGateway(t.TempDir(), "", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	s3 := g.S3
	s3.Bucket = "t" + randHex(8)
	e := newEnv(t, envOpts{s3: &s3})
	img := e.uploadAndCommit("alice", "image", "image/png", pngOf(40, 30))
	link := img["ImageInfoArray"].([]any)[2].(map[string]any)["URL"].(string)

	first := g.PID()
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		if pid := g.PID(); pid != first && syscall.Kill(pid, 0) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new gateway child 30 s after killing pid %d", first)
		}
		time.Sleep(20 * time.Millisecond) // polling
	}
	if g.S3.Endpoint != s3.Endpoint || g.S3.SecretKey != s3.SecretKey {
		t.Fatalf("the restarted gateway is %+v, was %+v", g.S3, s3)
	}
	if st, _, _ := e.get(link, "alice"); st != http.StatusOK {
		t.Fatalf("an object stored before the restart: %d", st)
	}
	e.uploadAndCommit("alice", "image", "image/png", pngOf(40, 30))

	last := g.PID()
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(last, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("the gateway child (pid %d) is still there after Close: %v", last, err)
	}
}
