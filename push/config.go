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
	BadgeClass  string `yaml:"badge_class"`
	Concurrency int    `yaml:"concurrency"`
}

// XiaomiConfig: MiPush server credentials.
type XiaomiConfig struct {
	AppSecret   string `yaml:"app_secret"`
	PackageName string `yaml:"package_name"`
	Endpoint    string `yaml:"endpoint"`
	Concurrency int    `yaml:"concurrency"`
}

// OPPOConfig: OPPO PUSH server credentials.
type OPPOConfig struct {
	AppKey       string `yaml:"app_key"`
	MasterSecret string `yaml:"master_secret"`
	Endpoint     string `yaml:"endpoint"`
	Concurrency  int    `yaml:"concurrency"`
}

// VIVOConfig: vivo push server credentials.
type VIVOConfig struct {
	AppID       string `yaml:"app_id"`
	AppKey      string `yaml:"app_key"`
	AppSecret   string `yaml:"app_secret"`
	Endpoint    string `yaml:"endpoint"`
	Concurrency int    `yaml:"concurrency"`
}

// MeizuConfig: Flyme push server credentials.
type MeizuConfig struct {
	AppID       string `yaml:"app_id"`
	AppSecret   string `yaml:"app_secret"`
	Endpoint    string `yaml:"endpoint"`
	Concurrency int    `yaml:"concurrency"`
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
