package push

import (
	"strings"
	"testing"
)

func TestMissingCredentials(t *testing.T) {
	for name, c := range map[string]Config{
		"apns":   {APNs: &APNsConfig{KeyID: "k"}},
		"fcm":    {FCM: &FCMConfig{ProjectID: "p"}},
		"huawei": {Huawei: &HuaweiConfig{AppID: "1"}},
		"xiaomi": {Xiaomi: &XiaomiConfig{AppSecret: "s"}},
		"oppo":   {OPPO: &OPPOConfig{AppKey: "k"}},
		"vivo":   {VIVO: &VIVOConfig{AppID: "x", AppKey: "k", AppSecret: "s"}},
		"meizu":  {Meizu: &MeizuConfig{AppID: "1"}},
	} {
		if _, err := New(Options{Config: c}); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: got %v", name, err)
		}
	}
}
