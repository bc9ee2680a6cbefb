// Package media keeps the objects behind image, voice, file and video
// messages in S3-compatible storage (MinIO, any S3, or an embedded
// versitygw gateway), and the hourly message-record archives.
//
// A device asks for an upload (media/apply_upload) and gets a presigned
// POST policy that bounds the object's size; it uploads straight to the
// store, then commits (media/commit_upload): the server checks the object's
// real size and content, makes image renditions, and answers the element
// fields to put in the message. sendmsg refuses media elements that do not
// name a committed upload of the sender (CheckElements). Downloads go
// through the server's HTTP listener, which checks the caller's UserSig and
// redirects to a short-lived presigned GET (see docs/media.md).
package media

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/store"
)

// Error codes of the media commands (Duet's own; Tencent's REST API has no
// upload commands). sendmsg's media refusals use Tencent's 90010.
const (
	CodeBadRequest   = command.CodeJSON             // body or field malformed
	CodeRefused      = command.CodeMediaRefused     // unknown type, or declared size over the limit
	CodeContent      = command.CodeMediaContent     // content is not of the declared type, or over the limit: object removed
	CodeUnknown      = command.CodeMediaUnknown     // no such upload, someone else's, or past its deadline
	CodeNotUploaded  = command.CodeMediaNotUploaded // commit before the object was uploaded
	CodeUnavailable  = command.CodeMediaUnavailable // the object store cannot be reached
	CodeNoArchive    = command.CodeMediaNoArchive   // no archive for that hour (not over yet, or not archived yet)
	CodeElement      = command.CodeElement          // sendmsg: media element names an unknown, uncommitted or foreign upload
	DefaultMaxSize   = 28 << 20
	defaultUploadTTL = 15 * time.Minute
)

// Types are the upload types apply_upload accepts.
var Types = []string{"image", "sound", "file", "video", "video_thumb"}

// Config configures the media service.
type Config struct {
	S3 S3
	// PublicURL is the base of download links: the HTTP listener as devices
	// reach it, e.g. http://im.example.com:8080.
	PublicURL string
	// SDKAppID and Key verify the UserSig of download requests.
	SDKAppID uint64
	Key      string
	// Limits is the largest object per type; a missing type gets DefaultMaxSize.
	Limits map[string]int64
	// UploadTTL is how long an upload URL works (default 15 minutes).
	UploadTTL time.Duration
	// CleanAfter is when an upload never committed is removed (default 1 hour).
	CleanAfter time.Duration
	// DownloadTTL is how long the presigned GET a download redirects to
	// works (default 5 minutes).
	DownloadTTL time.Duration
	// ArchiveTTL is how long get_history's URLs work (default 1 hour).
	ArchiveTTL time.Duration
	// CleanEvery and ArchiveEvery pace the background cleaner and archiver
	// (default 1 minute); negative turns the loop off (tests drive them).
	CleanEvery   time.Duration
	ArchiveEvery time.Duration
	// LocalOnly refuses media elements that name no upload of Duet's, even
	// from an App admin (by default an admin may send and import media the
	// app hosts elsewhere).
	LocalOnly bool
	// Clock is the time of upload deadlines and archives; nil: time.Now.
	Clock func() time.Time
	Log   *slog.Logger

	// Cluster mode (docs/cluster.md §14.3, §14.4); all nil on a single
	// node, where this node writes and runs everything.
	//
	// Exec runs the one write a download makes (the grant, see
	// grantDownload) where the data's owner is: the cluster's router.
	Exec command.Executor
	// Owns reports whether this node owns partition part's data: the
	// cleaner and the archiver write, so they run only there — the
	// cleaner for each partition on its owner, the archiver (which covers
	// every partition) on partition 0's.
	Owns func(part int) bool
	// CatchUp waits until this node's view has applied the log as far as
	// it reaches now: a download refused by a view that may be behind
	// (a link used on this node the moment it was sent on another) is
	// looked at once more after it.
	CatchUp func(ctx context.Context) error
}

// Service is the media store behind the media commands.
type Service struct {
	cfg Config
	st  *store.Store
	s3  *clients
	log *slog.Logger

	bucketReady atomic.Bool
	bucketMu    sync.Mutex

	busyMu sync.Mutex
	busy   map[string]bool // UUIDs being committed or cleaned

	archiveMu sync.Mutex
	renderSem chan struct{}

	stop chan struct{}
	// ctx ends at Close, so background work stuck on S3 does not hold up
	// a shutdown.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New makes the service, registers its commands on svc and becomes its
// MediaChecker. It does not need the store to be reachable: the bucket is
// created on first use, so a store that is down only fails media commands.
func New(cfg Config, st *store.Store, svc *command.Service) (*Service, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.S3.Bucket == "" {
		cfg.S3.Bucket = "duet"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.UploadTTL, defaultUploadTTL)
	def(&cfg.CleanAfter, time.Hour)
	def(&cfg.DownloadTTL, 5*time.Minute)
	def(&cfg.ArchiveTTL, time.Hour)
	def(&cfg.CleanEvery, time.Minute)
	def(&cfg.ArchiveEvery, time.Minute)
	if cfg.CleanAfter < cfg.UploadTTL {
		// An upload may still arrive until its URL expires.
		cfg.CleanAfter = cfg.UploadTTL
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	c, err := newClients(cfg.S3)
	if err != nil {
		return nil, err
	}
	m := &Service{cfg: cfg, st: st, s3: c, log: cfg.Log, busy: map[string]bool{}, stop: make(chan struct{}),
		renderSem: make(chan struct{}, max(1, runtime.NumCPU()))}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	// Uploads committed before media followed its messages get their
	// references and a first look.
	if err := st.PrepareMediaLifetimes(cfg.Clock()); err != nil {
		return nil, err
	}
	svc.Register("media/apply_upload", m.applyUpload)
	svc.Register("media/commit_upload", m.commitUpload)
	svc.RegisterHome("open_msg_svc/get_history", m.getHistory, false, nil)
	svc.RegisterHome(grantCommand, m.grantDownload, true, userHome)
	svc.RegisterHome(clearMarksCommand, m.clearMarks, true, userHome) // a user of the marks' partition
	svc.SetMediaChecker(m)
	m.loop("cleaner", cfg.CleanEvery, m.ownsAny, func(ctx context.Context) error { _, err := m.Clean(ctx); return err })
	m.loop("archiver", cfg.ArchiveEvery, func() bool { return m.owns(0) }, m.ArchiveDue)
	return m, nil
}

// owns reports whether this node may write partition p's media records
// (always on a single node).
func (m *Service) owns(p int) bool { return m.cfg.Owns == nil || m.cfg.Owns(p) }

// ownsAny reports whether this node owns any partition.
func (m *Service) ownsAny() bool {
	for p := range m.st.Partitions() {
		if m.owns(p) {
			return true
		}
	}
	return false
}

// loop runs f every `every`. In a cluster it runs only while this node
// owns the data it writes (owned: the cleaner's and the archiver's writes
// can be made nowhere else): the other nodes skip it without a word, and
// a node that takes the data over starts at its next tick. Its log says
// when this node starts and stops running it.
func (m *Service) loop(name string, every time.Duration, owned func() bool, f func(context.Context) error) {
	if every < 0 {
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		was := false
		for {
			run := true
			if m.cfg.Owns != nil {
				if run = owned(); run != was {
					was = run
					if run {
						m.log.Info("media: this node runs the "+name+" (it owns the data)", "every", every)
					} else {
						m.log.Info("media: this node stopped running the " + name + " (it no longer owns the data)")
					}
				}
			}
			if run {
				ctx, cancel := context.WithTimeout(m.ctx, every+time.Minute)
				// Not when Close cut it short; nor when the data moved to
				// another node during the run (its write was refused: the
				// new owner does it).
				if err := f(ctx); err != nil && m.ctx.Err() == nil && !errors.Is(err, store.ErrNotOwner) {
					m.log.Warn("media background task failed; retrying later", "task", name, "error", err)
				}
				cancel()
			}
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
		}
	}()
}

// Close stops the background cleaner and archiver.
func (m *Service) Close() error {
	select {
	case <-m.stop:
	default:
		close(m.stop)
	}
	m.cancel()
	m.wg.Wait()
	return nil
}

func (m *Service) now() time.Time { return m.cfg.Clock() }

func (m *Service) limit(typ string) int64 {
	if n, ok := m.cfg.Limits[typ]; ok && n > 0 {
		return n
	}
	return DefaultMaxSize
}

// commitBudget bounds one commit's work on the object store (inspect).
const commitBudget = 2 * time.Minute

// ensureBucket creates the bucket when missing, once per process.
func (m *Service) ensureBucket(ctx context.Context) *command.Error {
	if m.bucketReady.Load() {
		return nil
	}
	m.bucketMu.Lock()
	defer m.bucketMu.Unlock()
	if m.bucketReady.Load() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ok, err := m.s3.api.BucketExists(ctx, m.cfg.S3.Bucket)
	if err == nil && !ok {
		err = m.s3.api.MakeBucket(ctx, m.cfg.S3.Bucket, minio.MakeBucketOptions{Region: m.cfg.S3.Region})
		if e := minio.ToErrorResponse(err); e.Code == "BucketAlreadyOwnedByYou" || e.Code == "BucketAlreadyExists" {
			err = nil
		}
	}
	if err != nil {
		return unavailable(err)
	}
	m.bucketReady.Store(true)
	return nil
}

// Ready checks the store can be reached and the bucket exists.
func (m *Service) Ready(ctx context.Context) error {
	if e := m.ensureBucket(ctx); e != nil {
		return e
	}
	return nil
}

func unavailable(err error) *command.Error {
	return command.Errorf(CodeUnavailable, "media storage is unreachable, retry later (%v)", err)
}

func objectName(uuid, rendition string) string { return "media/" + uuid + "/" + rendition }

// URL is the download link of one rendition of an upload.
func (m *Service) URL(uuid, rendition string) string {
	return m.cfg.PublicURL + "/media/" + uuid + "/" + rendition
}

func newUUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// lock marks uuid busy so the cleaner and a commit never work on it at once.
func (m *Service) lock(uuid string) bool {
	m.busyMu.Lock()
	defer m.busyMu.Unlock()
	if m.busy[uuid] {
		return false
	}
	m.busy[uuid] = true
	return true
}

func (m *Service) unlock(uuid string) {
	m.busyMu.Lock()
	delete(m.busy, uuid)
	m.busyMu.Unlock()
}

// ---- apply_upload ----

// UploadTicket is the answer to media/apply_upload.
type UploadTicket struct {
	UUID       string            `json:"UUID"`
	UploadURL  string            `json:"UploadUrl"`
	Method     string            `json:"Method"`
	FormFields map[string]string `json:"FormFields"` // POST: the form fields before the file
	Headers    map[string]string `json:"Headers"`    // PUT: headers to send (signed into the URL)
	ExpireTime int64             `json:"ExpireTime"`
	MaxSize    int64             `json:"MaxSize"`
}

type applyRequest struct {
	Method      string
	Type        string
	Size        int64
	ContentType string
	FileName    string
}

func (m *Service) parseApply(body []byte) (*applyRequest, *command.Error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil || raw == nil {
		return nil, command.Errorf(CodeBadRequest, "request body must be a JSON object")
	}
	r := &applyRequest{}
	str := func(name string, dst *string) *command.Error {
		v, ok := raw[name]
		if !ok || string(v) == "null" {
			return nil
		}
		if json.Unmarshal(v, dst) != nil {
			return command.Errorf(CodeBadRequest, "%s is not a String", name)
		}
		return nil
	}
	for name, dst := range map[string]*string{"Type": &r.Type, "ContentType": &r.ContentType, "FileName": &r.FileName, "Method": &r.Method} {
		if e := str(name, dst); e != nil {
			return nil, e
		}
	}
	switch r.Method {
	case "":
		r.Method = "PUT"
	case "PUT", "POST":
	default:
		return nil, command.Errorf(CodeBadRequest, "Method must be PUT (the default) or POST")
	}
	known := false
	for _, t := range Types {
		known = known || t == r.Type
	}
	if !known {
		return nil, command.Errorf(CodeRefused, "Type %q is not one of image, sound, file, video, video_thumb", r.Type)
	}
	v, ok := raw["Size"]
	if !ok {
		return nil, command.Errorf(CodeBadRequest, "Size is missing")
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil || n <= 0 {
		return nil, command.Errorf(CodeBadRequest, "Size must be a positive Integer (bytes)")
	}
	r.Size = n
	if lim := m.limit(r.Type); n > lim {
		return nil, command.Errorf(CodeRefused, "a %s may be at most %d bytes; %d declared", r.Type, lim, n)
	}
	if len(r.FileName) > 255 || strings.ContainsAny(r.FileName, "/\\\x00") {
		return nil, command.Errorf(CodeBadRequest, "FileName must be a plain name of at most 255 bytes")
	}
	if r.ContentType == "" {
		r.ContentType = "application/octet-stream"
	}
	if len(r.ContentType) > 127 || strings.ContainsAny(r.ContentType, "\r\n") {
		return nil, command.Errorf(CodeBadRequest, "ContentType is not a media type")
	}
	if major := majorType(r.Type); major != "" && r.ContentType != "application/octet-stream" &&
		!strings.HasPrefix(r.ContentType, major) && !(r.Type == "sound" && r.ContentType == "application/ogg") {
		return nil, command.Errorf(CodeRefused, "ContentType %q does not fit Type %s", r.ContentType, r.Type)
	}
	return r, nil
}

// majorType is the media-type prefix an upload type's declared ContentType
// must have ("" for file: anything goes).
func majorType(typ string) string {
	switch typ {
	case "image", "video_thumb":
		return "image/"
	case "sound":
		return "audio/"
	case "video":
		return "video/"
	}
	return ""
}

func (m *Service) applyUpload(ctx context.Context, c *command.Caller, body []byte) (any, error) {
	r, e := m.parseApply(body)
	if e != nil {
		return nil, e
	}
	if e := m.ensureBucket(ctx); e != nil {
		return nil, e
	}
	now := m.now()
	u := &store.Upload{
		UUID: newUUID(), Owner: c.UserID, Admin: c.Admin, Type: r.Type, Size: r.Size, ContentType: r.ContentType,
		FileName: r.FileName, Created: now.Unix(), Deadline: now.Add(m.cfg.CleanAfter).Unix(),
	}
	u.Incoming = incomingName(u.UUID)
	// The store checks the signature's expiry against its own clock, so it
	// is real time, whatever the service's clock says.
	expires := time.Now().Add(m.cfg.UploadTTL)
	tk := UploadTicket{UUID: u.UUID, Method: r.Method, FormFields: map[string]string{}, Headers: map[string]string{},
		ExpireTime: expires.Unix(), MaxSize: r.Size}
	if r.Method == "PUT" {
		// Content-Length and Content-Type are signed into the URL: the store
		// refuses a body of any other size or type (SigV4 signed headers).
		h := http.Header{}
		h.Set("Content-Length", strconv.FormatInt(r.Size, 10))
		h.Set("Content-Type", r.ContentType)
		url, err := m.s3.presign.PresignHeader(ctx, http.MethodPut, m.cfg.S3.Bucket, u.Incoming, m.cfg.UploadTTL, nil, h)
		if err != nil {
			return nil, unavailable(err)
		}
		tk.UploadURL, tk.Headers["Content-Type"] = url.String(), r.ContentType
	} else {
		p := minio.NewPostPolicy()
		p.SetBucket(m.cfg.S3.Bucket)
		p.SetKey(u.Incoming)
		p.SetExpires(expires.UTC())
		p.SetContentType(r.ContentType)
		// The store refuses a body larger than declared (POST policy
		// content-length-range), so an over-size upload never lands.
		if err := p.SetContentLengthRange(1, r.Size); err != nil {
			return nil, err
		}
		url, form, err := m.s3.presign.PresignedPostPolicy(ctx, p)
		if err != nil {
			return nil, unavailable(err)
		}
		tk.UploadURL, tk.FormFields = url.String(), form
	}
	if err := m.st.UpdateFor(u.Owner, func(tx *store.Tx) error { return tx.PutUpload(u) }); err != nil {
		return nil, err
	}
	return tk, nil
}

// ---- commit_upload ----

func (m *Service) commitUpload(ctx context.Context, c *command.Caller, body []byte) (any, error) {
	var req struct {
		UUID json.RawMessage `json:"UUID"`
	}
	var uuid string
	if err := json.Unmarshal(body, &req); err != nil || json.Unmarshal(req.UUID, &uuid) != nil || uuid == "" {
		return nil, command.Errorf(CodeBadRequest, "UUID is missing or is not a String")
	}
	if !m.lock(uuid) {
		return nil, command.Errorf(CodeUnknown, "upload %s is being committed or cleaned up; retry", uuid)
	}
	defer m.unlock(uuid)
	u, err := m.st.GetUpload(uuid)
	if errors.Is(err, store.ErrNotFound) {
		return nil, command.Errorf(CodeUnknown, "no upload %s (never applied for, or removed after its deadline)", uuid)
	}
	if err != nil {
		return nil, err
	}
	if u.Owner != c.UserID {
		return nil, command.Errorf(CodeUnknown, "upload %s belongs to another user", uuid)
	}
	if u.Committed {
		return json.RawMessage(u.Element), nil
	}
	if m.now().Unix() >= u.Deadline {
		return nil, command.Errorf(CodeUnknown, "upload %s was not committed before its deadline; apply again", uuid)
	}
	// Reading back and decoding an image of up to MaxPixels and writing
	// its renditions can outlast the transport's budget (a REST command
	// has 3 s): the work has its own, and goes on if the caller stops
	// waiting, so that a retry finds the upload committed instead of
	// starting over into the same deadline.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitBudget)
	defer cancel()
	el, objects, e := m.inspect(ctx, u)
	if e != nil {
		return nil, e
	}
	u.Element, u.Objects = el, objects
	if err := m.st.UpdateFor(u.Owner, func(tx *store.Tx) error { return tx.CommitUpload(u) }); err != nil {
		// The renditions stay under the upload's prefix; the cleaner removes
		// them with the original at the deadline.
		return nil, err
	}
	return json.RawMessage(el), nil
}

// refuse removes everything stored for u (object and records) and returns e.
func (m *Service) refuse(ctx context.Context, u *store.Upload, e *command.Error) *command.Error {
	if err := m.removeObjects(ctx, u.UUID); err != nil {
		// The record stays so the cleaner retries the removal.
		m.log.Warn("media: could not remove refused upload; the cleaner retries", "uuid", u.UUID, "error", err)
		return e
	}
	if err := m.st.UpdateFor(u.Owner, func(tx *store.Tx) error { tx.DeleteUpload(u); return nil }); err != nil {
		m.log.Warn("media: could not delete refused upload record", "uuid", u.UUID, "error", err)
	}
	return e
}

// removeObjects deletes every object of an upload.
func (m *Service) removeObjects(ctx context.Context, uuid string) error {
	prefix := "media/" + uuid + "/"
	for obj := range m.s3.api.ListObjects(ctx, m.cfg.S3.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return obj.Err
		}
		if err := m.s3.api.RemoveObject(ctx, m.cfg.S3.Bucket, obj.Key, minio.RemoveObjectOptions{}); err != nil {
			return err
		}
	}
	return nil
}

// ---- cleaner ----

// Clean removes uploads never committed whose deadline has passed, and
// committed uploads that no message carries any more (see cleanCarried),
// objects first, then records, and reports how many it removed. An upload
// whose object cannot be removed (store down) stays listed for the next run.
// Its transactions (here and in cleanCarried) are the cleaner's own, on
// records named by upload UUID, not a command's: they use the partition's
// Store.Update, not UpdateFor. With several partitions it cleans each
// partition this node owns (docs/cluster.md §14.1, §14.3): an upload's
// records are all in its uploader's partition.
func (m *Service) Clean(ctx context.Context) (int, error) {
	// Also creates the bucket soon after start, and logs while the store
	// is unreachable.
	if e := m.ensureBucket(ctx); e != nil {
		return 0, e
	}
	n := 0
	for p := range m.st.Partitions() {
		if !m.owns(p) {
			continue
		}
		gone, err := m.clean(ctx, p)
		n += gone
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// clean is Clean for partition p.
func (m *Service) clean(ctx context.Context, p int) (int, error) {
	st := m.st.Partition(p)
	pending, err := st.PendingUploads(m.now(), 1000)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range pending {
		id := p.UUID
		if !m.lock(id) {
			continue
		}
		err := func() error {
			defer m.unlock(id)
			u, err := st.GetUpload(id)
			if errors.Is(err, store.ErrNotFound) {
				u = nil // only the pending entry is left (record swept)
			} else if err != nil {
				return err
			}
			if u != nil && u.Committed {
				return nil
			}
			if err := m.removeObjects(ctx, id); err != nil {
				return err
			}
			return st.Update(func(tx *store.Tx) error {
				if u == nil {
					tx.DeletePending(p)
				} else {
					tx.DeleteUpload(u)
				}
				return nil
			})
		}()
		if err != nil {
			return n, err
		}
		n++
	}
	gone, err := m.cleanCarried(ctx, p)
	return n + gone, err
}

// cleanCarried removes committed uploads that no message carries any more:
// never sent by their deadline, or whose last message expired (or went
// otherwise). Records are given up first (CheckCarried marks them Removing:
// no longer served or accepted in messages), then the objects go, then the
// records; a removal that fails stays due and is retried next run.
//
// With several partitions, the messages of partition p's uploads sent by
// users of other partitions (an App admin's upload sent as a user) keep
// their references in the sender's partition: CheckCarried looks in those
// views too (docs/cluster.md §11.2 item 6).
func (m *Service) cleanCarried(ctx context.Context, p int) (int, error) {
	st := m.st.Partition(p)
	var elsewhere []*store.Store
	for q := range m.st.Partitions() {
		if q != p {
			elsewhere = append(elsewhere, m.st.Partition(q))
		}
	}
	due, err := st.DueChecks(m.now(), 1000)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, d := range due {
		if !m.lock(d.UUID) {
			continue
		}
		err := func() error {
			defer m.unlock(d.UUID)
			var u *store.Upload
			keep := false
			err := st.Update(func(tx *store.Tx) error {
				var err error
				u, keep, err = tx.CheckCarried(d, m.now(), elsewhere...)
				return err
			})
			if err != nil || keep || u == nil {
				return err
			}
			if err := m.removeObjects(ctx, d.UUID); err != nil {
				return err
			}
			n++
			return st.Update(func(tx *store.Tx) error { tx.ForgetUpload(d); return nil })
		}()
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// ---- sendmsg check ----

// mediaUUIDs maps an element type to its UUID fields and the upload type
// each must name.
var mediaUUIDs = map[string][][2]string{
	"TIMImageElem":     {{"UUID", "image"}},
	"TIMSoundElem":     {{"UUID", "sound"}},
	"TIMFileElem":      {{"UUID", "file"}},
	"TIMVideoFileElem": {{"VideoUUID", "video"}, {"ThumbUUID", "video_thumb"}},
}

// urlFields are the URL fields of an element that must be the upload's own
// links (a message may not point its peer elsewhere under a valid UUID).
var urlFields = map[string]map[string]string{
	"TIMSoundElem":     {"Url": "UUID"},
	"TIMFileElem":      {"Url": "UUID"},
	"TIMVideoFileElem": {"VideoUrl": "VideoUUID", "ThumbUrl": "ThumbUUID"},
}

// CheckElements refuses (90010) media elements that do not name a committed
// upload of the sender, name one of another type, or carry URLs other than
// the upload's. An App admin may also send elements that name no upload of
// Duet's at all: media the app hosts itself (a CDN, a migration's history),
// stored and delivered as given, unless Config.LocalOnly.
func (m *Service) CheckElements(c *command.Caller, els []command.Element) *command.Error {
	for i, el := range els {
		fields, ok := mediaUUIDs[el.MsgType]
		if !ok {
			continue
		}
		var content map[string]json.RawMessage
		if json.Unmarshal(el.MsgContent, &content) != nil {
			return command.Errorf(CodeElement, "MsgBody[%d].MsgContent must be an object", i)
		}
		str := func(name string) string {
			var s string
			json.Unmarshal(content[name], &s)
			return s
		}
		uploads := map[string]*store.Upload{} // nil: external
		for _, f := range fields {
			id := str(f[0])
			u, err := m.uploadForSend(id)
			switch {
			case errors.Is(err, store.ErrNotFound) && c.Admin && !m.cfg.LocalOnly:
				uploads[f[0]] = nil
				continue
			case errors.Is(err, store.ErrNotFound) && c.Admin:
				return command.Errorf(CodeElement, "MsgBody[%d] %s.%s %q is not an upload, and this server takes no media hosted elsewhere (media-local-only): apply for and commit one first (media/apply_upload)", i, el.MsgType, f[0], id)
			case errors.Is(err, store.ErrNotFound):
				return command.Errorf(CodeElement, "MsgBody[%d] %s.%s %q is not an upload: apply for and commit one first (media/apply_upload)", i, el.MsgType, f[0], id)
			case err != nil:
				return command.Errorf(command.CodeInternal, "internal error, retry: %v", err)
			case !u.Committed:
				return command.Errorf(CodeElement, "MsgBody[%d] %s.%s %q was never committed (media/commit_upload)", i, el.MsgType, f[0], id)
			case u.Removing:
				return command.Errorf(CodeElement, "MsgBody[%d] %s.%s %q was removed (no message carries it any more)", i, el.MsgType, f[0], id)
			case u.Owner != c.UserID && !c.Admin:
				return command.Errorf(CodeElement, "MsgBody[%d] %s.%s %q is another user's upload", i, el.MsgType, f[0], id)
			case u.Type != f[1]:
				return command.Errorf(CodeElement, "MsgBody[%d] %s.%s %q is a %s upload, not %s", i, el.MsgType, f[0], id, u.Type, f[1])
			}
			uploads[f[0]] = u
		}
		for urlField, uuidField := range urlFields[el.MsgType] {
			v := str(urlField)
			if u := uploads[uuidField]; u == nil {
				if v != "" && !m.externalURL(v) {
					return command.Errorf(CodeElement, "MsgBody[%d] %s.%s %q is neither an upload's link nor an http or https URL of media hosted elsewhere", i, el.MsgType, urlField, v)
				}
			} else if v != "" && v != m.URL(u.UUID, "orig") {
				return command.Errorf(CodeElement, "MsgBody[%d] %s.%s is not the upload's URL (use the fields media/commit_upload answered)", i, el.MsgType, urlField)
			}
		}
		if el.MsgType == "TIMImageElem" {
			var infos []struct {
				URL string `json:"URL"`
			}
			json.Unmarshal(content["ImageInfoArray"], &infos)
			u := uploads["UUID"]
			for _, info := range infos {
				if u == nil && !m.externalURL(info.URL) {
					return command.Errorf(CodeElement, "MsgBody[%d] TIMImageElem.ImageInfoArray URL %q is neither an upload's link nor an http or https URL of media hosted elsewhere", i, info.URL)
				}
				if u != nil && !m.isUploadURL(u, info.URL) {
					return command.Errorf(CodeElement, "MsgBody[%d] TIMImageElem.ImageInfoArray URL %q is not one of the upload's", i, info.URL)
				}
			}
		}
	}
	return nil
}

// uploadForSend reads upload id for a message that names it. With several
// partitions the upload may be another partition's (an App admin's upload
// sent as a user), and this node, the sender's owner, reads it from its
// view: one the admin committed a moment ago through the uploader's owner
// may not be there yet, so an upload missing or uncommitted there is
// looked at once more after the views reached their logs' ends (bounded,
// as a download's, docs/cluster.md §14.3).
func (m *Service) uploadForSend(id string) (*store.Upload, error) {
	u, err := m.st.GetUpload(id)
	if m.cfg.CatchUp == nil || m.st.Partitions() == 1 || (err == nil && u.Committed) ||
		(err != nil && !errors.Is(err, store.ErrNotFound)) {
		return u, err
	}
	ctx, cancel := context.WithTimeout(m.ctx, catchUpWait)
	defer cancel()
	if m.cfg.CatchUp(ctx) != nil {
		return u, err
	}
	return m.st.GetUpload(id)
}

// externalURL: media hosted elsewhere must be named by an absolute http or
// https URL (what a device can fetch; never javascript:, file: or data:),
// and not by a link of Duet's own, which only an upload may carry (an upload
// removed with its last message is not sent again as "external").
func (m *Service) externalURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" &&
		!strings.HasPrefix(s, m.cfg.PublicURL+"/media/")
}

func (m *Service) isUploadURL(u *store.Upload, url string) bool {
	for _, obj := range u.Objects {
		if url == m.URL(u.UUID, obj[strings.LastIndexByte(obj, '/')+1:]) {
			return true
		}
	}
	return false
}

// String describes the configuration for logs.
func (m *Service) String() string {
	return fmt.Sprintf("media{endpoint=%s bucket=%s}", m.cfg.S3.Endpoint, m.cfg.S3.Bucket)
}

// ParseLimits reads per-type size limits written as "image=28MB,file=100MB"
// (suffixes KB, MB, GB are powers of 1024; none means bytes).
func ParseLimits(s string) (map[string]int64, error) {
	out := map[string]int64{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		typ, size, ok := strings.Cut(part, "=")
		known := false
		for _, t := range Types {
			known = known || t == typ
		}
		if !ok || !known {
			return nil, fmt.Errorf("media limit %q: want TYPE=SIZE with TYPE one of %s", part, strings.Join(Types, ", "))
		}
		mult := int64(1)
		size = strings.ToUpper(strings.TrimSpace(size))
		for suffix, m := range map[string]int64{"KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30} {
			if v, ok := strings.CutSuffix(size, suffix); ok {
				size, mult = strings.TrimSpace(v), m
			}
		}
		n, err := strconv.ParseInt(size, 10, 64)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("media limit %q: size is not a positive number", part)
		}
		out[typ] = n * mult
	}
	return out, nil
}
