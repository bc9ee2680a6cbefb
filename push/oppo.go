package push

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// OPPO PUSH server API: an auth token from POST {base}/server/v1/auth
// (form app_key, timestamp in ms, sign = hex SHA-256 of
// app_key+timestamp+master_secret; valid 24 h), then POST
// {base}/server/v1/message/notification/unicast with the form fields
// auth_token and message (a JSON object: target_type 2 = registration id,
// target_value, notification). Codes: 0 success, -1 service busy, -2 flow
// control, 11 invalid auth token, 13 app call limited and 55 app call
// frequency limit (both: try again later), 67 bad category, 10000 invalid
// registration id.

const oppoBase = "https://api.push.oppomobile.com"

type oppo struct {
	cfg    OPPOConfig
	base   string
	client *http.Client
	now    func() time.Time
	auth   cachedToken
}

func newOPPO(cfg OPPOConfig, client *http.Client, now func() time.Time) (*oppo, error) {
	if cfg.AppKey == "" || cfg.MasterSecret == "" {
		return nil, errors.New("oppo: app_key and master_secret are required")
	}
	if _, err := checkClasses(&Config{OPPO: &cfg}); err != nil {
		return nil, err
	}
	if client == nil {
		client = defaultClient()
	}
	return &oppo{cfg: cfg, base: base(cfg.Endpoint, oppoBase), client: client, now: now}, nil
}

func (o *oppo) name() string { return "oppo" }

type oppoReply struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

func (o *oppo) post(ctx context.Context, path string, form url.Values, token string) (*oppoReply, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.base+path, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, failf(permanent, "oppo: %v", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded;charset=UTF-8")
	if token != "" {
		req.Header.Set("auth_token", token)
	}
	ans, err := do(o.client, req)
	if err != nil {
		return nil, classify(err)
	}
	if e := ans.transient("oppo"); e != nil {
		return nil, e
	}
	var r oppoReply
	if e := ans.decode("oppo", &r); e != nil {
		return nil, e
	}
	return &r, nil
}

func (o *oppo) authToken(ctx context.Context) (string, error) {
	return o.auth.get(o.now(), func() (string, time.Duration, error) {
		ts := strconv.FormatInt(o.now().UnixMilli(), 10)
		sum := sha256.Sum256([]byte(o.cfg.AppKey + ts + o.cfg.MasterSecret))
		r, err := o.post(ctx, "/server/v1/auth", url.Values{"app_key": {o.cfg.AppKey}, "timestamp": {ts}, "sign": {hex.EncodeToString(sum[:])}}, "")
		if err != nil {
			return "", 0, err
		}
		var d struct {
			AuthToken string `json:"auth_token"`
		}
		json.Unmarshal(r.Data, &d)
		if r.Code != 0 || d.AuthToken == "" {
			if r.Code == -1 || r.Code == -2 {
				return "", 0, failf(retry, "oppo auth: code %d %s", r.Code, r.Message)
			}
			return "", 0, failf(permanent, "oppo auth: code %d %s", r.Code, r.Message)
		}
		return d.AuthToken, 24 * time.Hour, nil
	})
}

// OPPO's limits for the standard style (style 1): title ≤ 50 and content
// ≤ 50 characters, each character (CJK, emoji) counting one. Older docs
// allowed 200 for the content; the current one says 50.
const (
	oppoTitleMax   = 50
	oppoContentMax = 50
)

func oppoMessage(n *Notification, cfg OPPOConfig) []byte {
	category, level := oppoClass(n, cfg)
	note := map[string]any{
		"style": 1, "title": clip(n.Title, oppoTitleMax), "content": clip(n.Body, oppoContentMax),
		"click_action_type": 0, // open the app
		"app_message_id":    n.MsgKey,
		// The message class (OPPO 消息分类, 2024–2025): unclassified messages are
		// content and marketing, 2–5 a day per device, shade only.
		"category": category, "notify_level": level,
	}
	if n.Android.OPPOChannelID != "" {
		note["channel_id"] = n.Android.OPPOChannelID
	}
	if n.Ext != "" {
		// action_parameters is a JSON object whose keys reach the opened
		// activity as intent extras: Ext travels as "ext", as on vivo and Meizu.
		p, _ := json.Marshal(map[string]string{"ext": n.Ext})
		note["action_parameters"] = string(p)
	}
	b, _ := json.Marshal(map[string]any{"target_type": 2, "target_value": n.Token, "notification": note})
	return b
}

func (o *oppo) send(ctx context.Context, n *Notification) error {
	if n.Silent {
		return nil // OPPO has notification messages only: a recall shows nothing.
	}
	tok, err := o.authToken(ctx)
	if err != nil {
		return err
	}
	r, err := o.post(ctx, "/server/v1/message/notification/unicast", url.Values{"auth_token": {tok}, "message": {string(oppoMessage(n, o.cfg))}}, tok)
	if err != nil {
		return err
	}
	switch r.Code {
	case 0:
		return nil
	case 10000:
		return failf(invalidToken, "oppo: code %d %s", r.Code, r.Message)
	case 11:
		o.auth.invalidate(tok)
		return failf(retry, "oppo: code %d %s", r.Code, r.Message)
	case -1, -2, 13, 55:
		// Busy, flow control, and the rate limits 13 (App Call Limited)
		// and 55 (App Call Frequency Limit): try again later, like a 429.
		return failf(retry, "oppo: code %d %s", r.Code, r.Message)
	}
	return failf(permanent, "oppo: code %d %s", r.Code, r.Message)
}
