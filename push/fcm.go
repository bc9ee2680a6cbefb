package push

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// FCM HTTP v1 (Firebase, "Migrate from legacy FCM APIs to HTTP v1",
// "Authorize send requests"): POST {base}/v1/projects/{project}/messages:send
// with `Authorization: Bearer <OAuth 2 access token>`. The access token
// comes from the service account's token_uri through the JWT bearer grant
// (RFC 7523): an RS256 assertion signed with the account's private key,
// scope firebase.messaging, cached until shortly before it expires.

const (
	fcmBase     = "https://fcm.googleapis.com"
	fcmTokenURI = "https://oauth2.googleapis.com/token"
	fcmScope    = "https://www.googleapis.com/auth/firebase.messaging"
)

type fcm struct {
	cfg    FCMConfig
	base   string
	key    *rsa.PrivateKey
	client *http.Client
	now    func() time.Time
	access cachedToken
}

func newFCM(cfg FCMConfig, client *http.Client, now func() time.Time) (*fcm, error) {
	if cfg.ServiceAccountFile != "" {
		raw, err := os.ReadFile(cfg.ServiceAccountFile)
		if err != nil {
			return nil, fmt.Errorf("fcm: %w", err)
		}
		var sa FCMConfig
		var f struct {
			ProjectID    string `json:"project_id"`
			ClientEmail  string `json:"client_email"`
			PrivateKeyID string `json:"private_key_id"`
			PrivateKey   string `json:"private_key"`
			TokenURI     string `json:"token_uri"`
		}
		if err := json.Unmarshal(raw, &f); err != nil {
			return nil, fmt.Errorf("fcm: service account file: %w", err)
		}
		sa = FCMConfig{ProjectID: f.ProjectID, ClientEmail: f.ClientEmail, PrivateKeyID: f.PrivateKeyID, PrivateKey: f.PrivateKey, TokenURI: f.TokenURI}
		// Fields set in the YAML win over the file's (e.g. a test token_uri).
		if cfg.ProjectID == "" {
			cfg.ProjectID = sa.ProjectID
		}
		if cfg.ClientEmail == "" {
			cfg.ClientEmail = sa.ClientEmail
		}
		if cfg.PrivateKeyID == "" {
			cfg.PrivateKeyID = sa.PrivateKeyID
		}
		if cfg.PrivateKey == "" {
			cfg.PrivateKey = sa.PrivateKey
		}
		if cfg.TokenURI == "" {
			cfg.TokenURI = sa.TokenURI
		}
	}
	if cfg.ProjectID == "" || cfg.ClientEmail == "" || cfg.PrivateKey == "" {
		return nil, errors.New("fcm: project_id, client_email and private_key (or service_account_file) are required")
	}
	if cfg.TokenURI == "" {
		cfg.TokenURI = fcmTokenURI
	}
	k, err := parsePrivateKey([]byte(cfg.PrivateKey))
	if err != nil {
		return nil, fmt.Errorf("fcm: %w", err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("fcm: service account key must be RSA, not %T", k)
	}
	if client == nil {
		client = defaultClient()
	}
	return &fcm{cfg: cfg, base: base(cfg.Endpoint, fcmBase), key: rk, client: client, now: now}, nil
}

func (f *fcm) name() string { return "fcm" }

func (f *fcm) accessToken(ctx context.Context) (string, error) {
	return f.access.get(f.now(), func() (string, time.Duration, error) {
		iat := f.now().Unix()
		hdr := map[string]string{"alg": "RS256", "typ": "JWT"}
		if f.cfg.PrivateKeyID != "" {
			hdr["kid"] = f.cfg.PrivateKeyID
		}
		assertion, err := signRS256(f.key, hdr, map[string]any{
			"iss": f.cfg.ClientEmail, "scope": fcmScope, "aud": f.cfg.TokenURI, "iat": iat, "exp": iat + 3600,
		})
		if err != nil {
			return "", 0, failf(permanent, "fcm: signing assertion: %v", err)
		}
		form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {assertion}}
		return oauthToken(ctx, f.client, "fcm oauth", f.cfg.TokenURI, form)
	})
}

// fcmMaxBytes: FCM refuses a message over 4,096 bytes (data plus
// notification) with INVALID_ARGUMENT "message too big".
const fcmMaxBytes = 4096

// fcmMessage is the v1 Message resource, the parts Duet fills. A chat
// notification is non-collapsible (no android.collapse_key): FCM keeps up to
// 100 of those per offline device but only 4 collapsible ones, chosen
// arbitrarily (Firebase, "Non-collapsible and collapsible messages"). Only
// the recall update collapses, keyed by the recalled message: a second
// recall of the same message replaces the first.
func fcmMessage(n *Notification, body string) map[string]any {
	data := map[string]string{"msgKey": n.MsgKey}
	if n.From != "" {
		data["sender"] = n.From // "from" is reserved in FCM data
	}
	if n.Ext != "" {
		data["ext"] = n.Ext
	}
	m := map[string]any{"token": n.Token, "data": data}
	if n.Silent {
		// Data only: the app is woken to remove the recalled message's alert.
		data["withdraw"] = n.MsgKey
		delete(data, "ext")
		m["android"] = map[string]any{"priority": "NORMAL", "collapse_key": "withdraw-" + n.MsgKey}
		return m
	}
	note := map[string]any{"title": n.Title, "body": body}
	if n.Android.GoogleImage != "" {
		note["image"] = n.Android.GoogleImage
	}
	m["notification"] = note
	an := map[string]any{"notification_count": n.Badge}
	if n.Android.GoogleChannelID != "" {
		an["channel_id"] = n.Android.GoogleChannelID
	}
	if n.Android.Sound != "" {
		an["sound"] = n.Android.Sound
	}
	m["android"] = map[string]any{"priority": "HIGH", "notification": an}
	return m
}

// fcmBody is the request body, its text shortened to fit FCM's limit. The
// size is measured without the token, which FCM does not count.
func fcmBody(n *Notification) ([]byte, error) {
	var out []byte // the request of the last (accepted) build
	_, err := fitBytes("fcm", n.Body, fcmMaxBytes, func(body string) ([]byte, error) {
		m := fcmMessage(n, body)
		var err error
		if out, err = json.Marshal(map[string]any{"message": m}); err != nil {
			return nil, err
		}
		delete(m, "token")
		return json.Marshal(m)
	})
	return out, err
}

func (f *fcm) send(ctx context.Context, n *Notification) error {
	tok, err := f.accessToken(ctx)
	if err != nil {
		return err
	}
	body, err := fcmBody(n)
	if err != nil {
		return err
	}
	u := f.base + "/v1/projects/" + url.PathEscape(f.cfg.ProjectID) + "/messages:send"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return failf(permanent, "fcm: %v", err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json; charset=UTF-8")
	ans, err := do(f.client, req)
	if err != nil {
		return classify(err)
	}
	if ans.status == http.StatusOK {
		var ok struct {
			Name string `json:"name"`
		}
		if e := ans.decode("fcm", &ok); e != nil {
			return e
		}
		return nil
	}
	if e := ans.transient("fcm"); e != nil {
		return e
	}
	var reply struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Status  string `json:"status"`
			Details []struct {
				Type      string `json:"@type"`
				ErrorCode string `json:"errorCode"`
			} `json:"details"`
		} `json:"error"`
	}
	if e := ans.decode("fcm", &reply); e != nil {
		return e
	}
	code := reply.Error.Status
	for _, d := range reply.Error.Details {
		if strings.HasSuffix(d.Type, "google.firebase.fcm.v1.FcmError") && d.ErrorCode != "" {
			code = d.ErrorCode
		}
	}
	what := "fcm: HTTP " + strconv.Itoa(ans.status) + " " + code + ": " + reply.Error.Message
	switch {
	// Firebase, "Manage registration tokens": delete on UNREGISTERED or an
	// INVALID_ARGUMENT naming the token. SENDER_ID_MISMATCH is a token of
	// another sender, i.e. a project_id or service account that is not the
	// app's: keep the token.
	case code == "UNREGISTERED":
		return failf(invalidToken, "%s", what)
	case code == "SENDER_ID_MISMATCH":
		return failf(misconfigured, "%s (the token belongs to another Firebase project than push.fcm's)", what)
	case code == "INVALID_ARGUMENT" && strings.Contains(strings.ToLower(reply.Error.Message), "registration token"):
		return failf(invalidToken, "%s", what)
	case ans.status == http.StatusUnauthorized && code != "THIRD_PARTY_AUTH_ERROR":
		f.access.invalidate(tok)
		return failf(retry, "%s", what)
	}
	return failf(permanent, "%s", what)
}
