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

func huaweiMessage(n *Notification, badgeClass string) map[string]any {
	msg := map[string]any{"token": []string{n.Token}}
	if n.Silent {
		// A data message reaches the app without showing anything.
		d, _ := json.Marshal(map[string]string{"withdraw": n.MsgKey})
		msg["data"] = string(d)
		msg["android"] = map[string]any{"urgency": "NORMAL"}
		return msg
	}
	click := map[string]any{"type": 3} // open the app
	if n.Ext != "" {
		if n.Android.ExtAsHuaweiIntentParam == 1 {
			click = map[string]any{"type": 1, "intent": "#Intent;launchFlags=0x04000000;S.ext=" + url.QueryEscape(n.Ext) + ";end"}
		} else {
			click = map[string]any{"type": 1, "action": n.Ext}
		}
	}
	note := map[string]any{"title": n.Title, "body": n.Body, "click_action": click}
	if n.Android.HuaWeiChannelID != "" {
		note["channel_id"] = n.Android.HuaWeiChannelID
	}
	if n.Android.HuaWeiImportance != "" {
		note["importance"] = n.Android.HuaWeiImportance
	}
	if n.Android.HuaWeiImage != "" {
		note["image"] = n.Android.HuaWeiImage
	}
	if badgeClass != "" && n.Badge > 0 {
		note["badge"] = map[string]any{"class": badgeClass, "set_num": n.Badge}
	}
	if n.Android.Sound != "" {
		note["sound"] = n.Android.Sound
		note["default_sound"] = false
	} else {
		note["default_sound"] = true
	}
	android := map[string]any{"urgency": "HIGH", "notification": note}
	if n.Android.HuaWeiCategory != "" {
		// Only when asked: a category the app was not granted is refused.
		android["category"] = n.Android.HuaWeiCategory
	}
	msg["android"] = android
	return msg
}

func (h *huawei) send(ctx context.Context, n *Notification) error {
	tok, err := h.accessToken(ctx)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]any{"validate_only": false, "message": huaweiMessage(n, h.cfg.BadgeClass)})
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
