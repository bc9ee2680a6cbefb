package media

import (
	"bytes"
	"encoding/json"
	"errors"
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
	u, err := m.st.GetUpload(id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && (!u.Committed || u.Removing)) {
		fail(w, http.StatusNotFound, CodeUnknown, "no such media")
		return
	}
	if err != nil {
		fail(w, http.StatusInternalServerError, command.CodeInternal, "internal error, retry")
		return
	}
	object := objectName(id, rendition)
	found := false
	for _, o := range u.Objects {
		found = found || o == object
	}
	if !found {
		fail(w, http.StatusNotFound, CodeUnknown, "no such rendition")
		return
	}
	allowed, err := m.mayDownload(u, user)
	if err != nil {
		fail(w, http.StatusInternalServerError, command.CodeInternal, "internal error, retry")
		return
	}
	if !allowed {
		fail(w, http.StatusForbidden, CodeUnknown, "this media was not sent to "+user)
		return
	}
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

// mayDownload: the uploader, or a user who was sent a message carrying the
// upload that has not expired (found in their conversation's history, then
// remembered until that message expires).
func (m *Service) mayDownload(u *store.Upload, user string) (bool, error) {
	if user == u.Owner {
		return true, nil
	}
	if ok, err := m.st.Granted(u.UUID, user); ok || err != nil {
		return ok, err
	}
	needle := []byte(`"` + u.UUID + `"`)
	expire, ok, err := m.st.ConversationCarries(u.Owner, user, user, u.Created, needle)
	if err == nil && !ok && u.Admin {
		expire, ok, err = m.sentByAdmin(u, user, needle)
	}
	if err != nil || !ok {
		return false, err
	}
	return true, m.st.Update(func(tx *store.Tx) error { tx.Grant(u.UUID, user, expire); return nil })
}
