package push

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// vendor sends one notification to one device through one push service.
type vendor interface {
	name() string
	send(ctx context.Context, n *Notification) error
}

// Outcome kinds of a failed send.
type failKind int

const (
	// retry: 429, 5xx, network and TLS trouble, an expired auth token, an
	// answer that is not JSON — try again later, with backoff.
	retry failKind = iota
	// invalidToken: the vendor says the token is unknown or unregistered —
	// remove it; sending again cannot succeed.
	invalidToken
	// permanent: the request itself is refused (bad credentials, payload
	// too large, …) — log and count; resending the same thing is useless.
	permanent
	// misconfigured: the vendor says the token does not fit Duet's settings
	// (APNs environment or bundle id, FCM sender): the token is kept, and
	// when devices of several users answer so the vendor is stopped until
	// the config is fixed (a restart), since every send would fail alike.
	misconfigured
)

// sendError is a classified failure.
type sendError struct {
	kind       failKind
	retryAfter time.Duration // the vendor's Retry-After, if it gave one
	msg        string
}

func (e *sendError) Error() string { return e.msg }

func failf(k failKind, format string, args ...any) *sendError {
	return &sendError{kind: k, msg: fmt.Sprintf(format, args...)}
}

// classify turns any error from a vendor client into a sendError.
func classify(err error) *sendError {
	var se *sendError
	if errors.As(err, &se) {
		return se
	}
	var ue x509.UnknownAuthorityError
	var he x509.HostnameError
	var ce x509.CertificateInvalidError
	if errors.As(err, &ue) || errors.As(err, &he) || errors.As(err, &ce) {
		return failf(retry, "TLS: %v", err)
	}
	return failf(retry, "network: %v", err)
}

// httpAnswer is a read response.
type httpAnswer struct {
	status int
	header http.Header
	body   []byte
}

// do runs req and reads at most 1 MiB of the answer.
func do(c *http.Client, req *http.Request) (*httpAnswer, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	return &httpAnswer{status: resp.StatusCode, header: resp.Header, body: body}, nil
}

// transient reports 429 and 5xx as retryable, honouring Retry-After.
func (a *httpAnswer) transient(who string) *sendError {
	if a.status != http.StatusTooManyRequests && a.status < 500 {
		return nil
	}
	e := failf(retry, "%s: HTTP %d: %s", who, a.status, snippet(a.body))
	if s := a.header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			e.retryAfter = time.Duration(n) * time.Second
		}
	}
	return e
}

// decode parses the JSON answer into v; an answer that is not JSON is
// retried (a proxy's error page, a gateway hiccup) and named clearly.
func (a *httpAnswer) decode(who string, v any) *sendError {
	if err := json.Unmarshal(a.body, v); err != nil {
		return failf(retry, "%s: HTTP %d answer is not JSON (%v): %s", who, a.status, err, snippet(a.body))
	}
	return nil
}

func snippet(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) > 200 {
		b = b[:200]
	}
	return strconv.Quote(string(b))
}

// cachedToken keeps a vendor access token until shortly before it expires.
type cachedToken struct {
	mu      sync.Mutex
	value   string
	expires time.Time
}

// get returns the cached token or fetches a new one. Concurrent callers
// wait for one fetch instead of each asking the vendor.
func (c *cachedToken) get(now time.Time, fetch func() (string, time.Duration, error)) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.value != "" && now.Before(c.expires) {
		return c.value, nil
	}
	v, ttl, err := fetch()
	if err != nil {
		return "", err
	}
	// Renew a minute early (or at half-life for short tokens) so a token
	// never expires between the check and the vendor reading it.
	margin := time.Minute
	if ttl < 2*margin {
		margin = ttl / 2
	}
	c.value, c.expires = v, now.Add(ttl-margin)
	return v, nil
}

// invalidate drops a token the vendor refused, if it is still the cached one.
func (c *cachedToken) invalidate(v string) {
	c.mu.Lock()
	if c.value == v {
		c.value = ""
	}
	c.mu.Unlock()
}

// defaultClient is a vendor's HTTP client: keep-alive connections for as
// many workers as a lane has, HTTP/2 where the server offers it (APNs
// requires it), and a deadline on every request so a hung vendor only
// holds its own worker.
func defaultClient() *http.Client {
	return &http.Client{Timeout: sendTimeout, Transport: &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}}
}

// oauthToken makes an OAuth 2.0 token request (RFC 6749 §4.4, and the JWT
// bearer grant of RFC 7523 for FCM): a form POST answered by access_token and
// expires_in. what names the exchange in errors.
func oauthToken(ctx context.Context, client *http.Client, what, tokenURL string, form url.Values) (string, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", 0, failf(permanent, "%s: %v", what, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	ans, err := do(client, req)
	if err != nil {
		return "", 0, classify(err)
	}
	if e := ans.transient(what); e != nil {
		return "", 0, e
	}
	var tok struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
		Error       any    `json:"error"` // a string (RFC 6749), a number at Huawei
		Description string `json:"error_description"`
	}
	if e := ans.decode(what, &tok); e != nil {
		return "", 0, e
	}
	if ans.status != http.StatusOK || tok.AccessToken == "" {
		return "", 0, failf(permanent, "%s: HTTP %d error %v %s", what, ans.status, tok.Error, tok.Description)
	}
	if tok.ExpiresIn <= 0 {
		tok.ExpiresIn = 3600
	}
	return tok.AccessToken, time.Duration(tok.ExpiresIn) * time.Second, nil
}
