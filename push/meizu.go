package push

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strings"
)

// Meizu Flyme push ("PUSH HTTP API"): POST
// {base}/garcia/api/server/push/varnished/pushByPushId, form appId,
// pushIds, messageJson and sign: the lower-case hex MD5 of every other
// parameter as key=value, sorted by key, concatenated, followed by the
// app secret (values as sent, before URL encoding). The answer's "code" is
// "200" when handled; "value" then maps failure codes to the push ids they
// hit (110002 unsubscribed, 110003 illegal, 110010 notifications switched
// off, 110011 public-class quota spent, 518 rate exceeded — the SDK says
// re-send). 110010 as the answer's code is "too fast", 1003 "server busy".

const meizuBase = "https://server-api-push.meizu.com"

type meizu struct {
	cfg    MeizuConfig
	base   string
	client *http.Client
}

func newMeizu(cfg MeizuConfig, client *http.Client) (*meizu, error) {
	if cfg.AppID == "" || cfg.AppSecret == "" {
		return nil, errors.New("meizu: app_id and app_secret are required")
	}
	if _, err := checkClasses(&Config{Meizu: &cfg}); err != nil {
		return nil, err
	}
	if client == nil {
		client = defaultClient()
	}
	return &meizu{cfg: cfg, base: base(cfg.Endpoint, meizuBase), client: client}, nil
}

func (m *meizu) name() string { return "meizu" }

// meizuSign signs params as the Flyme API specifies.
func meizuSign(params map[string]string, secret string) string {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(params[k])
	}
	b.WriteString(secret)
	sum := md5.Sum([]byte(b.String()))
	return hex.EncodeToString(sum[:])
}

func meizuMessage(n *Notification, cfg MeizuConfig) []byte {
	// The message class (noticeMsgType): 1 private (IM), 0 public, 3–5 a
	// day per device since 2025-05-07.
	msgType := *cfg.NoticeMsgType
	if n.Android.MeizuNoticeMsgType != nil {
		msgType = *n.Android.MeizuNoticeMsgType
	}
	click := map[string]any{"clickType": 0} // open the app
	if n.Ext != "" {
		click["parameters"] = map[string]string{"ext": n.Ext}
	}
	b, _ := json.Marshal(map[string]any{
		"noticeBarInfo": map[string]any{"noticeBarType": 0, "noticeMsgType": msgType, "title": clip(n.Title, 32), "content": clip(n.Body, 100)},
		"clickTypeInfo": click,
		"pushTimeInfo":  map[string]any{"offLine": 1, "validTime": 24},
	})
	return b
}

func (m *meizu) send(ctx context.Context, n *Notification) error {
	if n.Silent {
		return nil // pass-through messages are restricted by Flyme: a recall shows nothing.
	}
	params := map[string]string{"appId": m.cfg.AppID, "pushIds": n.Token, "messageJson": string(meizuMessage(n, m.cfg))}
	form := url.Values{}
	for k, v := range params {
		form.Set(k, v)
	}
	form.Set("sign", meizuSign(params, m.cfg.AppSecret))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.base+"/garcia/api/server/push/varnished/pushByPushId", strings.NewReader(form.Encode()))
	if err != nil {
		return failf(permanent, "meizu: %v", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded;charset=UTF-8")
	ans, err := do(m.client, req)
	if err != nil {
		return classify(err)
	}
	if e := ans.transient("meizu"); e != nil {
		return e
	}
	var reply struct {
		Code    string          `json:"code"`
		Message string          `json:"message"`
		Value   json.RawMessage `json:"value"`
	}
	if e := ans.decode("meizu", &reply); e != nil {
		return e
	}
	switch reply.Code {
	case "200":
		var failed map[string][]string
		json.Unmarshal(reply.Value, &failed)
		for code, ids := range failed {
			for _, id := range ids {
				if id != n.Token {
					continue
				}
				if code == "110002" || code == "110003" {
					return failf(invalidToken, "meizu: push id refused with %s", code)
				}
				if code == "518" || code == "519" || code == "501" || code == "513" {
					// 518: rate exceeded for this id — re-send later, like a 429.
					return failf(retry, "meizu: push id failed with %s", code)
				}
				return failf(permanent, "meizu: push id failed with %s", code)
			}
		}
		return nil
	case "110010", "518", "1003", "1001", "500":
		return failf(retry, "meizu: code %s %s", reply.Code, reply.Message)
	}
	return failf(permanent, "meizu: code %s %s", reply.Code, reply.Message)
}
