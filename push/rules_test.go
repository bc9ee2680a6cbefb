package push

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// Issue 17: each local vendor server below applies a rule the way the
// vendor's documentation states it (cited at the rule), not the way Duet's
// code reads it.

func chatNote(vendor string, i int) *Notification {
	return &Notification{User: "bob", Device: "bob:phone", Vendor: vendor, Token: vendor + "-token",
		MsgKey: fmt.Sprintf("1_%d_%d", i, 1000+i), From: "alice", Title: "Alice", Body: fmt.Sprintf("message %d", i), Badge: 1}
}

// fcmOfflineStore is what FCM keeps for a device while it is offline
// (Firebase, "Non-collapsible and collapsible messages"): up to 100
// non-collapsible messages, all discarded beyond that; a collapsible
// message replaces a stored one with the same collapse_key, and of
// different keys only four are kept, "with no determining factor on which
// keys are kept" — here the oldest key goes.
type fcmOfflineStore struct {
	mu          sync.Mutex
	plain       []string
	collapsible map[string]string
	keys        []string
}

func (s *fcmOfflineStore) store(m map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	msgKey, _ := dig(m, "data", "msgKey").(string)
	key, _ := dig(m, "android", "collapse_key").(string)
	if key == "" {
		if len(s.plain) == 100 {
			s.plain = nil
		}
		s.plain = append(s.plain, msgKey)
		return
	}
	if s.collapsible == nil {
		s.collapsible = map[string]string{}
	}
	if _, ok := s.collapsible[key]; !ok {
		if len(s.keys) == 4 {
			delete(s.collapsible, s.keys[0])
			s.keys = s.keys[1:]
		}
		s.keys = append(s.keys, key)
	}
	s.collapsible[key] = msgKey
}

// delivered is what the device receives when it comes back online.
func (s *fcmOfflineStore) delivered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.plain) + len(s.collapsible)
}

func TestFCMChatMessagesAreNotCollapsible(t *testing.T) {
	dev := &fcmOfflineStore{}
	var recalls []map[string]any
	var mu sync.Mutex
	f := fcmFake(t, func(m map[string]any) answer {
		if dig(m, "data", "withdraw") != nil {
			mu.Lock()
			recalls = append(recalls, m)
			mu.Unlock()
		}
		dev.store(m)
		return answer{200, `{"name":"projects/demo/messages/1"}`}
	})
	const sent = 10
	for i := 0; i < sent; i++ {
		if err := f.send(context.Background(), chatNote("fcm", i)); err != nil {
			t.Fatal(err)
		}
	}
	if got := dev.delivered(); got != sent {
		t.Errorf("device offline during %d chat messages receives %d of them; chat messages must be non-collapsible", sent, got)
	}
	// The recall update is the one collapsible message: a repeated recall
	// of the same message replaces the stored one.
	n := chatNote("fcm", 0)
	n.Silent = true
	f.send(context.Background(), n)
	f.send(context.Background(), n)
	if len(recalls) != 2 || dig(recalls[0], "android", "collapse_key") == nil ||
		dig(recalls[0], "android", "collapse_key") != dig(recalls[1], "android", "collapse_key") {
		t.Errorf("recall updates %v: want one collapse_key for the recalled message", recalls)
	}
}

// quota counts, per class, what a device shows in one day.
type quota struct {
	mu    sync.Mutex
	shown map[string]int
}

// show records one message of class; it is shown when the class is
// unlimited or still under its daily limit.
func (q *quota) show(class string, limit int) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.shown == nil {
		q.shown = map[string]int{}
	}
	if limit > 0 && q.shown[class] >= limit {
		return false
	}
	q.shown[class]++
	return true
}

func (q *quota) total() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, c := range q.shown {
		n += c
	}
	return n
}

// classFakes builds, for each Chinese vendor, a local server that applies
// the vendor's message classes with the config's defaults. shown reports
// how many messages the device displayed.
func classFakes(t *testing.T) map[string]struct {
	v     vendor
	shown func() int
} {
	out := map[string]struct {
		v     vendor
		shown func() int
	}{}
	add := func(name string, v vendor, q *quota) {
		out[name] = struct {
			v     vendor
			shown func() int
		}{v, q.total}
	}

	// Xiaomi, "消息分类" (dev.mi.com): a private-message channel
	// registered on the console delivers IM; without extra.channel_id the
	// public default channel delivers about 1 per device per day, and over
	// the quota the answer is 200001.
	xq := &quota{}
	add("xiaomi", xiaomiFake(t, XiaomiConfig{ChannelID: "mi-im"}, func(f url.Values) answer {
		limit := 1
		if f.Get("extra.channel_id") == "mi-im" { // the console's private-message channel
			limit = 0
		}
		if !xq.show("channel:"+f.Get("extra.channel_id"), limit) {
			return answer{200, `{"result":"error","code":200001,"reason":"public channel quota exceeded"}`}
		}
		return answer{200, `{"result":"ok","code":0,"data":{"id":"m"}}`}
	}), xq)

	// OPPO, "消息分类": category + notify_level; IM is
	// service and communication (no per-device cap); a message without a
	// category is content and marketing, 2–5 a day per device (2 here),
	// shade only; an unknown category is code 67.
	oq := &quota{}
	add("oppo", oppoFake(t, OPPOConfig{}, func(m map[string]any) answer {
		cat, _ := dig(m, "notification", "category").(string)
		level, _ := dig(m, "notification", "notify_level").(float64)
		service, known := oppoCategories[cat]
		switch {
		case cat != "" && !known:
			return answer{200, `{"code":67,"message":"category invalid"}`}
		case cat != "" && !oppoNotifyLevels[int(level)]:
			return answer{200, `{"code":14,"message":"Invalid Param: notify_level"}`}
		}
		limit := 0
		if !service {
			limit = 2
		}
		oq.show("category:"+cat, limit)
		return answer{200, `{"code":0,"message":"Success","data":{"messageId":"m"}}`}
	}), oq)

	// vivo, "消息分类说明" and the send API: classification 0
	// (operational) is capped at 2–5 a day per device (2 here); 1 (system)
	// is not; classification and category must correspond, else 10097.
	vq := &quota{}
	vv, _ := vivoFake(t, VIVOConfig{}, clock, func(b map[string]any) answer {
		cls, _ := b["classification"].(float64)
		cat, _ := b["category"].(string)
		if want, ok := vivoCategories[cat]; cat != "" && (!ok || want != int(cls)) {
			return answer{200, `{"result":10097,"desc":"classification and category do not correspond"}`}
		}
		limit := 0
		if cls == 0 {
			limit = 2
		}
		if !vq.show(fmt.Sprint("classification:", cls), limit) {
			return answer{200, `{"result":10070,"desc":"daily quota exceeded"}`}
		}
		return answer{200, `{"result":0,"desc":"请求成功","taskId":"1"}`}
	})
	add("vivo", vv, vq)

	// Meizu, NoticeBarInfo.noticeMsgType (MEIZUPUSH JavaSdk): 1 private
	// (IM); 0, the default, public, 3–5 a day per device since 2025-05-07
	// (3 here), per-id code 110011 when spent.
	mq := &quota{}
	add("meizu", meizuFake(t, MeizuConfig{}, func(m map[string]any, id string) answer {
		typ, _ := dig(m, "noticeBarInfo", "noticeMsgType").(float64)
		limit := 3
		if typ == 1 {
			limit = 0
		}
		if !mq.show(fmt.Sprint("type:", typ), limit) {
			return answer{200, `{"code":"200","message":"","value":{"110011":["` + id + `"]}}`}
		}
		return answer{200, `{"code":"200","message":"","value":{}}`}
	}), mq)

	// Huawei Push Kit, message classification: a self-classified
	// android.category (IM, …) is service and communication, not capped;
	// without one the message is machine-classified, and marketing
	// messages are limited to 2–5 a day per device since 2023-01-05
	// (2 here; the rest is accepted and not shown).
	hq := &quota{}
	add("huawei", huaweiFake(t, HuaweiConfig{}, func(m map[string]any) answer {
		cat, _ := dig(m, "android", "category").(string)
		limit := 0
		if cat == "" || cat == "MARKETING" {
			limit = 2
		}
		hq.show("category:"+cat, limit)
		return answer{200, `{"code":"80000000","msg":"Success"}`}
	}), hq)
	return out
}

func TestIMMessagesUseTheVendorsIMClass(t *testing.T) {
	const sent = 10
	for name, f := range classFakes(t) {
		t.Run(name, func(t *testing.T) {
			for i := 0; i < sent; i++ {
				if err := f.v.send(context.Background(), chatNote(name, i)); err != nil {
					t.Errorf("message %d: %v", i, err)
				}
			}
			if got := f.shown(); got != sent {
				t.Errorf("%s shows %d of %d chat messages sent to one device in a day", name, got, sent)
			}
		})
	}
}

// TestMessageClassOverrides: OfflinePushInfo.AndroidInfo overrides the
// configured class per message, and vivo's classification always follows
// the category ("must correspond, else 10097").
func TestMessageClassOverrides(t *testing.T) {
	var got sync.Map
	record := func(name string, v any) { got.Store(name, v) }
	x := xiaomiFake(t, XiaomiConfig{ChannelID: "mi-im"}, func(f url.Values) answer {
		record("xiaomi", f.Get("extra.channel_id"))
		return answer{200, `{"result":"ok","code":0}`}
	})
	o := oppoFake(t, OPPOConfig{}, func(m map[string]any) answer {
		record("oppo", fmt.Sprint(dig(m, "notification", "category"), "/", dig(m, "notification", "notify_level")))
		return answer{200, `{"code":0}`}
	})
	v, _ := vivoFake(t, VIVOConfig{}, clock, func(b map[string]any) answer {
		record("vivo", fmt.Sprint(b["classification"], "/", b["category"]))
		if want, ok := vivoCategories[fmt.Sprint(b["category"])]; ok && float64(want) != b["classification"] {
			return answer{200, `{"result":10097,"desc":"classification and category do not correspond"}`}
		}
		return answer{200, `{"result":0}`}
	})
	m := meizuFake(t, MeizuConfig{}, func(msg map[string]any, _ string) answer {
		record("meizu", fmt.Sprint(dig(msg, "noticeBarInfo", "noticeMsgType")))
		return answer{200, `{"code":"200","value":{}}`}
	})
	h := huaweiFake(t, HuaweiConfig{}, func(msg map[string]any) answer {
		record("huawei", fmt.Sprint(dig(msg, "android", "category")))
		return answer{200, `{"code":"80000000"}`}
	})
	zero, one := 0, 1
	cases := []struct {
		name    string
		v       vendor
		android AndroidInfo
		want    string
	}{
		{"xiaomi default", x, AndroidInfo{}, "mi-im"},
		{"xiaomi override", x, AndroidInfo{XiaoMiChannelID: "mi-other"}, "mi-other"},
		{"oppo default", o, AndroidInfo{}, "IM/2"},
		{"oppo override", o, AndroidInfo{OPPOCategory: "ORDER", OPPONotifyLevel: 16}, "ORDER/16"},
		{"oppo marketing never strong", o, AndroidInfo{OPPOCategory: "MARKETING"}, "MARKETING/1"},
		{"vivo default", v, AndroidInfo{}, "1/IM"},
		{"vivo category decides", v, AndroidInfo{VIVOCategory: "MARKETING"}, "0/MARKETING"},
		{"vivo category beats a contradicting classification", v, AndroidInfo{VIVOCategory: "NEWS", VIVOClassification: &one}, "0/NEWS"},
		{"vivo classification alone", v, AndroidInfo{VIVOClassification: &zero}, "0/<nil>"},
		{"meizu default private", m, AndroidInfo{}, "1"},
		{"meizu override", m, AndroidInfo{MeizuNoticeMsgType: &zero}, "0"},
		{"huawei default", h, AndroidInfo{}, "IM"},
		{"huawei override", h, AndroidInfo{HuaWeiCategory: "VOIP"}, "VOIP"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := chatNote(c.v.name(), 1)
			n.Android = c.android
			if err := c.v.send(context.Background(), n); err != nil {
				t.Fatalf("send: %v", err)
			}
			r, _ := got.Load(c.v.name())
			expect(t, c.v.name()+" class", r, c.want)
		})
	}
}

func TestConfigValidatedAtStart(t *testing.T) {
	five := 5
	zero := 0
	t.Run("missing xiaomi channel id is a warning with its consequence", func(t *testing.T) {
		p, err := New(Options{Config: Config{Xiaomi: &XiaomiConfig{AppSecret: "s", PackageName: "p"}}})
		if err != nil {
			t.Fatal(err)
		}
		w := strings.Join(p.Warnings(), "\n")
		for _, want := range []string{"push.xiaomi.channel_id", "public default channel", "1 message per device per day"} {
			if !strings.Contains(w, want) {
				t.Errorf("warning %q does not say %q", w, want)
			}
		}
	})
	t.Run("defaults start without warnings", func(t *testing.T) {
		p, err := New(Options{Config: Config{
			Xiaomi: &XiaomiConfig{AppSecret: "s", PackageName: "p", ChannelID: "c"},
			OPPO:   &OPPOConfig{AppKey: "k", MasterSecret: "m"},
			VIVO:   &VIVOConfig{AppID: "1", AppKey: "k", AppSecret: "s"},
			Meizu:  &MeizuConfig{AppID: "1", AppSecret: "s"},
			Huawei: &HuaweiConfig{AppID: "1", AppSecret: "s"},
		}})
		if err != nil || len(p.Warnings()) != 0 {
			t.Errorf("err %v, warnings %q", err, p.Warnings())
		}
	})
	for name, c := range map[string]Config{
		"oppo unknown category":          {OPPO: &OPPOConfig{AppKey: "k", MasterSecret: "m", Category: "CHAT"}},
		"oppo notify level":              {OPPO: &OPPOConfig{AppKey: "k", MasterSecret: "m", NotifyLevel: 3}},
		"oppo strong reminder for news":  {OPPO: &OPPOConfig{AppKey: "k", MasterSecret: "m", Category: "NEWS", NotifyLevel: 16}},
		"vivo class and category differ": {VIVO: &VIVOConfig{AppID: "1", AppKey: "k", AppSecret: "s", Classification: &zero, Category: "IM"}},
		"vivo classification":            {VIVO: &VIVOConfig{AppID: "1", AppKey: "k", AppSecret: "s", Classification: &five}},
		"meizu type":                     {Meizu: &MeizuConfig{AppID: "1", AppSecret: "s", NoticeMsgType: &five}},
		"huawei intent uri":              {Huawei: &HuaweiConfig{AppID: "1", AppSecret: "s", IntentURI: "chat"}},
	} {
		if _, err := New(Options{Config: c}); err == nil {
			t.Errorf("%s: started", name)
		}
	}
}

// TestRateLimitsAreRetried: OPPO codes 13 (App Call Limited) and 55 (App
// Call Frequency Limit), and Meizu's per-id 518 (rate exceeded; the SDK
// re-sends) say "later", like a 429.
func TestRateLimitsAreRetried(t *testing.T) {
	for _, code := range []int{13, 55} {
		o := oppoFake(t, OPPOConfig{}, func(map[string]any) answer {
			return answer{200, fmt.Sprintf(`{"code":%d,"message":"App Call Limited"}`, code)}
		})
		if err := o.send(context.Background(), chatNote("oppo", 1)); err == nil || classify(err).kind != retry {
			t.Errorf("oppo %d: %v, want a retry", code, err)
		}
	}
	m := meizuFake(t, MeizuConfig{}, func(_ map[string]any, id string) answer {
		return answer{200, `{"code":"200","message":"","value":{"518":["` + id + `"]}}`}
	})
	if err := m.send(context.Background(), chatNote("meizu", 1)); err == nil || classify(err).kind != retry {
		t.Errorf("meizu per-id 518: %v, want a retry", err)
	}
}

// TestOverlongTextIsShortened sends each vendor a message far over its
// limits; each local server refuses anything over the documented limit,
// counted as the vendor counts it.
func TestOverlongTextIsShortened(t *testing.T) {
	longTitle := strings.Repeat("标题", 150)                                                // 300 characters, 900 bytes
	longBody := strings.Repeat(`長い本文 😀 "quoted" <b>&</b> `, 300)                          // ~ 9,000 bytes, more once JSON-escaped
	runes := func(s any) int { str, _ := s.(string); return utf8.RuneCountInString(str) } // characters, as the Chinese vendors count
	var shown sync.Map
	tooLong := func(vendor string, title, text any, maxTitle, maxText int) bool {
		shown.Store(vendor, text)
		return runes(title) > maxTitle || runes(text) > maxText
	}
	withoutToken := func(m map[string]any) int {
		c := map[string]any{}
		for k, v := range m {
			if k != "token" {
				c[k] = v
			}
		}
		b, _ := json.Marshal(c)
		return len(b)
	}
	vendors := []vendor{
		// Apple, "Sending notification requests to APNs": payload ≤ 4,096
		// bytes, else 413 PayloadTooLarge.
		apnsFake(t, clock, func(r *http.Request, payload []byte) answer {
			var p map[string]any
			json.Unmarshal(payload, &p)
			shown.Store("apns", dig(p, "aps", "alert", "body"))
			if len(payload) > 4096 {
				return answer{413, `{"reason":"PayloadTooLarge"}`}
			}
			return answer{200, ``}
		}),
		// Firebase, "FCM messages": at most 4,096 bytes, else
		// INVALID_ARGUMENT "Message too big".
		fcmFake(t, func(m map[string]any) answer {
			shown.Store("fcm", dig(m, "notification", "body"))
			if withoutToken(m) > 4096 {
				return answer{400, `{"error":{"code":400,"message":"Message too big","status":"INVALID_ARGUMENT"}}`}
			}
			return answer{200, `{"name":"projects/demo/messages/1"}`}
		}),
		// Push Kit send API: message body ≤ 4,096 bytes, token not
		// counted, else 80300008.
		huaweiFake(t, HuaweiConfig{}, func(m map[string]any) answer {
			shown.Store("huawei", dig(m, "android", "notification", "body"))
			if withoutToken(m) > 4096 {
				return answer{200, `{"code":"80300008","msg":"The message body size exceeds the default value"}`}
			}
			return answer{200, `{"code":"80000000","msg":"Success"}`}
		}),
		// MiPush server API: title < 50, description < 128 characters.
		xiaomiFake(t, XiaomiConfig{ChannelID: "c"}, func(f url.Values) answer {
			if tooLong("xiaomi", f.Get("title"), f.Get("description"), 49, 127) {
				return answer{200, `{"result":"error","code":10017,"reason":"title or description too long"}`}
			}
			return answer{200, `{"result":"ok","code":0}`}
		}),
		// OPPO notification message, standard style: title ≤ 50,
		// content ≤ 50 characters (current doc; older ones said 200).
		oppoFake(t, OPPOConfig{}, func(m map[string]any) answer {
			if tooLong("oppo", dig(m, "notification", "title"), dig(m, "notification", "content"), 50, 50) {
				return answer{200, `{"code":14,"message":"Invalid Param: content too long"}`}
			}
			return answer{200, `{"code":0}`}
		}),
		// vivo send API: title ≤ 40, content ≤ 100 characters.
		func() vendor {
			v, _ := vivoFake(t, VIVOConfig{}, clock, func(b map[string]any) answer {
				if tooLong("vivo", b["title"], b["content"], 40, 100) {
					return answer{200, `{"result":10052,"desc":"content too long"}`}
				}
				return answer{200, `{"result":0}`}
			})
			return v
		}(),
		// Meizu PushAPI: title ≤ 32, content ≤ 100 characters.
		meizuFake(t, MeizuConfig{}, func(m map[string]any, _ string) answer {
			if tooLong("meizu", dig(m, "noticeBarInfo", "title"), dig(m, "noticeBarInfo", "content"), 32, 100) {
				return answer{200, `{"code":"1005","message":"content too long"}`}
			}
			return answer{200, `{"code":"200","value":{}}`}
		}),
	}
	for _, v := range vendors {
		t.Run(v.name(), func(t *testing.T) {
			n := chatNote(v.name(), 1)
			n.Title, n.Body, n.Ext = longTitle, longBody, `{"conversation":"c2c_alice"}`
			if err := v.send(context.Background(), n); err != nil {
				t.Fatalf("over-long message refused: %v", err)
			}
			text, _ := shown.Load(v.name())
			if s, _ := text.(string); !strings.HasPrefix(s, "長い本文") || !strings.HasSuffix(s, "…") || !utf8.ValidString(s) {
				t.Errorf("text %q is not the shortened message", s)
			}
		})
	}
}

// TestAPNsProviderTokenRenewal: Apple, "Establishing a token-based
// connection to APNs": refresh the token no more than once every 20
// minutes and no less than once an hour; a token renewed sooner is
// refused with 429 TooManyProviderTokenUpdates, one older than an hour with
// 403 ExpiredProviderToken.
func TestAPNsProviderTokenRenewal(t *testing.T) {
	clk := newTestClock()
	var mu sync.Mutex
	var lastIat float64
	signed, expireNext := 0, false
	a := apnsFake(t, clk.now, func(r *http.Request, _ []byte) answer {
		mu.Lock()
		defer mu.Unlock()
		jwt, _ := strings.CutPrefix(r.Header.Get("authorization"), "bearer ")
		_, claims := verifyJWT(t, jwt, func(in, sig []byte) bool { return true }) // TestAPNs checks the signature
		iat, _ := claims["iat"].(float64)
		if iat != lastIat {
			if signed > 0 && iat-lastIat < 20*60 {
				return answer{429, `{"reason":"TooManyProviderTokenUpdates"}`}
			}
			lastIat = iat
			signed++
		}
		if float64(clk.now().Unix())-iat > 3600 || expireNext {
			expireNext = false
			return answer{403, `{"reason":"ExpiredProviderToken"}`}
		}
		return answer{200, ``}
	})
	step := func(after time.Duration, expire, wantOK bool) {
		t.Helper()
		clk.add(after)
		mu.Lock()
		expireNext = expire
		mu.Unlock()
		err := a.send(context.Background(), chatNote("apns", 1))
		if wantOK && err != nil {
			t.Errorf("at +%v: %v", clk.now().Sub(fixedNow), err)
		}
		if !wantOK && (err == nil || classify(err).kind != retry) {
			t.Errorf("at +%v: %v, want a retry", clk.now().Sub(fixedNow), err)
		}
	}
	step(0, false, true)
	step(time.Minute, true, false) // APNs calls a 1-minute-old token expired (a skewed clock)…
	step(time.Minute, false, true) // …the retry must not re-sign within 20 minutes
	step(19*time.Minute, true, false)
	step(time.Minute, false, true) // 22 minutes on: re-signing is allowed now
	step(53*time.Minute, false, true)
	if signed != 3 {
		t.Errorf("signed %d provider tokens, want 3 (start, after the expiry at 21 min, before the hour)", signed)
	}
}

// TestVIVOAuthTokenRenewedHourly: vivo's auth API: the token is valid 24 h
// but "业务方做中心缓存,1-2小时更新一次" (cache it centrally, renew it every
// 1–2 hours).
func TestVIVOAuthTokenRenewedHourly(t *testing.T) {
	clk := newTestClock()
	v, auths := vivoFake(t, VIVOConfig{}, clk.now, func(map[string]any) answer { return answer{200, `{"result":0}`} })
	for _, s := range []struct {
		after time.Duration
		auths int
	}{{0, 1}, {30 * time.Minute, 1}, {31 * time.Minute, 2}, {2 * time.Hour, 3}} {
		clk.add(s.after)
		if err := v.send(context.Background(), chatNote("vivo", 1)); err != nil {
			t.Fatal(err)
		}
		if got := auths(); got != s.auths {
			t.Errorf("at +%v: %d auth requests, want %d", clk.now().Sub(fixedNow), got, s.auths)
		}
	}
}

// TestTokenErrorsThatAreNotDeadTokens: only a vendor's dead-token answer
// deletes a token.
func TestTokenErrorsThatAreNotDeadTokens(t *testing.T) {
	cases := []struct {
		name string
		v    vendor
		want failKind
	}{
		// Firebase, "Manage registration tokens": delete on UNREGISTERED;
		// SENDER_ID_MISMATCH is a token of another sender.
		{"fcm SENDER_ID_MISMATCH", fcmFake(t, func(map[string]any) answer {
			return answer{403, `{"error":{"code":403,"status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"SENDER_ID_MISMATCH"}]}}`}
		}), misconfigured},
		{"fcm UNREGISTERED", fcmFake(t, func(map[string]any) answer {
			return answer{404, `{"error":{"code":404,"status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}`}
		}), invalidToken},
		// MiPush: 20301 is documented only as "send failed"; a dead
		// registration id shows as reason "No valid targets!".
		{"xiaomi 20301", xiaomiFake(t, XiaomiConfig{ChannelID: "c"}, func(url.Values) answer {
			return answer{200, `{"result":"error","code":20301,"reason":"send failed","description":"发送消息失败"}`}
		}), permanent},
		{"xiaomi No valid targets!", xiaomiFake(t, XiaomiConfig{ChannelID: "c"}, func(url.Values) answer {
			return answer{200, `{"result":"error","code":20301,"reason":"No valid targets!"}`}
		}), invalidToken},
		// Apple, "Handling notification responses from APNs".
		{"apns BadDeviceToken", apnsFake(t, clock, func(*http.Request, []byte) answer {
			return answer{400, `{"reason":"BadDeviceToken"}`}
		}), misconfigured},
		{"apns DeviceTokenNotForTopic", apnsFake(t, clock, func(*http.Request, []byte) answer {
			return answer{400, `{"reason":"DeviceTokenNotForTopic"}`}
		}), misconfigured},
		{"apns Unregistered", apnsFake(t, clock, func(*http.Request, []byte) answer {
			return answer{410, `{"reason":"Unregistered","timestamp":1764230000000}`}
		}), invalidToken},
	}
	for _, c := range cases {
		err := c.v.send(context.Background(), chatNote(c.v.name(), 1))
		if err == nil || classify(err).kind != c.want {
			t.Errorf("%s: %v (kind %d), want kind %d", c.name, err, classify(err).kind, c.want)
		}
	}
}

// androidApp is the manifest of the app the tap tests open: the launcher
// activity, and a chat activity with an intent filter for an action and
// one for VIEW with the app's own scheme.
var androidApp = struct {
	pkg, launcher, chat, chatAction, scheme, host, path string
}{"com.example.im", ".MainActivity", ".ChatActivity", "com.example.im.OPEN_CHAT", "duetim", "com.example.im", "/chat"}

// androidURIDecode is android.net.Uri.decode: %XX only; '+' stays '+'.
func androidURIDecode(s string) (string, error) {
	return url.PathUnescape(s)
}

// tapHuawei plays a tap on a Push Kit notification on a phone with
// androidApp installed (Push Kit, "Customizing actions to be triggered upon
// message tapping"): type 3 starts the launcher activity; type 1 starts the
// activity the intent URI, or else the action, resolves to — the action
// must be one an intent filter of the app declares. The data field reaches
// the started activity. It returns the activity and the extras it gets.
func tapHuawei(msg map[string]any) (activity string, extras map[string]string, err error) {
	extras = map[string]string{}
	if d, _ := msg["data"].(string); d != "" {
		var m map[string]string
		if json.Unmarshal([]byte(d), &m) != nil {
			return "", nil, fmt.Errorf("data %q is not a JSON object of strings", d)
		}
		for k, v := range m {
			extras[k] = v
		}
	}
	click, _ := dig(msg, "android", "notification", "click_action").(map[string]any)
	switch typ, _ := click["type"].(float64); typ {
	case 3:
		return androidApp.launcher, extras, nil
	case 1:
	default:
		return "", nil, fmt.Errorf("click_action.type %v", click["type"])
	}
	if intent, _ := click["intent"].(string); intent != "" {
		// Intent.parseUri(…, URI_INTENT_SCHEME).
		head, body, ok := strings.Cut(intent, "#Intent;")
		if !ok || !strings.HasPrefix(head, "intent:") || !strings.HasSuffix(body, "end") {
			return "", nil, fmt.Errorf("intent %q is not an intent URI", intent)
		}
		action, scheme, component := "android.intent.action.VIEW", "", ""
		for _, part := range strings.Split(strings.TrimSuffix(body, "end"), ";") {
			k, v, _ := strings.Cut(part, "=")
			switch {
			case k == "scheme":
				scheme = v
			case k == "action":
				action, err = androidURIDecode(v)
			case k == "component":
				component, err = androidURIDecode(v)
			case strings.HasPrefix(k, "S."):
				extras[k[2:]], err = androidURIDecode(v)
			}
			if err != nil {
				return "", nil, err
			}
		}
		switch {
		case component != "":
			if component != androidApp.pkg+"/"+androidApp.chat && component != androidApp.pkg+"/"+androidApp.launcher {
				return "", nil, fmt.Errorf("component %q is not an activity of the app", component)
			}
			return component[len(androidApp.pkg)+1:], extras, nil
		case action == androidApp.chatAction:
			return androidApp.chat, extras, nil
		case action == "android.intent.action.VIEW" && scheme == androidApp.scheme &&
			strings.TrimPrefix(head, "intent:") == "//"+androidApp.host+androidApp.path:
			return androidApp.chat, extras, nil
		}
		return "", nil, fmt.Errorf("intent %q resolves to no activity of the app", intent)
	}
	if action, _ := click["action"].(string); action != androidApp.chatAction {
		return "", nil, fmt.Errorf("click_action.action %q is declared by no intent filter of the app", action)
	}
	return androidApp.chat, extras, nil
}

func TestTapsReachTheApp(t *testing.T) {
	const ext = `{"conversation":"c2c_alice","text":"a b+c/é&;=#%"}`
	t.Run("huawei", func(t *testing.T) {
		cases := []struct {
			name     string
			cfg      HuaweiConfig
			asIntent int
			activity string
		}{
			{"open app, Ext in data", HuaweiConfig{}, 0, androidApp.launcher},
			{"declared action, Ext in data", HuaweiConfig{ClickAction: androidApp.chatAction}, 0, androidApp.chat},
			{"intent with scheme", HuaweiConfig{IntentURI: "duetim://com.example.im/chat"}, 1, androidApp.chat},
			{"intent with component", HuaweiConfig{IntentComponent: "com.example.im/.ChatActivity"}, 1, androidApp.chat},
			{"intent with action", HuaweiConfig{ClickAction: androidApp.chatAction}, 1, androidApp.chat},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				var msg map[string]any
				h := huaweiFake(t, c.cfg, func(m map[string]any) answer { msg = m; return answer{200, `{"code":"80000000"}`} })
				n := chatNote("huawei", 1)
				n.Ext, n.Android.ExtAsHuaweiIntentParam = ext, c.asIntent
				if err := h.send(context.Background(), n); err != nil {
					t.Fatal(err)
				}
				activity, extras, err := tapHuawei(msg)
				if err != nil {
					t.Fatalf("tap: %v", err)
				}
				expect(t, "activity", activity, c.activity)
				expect(t, "ext the app receives", extras["ext"], ext)
			})
		}
	})
	t.Run("oppo", func(t *testing.T) {
		// OPPO notification message: action_parameters is a JSON object
		// whose keys reach the opened activity as intent extras.
		var params any
		o := oppoFake(t, OPPOConfig{}, func(m map[string]any) answer {
			params = dig(m, "notification", "action_parameters")
			return answer{200, `{"code":0}`}
		})
		n := chatNote("oppo", 1)
		n.Ext = "chat:alice 42"
		if err := o.send(context.Background(), n); err != nil {
			t.Fatal(err)
		}
		obj, isObj := params.(map[string]any)
		if s, ok := params.(string); ok {
			isObj = json.Unmarshal([]byte(s), &obj) == nil && obj != nil
		}
		if !isObj {
			t.Fatalf("action_parameters %#v is not a JSON object", params)
		}
		expect(t, "extra ext", obj["ext"], n.Ext)
	})
	t.Run("xiaomi sound", func(t *testing.T) {
		// MiPush extra.sound_uri: android.resource://{package}/raw/{name},
		// the name of a raw resource ([a-z0-9_], no extension).
		var got string
		x := xiaomiFake(t, XiaomiConfig{ChannelID: "c"}, func(f url.Values) answer {
			got = f.Get("extra.sound_uri")
			if !regexp.MustCompile(`^android\.resource://` + regexp.QuoteMeta(f.Get("restricted_package_name")) + `/raw/[a-z0-9_]+$`).MatchString(got) {
				return answer{200, `{"result":"error","code":10017,"reason":"invalid sound_uri"}`}
			}
			return answer{200, `{"result":"ok","code":0}`}
		})
		n := chatNote("xiaomi", 1)
		n.Android.Sound = "ding.mp3"
		if err := x.send(context.Background(), n); err != nil {
			t.Fatalf("%v (sound_uri %q)", err, got)
		}
		expect(t, "sound_uri", got, "android.resource://com.example.app/raw/ding")
	})
}
