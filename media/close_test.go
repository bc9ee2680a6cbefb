package media_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/media"
	"github.com/duet-im/duet/store"
)

// Close stops the background archiver even while an S3 request of it
// hangs: a server being stopped (SIGTERM) must not wait minutes for a
// store that does not answer.
func TestCloseCancelsHungBackgroundWork(t *testing.T) {
	hung := make(chan struct{}, 1)
	release := make(chan struct{})
	s3 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead && strings.Count(strings.Trim(r.URL.Path, "/"), "/") == 0 {
			return // the bucket exists
		}
		select {
		case hung <- struct{}{}:
		default:
		}
		select { // every other request hangs until the client gives up
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer s3.Close()
	defer close(release)

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(t.TempDir(), store.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	at := time.Now().Add(-3 * time.Hour).Unix()
	if err := st.Update(func(tx *store.Tx) error {
		return tx.PutMessage(&store.Message{From: "alice", To: "bob", MsgSeq: 1, MsgRandom: 1, MsgTime: at,
			MsgKey: fmt.Sprintf("1_1_%d", at), MsgBody: []byte(`[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]`)})
	}); err != nil {
		t.Fatal(err)
	}
	cfg := command.DefaultConfig()
	cfg.SDKAppID = appID
	m, err := media.New(media.Config{
		S3:       media.S3{Endpoint: strings.TrimPrefix(s3.URL, "http://"), AccessKey: "k", SecretKey: "s", Bucket: "duet-test"},
		SDKAppID: appID, Key: key, CleanEvery: -1, ArchiveEvery: time.Minute, Log: log,
	}, st, command.New(cfg, st, log))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-hung:
	case <-time.After(20 * time.Second):
		m.Close()
		t.Fatal("the archiver never reached the object store")
	}
	closed := make(chan struct{})
	go func() { m.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for an S3 request that hangs")
	}
}
