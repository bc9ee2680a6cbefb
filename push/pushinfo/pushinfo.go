// Package pushinfo holds OfflinePushInfo, the push settings a sender may
// attach to a message (reference §4), and its validation. It has no
// dependencies so the command layer can check a send without importing
// the push machinery.
package pushinfo

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// AndroidInfo is OfflinePushInfo.AndroidInfo (reference §4).
type AndroidInfo struct {
	Sound                  string `json:"Sound,omitempty"`
	HuaWeiChannelID        string `json:"HuaWeiChannelID,omitempty"`
	XiaoMiChannelID        string `json:"XiaoMiChannelID,omitempty"`
	OPPOChannelID          string `json:"OPPOChannelID,omitempty"`
	GoogleChannelID        string `json:"GoogleChannelID,omitempty"`
	VIVOClassification     *int   `json:"VIVOClassification,omitempty"`
	HuaWeiImportance       string `json:"HuaWeiImportance,omitempty"`
	ExtAsHuaweiIntentParam int    `json:"ExtAsHuaweiIntentParam,omitempty"`
	HuaWeiCategory         string `json:"HuaWeiCategory,omitempty"`
	VIVOCategory           string `json:"VIVOCategory,omitempty"`
	GoogleImage            string `json:"GoogleImage,omitempty"`
	HuaWeiImage            string `json:"HuaWeiImage,omitempty"`

	// Duet's additions (docs/push.md, "Message classes"): the message class
	// of OPPO (category + notify_level) and Meizu (noticeMsgType), which
	// Tencent's OfflinePushInfo has no field for. Unset, the `push:`
	// config's default applies.
	OPPOCategory       string `json:"OPPOCategory,omitempty"`
	OPPONotifyLevel    int    `json:"OPPONotifyLevel,omitempty"`
	MeizuNoticeMsgType *int   `json:"MeizuNoticeMsgType,omitempty"`
}

// ApnsInfo is OfflinePushInfo.ApnsInfo (reference §4).
type ApnsInfo struct {
	Sound          string `json:"Sound,omitempty"`
	BadgeMode      int    `json:"BadgeMode,omitempty"`
	Title          string `json:"Title,omitempty"`
	SubTitle       string `json:"SubTitle,omitempty"`
	Image          string `json:"Image,omitempty"`
	MutableContent int    `json:"MutableContent,omitempty"`
}

// OfflinePushInfo is the sendmsg field of reference §4.
type OfflinePushInfo struct {
	PushFlag    int         `json:"PushFlag"`
	Title       string      `json:"Title"`
	Desc        string      `json:"Desc"`
	Ext         string      `json:"Ext"`
	AndroidInfo AndroidInfo `json:"AndroidInfo"`
	ApnsInfo    ApnsInfo    `json:"ApnsInfo"`
}

// Parse decodes and type-checks raw (reference §4): every
// field must have its documented type. An error names the bad field.
func Parse(raw []byte) (*OfflinePushInfo, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil || top == nil {
		return nil, fmt.Errorf("OfflinePushInfo is not an object")
	}
	if err := checkKinds("OfflinePushInfo", top, map[string]byte{
		"PushFlag": 'n', "Title": 's', "Desc": 's', "Ext": 's', "AndroidInfo": 'o', "ApnsInfo": 'o',
	}); err != nil {
		return nil, err
	}
	for name, spec := range map[string]map[string]byte{
		"AndroidInfo": {
			"Sound": 's', "HuaWeiChannelID": 's', "XiaoMiChannelID": 's', "OPPOChannelID": 's', "GoogleChannelID": 's',
			"VIVOClassification": 'n', "HuaWeiImportance": 's', "ExtAsHuaweiIntentParam": 'n', "HuaWeiCategory": 's',
			"VIVOCategory": 's', "GoogleImage": 's', "HuaWeiImage": 's', "PushStyle": 'n',
			"OPPOCategory": 's', "OPPONotifyLevel": 'n', "MeizuNoticeMsgType": 'n',
		},
		"ApnsInfo": {"Sound": 's', "BadgeMode": 'n', "Title": 's', "SubTitle": 's', "Image": 's', "MutableContent": 'n'},
	} {
		if v, ok := top[name]; ok && !isNull(v) {
			var inner map[string]json.RawMessage
			if err := json.Unmarshal(v, &inner); err != nil {
				return nil, fmt.Errorf("OfflinePushInfo.%s is not an object", name)
			}
			if err := checkKinds("OfflinePushInfo."+name, inner, spec); err != nil {
				return nil, err
			}
		}
	}
	var o OfflinePushInfo
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, fmt.Errorf("OfflinePushInfo: %v", err)
	}
	if o.PushFlag != 0 && o.PushFlag != 1 {
		return nil, fmt.Errorf("OfflinePushInfo.PushFlag must be 0 or 1")
	}
	// The class fields Duet adds (docs/push.md, "Message classes"): a value
	// the vendor would refuse is refused here, where the sender sees it.
	switch o.AndroidInfo.OPPONotifyLevel {
	case 0, 1, 2, 16:
	default:
		return nil, fmt.Errorf("OfflinePushInfo.AndroidInfo.OPPONotifyLevel must be 1, 2 or 16")
	}
	if t := o.AndroidInfo.MeizuNoticeMsgType; t != nil && *t != 0 && *t != 1 {
		return nil, fmt.Errorf("OfflinePushInfo.AndroidInfo.MeizuNoticeMsgType must be 0 or 1")
	}
	return &o, nil
}

func isNull(v json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(v), []byte("null")) }

// checkKinds checks that each listed field present in f is a string ('s'),
// an integer ('n') or an object ('o'); unlisted fields pass (newer SDKs add some).
func checkKinds(where string, f map[string]json.RawMessage, spec map[string]byte) error {
	for name, k := range spec {
		v, ok := f[name]
		if !ok || isNull(v) {
			continue
		}
		v = bytes.TrimSpace(v)
		good := false
		switch k {
		case 's':
			good = len(v) > 0 && v[0] == '"'
		case 'o':
			good = len(v) > 0 && v[0] == '{'
		case 'n':
			var n float64
			good = json.Unmarshal(v, &n) == nil && n == float64(int64(n))
		}
		if !good {
			kind := map[byte]string{'s': "a String", 'n': "an Integer", 'o': "an Object"}[k]
			return fmt.Errorf("%s.%s must be %s", where, name, kind)
		}
	}
	return nil
}
