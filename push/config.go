package push

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// Config is the `push:` section of the YAML config file. A vendor without
// credentials is off. Credentials are named as each vendor names them, in
// snake case; `endpoint` replaces the vendor's base URL (private gateways,
// tests).
type Config struct {
	// Grace is how long a message waits before it is pushed to an offline
	// device; the push is cancelled if the device acknowledges it meanwhile.
	Grace time.Duration `yaml:"grace"`
	// RetryBase is the first retry delay (doubled each attempt, with jitter).
	RetryBase time.Duration `yaml:"retry_base"`
	// MaxAttempts bounds the sends of one notification before it counts as failed.
	MaxAttempts int `yaml:"max_attempts"`

	APNs   *APNsConfig   `yaml:"apns"`
	FCM    *FCMConfig    `yaml:"fcm"`
	Huawei *HuaweiConfig `yaml:"huawei"`
	Xiaomi *XiaomiConfig `yaml:"xiaomi"`
	OPPO   *OPPOConfig   `yaml:"oppo"`
	VIVO   *VIVOConfig   `yaml:"vivo"`
	Meizu  *MeizuConfig  `yaml:"meizu"`
}

// APNsConfig: token-based (.p8) authentication, Apple's names.
type APNsConfig struct {
	KeyID    string `yaml:"key_id"`
	TeamID   string `yaml:"team_id"`
	KeyFile  string `yaml:"key_file"` // the AuthKey_XXXX.p8 file
	Key      string `yaml:"key"`      // or its PEM text
	BundleID string `yaml:"bundle_id"`
	// Production selects api.push.apple.com; false is the sandbox.
	Production  bool   `yaml:"production"`
	Endpoint    string `yaml:"endpoint"`
	Concurrency int    `yaml:"concurrency"`
}

// FCMConfig: a service account, either its JSON file or its fields.
type FCMConfig struct {
	ServiceAccountFile string `yaml:"service_account_file"`
	ProjectID          string `yaml:"project_id"`
	ClientEmail        string `yaml:"client_email"`
	PrivateKeyID       string `yaml:"private_key_id"`
	PrivateKey         string `yaml:"private_key"`
	TokenURI           string `yaml:"token_uri"`
	Endpoint           string `yaml:"endpoint"`
	Concurrency        int    `yaml:"concurrency"`
}

// HuaweiConfig: Push Kit app credentials (OAuth client id = app id).
type HuaweiConfig struct {
	AppID        string `yaml:"app_id"`
	AppSecret    string `yaml:"app_secret"`
	Endpoint     string `yaml:"endpoint"`      // push API base
	AuthEndpoint string `yaml:"auth_endpoint"` // OAuth base; defaults to endpoint when that is set
	// BadgeClass is the app's entry activity (e.g. com.example.im.MainActivity):
	// Push Kit sets an app badge only for a named class.
	BadgeClass string `yaml:"badge_class"`
	// Category is android.category of every notification (self-classified
	// service and communication messages; the app needs that right from
	// Huawei). Default IM. OfflinePushInfo.AndroidInfo.HuaWeiCategory
	// overrides it per message.
	Category string `yaml:"category"`
	// ClickAction is the action of an intent filter the app declares: a tap
	// starts that activity (click_action type 1). Empty: a tap opens the
	// app's launcher activity (type 3). Either way Ext reaches the app in
	// the message's data.
	ClickAction string `yaml:"click_action"`
	// IntentURI (scheme://host/path, e.g. duetim://com.example.im/chat) and
	// IntentComponent (package/class) name the activity that receives Ext as
	// the intent extra "ext" when OfflinePushInfo asks for
	// ExtAsHuaweiIntentParam 1.
	IntentURI       string `yaml:"intent_uri"`
	IntentComponent string `yaml:"intent_component"`
	Concurrency     int    `yaml:"concurrency"`
}

// XiaomiConfig: MiPush server credentials.
type XiaomiConfig struct {
	AppSecret   string `yaml:"app_secret"`
	PackageName string `yaml:"package_name"`
	// ChannelID is the id of the channel registered on the MiPush console
	// for private (IM) messages, sent as extra.channel_id. Without it
	// messages go to the public default channel (quota ~1 a day per device).
	// OfflinePushInfo.AndroidInfo.XiaoMiChannelID overrides it per message.
	ChannelID   string `yaml:"channel_id"`
	Endpoint    string `yaml:"endpoint"`
	Concurrency int    `yaml:"concurrency"`
}

// OPPOConfig: OPPO PUSH server credentials.
type OPPOConfig struct {
	AppKey       string `yaml:"app_key"`
	MasterSecret string `yaml:"master_secret"`
	// Category (default IM) and NotifyLevel (1 shade, 2 shade + lock
	// screen, 16 strong reminder; default 2) classify every notification.
	// OfflinePushInfo.AndroidInfo.OPPOCategory / OPPONotifyLevel override them.
	Category    string `yaml:"category"`
	NotifyLevel int    `yaml:"notify_level"`
	Endpoint    string `yaml:"endpoint"`
	Concurrency int    `yaml:"concurrency"`
}

// VIVOConfig: vivo push server credentials.
type VIVOConfig struct {
	AppID     string `yaml:"app_id"`
	AppKey    string `yaml:"app_key"`
	AppSecret string `yaml:"app_secret"`
	// Classification (0 operational, 1 system; default 1) and Category
	// (default IM) must correspond (vivo answers 10097 otherwise).
	// OfflinePushInfo.AndroidInfo.VIVOClassification / VIVOCategory
	// override them; a category decides the classification.
	Classification *int   `yaml:"classification"`
	Category       string `yaml:"category"`
	Endpoint       string `yaml:"endpoint"`
	Concurrency    int    `yaml:"concurrency"`
}

// MeizuConfig: Flyme push server credentials.
type MeizuConfig struct {
	AppID     string `yaml:"app_id"`
	AppSecret string `yaml:"app_secret"`
	// NoticeMsgType is noticeBarInfo.noticeMsgType: 1 private (IM, the
	// default), 0 public (3–5 a day per device).
	// OfflinePushInfo.AndroidInfo.MeizuNoticeMsgType overrides it.
	NoticeMsgType *int   `yaml:"notice_msg_type"`
	Endpoint      string `yaml:"endpoint"`
	Concurrency   int    `yaml:"concurrency"`
}

// clone copies the vendor sections, so New can fill in defaults without
// writing into the caller's Config.
func (c Config) clone() Config {
	c.APNs, c.FCM, c.Huawei, c.Xiaomi = cloned(c.APNs), cloned(c.FCM), cloned(c.Huawei), cloned(c.Xiaomi)
	c.OPPO, c.VIVO, c.Meizu = cloned(c.OPPO), cloned(c.VIVO), cloned(c.Meizu)
	return c
}

func cloned[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// Configured names the vendors that have a section, in Vendors' order.
func (c Config) Configured() []string {
	var out []string
	for i, on := range []bool{c.APNs != nil, c.FCM != nil, c.Huawei != nil, c.Xiaomi != nil, c.OPPO != nil, c.VIVO != nil, c.Meizu != nil} {
		if on {
			out = append(out, Vendors[i])
		}
	}
	return out
}

// Vendors is every vendor name a token may name.
var Vendors = []string{"apns", "fcm", "huawei", "xiaomi", "oppo", "vivo", "meizu"}

func knownVendor(v string) bool {
	for _, k := range Vendors {
		if k == v {
			return true
		}
	}
	return false
}

func base(endpoint, def string) string {
	if endpoint == "" {
		endpoint = def
	}
	return strings.TrimRight(endpoint, "/")
}

func readKey(file, inline, what string) ([]byte, error) {
	if inline != "" {
		return []byte(inline), nil
	}
	if file == "" {
		return nil, fmt.Errorf("%s: no key configured", what)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return b, nil
}
