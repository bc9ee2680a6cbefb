package media_test

import (
	"bytes"
	"crypto/rand"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/duet-im/duet/media"
	"github.com/duet-im/duet/usersig"
)

const benchSize = 28 << 20

// BenchmarkUpload28MB: apply_upload, then a 28 MB file sent to the
// embedded gateway as a device sends it: PUT to the presigned URL, or POST
// through the presigned policy (a multipart form).
func BenchmarkUpload28MB(b *testing.B) {
	e := newEnv(b, envOpts{})
	data := make([]byte, benchSize)
	rand.Read(data)
	for _, method := range []string{"PUT", "POST"} {
		b.Run(method, func(b *testing.B) {
			b.SetBytes(benchSize)
			for i := 0; i < b.N; i++ {
				tk := e.apply("alice", "file", benchSize, "application/octet-stream", method)
				if st, msg := upload(b, tk, data); st/100 != 2 {
					b.Fatalf("upload: %d %s", st, msg)
				}
			}
		})
	}
}

// BenchmarkDownload28MB: the download link (UserSig check, redirect) and
// the presigned GET of a 28 MB file, read to the end.
func BenchmarkDownload28MB(b *testing.B) {
	e := newEnv(b, envOpts{})
	data := make([]byte, benchSize)
	rand.Read(data)
	el := e.uploadAndCommit("alice", "file", "application/octet-stream", data)
	sig, _ := usersig.Gen(appID, key, "alice", 3600, time.Now())
	link := el.str("Url") + "?identifier=alice&usersig=" + url.QueryEscape(sig)
	b.SetBytes(benchSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := http.Get(link)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n != benchSize {
			b.Fatalf("download: %d, %d bytes", resp.StatusCode, n)
		}
	}
}

// BenchmarkRenditions4000x3000: decode a 12-megapixel JPEG photo, make the
// 720 px and 198 px renditions and encode them.
func BenchmarkRenditions4000x3000(b *testing.B) {
	img := image.NewRGBA(image.Rect(0, 0, 4000, 3000))
	noise := make([]byte, 4000)
	for y := 0; y < 3000; y++ {
		rand.Read(noise)
		for x := 0; x < 4000; x++ {
			img.SetRGBA(x, y, color.RGBA{uint8(x / 16), uint8(y / 12), noise[x] / 4, 255})
		}
	}
	var buf bytes.Buffer
	jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90})
	data := buf.Bytes()
	b.ReportMetric(float64(len(data))/1e6, "MB-input")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, w, h, large, thumb, ok := media.Renditions(data)
		if !ok || w != 4000 || h != 3000 || large.Width != 720 || thumb.Width != 198 {
			b.Fatalf("renditions: %v %dx%d %dx%d %dx%d", ok, w, h, large.Width, large.Height, thumb.Width, thumb.Height)
		}
	}
}
