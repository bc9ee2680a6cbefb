package push

import (
	"fmt"
	"sort"
	"strings"
)

// Message classes. Since 2023–2025 the Chinese vendors decide a push's
// daily quota by its class: an IM message sent without one falls into the
// public / marketing class (a few a day per device, shade only) or is
// refused. Each vendor has a default class for IM messages in the `push:`
// config; OfflinePushInfo.AndroidInfo overrides it per message; every
// request carries it (docs/push.md, "Message classes").

// oppoCategories: OPPO "消息分类" (2024–2025; mandatory for newly enabled apps): true for the service
// and communication class (通讯与服务), false for content and marketing
// (内容与营销), which only shows in the shade, 2–5 a day per device.
var oppoCategories = map[string]bool{
	"IM": true, "ACCOUNT": true, "DEVICE_REMINDER": true, "ORDER": true, "TODO": true, "SUBSCRIPTION": true,
	"NEWS": false, "CONTENT": false, "MARKETING": false, "SOCIAL": false,
}

// oppoNotifyLevels: 1 shade only, 2 shade + lock screen, 16 strong
// reminder (banner, sound, vibration; service and communication only).
var oppoNotifyLevels = map[int]bool{1: true, 2: true, 16: true}

// vivoCategories: vivo "消息分类说明": the classification each category
// belongs to — 1 system messages, 0 operational messages. A category sent
// with the other classification is refused with 10097.
var vivoCategories = map[string]int{
	"IM": 1, "ACCOUNT": 1, "TODO": 1, "DEVICE_REMINDER": 1, "ORDER": 1, "SUBSCRIPTION": 1,
	"NEWS": 0, "CONTENT": 0, "MARKETING": 0, "SOCIAL": 0,
}

// huaweiCategories: Push Kit android.category values (self-classified
// messages; the app must be granted the right for all but MARKETING).
var huaweiCategories = map[string]bool{
	"IM": true, "VOIP": true, "SUBSCRIPTION": true, "TRAVEL": true, "HEALTH": true, "WORK": true,
	"ACCOUNT": true, "EXPRESS": true, "FINANCE": true, "DEVICE_REMINDER": true, "MAIL": true,
	"PLAY_VOICE": true, "MARKETING": true,
}

func intp(v int) *int { return &v }

func keys[V any](m map[string]V) string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ", ")
}

// checkClasses fills in the default class of each configured vendor and
// checks the configured ones. An error is a setting the vendor would refuse
// on every request; a warning is one that delivers worse than it could.
func checkClasses(c *Config) (warnings []string, err error) {
	warn := func(format string, args ...any) { warnings = append(warnings, fmt.Sprintf(format, args...)) }
	if h := c.Huawei; h != nil {
		if h.Category == "" {
			h.Category = "IM"
		}
		h.Category = strings.ToUpper(h.Category)
		if !huaweiCategories[h.Category] {
			warn("push.huawei.category %q is not a Push Kit category (%s): Push Kit may refuse the messages", h.Category, keys(huaweiCategories))
		}
		if h.IntentURI != "" && !strings.Contains(h.IntentURI, "://") {
			return warnings, fmt.Errorf("push.huawei.intent_uri %q must be scheme://host/path", h.IntentURI)
		}
		if h.IntentComponent != "" && !strings.Contains(h.IntentComponent, "/") {
			return warnings, fmt.Errorf("push.huawei.intent_component %q must be package/class", h.IntentComponent)
		}
	}
	if x := c.Xiaomi; x != nil && x.ChannelID == "" {
		warn("push.xiaomi.channel_id is not set: MiPush sends IM messages without a private-message channel through " +
			"the public default channel, about 1 message per device per day, and refuses them when over the quota " +
			"(apps fully moved to the new classification are refused without a channel id); register a private-message " +
			"channel on the MiPush console and set its id")
	}
	if o := c.OPPO; o != nil {
		if o.Category == "" {
			o.Category = "IM"
		}
		o.Category = strings.ToUpper(o.Category)
		if o.NotifyLevel == 0 {
			o.NotifyLevel = 2
		}
		service, known := oppoCategories[o.Category]
		if !known {
			return warnings, fmt.Errorf("push.oppo.category %q is not an OPPO category (%s); OPPO refuses it with code 67", o.Category, keys(oppoCategories))
		}
		if !oppoNotifyLevels[o.NotifyLevel] {
			return warnings, fmt.Errorf("push.oppo.notify_level %d must be 1, 2 or 16", o.NotifyLevel)
		}
		if o.NotifyLevel == 16 && !service {
			return warnings, fmt.Errorf("push.oppo.notify_level 16 is only for service and communication categories, not %s", o.Category)
		}
		if !service {
			warn("push.oppo.category %s is content and marketing: 2–5 notifications a day per device, shade only", o.Category)
		}
	}
	if v := c.VIVO; v != nil {
		if v.Category == "" && v.Classification == nil {
			v.Category = "IM"
		}
		v.Category = strings.ToUpper(v.Category)
		if v.Category != "" {
			cls, known := vivoCategories[v.Category]
			if !known {
				return warnings, fmt.Errorf("push.vivo.category %q is not a vivo category (%s)", v.Category, keys(vivoCategories))
			}
			if v.Classification != nil && *v.Classification != cls {
				return warnings, fmt.Errorf("push.vivo.classification %d does not correspond to category %s (%d); vivo refuses it with 10097", *v.Classification, v.Category, cls)
			}
			v.Classification = intp(cls)
		}
		if *v.Classification != 0 && *v.Classification != 1 {
			return warnings, fmt.Errorf("push.vivo.classification %d must be 0 or 1", *v.Classification)
		}
		if *v.Classification == 0 {
			warn("push.vivo.classification 0 (operational): 2–5 notifications a day per device")
		}
	}
	if m := c.Meizu; m != nil {
		if m.NoticeMsgType == nil {
			m.NoticeMsgType = intp(1)
		}
		if t := *m.NoticeMsgType; t != 0 && t != 1 {
			return warnings, fmt.Errorf("push.meizu.notice_msg_type %d must be 0 (public) or 1 (private)", t)
		}
		if *m.NoticeMsgType == 0 {
			warn("push.meizu.notice_msg_type 0 (public): 3–5 notifications a day per device")
		}
	}
	return warnings, nil
}

// vivoClass is the classification and category of one vivo message: a
// category (the message's, else the configured) decides the
// classification, so the two always correspond; a message that names only
// a classification keeps the configured category only if it corresponds.
func vivoClass(n *Notification, cfg VIVOConfig) (classification int, category string) {
	category, cls := strings.ToUpper(n.Android.VIVOCategory), n.Android.VIVOClassification
	if category == "" && cls == nil {
		category, cls = cfg.Category, cfg.Classification
	}
	if c, ok := vivoCategories[category]; ok {
		return c, category
	}
	if cls == nil {
		cls = cfg.Classification
	}
	if cls == nil {
		cls = intp(1)
	}
	if category == "" && vivoCategories[cfg.Category] == *cls && cfg.Category != "" {
		category = cfg.Category
	}
	return *cls, category
}

// oppoClass is the category and notify level of one OPPO message.
func oppoClass(n *Notification, cfg OPPOConfig) (category string, level int) {
	category, level = strings.ToUpper(n.Android.OPPOCategory), n.Android.OPPONotifyLevel
	if category == "" {
		category = cfg.Category
	}
	if level == 0 {
		if oppoCategories[category] == oppoCategories[cfg.Category] {
			level = cfg.NotifyLevel
		} else {
			level = 1
		}
	}
	if level == 16 && !oppoCategories[category] {
		level = 2 // strong reminders are for service and communication messages only
	}
	return category, level
}
