package media

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/gif"
	"io"
	"net/http"
	"strings"

	"github.com/disintegration/imaging"
	"github.com/minio/minio-go/v7"
	_ "golang.org/x/image/bmp" // BMP originals (ImageFormat 4)
	_ "golang.org/x/image/webp"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/store"
)

// sniff names the content of an object from its first bytes: Go's
// http.DetectContentType (the WHATWG sniffing rules) plus the audio and
// video containers IM clients send that it does not tell apart.
func sniff(head []byte) string {
	switch {
	case bytes.HasPrefix(head, []byte("#!AMR")):
		return "audio/amr"
	case bytes.HasPrefix(head, []byte("#!SILK_V3")), bytes.HasPrefix(head, []byte("\x02#!SILK_V3")):
		return "audio/silk" // WeChat/QQ voice notes
	case bytes.HasPrefix(head, []byte("fLaC")):
		return "audio/flac"
	case len(head) >= 2 && head[0] == 0xFF && head[1]&0xF6 == 0xF0:
		return "audio/aac" // ADTS frame header
	case len(head) >= 12 && string(head[4:8]) == "ftyp":
		// ISO base media: the major brand says what the box holds.
		switch brand := string(head[8:12]); {
		case brand == "M4A " || brand == "M4B ":
			return "audio/mp4"
		case brand == "qt  ":
			return "video/quicktime"
		case strings.HasPrefix(brand, "3g"):
			return "video/3gpp"
		case brand == "heic" || brand == "heix" || brand == "mif1" || brand == "avif":
			return "image/" + map[bool]string{true: "avif", false: "heic"}[brand == "avif"]
		default:
			return "video/mp4"
		}
	case bytes.HasPrefix(head, []byte("OggS")):
		if bytes.Contains(head, []byte("theora")) {
			return "video/ogg"
		}
		return "audio/ogg"
	}
	return http.DetectContentType(head)
}

// fits reports whether sniffed content may be stored as an upload of typ.
func fits(typ, mime string) bool {
	switch typ {
	case "image", "video_thumb":
		return strings.HasPrefix(mime, "image/")
	case "sound":
		return strings.HasPrefix(mime, "audio/") || mime == "application/ogg"
	case "video":
		return strings.HasPrefix(mime, "video/")
	}
	return true
}

// videoFormat is VideoFormat for a sniffed video type.
func videoFormat(mime string) string {
	switch mime {
	case "video/mp4":
		return "mp4"
	case "video/quicktime":
		return "mov"
	case "video/3gpp":
		return "3gp"
	case "video/webm":
		return "webm"
	case "video/ogg":
		return "ogg"
	case "video/avi":
		return "avi"
	}
	return strings.TrimPrefix(mime, "video/")
}

// ImageFormat codes of TIMImageElem (reference §3.2).
func imageFormat(format string) int {
	switch format {
	case "jpeg":
		return 1
	case "gif":
		return 2
	case "png":
		return 3
	case "bmp":
		return 4
	}
	return 255
}

// ImageInfo is one entry of ImageInfoArray.
type ImageInfo struct {
	Type   int    `json:"Type"` // 1 original, 2 large, 3 thumbnail
	Size   int64  `json:"Size"`
	Width  int    `json:"Width"`
	Height int    `json:"Height"`
	URL    string `json:"URL"`
}

// Rendition sizes: the longest side of the large image and the thumbnail.
const (
	LargeSide = 720
	ThumbSide = 198
)

// MaxPixels bounds the images that are decoded for renditions (a 64 MP
// photo takes 256 MB decoded); a larger one, or a small file that claims
// huge dimensions (a decompression bomb), keeps only its original.
const MaxPixels = 64 << 20

// Rendition is a resized image ready to store.
type Rendition struct {
	Width, Height int
	Data          []byte // nil: the original serves (it is small enough)
	ContentType   string
}

// Renditions decodes an image and makes its large and thumbnail renditions.
// An image whose longest side is already within a size needs no rendition
// for it (Data nil); an animated GIF keeps only its original (resizing would
// drop the animation); a format that cannot be decoded gives ok false.
func Renditions(data []byte) (format string, w, h int, large, thumb Rendition, ok bool) {
	format, w, h, large, thumb, ok, _ = renditions(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
	return
}

// renditions is Renditions reading the image as a stream from open (called
// once per pass: header, GIF frames, pixels), so the encoded file is never
// held in memory whole: what a decode holds is the decoded picture, at most
// MaxPixels. err is open's failure (the store unreachable).
func renditions(open func() (io.ReadCloser, error)) (format string, w, h int, large, thumb Rendition, ok bool, err error) {
	pass := func(f func(io.Reader) error) error {
		r, err := open()
		if err != nil {
			return err
		}
		defer r.Close()
		return f(r)
	}
	var cfg image.Config
	var decodeErr error
	if err = pass(func(r io.Reader) error {
		cfg, format, decodeErr = image.DecodeConfig(r)
		return nil
	}); err != nil || decodeErr != nil {
		return "", 0, 0, large, thumb, false, err
	}
	w, h = cfg.Width, cfg.Height
	if int64(w)*int64(h) > MaxPixels || w <= 0 || h <= 0 {
		return format, w, h, large, thumb, false, nil
	}
	same := Rendition{Width: w, Height: h}
	if format == "gif" {
		animated := false
		if err = pass(func(r io.Reader) error {
			g, err := gif.DecodeAll(r)
			animated = err == nil && len(g.Image) > 1
			return nil
		}); err != nil {
			return format, w, h, large, thumb, false, err
		}
		if animated {
			return format, w, h, same, same, true, nil
		}
	}
	var img image.Image
	if err = pass(func(r io.Reader) error {
		img, decodeErr = imaging.Decode(r, imaging.AutoOrientation(true))
		return nil
	}); err != nil || decodeErr != nil {
		return format, w, h, large, thumb, false, err
	}
	b := img.Bounds()
	w, h = b.Dx(), b.Dy()
	// Renditions are JPEG (small for photos, whatever the original's
	// format) unless the picture has transparency, which only PNG keeps.
	enc, ct := imaging.JPEG, "image/jpeg"
	if o, ok := img.(interface{ Opaque() bool }); ok && !o.Opaque() {
		enc, ct = imaging.PNG, "image/png"
	}
	resize := func(src image.Image, side int) (Rendition, image.Image) {
		sb := src.Bounds()
		if max(sb.Dx(), sb.Dy()) <= side && src == img {
			return Rendition{Width: w, Height: h}, src
		}
		r := imaging.Fit(src, side, side, imaging.CatmullRom)
		var buf bytes.Buffer
		if err := imaging.Encode(&buf, r, enc, imaging.JPEGQuality(85)); err != nil {
			return Rendition{Width: w, Height: h}, src
		}
		rb := r.Bounds()
		return Rendition{Width: rb.Dx(), Height: rb.Dy(), Data: buf.Bytes(), ContentType: ct}, r
	}
	large, li := resize(img, LargeSide)
	// The thumbnail is made from the large image: the same picture, a
	// fraction of the work.
	thumb, _ = resize(li, ThumbSide)
	return format, w, h, large, thumb, true, nil
}

// incomingName is the object a device uploads to. The commit copies it to
// the original's name, which only the server writes: an upload URL still
// valid after the commit cannot change what was checked and is served.
func incomingName(uuid string) string { return objectName(uuid, "upload") }

// inspect checks an uploaded object and answers the element fields of its
// message, storing renditions next to it. A refusal removes the upload.
func (m *Service) inspect(ctx context.Context, u *store.Upload) (json.RawMessage, []string, *command.Error) {
	orig := objectName(u.UUID, "orig")
	if u.Incoming != "" {
		// Copied before anything is checked: what is checked is what is
		// served, whatever is PUT to the upload URL meanwhile.
		_, err := m.s3.api.CopyObject(ctx, minio.CopyDestOptions{Bucket: m.cfg.S3.Bucket, Object: orig},
			minio.CopySrcOptions{Bucket: m.cfg.S3.Bucket, Object: u.Incoming})
		if err != nil {
			if minio.ToErrorResponse(err).Code == "NoSuchKey" {
				return nil, nil, command.Errorf(CodeNotUploaded, "nothing was uploaded for %s yet: send the file to UploadUrl first", u.UUID)
			}
			return nil, nil, unavailable(err)
		}
		if err := m.s3.api.RemoveObject(ctx, m.cfg.S3.Bucket, u.Incoming, minio.RemoveObjectOptions{}); err != nil {
			// Harmless: never served, and removed with the upload.
			m.log.Warn("media: could not remove an upload's incoming object", "uuid", u.UUID, "error", err)
		}
	}
	info, err := m.s3.api.StatObject(ctx, m.cfg.S3.Bucket, orig, minio.StatObjectOptions{})
	if err != nil {
		if minio.ToErrorResponse(err).Code == "NoSuchKey" {
			return nil, nil, command.Errorf(CodeNotUploaded, "nothing was uploaded for %s yet: send the file to UploadUrl first", u.UUID)
		}
		return nil, nil, unavailable(err)
	}
	if lim := m.limit(u.Type); info.Size > lim || info.Size > u.Size {
		return nil, nil, m.refuse(ctx, u, command.Errorf(CodeContent, "the object is %d bytes; %d were declared and a %s may be at most %d", info.Size, u.Size, u.Type, lim))
	}
	// Only the head is read here; images are streamed to their decoder
	// under the rendition semaphore, so concurrent commits never hold whole
	// files.
	open := func(rangeEnd int64) (io.ReadCloser, error) {
		opts := minio.GetObjectOptions{}
		if rangeEnd > 0 {
			opts.SetRange(0, rangeEnd)
		}
		return m.s3.api.GetObject(ctx, m.cfg.S3.Bucket, orig, opts)
	}
	var head []byte
	obj, err := open(511)
	if err == nil {
		head, err = io.ReadAll(io.LimitReader(obj, 512))
		obj.Close()
	}
	if err != nil {
		return nil, nil, unavailable(err)
	}
	mime := sniff(head)
	if !fits(u.Type, mime) {
		return nil, nil, m.refuse(ctx, u, command.Errorf(CodeContent, "the object is %s, not a %s; it was removed", mime, u.Type))
	}
	u.Size, u.ContentType = info.Size, mime
	objects := []string{orig}
	var el any
	switch u.Type {
	case "image":
		m.renderSem <- struct{}{} // bounds the memory of concurrent decodes
		var readErr error         // the store failing mid-read, not a bad image
		format, w, h, large, thumb, ok, err := renditions(func() (io.ReadCloser, error) {
			r, err := open(0)
			if err != nil {
				return nil, err
			}
			return struct {
				io.Reader
				io.Closer
			}{&storeReader{r: io.LimitReader(r, info.Size), err: &readErr}, r}, nil
		})
		<-m.renderSem
		if err == nil {
			err = readErr
		}
		if err != nil {
			return nil, nil, unavailable(err)
		}
		infos := []ImageInfo{{Type: 1, Size: info.Size, Width: w, Height: h, URL: m.URL(u.UUID, "orig")}}
		if ok {
			for _, r := range []struct {
				typ  int
				name string
				r    Rendition
			}{{2, "large", large}, {3, "thumb", thumb}} {
				if r.r.Data == nil {
					infos = append(infos, ImageInfo{Type: r.typ, Size: info.Size, Width: r.r.Width, Height: r.r.Height, URL: m.URL(u.UUID, "orig")})
					continue
				}
				name := objectName(u.UUID, r.name)
				if _, err := m.s3.api.PutObject(ctx, m.cfg.S3.Bucket, name, bytes.NewReader(r.r.Data), int64(len(r.r.Data)),
					minio.PutObjectOptions{ContentType: r.r.ContentType}); err != nil {
					return nil, nil, unavailable(err)
				}
				objects = append(objects, name)
				infos = append(infos, ImageInfo{Type: r.typ, Size: int64(len(r.r.Data)), Width: r.r.Width, Height: r.r.Height, URL: m.URL(u.UUID, r.name)})
			}
		}
		el = struct {
			UUID           string      `json:"UUID"`
			ImageFormat    int         `json:"ImageFormat"`
			ImageInfoArray []ImageInfo `json:"ImageInfoArray"`
		}{u.UUID, imageFormat(format), infos}
	case "video_thumb":
		var cfg image.Config
		var format string
		r, err := open(0)
		if err == nil {
			cfg, format, err = image.DecodeConfig(r)
			r.Close()
		}
		if err != nil {
			format = strings.TrimPrefix(mime, "image/")
		}
		el = map[string]any{"ThumbUUID": u.UUID, "ThumbUrl": m.URL(u.UUID, "orig"), "ThumbSize": info.Size,
			"ThumbWidth": cfg.Width, "ThumbHeight": cfg.Height, "ThumbFormat": strings.ToUpper(strings.Replace(format, "jpeg", "jpg", 1)),
			"ThumbDownloadFlag": 2}
	case "video":
		el = map[string]any{"VideoUUID": u.UUID, "VideoUrl": m.URL(u.UUID, "orig"), "VideoSize": info.Size,
			"VideoFormat": videoFormat(mime), "VideoDownloadFlag": 2}
	case "sound":
		el = map[string]any{"UUID": u.UUID, "Url": m.URL(u.UUID, "orig"), "Size": info.Size, "Download_Flag": 2}
	default:
		el = map[string]any{"UUID": u.UUID, "Url": m.URL(u.UUID, "orig"), "FileSize": info.Size, "FileName": u.FileName, "Download_Flag": 2}
	}
	raw, err := json.Marshal(el)
	if err != nil {
		return nil, nil, command.Errorf(command.CodeInternal, "internal error: %v", fmt.Sprint(err))
	}
	return raw, objects, nil
}

// storeReader notes the first read error other than EOF, so a store that
// fails while an image is streamed to its decoder is told apart from an
// image that cannot be decoded.
type storeReader struct {
	r   io.Reader
	err *error
}

func (s *storeReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF && *s.err == nil {
		*s.err = err
	}
	return n, err
}
