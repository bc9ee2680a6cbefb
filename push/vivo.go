package push

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// vivo push server API: an auth token from POST {base}/message/auth with
// JSON {appId, appKey, timestamp (ms), sign}, sign = lower-case hex MD5 of
// appId+appKey+timestamp+appSecret (each trimmed); valid 24 h, but vivo asks
// servers to cache it centrally and renew it every 1–2 hours. Then POST
// {base}/message/send with header authToken and JSON {appId, regId,
// notifyType, title, content, skipType, requestId, classification, …}.
// Codes: 0 success, 10302 regId invalid (invalidUser names it), 10070
// daily quota exceeded; HTTP 500 a server error.

const (
	vivoBase = "https://api-push.vivo.com.cn"
	// vivoTokenRenew: the auth token is renewed hourly (vivo's doc: "1-2小时更新一次").
	vivoTokenRenew = time.Hour
)

type vivo struct {
	cfg    VIVOConfig
	base   string
	appID  int64
	client *http.Client
	now    func() time.Time
	auth   cachedToken
}

func newVIVO(cfg VIVOConfig, client *http.Client, now func() time.Time) (*vivo, error) {
	if cfg.AppID == "" || cfg.AppKey == "" || cfg.AppSecret == "" {
		return nil, errors.New("vivo: app_id, app_key and app_secret are required")
	}
	id, err := strconv.ParseInt(strings.TrimSpace(cfg.AppID), 10, 64)
	if err != nil {
		return nil, errors.New("vivo: app_id must be a number")
	}
	if _, err := checkClasses(&Config{VIVO: &cfg}); err != nil {
		return nil, err
	}
	if client == nil {
		client = defaultClient()
	}
	return &vivo{cfg: cfg, base: base(cfg.Endpoint, vivoBase), appID: id, client: client, now: now}, nil
}

func (v *vivo) name() string { return "vivo" }

type vivoReply struct {
	Result      int    `json:"result"`
	Desc        string `json:"desc"`
	AuthToken   string `json:"authToken"`
	TaskID      string `json:"taskId"`
	InvalidUser *struct {
		Status int    `json:"status"`
		UserID string `json:"userid"`
	} `json:"invalidUser"`
}

func (v *vivo) post(ctx context.Context, path string, body any, token string) (*vivoReply, error) {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, v.base+path, bytes.NewReader(b))
	if err != nil {
		return nil, failf(permanent, "vivo: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("authToken", token)
	}
	ans, err := do(v.client, req)
	if err != nil {
		return nil, classify(err)
	}
	if e := ans.transient("vivo"); e != nil {
		return nil, e
	}
	var r vivoReply
	if e := ans.decode("vivo", &r); e != nil {
		return nil, e
	}
	return &r, nil
}

func (v *vivo) authToken(ctx context.Context) (string, error) {
	return v.auth.get(v.now(), func() (string, time.Duration, error) {
		ts := v.now().UnixMilli()
		sum := md5.Sum([]byte(strings.TrimSpace(v.cfg.AppID) + strings.TrimSpace(v.cfg.AppKey) + strconv.FormatInt(ts, 10) + strings.TrimSpace(v.cfg.AppSecret)))
		r, err := v.post(ctx, "/message/auth", map[string]any{
			"appId": v.appID, "appKey": v.cfg.AppKey, "timestamp": ts, "sign": hex.EncodeToString(sum[:]),
		}, "")
		if err != nil {
			return "", 0, err
		}
		if r.Result != 0 || r.AuthToken == "" {
			return "", 0, failf(permanent, "vivo auth: result %d %s", r.Result, r.Desc)
		}
		// cachedToken renews a minute before this.
		return r.AuthToken, vivoTokenRenew + time.Minute, nil
	})
}

func vivoMessage(n *Notification, appID int64, cfg VIVOConfig) map[string]any {
	// The message class: classification (0 operational, 2–5 a day per
	// device; 1 system) and the category, which must correspond (10097).
	classification, category := vivoClass(n, cfg)
	m := map[string]any{
		"appId": appID, "regId": n.Token,
		"notifyType": 4, // ring and vibrate
		"title":      clip(n.Title, 40), "content": clip(n.Body, 100),
		"skipType":       1, // open the app
		"requestId":      requestID(n),
		"classification": classification,
	}
	if category != "" {
		m["category"] = category
	}
	if n.Ext != "" {
		m["clientCustomMap"] = map[string]string{"ext": n.Ext}
	}
	return m
}

// requestID is unique per message and device, as vivo wants (≤ 64 characters).
func requestID(n *Notification) string {
	sum := md5.Sum([]byte(n.MsgKey + "\x00" + n.Device))
	return hex.EncodeToString(sum[:])
}

func (v *vivo) send(ctx context.Context, n *Notification) error {
	if n.Silent {
		return nil // vivo delivers notification messages only: a recall shows nothing.
	}
	tok, err := v.authToken(ctx)
	if err != nil {
		return err
	}
	r, err := v.post(ctx, "/message/send", vivoMessage(n, v.appID, v.cfg), tok)
	if err != nil {
		return err
	}
	switch r.Result {
	case 0:
		return nil
	case 10302:
		return failf(invalidToken, "vivo: result %d %s", r.Result, r.Desc)
	case 10000, 10050: // authToken expired or missing
		v.auth.invalidate(tok)
		return failf(retry, "vivo: result %d %s", r.Result, r.Desc)
	}
	if r.InvalidUser != nil && r.InvalidUser.UserID == n.Token {
		return failf(invalidToken, "vivo: result %d %s (invalid user status %d)", r.Result, r.Desc, r.InvalidUser.Status)
	}
	return failf(permanent, "vivo: result %d %s", r.Result, r.Desc)
}
