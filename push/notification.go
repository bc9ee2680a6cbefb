package push

import (
	"encoding/json"
	"strings"
	"unicode/utf8"

	"github.com/duet-im/duet/push/pushinfo"
	"github.com/duet-im/duet/store"
)

// Notification is one push to one device, as queued (JSON) and sent.
type Notification struct {
	User     string `json:"User"`
	Device   string `json:"Device"`
	Vendor   string `json:"Vendor"`
	Token    string `json:"Token"`
	BundleID string `json:"BundleID,omitempty"`

	Seq    uint64 `json:"Seq"` // the event's Seq in User's timeline: acknowledged ⇒ cancelled
	MsgKey string `json:"MsgKey"`
	From   string `json:"From,omitempty"`

	Title string `json:"Title,omitempty"`
	Body  string `json:"Body,omitempty"`
	Badge int    `json:"Badge,omitempty"`
	Ext   string `json:"Ext,omitempty"`
	// Silent is a background update (a recall) instead of a visible alert.
	Silent bool `json:"Silent,omitempty"`

	Android AndroidInfo `json:"AndroidInfo"`
	APNs    ApnsInfo    `json:"ApnsInfo"`

	Due      int64 `json:"Due"` // Unix milliseconds before which it is not sent
	Attempts int   `json:"Attempts,omitempty"`
}

// AndroidInfo and ApnsInfo are OfflinePushInfo's per-platform fields.
type (
	AndroidInfo = pushinfo.AndroidInfo
	ApnsInfo    = pushinfo.ApnsInfo
)

// element is one MsgBody element, decoded for its push text.
type element struct {
	MsgType    string `json:"MsgType"`
	MsgContent struct {
		Text  string `json:"Text"`
		Desc  string `json:"Desc"`
		Ext   string `json:"Ext"`
		Sound string `json:"Sound"`
	} `json:"MsgContent"`
}

// pushText is the alert text of a message from its elements (reference
// §3.3): texts are concatenated with nothing in between. ok is false when
// the message must not be pushed (a lone custom element without Desc).
func pushText(body json.RawMessage) (text string, custom *element, ok bool) {
	var els []element
	if json.Unmarshal(body, &els) != nil {
		return "", nil, false
	}
	var b strings.Builder
	for i := range els {
		e := &els[i]
		switch e.MsgType {
		case "TIMTextElem":
			b.WriteString(e.MsgContent.Text)
		case "TIMLocationElem":
			b.WriteString("[Location]")
		case "TIMFaceElem":
			b.WriteString("[Face]")
		case "TIMCustomElem":
			custom = e
			b.WriteString(e.MsgContent.Desc)
		case "TIMImageElem":
			b.WriteString("[Image]")
		case "TIMSoundElem":
			b.WriteString("[Voice]")
		case "TIMFileElem":
			b.WriteString("[File]")
		case "TIMVideoFileElem":
			b.WriteString("[Video]")
		case "TIMRelayElem":
			b.WriteString("[Chat History]")
		}
	}
	if len(els) == 1 && custom != nil && custom.MsgContent.Desc == "" {
		return "", custom, false
	}
	return b.String(), custom, len(els) > 0
}

// msgEvent is the part of a stored `msg` timeline event a push needs.
type msgEvent struct {
	Seq             uint64          `json:"Seq"`
	Event           string          `json:"Event"`
	From            string          `json:"From_Account"`
	To              string          `json:"To_Account"`
	MsgKey          string          `json:"MsgKey"`
	MsgBody         json.RawMessage `json:"MsgBody"`
	OfflinePushInfo json.RawMessage `json:"OfflinePushInfo"`
	SenderProfile   struct {
		Nick string `json:"Tag_Profile_IM_Nick"`
	} `json:"SenderProfile"`
}

// content is what every device of the recipient is sent for one message.
type content struct {
	title, body, ext, sound string
	android                 AndroidInfo
	apns                    ApnsInfo
}

// contentOf decides whether ev is pushed and with what. ok is false for
// PushFlag 1 and for a lone custom element without a push text.
func contentOf(ev *msgEvent) (c content, ok bool) {
	opi, err := pushinfo.Parse(ev.OfflinePushInfo)
	if err != nil {
		// sendmsg refuses these (90043); an old event is pushed without it.
		opi = nil
	}
	text, custom, hasText := pushText(ev.MsgBody)
	if opi != nil {
		if opi.PushFlag == 1 {
			return c, false
		}
		c.title, c.ext, c.android, c.apns = opi.Title, opi.Ext, opi.AndroidInfo, opi.ApnsInfo
		c.sound = opi.ApnsInfo.Sound
		if opi.Desc != "" {
			text, hasText = opi.Desc, true
		}
	} else if custom != nil {
		// Push settings inside TIMCustomElem count only without OfflinePushInfo (§4).
		c.ext, c.sound = custom.MsgContent.Ext, custom.MsgContent.Sound
	}
	if !hasText {
		return c, false
	}
	c.body = text
	if c.title == "" {
		c.title = ev.SenderProfile.Nick
	}
	if c.title == "" {
		c.title = ev.From
	}
	return c, true
}

// clip shortens s to at most n characters (runes), ending in "…" when it
// cut: the Android vendors refuse titles and texts over their limits.
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// fitBytes returns build(text), shortening text (at a UTF-8 boundary,
// ending in "…") until the result is at most limit bytes: APNs, FCM and
// Huawei count a payload in bytes and refuse a larger one. Only the text is
// shortened, never the app's Ext; if even an empty text does not fit, the
// send is refused here rather than by the vendor.
func fitBytes(who string, text string, limit int, build func(text string) ([]byte, error)) ([]byte, error) {
	for {
		b, err := build(text)
		if err != nil || len(b) <= limit {
			return b, err
		}
		if text == "" {
			return nil, failf(permanent, "%s: payload of %d bytes exceeds %d even without text (Ext or title too long)", who, len(b), limit)
		}
		// JSON escaping can make the text take more bytes in the payload
		// than in itself: cut by the excess (or by half when the excess is
		// more than the text) and measure again.
		cut := len(text) - (len(b) - limit) - len("…")
		if cut <= 0 {
			cut = len(text) / 2
		}
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		if cut == 0 {
			text = ""
			continue
		}
		text = text[:cut] + "…"
	}
}

// UnreadBadge is a Badge that reads the user's total unread count: the sum
// of the unread counters of their conversation list (store/conversations.go,
// each capped at 100 as reference §9 caps them).
func UnreadBadge(st *store.Store) func(user string) int {
	return func(user string) int {
		cs, err := st.Conversations(user)
		if err != nil {
			return 1 // a badge that says "something is new" beats none
		}
		n := 0
		for _, c := range cs {
			n += c.Unread
		}
		return n
	}
}
