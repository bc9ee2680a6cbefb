// Package rest serves Tencent Cloud IM's server REST API (reference §1):
// `POST /v4/{service}/{command}?sdkappid=…&identifier=…&usersig=…&random=…&contenttype=json`
// with a JSON body, answered with the ActionStatus/ErrorCode/ErrorInfo
// envelope and HTTP 200. An app back-end written against Tencent's API
// works against Duet by changing its host and key.
//
// The transport authenticates the App admin and hands the body to the same
// command layer MQTT requests use; every command's semantics live there.
package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/usersig"
)

// Config configures the REST handler.
type Config struct {
	Service *command.Service
	// Exec runs the commands; nil: Service (a cluster node's router
	// otherwise, internal/cluster).
	Exec command.Executor
	Key  string // UserSig secret
	// KickedAt returns the earliest UserSig issue time accepted for a user
	// (an admin can be kicked too). Nil means nobody was.
	KickedAt func(user string) time.Time
	// Rate is calls per second allowed per command (default 200); the
	// account batch commands get half of it (§1.5). Negative = unlimited.
	Rate int
	// MaxBody bounds a request body (default 1 MiB); larger ones get 93000
	// without being read.
	MaxBody int64
	// Timeout bounds one command (default 3 s, the REST timeout of §1.2).
	Timeout time.Duration
	Clock   func() time.Time
	Log     *slog.Logger
}

// halfRate are the commands limited to 100 calls/s where others get 200
// (§1.5).
var halfRate = map[string]bool{
	"im_open_login_svc/multiaccount_import": true,
	"im_open_login_svc/account_delete":      true,
	"im_open_login_svc/account_check":       true,
}

// needsAdmin is each service's own "needs App admin" code (§1.4); other
// services get the common 60010.
var needsAdmin = map[string]int{
	"openim":            command.CodeOpenIMNeedsAdmin,
	"im_open_login_svc": command.CodeAccountNeedsAdmin,
	"profile":           command.CodeProfileNeedsAdmin,
	"sns":               command.CodeSNSNeedsAdmin,
	"recentcontact":     command.CodeContactNeedsAdmin,
}

// withErrorDisplay are the services whose replies carry ErrorDisplay (§1.2).
var withErrorDisplay = map[string]bool{"profile": true, "sns": true, "recentcontact": true}

type handler struct {
	cfg      Config
	svc      *command.Service
	sdkappid uint64
	admins   func(string) bool

	limMu    sync.Mutex
	limiters map[string]*bucket

	sigMu    sync.Mutex
	verified map[string]*usersig.Sig // UserSig → its verified content
}

// maxVerified bounds the cache of verified UserSigs. Admin sigs are few;
// the bound only matters under a flood of distinct valid sigs.
const maxVerified = 1024

// New returns the handler for /v4/.
func New(cfg Config) http.Handler {
	if cfg.Rate == 0 {
		cfg.Rate = 200
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 3 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Exec == nil {
		cfg.Exec = cfg.Service
	}
	return &handler{
		cfg: cfg, svc: cfg.Service, sdkappid: cfg.Service.Config().SDKAppID, admins: cfg.Service.IsAdmin,
		limiters: make(map[string]*bucket), verified: make(map[string]*usersig.Sig),
	}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	service, name, reply := h.serve(r)
	out := reply.Encode()
	if withErrorDisplay[service] {
		out = addErrorDisplay(out)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
	w.Write(out)
	if reply.Err != nil {
		caller := command.Caller{UserID: r.URL.Query().Get("identifier"), Transport: command.REST}
		command.LogRefusal(h.cfg.Log, &caller, service+"/"+name, reply.Err)
	}
}

func fail(code int, format string, args ...any) command.Reply {
	return command.Reply{Err: command.Errorf(code, format, args...)}
}

// serve checks the request in the order a caller can fix it: URL, method,
// identity, rate, body; then runs the command.
func (h *handler) serve(r *http.Request) (service, name string, reply command.Reply) {
	// The checks before Exec read the store too (KickedAt): a closed one
	// panics there, and the caller gets 20005 rather than a dropped
	// connection.
	defer func() {
		if v := recover(); v != nil {
			reply = command.Reply{Err: h.svc.Recovered(v, service+"/"+name, r.URL.Query().Get("identifier"))}
		}
	}()
	rest, ok := strings.CutPrefix(r.URL.Path, "/v4/")
	service, name, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || service == "" || name == "" || strings.Contains(name, "/") {
		return service, name, fail(command.CodeBadURL, "bad URL: the path must be /v4/{servicename}/{command}")
	}
	if r.Method != http.MethodPost {
		return service, name, fail(command.CodeBadHTTPRequest, "HTTP method %s is not supported: the REST API takes POST only", r.Method)
	}
	q := r.URL.Query()
	if e := h.authenticate(q.Get("sdkappid"), q.Get("identifier"), q.Get("usersig"), service); e != nil {
		return service, name, command.Reply{Err: e}
	}
	identifier := q.Get("identifier")
	cmd := service + "/" + name
	if !h.allow(cmd) {
		return service, name, fail(command.CodeRateLimited, "REST call frequency over the limit for %s, retry later", cmd)
	}
	body, e := h.readBody(r)
	if e != nil {
		return service, name, command.Reply{Err: e}
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.Timeout)
	defer cancel()
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		ctx = command.WithClientIP(ctx, ip)
	}
	caller := &command.Caller{UserID: identifier, Admin: true, Transport: command.REST}
	return service, name, h.cfg.Exec.Exec(ctx, caller, cmd, body)
}

// authenticate checks the URL's identity (§1.1, §2.5): sdkappid present
// (60012) and ours (60006), a UserSig (70002) that decodes (70003), names
// this sdkappid (70014) and identifier (70013), has not expired (70001),
// carries our HMAC (70009) and postdates any kick (70001); then the
// identifier must be an App admin (the service's own code, §1.4).
func (h *handler) authenticate(sdkappid, identifier, sig, service string) *command.Error {
	if sdkappid == "" {
		return command.Errorf(command.CodeNoSDKAppID, "sdkappid is missing from the URL")
	}
	if id, err := strconv.ParseUint(sdkappid, 10, 64); err != nil || id != h.sdkappid {
		return command.Errorf(command.CodeBadSDKAppID, "sdkappid %q is not this server's SDKAppID", sdkappid)
	}
	if identifier == "" {
		return command.Errorf(command.CodeBadIdentifier, "identifier is missing from the URL")
	}
	if sig == "" {
		return command.Errorf(command.CodeSigEmpty, "usersig is missing from the URL")
	}
	now := h.cfg.Clock()
	s, err := h.verify(sig, identifier, now)
	if err != nil {
		return command.Errorf(usersig.Code(err), "usersig refused: %s", sigProblem(err))
	}
	if h.cfg.KickedAt != nil && s.IssuedAt().Before(h.cfg.KickedAt(identifier)) {
		return command.Errorf(command.CodeSigExpired, "usersig refused: issued before %s was last kicked; generate a new one", identifier)
	}
	if !h.admins(identifier) {
		code, ok := needsAdmin[service]
		if !ok {
			code = command.CodeNeedsAdmin
		}
		return command.Errorf(code, "identifier %q is not an App admin; REST calls need an admin identity", identifier)
	}
	return nil
}

func sigProblem(err error) string {
	switch {
	case errors.Is(err, usersig.ErrExpired):
		return "expired"
	case errors.Is(err, usersig.ErrSignature):
		return "signature does not match (wrong secret key?)"
	case errors.Is(err, usersig.ErrIdentifier):
		return "it was made for another identifier"
	case errors.Is(err, usersig.ErrSDKAppID):
		return "it was made for another sdkappid"
	default:
		return "it is not a well-formed UserSig"
	}
}

// verify is usersig.Verify with the decode and HMAC of a sig done once:
// the cache maps the exact sig string to what it was verified to say, and
// the identifier, SDKAppID and expiry are still checked on every call
// (kicks too, by the caller). Only sigs that passed are kept, and the key
// cannot change while the process runs.
func (h *handler) verify(sig, identifier string, now time.Time) (*usersig.Sig, error) {
	h.sigMu.Lock()
	s, ok := h.verified[sig]
	h.sigMu.Unlock()
	if !ok {
		var err error
		if s, err = usersig.Verify(sig, h.sdkappid, h.cfg.Key, identifier, now); err != nil {
			return nil, err
		}
		h.sigMu.Lock()
		if len(h.verified) >= maxVerified {
			clear(h.verified)
		}
		h.verified[sig] = s
		h.sigMu.Unlock()
		return s, nil
	}
	switch {
	case s.SDKAppID != h.sdkappid:
		return nil, usersig.ErrSDKAppID
	case s.Identifier != identifier:
		return nil, usersig.ErrIdentifier
	case now.Unix() > s.Time+s.Expire:
		return nil, usersig.ErrExpired
	}
	return s, nil
}

// readBody reads at most MaxBody bytes. A body announced or found larger is
// refused without reading the rest (the server then closes the
// connection rather than drain it).
func (h *handler) readBody(r *http.Request) ([]byte, *command.Error) {
	limit := h.cfg.MaxBody
	if r.ContentLength > limit {
		return nil, command.Errorf(command.CodeTooLong, "request body is %d bytes; the limit is %d", r.ContentLength, limit)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, command.Errorf(command.CodeBadHTTPRequest, "reading the request body failed: %v", err)
	}
	if int64(len(body)) > limit {
		return nil, command.Errorf(command.CodeTooLong, "request body is over the limit of %d bytes", limit)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, command.Errorf(command.CodeBadBody, "request body is empty; send {} when a command takes no fields")
	}
	return body, nil
}

// addErrorDisplay appends `"ErrorDisplay":""` to an encoded reply that
// lacks it.
func addErrorDisplay(out []byte) []byte {
	var top map[string]json.RawMessage
	if json.Unmarshal(out, &top) != nil {
		return out
	}
	if _, ok := top["ErrorDisplay"]; ok || len(out) < 2 {
		return out
	}
	return append(out[:len(out)-1:len(out)-1], `,"ErrorDisplay":""}`...)
}

// ---- rate limit ----

// bucket is a token bucket holding at most one second of calls.
type bucket struct {
	rate   float64
	tokens float64
	last   time.Time
}

func (h *handler) allow(cmd string) bool {
	if h.cfg.Rate < 0 {
		return true
	}
	now := h.cfg.Clock()
	h.limMu.Lock()
	defer h.limMu.Unlock()
	b := h.limiters[cmd]
	if b == nil {
		rate := float64(h.cfg.Rate)
		if halfRate[cmd] {
			rate /= 2
		}
		b = &bucket{rate: rate, tokens: rate, last: now}
		h.limiters[cmd] = b
	}
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(b.rate, b.tokens+el*b.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
