package push

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/duet-im/duet/internal/fnv1a"
)

// Xiaomi MiPush ("Server API address and parameters"): POST
// {base}/v3/message/regid, form-encoded, `Authorization: key=<AppSecret>`.
// The answer's "result" is "ok" or "error"; a send that reached some
// registration ids lists the others in data.bad_regids. Code 20301 is
// documented only as "send failed": not proof of a dead token; a dead one
// shows as reason "No valid targets!". Codes 10002, 10003, 10027 and 10037
// are the server's "busy / try again" family.

const xiaomiBase = "https://api.xmpush.xiaomi.com"

type xiaomi struct {
	cfg    XiaomiConfig
	base   string
	client *http.Client
}

func newXiaomi(cfg XiaomiConfig, client *http.Client) (*xiaomi, error) {
	if cfg.AppSecret == "" || cfg.PackageName == "" {
		return nil, errors.New("xiaomi: app_secret and package_name are required")
	}
	if client == nil {
		client = defaultClient()
	}
	return &xiaomi{cfg: cfg, base: base(cfg.Endpoint, xiaomiBase), client: client}, nil
}

func (x *xiaomi) name() string { return "xiaomi" }

// xiaomiSoundURI is extra.sound_uri for AndroidInfo.Sound: MiPush plays a
// sound the app ships in res/raw, named android.resource://{package}/raw/{name}
// (the name without its extension, as Android names raw resources). A
// Sound that already is a URI is sent as it is.
func xiaomiSoundURI(pkg, sound string) string {
	if strings.Contains(sound, "://") {
		return sound
	}
	name := sound[strings.LastIndexByte(sound, '/')+1:]
	if i := strings.LastIndexByte(name, '.'); i > 0 {
		name = name[:i]
	}
	return "android.resource://" + pkg + "/raw/" + name
}

func xiaomiForm(n *Notification, pkg, channelID string) url.Values {
	f := url.Values{
		"registration_id":         {n.Token},
		"restricted_package_name": {pkg},
	}
	if n.Silent {
		p, _ := json.Marshal(map[string]string{"withdraw": n.MsgKey})
		f.Set("pass_through", "1") // a pass-through message shows nothing
		f.Set("payload", string(p))
		return f
	}
	f.Set("pass_through", "0")
	f.Set("title", clip(n.Title, 49))
	f.Set("description", clip(n.Body, 127))
	f.Set("payload", n.Ext)
	f.Set("notify_type", "-1") // DEFAULT_ALL: sound, vibration, light
	// Messages with the same notify_id replace each other; one per message.
	f.Set("notify_id", strconv.FormatUint(uint64(fnv1a.Sum32(n.MsgKey)%1e9), 10))
	f.Set("extra.notify_effect", "1") // open the launcher activity
	// The message class: a channel registered for private (IM) messages;
	// without one MiPush uses the public default channel (~1 a day per device).
	if n.Android.XiaoMiChannelID != "" {
		channelID = n.Android.XiaoMiChannelID
	}
	if channelID != "" {
		f.Set("extra.channel_id", channelID)
	}
	if n.Android.Sound != "" {
		f.Set("extra.sound_uri", xiaomiSoundURI(pkg, n.Android.Sound))
	}
	return f
}

func (x *xiaomi) send(ctx context.Context, n *Notification) error {
	pkg := x.cfg.PackageName
	if n.BundleID != "" {
		pkg = n.BundleID // the device named its app: several apps may share the secret (v3)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, x.base+"/v3/message/regid", strings.NewReader(xiaomiForm(n, pkg, x.cfg.ChannelID).Encode()))
	if err != nil {
		return failf(permanent, "xiaomi: %v", err)
	}
	req.Header.Set("Authorization", "key="+x.cfg.AppSecret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded;charset=UTF-8")
	ans, err := do(x.client, req)
	if err != nil {
		return classify(err)
	}
	if e := ans.transient("xiaomi"); e != nil {
		return e
	}
	var reply struct {
		Result      string `json:"result"`
		Code        int    `json:"code"`
		Reason      string `json:"reason"`
		Description string `json:"description"`
		Data        struct {
			ID        string `json:"id"`
			BadRegIDs string `json:"bad_regids"`
		} `json:"data"`
	}
	if e := ans.decode("xiaomi", &reply); e != nil {
		return e
	}
	if reply.Result == "ok" && reply.Code == 0 {
		for _, bad := range strings.Split(reply.Data.BadRegIDs, ",") {
			if bad != "" && bad == n.Token {
				return failf(invalidToken, "xiaomi: registration id listed in bad_regids")
			}
		}
		return nil
	}
	if reply.Reason == "No valid targets!" {
		return failf(invalidToken, "xiaomi: code %d %s", reply.Code, reply.Reason)
	}
	switch reply.Code {
	case 10002, 10003, 10027, 10037:
		return failf(retry, "xiaomi: code %d %s", reply.Code, reply.Reason)
	}
	return failf(permanent, "xiaomi: HTTP %d code %d %s %s", ans.status, reply.Code, reply.Reason, reply.Description)
}
