package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Huawei Push Kit (HMS Core "Push Kit server API"): an app-level access
// token from the OAuth 2 client-credentials grant
// (POST {auth}/oauth2/v3/token, client_id = app ID, client_secret = app
// secret), then POST {base}/v1/{appId}/messages:send with
// `Authorization: Bearer <token>`. The HTTP status is 200 for a handled
// request; the outcome is the body's "code": 80000000 success, 80100000
// partial success (msg lists the illegal tokens), 80300007 all tokens
// invalid, 80200001/80200003 OAuth failure/expired token, 81000001 internal
// error. HTTP 503 is flow control.

const (
	huaweiBase = "https://push-api.cloud.huawei.com"
	huaweiAuth = "https://oauth-login.cloud.huawei.com"
)

type huawei struct {
	cfg        HuaweiConfig
	base, auth string
	client     *http.Client
	now        func() time.Time
	access     cachedToken
}

func newHuawei(cfg HuaweiConfig, client *http.Client, now func() time.Time) (*huawei, error) {
	if cfg.AppID == "" || cfg.AppSecret == "" {
		return nil, errors.New("huawei: app_id and app_secret are required")
	}
	if _, err := checkClasses(&Config{Huawei: &cfg}); err != nil {
		return nil, err
	}
	auth := cfg.AuthEndpoint
	if auth == "" {
		auth = cfg.Endpoint
	}
	if client == nil {
		client = defaultClient()
	}
	return &huawei{cfg: cfg, base: base(cfg.Endpoint, huaweiBase), auth: base(auth, huaweiAuth), client: client, now: now}, nil
}

func (h *huawei) name() string { return "huawei" }

func (h *huawei) accessToken(ctx context.Context) (string, error) {
	return h.access.get(h.now(), func() (string, time.Duration, error) {
		form := url.Values{"grant_type": {"client_credentials"}, "client_id": {h.cfg.AppID}, "client_secret": {h.cfg.AppSecret}}
		return oauthToken(ctx, h.client, "huawei oauth", h.auth+"/oauth2/v3/token", form)
	})
}

// huaweiMaxBytes: Push Kit refuses a message body over 4,096 bytes, the
// token not counted (80300008).
const huaweiMaxBytes = 4096

// huaweiData is the message's custom data: what a tap hands the app
// (Push Kit, "Customizing actions to be triggered upon message tapping":
// the data field is passed to the app; click_action.action must be the
// action of an intent filter the app declares, not data).
func huaweiData(n *Notification) string {
	d := map[string]string{"msgKey": n.MsgKey}
	if n.From != "" {
		d["sender"] = n.From
	}
	if n.Ext != "" {
		d["ext"] = n.Ext
	}
	b, _ := json.Marshal(d)
	return string(b)
}

// androidURIEncode is android.net.Uri.encode: every byte but letters,
// digits and _-!.~'()* is percent-encoded, a space as %20 (never '+',
// which Uri.decode keeps as a plus). allow lists more bytes kept as they are.
func androidURIEncode(s, allow string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("_-!.~'()*"+allow, c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// huaweiIntent builds the intent URI of click_action type 1 as Android's
// Intent.toUri(Intent.URI_INTENT_SCHEME) writes it (Huawei's sample does
// exactly that): intent://host/path#Intent;scheme=…;action=…;component=…;
// launchFlags=0x4000000 (FLAG_ACTIVITY_CLEAR_TOP, which Huawei asks for);
// S.ext=<Ext percent-encoded>;end. ok is false when the config names no
// activity (no scheme, action or component): such an intent opens nothing.
func huaweiIntent(cfg HuaweiConfig, ext string) (intent string, ok bool) {
	var b strings.Builder
	b.WriteString("intent:")
	scheme := ""
	if cfg.IntentURI != "" {
		var rest string
		scheme, rest, _ = strings.Cut(cfg.IntentURI, ":")
		b.WriteString(rest)
	}
	b.WriteString("#Intent;")
	if scheme != "" {
		b.WriteString("scheme=" + scheme + ";")
	}
	if cfg.ClickAction != "" && cfg.ClickAction != "android.intent.action.VIEW" {
		b.WriteString("action=" + androidURIEncode(cfg.ClickAction, "") + ";")
	}
	if cfg.IntentComponent != "" {
		b.WriteString("component=" + androidURIEncode(cfg.IntentComponent, "/") + ";")
	}
	b.WriteString("launchFlags=0x4000000;")
	b.WriteString("S.ext=" + androidURIEncode(ext, "") + ";end")
	return b.String(), scheme != "" || cfg.ClickAction != "" || cfg.IntentComponent != ""
}

func huaweiMessage(n *Notification, cfg HuaweiConfig, body string) map[string]any {
	msg := map[string]any{"token": []string{n.Token}}
	if n.Silent {
		// A data message reaches the app without showing anything.
		d, _ := json.Marshal(map[string]string{"withdraw": n.MsgKey})
		msg["data"] = string(d)
		msg["android"] = map[string]any{"urgency": "NORMAL"}
		return msg
	}
	msg["data"] = huaweiData(n)
	click := map[string]any{"type": 3} // open the app's launcher activity
	if cfg.ClickAction != "" {
		click = map[string]any{"type": 1, "action": cfg.ClickAction}
	}
	if n.Ext != "" && n.Android.ExtAsHuaweiIntentParam == 1 {
		if intent, ok := huaweiIntent(cfg, n.Ext); ok {
			click = map[string]any{"type": 1, "intent": intent}
		}
	}
	note := map[string]any{"title": n.Title, "body": body, "click_action": click}
	if n.Android.HuaWeiChannelID != "" {
		note["channel_id"] = n.Android.HuaWeiChannelID
	}
	if n.Android.HuaWeiImportance != "" {
		note["importance"] = n.Android.HuaWeiImportance
	}
	if n.Android.HuaWeiImage != "" {
		note["image"] = n.Android.HuaWeiImage
	}
	if cfg.BadgeClass != "" && n.Badge > 0 {
		note["badge"] = map[string]any{"class": cfg.BadgeClass, "set_num": n.Badge}
	}
	if n.Android.Sound != "" {
		note["sound"] = n.Android.Sound
		note["default_sound"] = false
	} else {
		note["default_sound"] = true
	}
	android := map[string]any{"urgency": "HIGH", "notification": note}
	// The message class: self-classified IM messages are not capped per
	// device; an unclassified one is machine-classified, and marketing
	// ones are limited to a few a day per device (since 2023-01-05).
	category := cfg.Category
	if n.Android.HuaWeiCategory != "" {
		category = n.Android.HuaWeiCategory
	}
	if category != "" {
		android["category"] = category
	}
	msg["android"] = android
	return msg
}

// huaweiBody is the request body, its text shortened to Push Kit's limit.
func huaweiBody(n *Notification, cfg HuaweiConfig) ([]byte, error) {
	var out []byte
	_, err := fitBytes("huawei", n.Body, huaweiMaxBytes, func(body string) ([]byte, error) {
		m := huaweiMessage(n, cfg, body)
		var err error
		if out, err = json.Marshal(map[string]any{"validate_only": false, "message": m}); err != nil {
			return nil, err
		}
		delete(m, "token")
		return json.Marshal(m)
	})
	return out, err
}

func (h *huawei) send(ctx context.Context, n *Notification) error {
	tok, err := h.accessToken(ctx)
	if err != nil {
		return err
	}
	body, err := huaweiBody(n, h.cfg)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.base+"/v1/"+url.PathEscape(h.cfg.AppID)+"/messages:send", bytes.NewReader(body))
	if err != nil {
		return failf(permanent, "huawei: %v", err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json;charset=utf-8")
	ans, err := do(h.client, req)
	if err != nil {
		return classify(err)
	}
	if e := ans.transient("huawei"); e != nil {
		return e
	}
	var reply struct {
		Code string `json:"code"`
		Msg  string `json:"msg"`
	}
	if e := ans.decode("huawei", &reply); e != nil {
		return e
	}
	switch {
	case reply.Code == "80000000":
		return nil
	case reply.Code == "80300007", reply.Code == "80100000" && strings.Contains(reply.Msg, n.Token):
		return failf(invalidToken, "huawei: %s %s", reply.Code, reply.Msg)
	case reply.Code == "80200001", reply.Code == "80200003", ans.status == http.StatusUnauthorized:
		h.access.invalidate(tok)
		return failf(retry, "huawei: HTTP %d %s %s", ans.status, reply.Code, reply.Msg)
	case reply.Code == "81000001":
		return failf(retry, "huawei: %s %s", reply.Code, reply.Msg)
	}
	return failf(permanent, "huawei: HTTP %d %s %s", ans.status, reply.Code, reply.Msg)
}
