package sdk_test

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/duet-im/duet/clients/sdk"
	"github.com/duet-im/duet/internal/server"
	"github.com/duet-im/duet/store"
	"github.com/duet-im/duet/usersig"
)

// Alice writes to Bob while he is offline. When Bob's phone logs in, the
// SDK replays what he missed (OnNewMessage each, in order), then hands over
// the conversation list (OnRecentContactsChanged), then says it is in sync
// (OnRefresh). History comes from the phone's local store, which pulls
// from the server what it does not hold.
func Example() {
	dir, _ := os.MkdirTemp("", "duet-example")
	defer os.RemoveAll(dir)
	addr, userSig, stop := startDuet(filepath.Join(dir, "server"), "alice", "bob")
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	alice, err := sdk.Login(ctx, sdk.Options{
		Addr: addr, UserID: "alice", UserSig: userSig("alice"), DeviceID: "phone",
		Dir: filepath.Join(dir, "alice-phone"), Logger: quiet,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer alice.Logout()
	for _, text := range []string{"hello Bob", "are you there?"} {
		if _, err := alice.SendText(ctx, "bob", text); err != nil {
			log.Fatal(err)
		}
	}

	inSync := make(chan struct{})
	bob, err := sdk.Login(ctx, sdk.Options{
		Addr: addr, UserID: "bob", UserSig: userSig("bob"), DeviceID: "phone",
		Dir: filepath.Join(dir, "bob-phone"), Logger: quiet,
		Listeners: sdk.Listeners{
			// Listeners run one at a time, in order: no locks needed.
			OnNewMessage: func(m *sdk.Message) {
				fmt.Printf("new message from %s: %s\n", m.From, m.Text())
			},
			OnRecentContactsChanged: func(list []sdk.Contact) {
				for _, c := range list {
					fmt.Printf("conversation with %s: %d unread, last %q\n", c.Peer, c.Unread, c.LastMsg.Text())
				}
			},
			OnRefresh: func() { close(inSync) },
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer bob.Logout()
	select {
	case <-inSync:
		fmt.Println("in sync")
	case <-ctx.Done():
		log.Fatal("no OnRefresh: ", ctx.Err())
	}

	history, err := bob.GetMessage(ctx, "alice", 20, time.Time{})
	if err != nil {
		log.Fatal(err)
	}
	for _, m := range history {
		fmt.Printf("history: %s: %s\n", m.From, m.Text())
	}
	// Output:
	// new message from alice: hello Bob
	// new message from alice: are you there?
	// conversation with alice: 2 unread, last "are you there?"
	// in sync
	// history: alice: hello Bob
	// history: alice: are you there?
}

// Alice sends Bob a picture. The SDK uploads it straight to the object
// store (with progress), has the server commit it and sends the element;
// Bob downloads its thumbnail with his login.
func Example_sendImage() {
	dir, _ := os.MkdirTemp("", "duet-example")
	defer os.RemoveAll(dir)
	addr, userSig, stop := startDuetWithMedia(filepath.Join(dir, "server"), "alice", "bob")
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	got := make(chan *sdk.Message, 1)
	bob, err := sdk.Login(ctx, sdk.Options{
		Addr: addr, UserID: "bob", UserSig: userSig("bob"), DeviceID: "phone",
		Dir: filepath.Join(dir, "bob-phone"), Logger: quiet,
		Listeners: sdk.Listeners{OnNewMessage: func(m *sdk.Message) { got <- m }},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer bob.Logout()
	alice, err := sdk.Login(ctx, sdk.Options{
		Addr: addr, UserID: "alice", UserSig: userSig("alice"), DeviceID: "phone",
		Dir: filepath.Join(dir, "alice-phone"), Logger: quiet,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer alice.Logout()

	picture := filepath.Join(dir, "sunset.png")
	img := image.NewRGBA(image.Rect(0, 0, 1024, 768))
	for x := range 1024 {
		img.Set(x, x%768, color.RGBA{255, 128, 0, 255})
	}
	f, _ := os.Create(picture)
	png.Encode(f, img)
	f.Close()

	var uploaded int64
	_, err = alice.SendImage(ctx, "bob", sdk.Media{
		Path:     picture,
		Progress: func(sent, total int64) { uploaded = sent },
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("alice uploaded the whole picture:", uploaded == int64(fileSize(picture)))

	m := <-got
	var thumb bytes.Buffer
	if _, err := bob.Download(ctx, m.MsgBody[0], sdk.Thumb, &thumb); err != nil {
		log.Fatal(err)
	}
	cfg, _, _ := image.DecodeConfig(&thumb)
	fmt.Printf("bob got a %s from %s; its thumbnail is %dx%d\n", m.MsgBody[0].MsgType, m.From, cfg.Width, cfg.Height)
	// Prints:
	// alice uploaded the whole picture: true
	// bob got a TIMImageElem from alice; its thumbnail is 198x148
	//
	// (It has no checked Output: the embedded S3 gateway prints a start-up
	// line of its own. TestMediaSendAndDownload runs the same steps.)
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return st.Size()
}

// startDuetWithMedia is startDuet with the media service: the embedded S3
// store and an HTTP listener for download links.
func startDuetWithMedia(dir string, users ...string) (addr string, userSig func(string) string, stop func()) {
	return startDuetOpts(dir, true, users...)
}

// startDuet runs a Duet server in-process on a loopback port, as a real
// deployment would run the duet binary, and imports the given accounts.
func startDuet(dir string, users ...string) (addr string, userSig func(string) string, stop func()) {
	return startDuetOpts(dir, false, users...)
}

func startDuetOpts(dir string, withMedia bool, users ...string) (addr string, userSig func(string) string, stop func()) {
	const appID, key = 1400000000, "example-secret"
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := server.Config{Data: dir, Secret: key, MQTT: "127.0.0.1:0", SDKAppID: appID, NoMedia: !withMedia, Log: quiet}
	// With media, the embedded S3 gateway runs under dir/s3 and download
	// links point at an HTTP server of the example's serving the server's
	// handler (its own listener's port is not known before it starts).
	var handler atomic.Pointer[http.Handler]
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*handler.Load()).ServeHTTP(w, r) }))
	cfg.MediaURL = web.URL
	srv, err := server.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		log.Fatal(err)
	}
	h := srv.Handler()
	handler.Store(&h)
	st := srv.Store()
	for _, u := range users {
		if _, err := st.ImportAccount(store.Account{UserID: u}); err != nil {
			log.Fatal(err)
		}
	}
	userSig = func(user string) string {
		s, err := usersig.Gen(appID, key, user, 3600, time.Now())
		if err != nil {
			log.Fatal(err)
		}
		return s
	}
	return srv.Addr("tcp"), userSig, func() {
		web.Close()
		srv.Close()
	}
}
