package media

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/store"
	"github.com/duet-im/duet/usersig"
)

// Handler serves GET /media/{uuid}/{rendition} on the HTTP listener. The
// links in messages are stable and carry no secret: the caller proves who
// it is with its UserSig (query identifier and usersig, as Tencent's REST
// URLs do), and only the uploader and users who were sent a message
// carrying the upload get a redirect (302) to a presigned GET of a few
// minutes. Anyone else gets 403, a bad UserSig 401.
func (m *Service) Handler() http.Handler {
	return http.HandlerFunc(m.serveDownload)
}

type httpError struct {
	ActionStatus string `json:"ActionStatus"`
	ErrorCode    int    `json:"ErrorCode"`
	ErrorInfo    string `json:"ErrorInfo"`
}

func fail(w http.ResponseWriter, status, code int, info string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(httpError{"FAIL", code, info})
}

func (m *Service) serveDownload(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		fail(w, http.StatusMethodNotAllowed, CodeBadRequest, "GET or HEAD only")
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/media/")
	id, rendition, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || id == "" || strings.Contains(rendition, "/") {
		fail(w, http.StatusNotFound, CodeUnknown, "no such media link")
		return
	}
	q := r.URL.Query()
	user, sig := q.Get("identifier"), q.Get("usersig")
	if h := r.Header.Get("Authorization"); sig == "" && strings.HasPrefix(h, "UserSig ") {
		// Authorization: UserSig {identifier}:{usersig}, for clients that keep
		// credentials out of URLs.
		user, sig, _ = strings.Cut(strings.TrimPrefix(h, "UserSig "), ":")
	}
	s, err := usersig.Verify(sig, m.cfg.SDKAppID, m.cfg.Key, user, time.Now())
	if err != nil {
		fail(w, http.StatusUnauthorized, usersig.Code(err), "a valid identifier and usersig are required: "+err.Error())
		return
	}
	// A kick revokes older UserSigs here as on REST and MQTT (code 70001).
	if s.IssuedAt().Before(m.st.KickedAt(user)) {
		fail(w, http.StatusUnauthorized, command.CodeSigExpired, "usersig issued before "+user+" was last kicked; generate a new one")
		return
	}
	u, status, refusal, grant := m.access(id, rendition, user)
	if (status == http.StatusNotFound || status == http.StatusForbidden) && m.cfg.CatchUp != nil {
		// This node's view may not have the upload's commit or the message
		// that carries it yet: a link sent through another node, used here
		// the moment it arrived. Look once more when the view has caught
		// up with the log (docs/cluster.md §14.3), or after a second.
		ctx, cancel := context.WithTimeout(r.Context(), catchUpWait)
		m.cfg.CatchUp(ctx) // whatever it says, the second look decides
		cancel()
		u, status, refusal, grant = m.access(id, rendition, user)
	}
	if status != 0 {
		code := CodeUnknown
		if status == http.StatusInternalServerError {
			code = command.CodeInternal
		}
		fail(w, status, code, refusal)
		return
	}
	if grant != nil {
		if err := m.grant(r.Context(), u.UUID, user, *grant); err != nil {
			if m.cfg.Exec == nil {
				fail(w, http.StatusInternalServerError, command.CodeInternal, "internal error, retry")
				return
			}
			// In a cluster: no owner to record it right now (a takeover).
			// The history proved the right; the grant only spares the
			// next download this look, which it will make again.
			m.log.Warn("media: a download grant was not recorded", "uuid", u.UUID, "user", user, "error", err)
		}
	}
	object := objectName(id, rendition)
	params := url.Values{}
	if rendition == "orig" {
		params.Set("response-content-type", u.ContentType)
		if u.Type == "file" {
			// Files are offered as downloads, never rendered by a browser
			// at the store's origin.
			params.Set("response-content-disposition", "attachment; filename*=UTF-8''"+url.PathEscape(u.FileName))
		}
	}
	link, err := m.s3.presign.PresignedGetObject(r.Context(), m.cfg.S3.Bucket, object, m.cfg.DownloadTTL, params)
	if err != nil {
		fail(w, http.StatusServiceUnavailable, CodeUnavailable, "media storage is unreachable, retry later")
		return
	}
	w.Header().Set("Cache-Control", "private, no-store")
	http.Redirect(w, r, link.String(), http.StatusFound)
}

// adminWindow is how long after an App admin's upload its messages are
// looked for (they may name any sender, so all history is searched).
const adminWindow = 24 * time.Hour

var errFound = errors.New("found")

// sentByAdmin looks for a message to or from user carrying an admin's
// upload, in all history of the day after the upload, and answers when the
// latest-expiring one goes (0: never).
func (m *Service) sentByAdmin(u *store.Upload, user string, needle []byte) (expire int64, ok bool, err error) {
	from, now := time.Unix(u.Created, 0), m.st.Now().Unix()
	err = m.st.ScanMessages(from, from.Add(adminWindow), func(msg *store.Message) error {
		if (msg.To == user && !msg.SenderOnly || msg.From == user) && bytes.Contains(msg.MsgBody, needle) &&
			(msg.Expire == 0 || msg.Expire > now) {
			if !ok || (expire != 0 && (msg.Expire == 0 || msg.Expire > expire)) {
				expire = msg.Expire
			}
			ok = true
		}
		return nil
	})
	return expire, ok, err
}

// catchUpWait bounds a download's wait for this node's view to reach the
// log's end before it refuses (docs/cluster.md §14.3).
const catchUpWait = time.Second

// access looks up rendition of upload id for user: the upload, or the
// refusal's HTTP status and ErrorInfo. grant is set (to when it ends) when
// user may download it by a message found in the history, which the
// caller records (see grant).
func (m *Service) access(id, rendition, user string) (u *store.Upload, status int, refusal string, grant *int64) {
	u, err := m.st.GetUpload(id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && (!u.Committed || u.Removing)) {
		return nil, http.StatusNotFound, "no such media", nil
	}
	if err != nil {
		return nil, http.StatusInternalServerError, "internal error, retry", nil
	}
	object := objectName(id, rendition)
	found := false
	for _, o := range u.Objects {
		found = found || o == object
	}
	if !found {
		return nil, http.StatusNotFound, "no such rendition", nil
	}
	allowed, grant, err := m.mayDownload(u, user)
	if err != nil {
		return nil, http.StatusInternalServerError, "internal error, retry", nil
	}
	if !allowed {
		return nil, http.StatusForbidden, "this media was not sent to " + user, nil
	}
	return u, 0, "", grant
}

// mayDownload: the uploader, or a user who was sent a message carrying the
// upload that has not expired (found in their conversation's history, then
// remembered until that message expires: grant is set to when, for the
// caller to record).
func (m *Service) mayDownload(u *store.Upload, user string) (ok bool, grant *int64, err error) {
	if user == u.Owner {
		return true, nil, nil
	}
	if ok, err := m.st.Granted(u.UUID, user); ok || err != nil {
		return ok, nil, err
	}
	needle := []byte(`"` + u.UUID + `"`)
	expire, ok, err := m.st.ConversationCarries(u.Owner, user, user, u.Created, needle)
	if err == nil && !ok && u.Admin {
		expire, ok, err = m.sentByAdmin(u, user, needle)
	}
	if err != nil || !ok {
		return false, nil, err
	}
	return true, &expire, nil
}

// grantWait bounds a download's wait for the owner to record its grant.
const grantWait = 2 * time.Second

// grantCommand records a download grant on the node that owns the data.
// It is a command so that the cluster's router takes it there (Config.Exec)
// like any write; only a media service can make its request (grantRequest's
// Sig), and any other caller is told there is no such command.
const grantCommand = "media/grant_download"

// grantRequest is grantCommand's body.
type grantRequest struct {
	UUID   string `json:"UUID"`
	User   string `json:"User"`
	Expire int64  `json:"Expire"`
	Sig    string `json:"Sig"` // grantSig of the rest
}

// grantSig signs a grant with the UserSig key, which every node of a
// cluster shares and no client knows.
func (m *Service) grantSig(g grantRequest) string {
	h := hmac.New(sha256.New, []byte(m.cfg.Key))
	fmt.Fprintf(h, "duet media grant\x00%s\x00%s\x00%d", g.UUID, g.User, g.Expire)
	return hex.EncodeToString(h.Sum(nil))
}

// grant records that user may download upload uuid until expire: here on
// a single node, through the owner in a cluster (Config.Exec).
func (m *Service) grant(ctx context.Context, uuid, user string, expire int64) error {
	if m.cfg.Exec == nil {
		return m.st.UpdateFor(user, func(tx *store.Tx) error { tx.Grant(uuid, user, expire); return nil })
	}
	g := grantRequest{UUID: uuid, User: user, Expire: expire}
	g.Sig = m.grantSig(g)
	body, err := json.Marshal(g)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, grantWait)
	defer cancel()
	r := m.cfg.Exec.Exec(ctx, &command.Caller{UserID: user, Transport: command.REST}, grantCommand, body)
	if r.Err != nil {
		return r.Err
	}
	return nil
}

// userHome is the home of the media service's internal commands
// (grantCommand, clearMarksCommand): their body's User — for a grant the
// downloader (docs/cluster.md §10.1, mg/ keys), who is also its caller.
func userHome(c *command.Caller, body []byte) string {
	var r struct {
		User string `json:"User"`
	}
	if json.Unmarshal(body, &r) != nil || r.User == "" {
		return c.UserID
	}
	return r.User
}

func (m *Service) grantDownload(ctx context.Context, c *command.Caller, body []byte) (any, error) {
	var g grantRequest
	if json.Unmarshal(body, &g) != nil || g.Sig == "" || !hmac.Equal([]byte(g.Sig), []byte(m.grantSig(g))) {
		return nil, command.Errorf(command.CodeUnknownCommand, "unknown command %q", grantCommand)
	}
	return nil, m.st.UpdateFor(g.User, func(tx *store.Tx) error { tx.Grant(g.UUID, g.User, g.Expire); return nil })
}
