package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// Media is a file to send as an image, sound, file or video message (see
// docs/media.md): the SDK uploads it (media/apply_upload, a presigned PUT
// straight to the object store, media/commit_upload) and sends the element
// the server answered.
type Media struct {
	// Path is a file to send; or Reader with Size (Size 0: the reader is
	// read into memory first to learn it).
	Path   string
	Reader io.Reader
	Size   int64
	// ContentType defaults to the one of FileName's extension, else it is
	// sniffed from the first bytes.
	ContentType string
	// FileName defaults to Path's base name.
	FileName string
	// Second is the length of a sound or video, in seconds.
	Second int
	// Thumb is a video's cover image (required for SendVideo).
	Thumb *Media
	// Progress, when set, is called as the upload goes, with the bytes
	// sent so far and the total.
	Progress func(sent, total int64)
	// ID names the send in the outbox (Outgoing.ID).
	ID string
}

// ImageSize picks one of an image's renditions (Tencent's ImageInfoArray
// Type): the original, the large (720 px) or the thumbnail (198 px). For a
// video, Thumb is its cover and anything else the video.
type ImageSize int

const (
	Original ImageSize = 1
	Large    ImageSize = 2
	Thumb    ImageSize = 3
)

// SendImage uploads an image and sends it (TIMImageElem).
func (c *Client) SendImage(ctx context.Context, to string, m Media) (*Message, error) {
	return c.sendMedia(ctx, to, "image", m)
}

// SendSound uploads a voice message and sends it (TIMSoundElem).
func (c *Client) SendSound(ctx context.Context, to string, m Media) (*Message, error) {
	return c.sendMedia(ctx, to, "sound", m)
}

// SendFile uploads a file and sends it (TIMFileElem).
func (c *Client) SendFile(ctx context.Context, to string, m Media) (*Message, error) {
	return c.sendMedia(ctx, to, "file", m)
}

// SendVideo uploads a video and its cover (m.Thumb) and sends them
// (TIMVideoFileElem).
func (c *Client) SendVideo(ctx context.Context, to string, m Media) (*Message, error) {
	if m.Thumb == nil {
		return nil, errors.New("duet: SendVideo needs Media.Thumb, the video's cover image")
	}
	return c.sendMedia(ctx, to, "video", m)
}

func (c *Client) sendMedia(ctx context.Context, to, typ string, m Media) (*Message, error) {
	el, err := c.MediaElem(ctx, typ, m)
	if err != nil {
		return nil, err
	}
	return c.Send(ctx, Outgoing{ID: m.ID, To: to, Body: []Elem{el}})
}

// MediaElem uploads m as typ (image, sound, file, video) and returns the
// message element to send; a video's cover (m.Thumb) is uploaded too.
func (c *Client) MediaElem(ctx context.Context, typ string, m Media) (Elem, error) {
	fields, err := c.Upload(ctx, typ, m)
	if err != nil {
		return Elem{}, err
	}
	switch typ {
	case "image":
		return elem("TIMImageElem", fields), nil
	case "sound":
		fields["Second"] = m.Second
		return elem("TIMSoundElem", fields), nil
	case "file":
		return elem("TIMFileElem", fields), nil
	case "video":
		thumb, err := c.Upload(ctx, "video_thumb", *m.Thumb)
		if err != nil {
			return Elem{}, err
		}
		for k, v := range thumb {
			fields[k] = v
		}
		fields["VideoSecond"] = m.Second
		return elem("TIMVideoFileElem", fields), nil
	}
	return Elem{}, fmt.Errorf("duet: unknown media type %q", typ)
}

// Upload uploads m as typ (image, sound, file, video, video_thumb) and
// returns the element fields media/commit_upload answered.
func (c *Client) Upload(ctx context.Context, typ string, m Media) (map[string]any, error) {
	r, size, name, ctype, closeFn, err := m.open()
	if err != nil {
		return nil, err
	}
	defer closeFn()
	var ticket struct {
		UUID      string
		UploadUrl string
		Method    string
		Headers   map[string]string
	}
	req := map[string]any{"Type": typ, "Size": size, "ContentType": ctype}
	if name != "" {
		req["FileName"] = name
	}
	if err := c.call(ctx, "media/apply_upload", req, &ticket, callOpts{}); err != nil {
		return nil, err
	}
	body := &progressReader{r: r, total: size, f: m.Progress}
	put, err := http.NewRequestWithContext(ctx, http.MethodPut, ticket.UploadUrl, body)
	if err != nil {
		return nil, err
	}
	put.ContentLength = size
	for k, v := range ticket.Headers {
		put.Header.Set(k, v)
	}
	resp, err := c.httpClient().Do(put)
	if err != nil {
		return nil, fmt.Errorf("duet: upload: %w", err)
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("duet: upload: %s: %s", resp.Status, msg)
	}
	var fields map[string]any
	if err := c.call(ctx, "media/commit_upload", map[string]any{"UUID": ticket.UUID}, &fields, callOpts{retry: true}); err != nil {
		return nil, err
	}
	for _, k := range []string{"ActionStatus", "ErrorCode", "ErrorInfo", "ReqId", "Command"} {
		delete(fields, k)
	}
	return fields, nil
}

// open returns m's bytes with their size, name and content type.
func (m Media) open() (r io.Reader, size int64, name, ctype string, closeFn func(), err error) {
	closeFn = func() {}
	name = m.FileName
	switch {
	case m.Path != "":
		f, err := os.Open(m.Path)
		if err != nil {
			return nil, 0, "", "", nil, err
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, 0, "", "", nil, err
		}
		r, size, closeFn = f, st.Size(), func() { f.Close() }
		if name == "" {
			name = filepath.Base(m.Path)
		}
	case m.Reader != nil:
		r, size = m.Reader, m.Size
		if size <= 0 {
			b, err := io.ReadAll(m.Reader)
			if err != nil {
				return nil, 0, "", "", nil, err
			}
			r, size = bytes.NewReader(b), int64(len(b))
		}
	default:
		return nil, 0, "", "", nil, errors.New("duet: Media needs Path or Reader")
	}
	ctype = m.ContentType
	if ctype == "" && name != "" {
		ctype, _, _ = strings.Cut(mime.TypeByExtension(filepath.Ext(name)), ";")
	}
	if ctype == "" {
		head := make([]byte, 512)
		n, _ := io.ReadFull(r, head)
		head = head[:n]
		ctype, _, _ = strings.Cut(http.DetectContentType(head), ";")
		r = io.MultiReader(bytes.NewReader(head), r)
	}
	return r, size, name, ctype, closeFn, nil
}

type progressReader struct {
	r     io.Reader
	sent  int64
	total int64
	f     func(sent, total int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.sent += int64(n)
		if p.f != nil {
			p.f(p.sent, p.total)
		}
	}
	return n, err
}

func (c *Client) httpClient() *http.Client {
	if c.opts.HTTPClient != nil {
		return c.opts.HTTPClient
	}
	return http.DefaultClient
}

// MediaURL returns the server link of a media element: the rendition size
// of an image (Original, Large, Thumb), a video (Thumb: its cover), a sound
// or a file.
func MediaURL(e Elem, size ImageSize) (string, error) {
	var c struct {
		URL            string `json:"Url"`
		VideoURL       string `json:"VideoUrl"`
		ThumbURL       string `json:"ThumbUrl"`
		ImageInfoArray []struct {
			Type int
			URL  string
		}
	}
	if err := json.Unmarshal(e.MsgContent, &c); err != nil {
		return "", fmt.Errorf("duet: %s: %w", e.MsgType, err)
	}
	var u string
	switch e.MsgType {
	case "TIMImageElem":
		for _, info := range c.ImageInfoArray {
			if info.Type == int(size) || (u == "" && info.Type == int(Original)) {
				u = info.URL
			}
		}
	case "TIMVideoFileElem":
		u = c.VideoURL
		if size == Thumb {
			u = c.ThumbURL
		}
	case "TIMSoundElem", "TIMFileElem":
		u = c.URL
	default:
		return "", fmt.Errorf("duet: %s carries no media", e.MsgType)
	}
	if u == "" {
		return "", fmt.Errorf("duet: %s has no link", e.MsgType)
	}
	return u, nil
}

// Download writes the media of element e (see MediaURL for size) to w and
// returns the bytes written. The server link is fetched with this login's
// UserSig (Authorization: UserSig), and redirects to the object store.
func (c *Client) Download(ctx context.Context, e Elem, size ImageSize, w io.Writer) (int64, error) {
	link, err := MediaURL(e, size)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, link, nil)
	if err != nil {
		return 0, err
	}
	// Go drops Authorization on the redirect to another host: the
	// presigned store URL needs none.
	req.Header.Set("Authorization", "UserSig "+c.me+":"+c.sig())
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return 0, fmt.Errorf("duet: download: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return 0, fmt.Errorf("duet: download: %s: %s", resp.Status, msg)
	}
	return io.Copy(w, resp.Body)
}
