package sdk

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func testPNG(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for x := range w {
		img.Set(x, x%h, color.NRGBA{255, 0, 0, 255})
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// testMP4 is the start of an ISO-BMFF file with an mp4 brand, which the
// server sniffs as video/mp4.
func testMP4() []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.BigEndian, uint32(24))
	b.WriteString("ftypmp42")
	binary.Write(&b, binary.BigEndian, uint32(0))
	b.WriteString("mp42isom")
	b.Write(bytes.Repeat([]byte{0}, 4000))
	return b.Bytes()
}

// Issue 18 §4: the media helpers upload (with progress), commit and send
// all four media types; the recipient downloads each with Download.
func TestMediaSendAndDownload(t *testing.T) {
	s := startMediaServer(t)
	s.users("alice", "bob")
	ctx := ctxT(t)
	a := s.login(t, "alice", "phone", "", MQTT5)
	b := s.login(t, "bob", "phone", "", MQTT5)
	b.rec.waitRefreshes(1)

	pic := testPNG(t, 1024, 768)
	path := filepath.Join(t.TempDir(), "cat.png")
	if err := os.WriteFile(path, pic, 0o600); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var progress [][2]int64
	sound := append([]byte("#!AMR\n"), bytes.Repeat([]byte{0x3c}, 3000)...)
	file := bytes.Repeat([]byte("duet "), 2000)
	video, cover := testMP4(), testPNG(t, 320, 240)
	sends := []struct {
		name string
		send func() (*Message, error)
		orig []byte
	}{
		{"image", func() (*Message, error) {
			return a.SendImage(ctx, "bob", Media{Path: path, Progress: func(sent, total int64) {
				mu.Lock()
				progress = append(progress, [2]int64{sent, total})
				mu.Unlock()
			}})
		}, pic},
		{"sound", func() (*Message, error) {
			return a.SendSound(ctx, "bob", Media{Reader: bytes.NewReader(sound), ContentType: "audio/amr", Second: 2})
		}, sound},
		{"file", func() (*Message, error) {
			return a.SendFile(ctx, "bob", Media{Reader: bytes.NewReader(file), Size: int64(len(file)), FileName: "notes.txt"})
		}, file},
		{"video", func() (*Message, error) {
			return a.SendVideo(ctx, "bob", Media{Reader: bytes.NewReader(video), Second: 3, Thumb: &Media{Reader: bytes.NewReader(cover)}})
		}, video},
	}
	for _, sd := range sends {
		if _, err := sd.send(); err != nil {
			t.Fatalf("send %s: %v", sd.name, err)
		}
	}
	mu.Lock()
	if n := len(progress); n == 0 || progress[n-1] != [2]int64{int64(len(pic)), int64(len(pic))} {
		t.Fatalf("progress %v, want it to end at %d of %d", progress, len(pic), len(pic))
	}
	mu.Unlock()
	msgs := b.rec.waitMsgs(len(sends))
	for i, sd := range sends {
		var got bytes.Buffer
		if _, err := b.Download(ctx, msgs[i].MsgBody[0], Original, &got); err != nil {
			t.Fatalf("download %s: %v", sd.name, err)
		}
		if !bytes.Equal(got.Bytes(), sd.orig) {
			t.Fatalf("%s: downloaded %d bytes, not the %d sent", sd.name, got.Len(), len(sd.orig))
		}
	}
	for _, tc := range []struct {
		i    int
		size ImageSize
		want string
	}{{0, Thumb, "198 px thumbnail"}, {3, Thumb, "video cover"}} {
		var got bytes.Buffer
		if _, err := b.Download(ctx, msgs[tc.i].MsgBody[0], tc.size, &got); err != nil {
			t.Fatalf("download %s: %v", tc.want, err)
		}
		cfg, _, err := image.DecodeConfig(&got)
		if err != nil {
			t.Fatalf("%s: %v", tc.want, err)
		}
		if tc.i == 0 && max(cfg.Width, cfg.Height) != 198 || tc.i == 3 && cfg.Width != 320 {
			t.Fatalf("%s is %dx%d", tc.want, cfg.Width, cfg.Height)
		}
	}
	if msgs[1].MsgBody[0].MsgType != "TIMSoundElem" || msgs[3].MsgBody[0].MsgType != "TIMVideoFileElem" {
		t.Fatalf("elements %s", fmt.Sprint(msgs[1].MsgBody, msgs[3].MsgBody))
	}
}
