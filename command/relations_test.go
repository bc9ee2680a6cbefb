package command

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/duet-im/duet/store"
)

// testClock is a store clock tests can move.
type testClock struct{ off atomic.Int64 }

func (c *testClock) now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *testClock) advance(d time.Duration) { c.off.Add(int64(d)) }

type fixture struct {
	t     testing.TB
	st    *store.Store
	svc   *Service
	clock *testClock
}

func newFixture(t testing.TB, cfg func(*Config), users ...string) *fixture {
	t.Helper()
	clk := &testClock{}
	st, err := store.Open(t.TempDir(), store.Options{Clock: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c := DefaultConfig()
	if cfg != nil {
		cfg(&c)
	}
	f := &fixture{t: t, st: st, svc: New(c, st, nil), clock: clk}
	f.users(users...)
	return f
}

// users imports accounts concurrently, so their commits share fsyncs.
func (f *fixture) users(ids ...string) {
	var wg sync.WaitGroup
	errs := make(chan error, len(ids))
	sem := make(chan struct{}, 64)
	for _, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := f.st.ImportAccount(store.Account{UserID: id, Nick: "nick-" + id}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		f.t.Fatal(err)
	}
}

// exec runs a command as user over MQTT (admin when user is an admin) and
// returns the decoded reply.
func (f *fixture) exec(user, cmd string, body any) map[string]any {
	f.t.Helper()
	raw, _ := json.Marshal(body)
	c := &Caller{UserID: user, Admin: f.svc.IsAdmin(user), Transport: MQTT}
	var out map[string]any
	if err := json.Unmarshal(f.svc.Exec(context.Background(), c, cmd, raw).Encode(), &out); err != nil {
		f.t.Fatal(err)
	}
	return out
}

// ok runs a command that must succeed.
func (f *fixture) ok(user, cmd string, body any) map[string]any {
	f.t.Helper()
	r := f.exec(user, cmd, body)
	if r["ActionStatus"] != "OK" {
		f.t.Fatalf("%s %s %v: %v", user, cmd, body, r)
	}
	return r
}

func code(r map[string]any) int { n, _ := r["ErrorCode"].(float64); return int(n) }

// itemCodes are the ResultCodes of a ResultItem list, by To_Account.
func itemCodes(r map[string]any, list string) map[string]int {
	out := map[string]int{}
	items, _ := r[list].([]any)
	for _, it := range items {
		m := it.(map[string]any)
		out[m["To_Account"].(string)] = int(m["ResultCode"].(float64))
	}
	return out
}

func allowAnyone(f *fixture, users ...string) {
	for _, u := range users {
		f.ok(u, "profile/portrait_set", map[string]any{"ProfileItem": []any{map[string]any{"Tag": "Tag_Profile_IM_AllowType", "Value": "AllowType_Type_AllowAny"}}})
	}
}

// TestSendPolicy walks the permission matrix of reference §7.1 through
// checkSend, with each switch setting.
func TestSendPolicy(t *testing.T) {
	type setup func(f *fixture)
	oneWay := func(owner, peer string) setup {
		return func(f *fixture) {
			f.ok(owner, "sns/friend_import", map[string]any{"AddFriendItem": []any{map[string]any{"To_Account": peer, "AddSource": "AddSource_Type_Test"}}})
		}
	}
	bothWay := func(f *fixture) { oneWay("alice", "bob")(f); oneWay("bob", "alice")(f) }
	block := func(owner, peer string) setup {
		return func(f *fixture) { f.ok(owner, "sns/black_list_add", map[string]any{"To_Account": []string{peer}}) }
	}
	mute := func(user string, secs int64) setup {
		return func(f *fixture) {
			f.ok("administrator", "openconfigsvr/setnospeaking", map[string]any{"Set_Account": user, "C2CmsgNospeakingTime": secs})
		}
	}
	refuse := func(f *fixture) {
		f.ok("bob", "profile/portrait_set", map[string]any{"ProfileItem": []any{map[string]any{"Tag": "Tag_Profile_IM_MsgSettings", "Value": 1}}})
	}
	type want struct {
		deliver bool
		code    int
	}
	cases := []struct {
		name           string
		friendsOnly    bool
		blacklistError bool
		setup          []setup
		from, to       string
		want           want
	}{
		{name: "strangers may chat by default", from: "alice", to: "bob", want: want{true, 0}},
		{name: "friends-only: strangers", friendsOnly: true, from: "alice", to: "bob", want: want{false, 20009}},
		{name: "friends-only: both-way", friendsOnly: true, setup: []setup{bothWay}, from: "alice", to: "bob", want: want{true, 0}},
		{name: "friends-only: sender not in recipient's list", friendsOnly: true, setup: []setup{oneWay("alice", "bob")}, from: "alice", to: "bob", want: want{false, 20010}},
		{name: "friends-only: recipient not in sender's list", friendsOnly: true, setup: []setup{oneWay("bob", "alice")}, from: "alice", to: "bob", want: want{false, 20011}},
		{name: "friends-only: self", friendsOnly: true, from: "alice", to: "alice", want: want{true, 0}},
		{name: "blacklisted: show as sent", setup: []setup{block("bob", "alice")}, from: "alice", to: "bob", want: want{false, 0}},
		{name: "blacklisted: error mode", blacklistError: true, setup: []setup{block("bob", "alice")}, from: "alice", to: "bob", want: want{false, 20007}},
		{name: "the blocker may still send", setup: []setup{block("bob", "alice")}, from: "bob", to: "alice", want: want{true, 0}},
		{name: "blacklist beats friendship check", friendsOnly: true, blacklistError: true, setup: []setup{bothWay, block("bob", "alice")}, from: "alice", to: "bob", want: want{false, 20007}},
		{name: "MsgSettings refuses: show as sent", setup: []setup{refuse}, from: "alice", to: "bob", want: want{false, 0}},
		{name: "MsgSettings refuses: error mode", blacklistError: true, setup: []setup{refuse}, from: "alice", to: "bob", want: want{false, 20007}},
		{name: "muted", setup: []setup{mute("alice", 60)}, from: "alice", to: "bob", want: want{false, 20012}},
		{name: "muted for ever", setup: []setup{mute("alice", 4294967295)}, from: "alice", to: "alice", want: want{false, 20012}},
		{name: "unmuted", setup: []setup{mute("alice", 60), mute("alice", 0)}, from: "alice", to: "bob", want: want{true, 0}},
		{name: "mute of the recipient does not matter", setup: []setup{mute("bob", 60)}, from: "alice", to: "bob", want: want{true, 0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(c *Config) { c.FriendCheck, c.BlacklistError = tc.friendsOnly, tc.blacklistError }, "alice", "bob")
			// Warm the caches first: the setup must invalidate them.
			f.svc.checkSend(tc.from, tc.to)
			f.svc.checkSend(tc.to, tc.from)
			for _, s := range tc.setup {
				s(f)
			}
			deliver, err := f.svc.checkSend(tc.from, tc.to)
			got := want{deliver, 0}
			if err != nil {
				got.code = err.Code
			}
			if got != tc.want {
				t.Fatalf("checkSend(%s, %s) = %+v (%v), want %+v", tc.from, tc.to, got, err, tc.want)
			}
		})
	}
}

// A mute ends by itself when its time has passed (store clock).
func TestMuteExpires(t *testing.T) {
	f := newFixture(t, nil, "alice", "bob")
	f.ok("administrator", "openconfigsvr/setnospeaking", map[string]any{"Set_Account": "alice", "C2CmsgNospeakingTime": 3600})
	if _, err := f.svc.checkSend("alice", "bob"); err == nil || err.Code != 20012 {
		t.Fatalf("muted send: %v", err)
	}
	r := f.ok("alice", "openconfigsvr/getnospeaking", map[string]any{})
	if left := r["C2CmsgNospeakingTime"].(float64); left < 3590 || left > 3600 {
		t.Fatalf("remaining mute %v", left)
	}
	f.clock.advance(3601 * time.Second)
	if _, err := f.svc.checkSend("alice", "bob"); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	if r := f.ok("administrator", "openconfigsvr/getnospeaking", map[string]any{"Get_Account": "alice"}); r["C2CmsgNospeakingTime"].(float64) != 0 {
		t.Fatalf("expired mute still reported: %v", r)
	}
}

// Refused requests carry the reference's code and change nothing.
func TestBadInput(t *testing.T) {
	f := newFixture(t, nil, "alice", "bob")
	long := string(make([]byte, 501))
	cases := []struct {
		name, user, cmd string
		body            any
		code            int
	}{
		{"profile: other user", "alice", "profile/portrait_set", map[string]any{"From_Account": "bob", "ProfileItem": []any{map[string]any{"Tag": "Tag_Profile_IM_Nick", "Value": "x"}}}, 40004},
		{"profile: unknown tag", "alice", "profile/portrait_set", map[string]any{"ProfileItem": []any{map[string]any{"Tag": "Tag_Profile_IM_Nick", "Value": "ok"}, map[string]any{"Tag": "Tag_Profile_IM_Bogus", "Value": "x"}}}, 40009},
		{"profile: bad custom tag", "alice", "profile/portrait_set", map[string]any{"ProfileItem": []any{map[string]any{"Tag": "Tag_Profile_Custom_TooLongName", "Value": "x"}}}, 40009},
		{"profile: too long", "alice", "profile/portrait_set", map[string]any{"ProfileItem": []any{map[string]any{"Tag": "Tag_Profile_IM_Nick", "Value": long}}}, 40601},
		{"profile: bad gender", "alice", "profile/portrait_set", map[string]any{"ProfileItem": []any{map[string]any{"Tag": "Tag_Profile_IM_Gender", "Value": "Gender_Type_Robot"}}}, 40605},
		{"profile: location > 16 B", "alice", "profile/portrait_set", map[string]any{"ProfileItem": []any{map[string]any{"Tag": "Tag_Profile_IM_Location", "Value": "a location too long"}}}, 40605},
		{"profile: string for integer", "alice", "profile/portrait_set", map[string]any{"ProfileItem": []any{map[string]any{"Tag": "Tag_Profile_IM_BirthDay", "Value": "20190419"}}}, 40610},
		{"profile: integer out of range", "alice", "profile/portrait_set", map[string]any{"ProfileItem": []any{map[string]any{"Tag": "Tag_Profile_IM_Language", "Value": -1}}}, 40605},
		{"profile: admin-only tag", "alice", "profile/portrait_set", map[string]any{"ProfileItem": []any{map[string]any{"Tag": "Tag_Profile_IM_AdminForbidType", "Value": "AdminForbid_Type_SendOut"}}}, 40008},
		{"profile: empty", "alice", "profile/portrait_set", map[string]any{"ProfileItem": []any{}}, 40001},
		{"profile: not JSON", "alice", "profile/portrait_set", "nope", 40001},
		{"portrait_get: no To_Account", "alice", "profile/portrait_get", map[string]any{"TagList": []string{"Tag_Profile_IM_Nick"}}, 40002},
		{"portrait_get: unknown tag", "alice", "profile/portrait_get", map[string]any{"To_Account": []string{"bob"}, "TagList": []string{"Tag_Profile_IM_X"}}, 40009},
		{"sns: other user", "alice", "sns/friend_add", map[string]any{"From_Account": "bob", "AddFriendItem": []any{map[string]any{"To_Account": "alice", "AddSource": "AddSource_Type_X"}}}, 30004},
		{"sns: blacklist as other user", "alice", "sns/black_list_add", map[string]any{"From_Account": "bob", "To_Account": []string{"alice"}}, 30004},
		{"sns: bad AddSource", "alice", "sns/friend_add", map[string]any{"AddFriendItem": []any{map[string]any{"To_Account": "bob", "AddSource": "web"}}}, 30001},
		{"sns: remark too long", "alice", "sns/friend_add", map[string]any{"AddFriendItem": []any{map[string]any{"To_Account": "bob", "AddSource": "AddSource_Type_X", "Remark": long[:97]}}}, 30001},
		{"sns: bad AddType", "alice", "sns/friend_add", map[string]any{"AddType": "Add_Type_Many", "AddFriendItem": []any{map[string]any{"To_Account": "bob", "AddSource": "AddSource_Type_X"}}}, 30001},
		{"sns: too many", "alice", "sns/black_list_add", map[string]any{"To_Account": make([]string, 1001)}, 30001},
		{"sns: bad CheckType", "alice", "sns/friend_check", map[string]any{"To_Account": []string{"bob"}, "CheckType": "x"}, 30001},
		{"sns: black_list_get without paging", "alice", "sns/black_list_get", map[string]any{"StartIndex": 0}, 30001},
		{"mute: not admin", "alice", "openconfigsvr/setnospeaking", map[string]any{"Set_Account": "bob", "C2CmsgNospeakingTime": 10}, 60010},
		{"mute: no account", "administrator", "openconfigsvr/setnospeaking", map[string]any{"C2CmsgNospeakingTime": 10}, 130004},
		{"mute: unknown account", "administrator", "openconfigsvr/setnospeaking", map[string]any{"Set_Account": "nobody", "C2CmsgNospeakingTime": 10}, 130005},
		{"mute: no times", "administrator", "openconfigsvr/setnospeaking", map[string]any{"Set_Account": "bob"}, 130008},
		{"mute: bad time", "administrator", "openconfigsvr/setnospeaking", map[string]any{"Set_Account": "bob", "C2CmsgNospeakingTime": "x"}, 130001},
		{"batch: not admin", "alice", "openim/batchsendmsg", map[string]any{"To_Account": []string{"bob"}, "MsgRandom": 1, "MsgBody": []any{}}, 90009},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := f.st.Metrics.Txns.Load()
			r := f.exec(tc.user, tc.cmd, tc.body)
			if r["ActionStatus"] != "FAIL" || code(r) != tc.code || r["ErrorInfo"] == "" {
				t.Fatalf("got %v, want FAIL %d with an ErrorInfo", r, tc.code)
			}
			if after := f.st.Metrics.Txns.Load(); after != before {
				t.Fatalf("a refused request committed %d transactions", after-before)
			}
		})
	}
	// Per-item refusals: self, unknown user; nothing stored for them.
	r := f.ok("alice", "sns/friend_add", map[string]any{"AddFriendItem": []any{
		map[string]any{"To_Account": "alice", "AddSource": "AddSource_Type_X"},
		map[string]any{"To_Account": "ghost", "AddSource": "AddSource_Type_X"},
	}})
	if got := itemCodes(r, "ResultItem"); got["alice"] != 30001 || got["ghost"] != 30003 || len(r["Fail_Account"].([]any)) != 2 {
		t.Fatalf("per-item refusals: %v", r)
	}
	if fr, _ := f.st.Friends("alice"); len(fr) != 0 {
		t.Fatalf("refused adds stored friends: %v", fr)
	}
}

// Friend requests: verification, acceptance by adding back or by
// friend_response, rejection, AllowAny and DenyAny, and blacklisting.
func TestFriendRequests(t *testing.T) {
	f := newFixture(t, nil, "alice", "bob", "carol", "dave")
	add := func(from, to string) int {
		r := f.ok(from, "sns/friend_add", map[string]any{"AddFriendItem": []any{map[string]any{"To_Account": to, "AddSource": "AddSource_Type_App", "AddWording": "hi"}}})
		return itemCodes(r, "ResultItem")[to]
	}
	rel := func(a, b string) string {
		r := f.ok(a, "sns/friend_check", map[string]any{"To_Account": []string{b}, "CheckType": "CheckResult_Type_Both"})
		return r["InfoItem"].([]any)[0].(map[string]any)["Relation"].(string)
	}
	// NeedConfirm is the default: a pending request, no friendship yet.
	if c := add("alice", "bob"); c != 30539 {
		t.Fatalf("add to NeedConfirm: %d", c)
	}
	if got := rel("alice", "bob"); got != "CheckResult_Type_NoRelation" {
		t.Fatalf("before acceptance: %s", got)
	}
	reqs := f.ok("bob", "sns/friend_request_get", map[string]any{})["RequestItem"].([]any)
	if len(reqs) != 1 || reqs[0].(map[string]any)["From_Account"] != "alice" {
		t.Fatalf("bob's pending requests: %v", reqs)
	}
	// Bob adding Alice back accepts: both ways, request gone.
	if c := add("bob", "alice"); c != 0 {
		t.Fatalf("accepting add: %d", c)
	}
	if got := rel("alice", "bob"); got != "CheckResult_Type_BothWay" {
		t.Fatalf("after acceptance: %s", got)
	}
	if reqs := f.ok("bob", "sns/friend_request_get", map[string]any{})["RequestItem"].([]any); len(reqs) != 0 {
		t.Fatalf("request left after acceptance: %v", reqs)
	}
	// friend_response: Agree makes the requester's one-way friendship.
	if c := add("carol", "dave"); c != 30539 {
		t.Fatalf("carol → dave: %d", c)
	}
	r := f.ok("dave", "sns/friend_response", map[string]any{"ResponseFriendItem": []any{map[string]any{"To_Account": "carol", "ResponseAction": "Response_Action_Agree"}}})
	if itemCodes(r, "ResultItem")["carol"] != 0 || rel("carol", "dave") != "CheckResult_Type_AWithB" {
		t.Fatalf("agree: %v, %s", r, rel("carol", "dave"))
	}
	// Rejection removes the request; a second answer finds none (30614).
	f.ok("carol", "sns/friend_delete", map[string]any{"To_Account": []string{"dave"}})
	add("carol", "dave")
	f.ok("dave", "sns/friend_response", map[string]any{"ResponseFriendItem": []any{map[string]any{"To_Account": "carol", "ResponseAction": "Response_Action_Reject"}}})
	r = f.ok("dave", "sns/friend_response", map[string]any{"ResponseFriendItem": []any{map[string]any{"To_Account": "carol", "ResponseAction": "Response_Action_AgreeAndAdd"}}})
	if itemCodes(r, "ResultItem")["carol"] != 30614 || rel("carol", "dave") != "CheckResult_Type_NoRelation" {
		t.Fatalf("after rejection: %v, %s", r, rel("carol", "dave"))
	}
	// AllowAny: immediate; DenyAny: 30516.
	allowAnyone(f, "dave")
	if c := add("carol", "dave"); c != 0 || rel("carol", "dave") != "CheckResult_Type_BothWay" {
		t.Fatalf("AllowAny: %d %s", c, rel("carol", "dave"))
	}
	f.ok("dave", "profile/portrait_set", map[string]any{"ProfileItem": []any{map[string]any{"Tag": "Tag_Profile_IM_AllowType", "Value": "AllowType_Type_DenyAny"}}})
	if c := add("alice", "dave"); c != 30516 {
		t.Fatalf("DenyAny: %d", c)
	}
	// Blacklisting removes the friendship both ways and blocks requests.
	f.ok("alice", "sns/black_list_add", map[string]any{"To_Account": []string{"bob"}})
	if got := rel("alice", "bob"); got != "CheckResult_Type_NoRelation" {
		t.Fatalf("after blacklisting: %s", got)
	}
	if c := add("bob", "alice"); c != 30525 {
		t.Fatalf("blocked user's request: %d", c)
	}
	if c := add("alice", "bob"); c != 30515 {
		t.Fatalf("request to a blocked user: %d", c)
	}
	r = f.ok("bob", "sns/black_list_check", map[string]any{"To_Account": []string{"alice"}, "CheckType": "BlackCheckResult_Type_Both"})
	if got := r["BlackListCheckItem"].([]any)[0].(map[string]any)["Relation"]; got != "BlackCheckResult_Type_BWithA" {
		t.Fatalf("black_list_check from bob: %v", got)
	}
	r = f.ok("alice", "sns/black_list_get", map[string]any{"StartIndex": 0, "MaxLimited": 10, "LastSequence": 0})
	if _, ok := r["CurruentSequence"]; !ok || len(r["BlackListItem"].([]any)) != 1 {
		t.Fatalf("black_list_get: %v", r)
	}
	// An admin forbids a user to add friends (AdminForbidType): 30009.
	f.ok("administrator", "profile/portrait_set", map[string]any{"From_Account": "carol", "ProfileItem": []any{map[string]any{"Tag": "Tag_Profile_IM_AdminForbidType", "Value": "AdminForbid_Type_SendOut"}}})
	if r := f.exec("carol", "sns/friend_add", map[string]any{"AddFriendItem": []any{map[string]any{"To_Account": "alice", "AddSource": "AddSource_Type_App"}}}); code(r) != 30009 {
		t.Fatalf("forbidden add: %v", r)
	}
}

// friend_get pages through the list; friend_update and friend_delete_all
// change it.
func TestFriendListPaging(t *testing.T) {
	var peers []string
	for i := 0; i < 150; i++ {
		peers = append(peers, fmt.Sprintf("p%03d", i))
	}
	f := newFixture(t, nil, append(peers, "owner")...)
	var items []any
	for _, p := range peers {
		items = append(items, map[string]any{"To_Account": p, "AddSource": "AddSource_Type_Import", "GroupName": []string{"g"}})
	}
	f.ok("owner", "sns/friend_import", map[string]any{"AddFriendItem": items})
	f.ok("owner", "sns/friend_update", map[string]any{"UpdateItem": []any{map[string]any{"To_Account": "p000", "SnsItem": []any{
		map[string]any{"Tag": "Tag_SNS_IM_Remark", "Value": "first"}, map[string]any{"Tag": "Tag_SNS_Custom_Color", "Value": "red"}}}}})
	var got []string
	next := 0
	for {
		r := f.ok("owner", "sns/friend_get", map[string]any{"StartIndex": next})
		if r["FriendNum"].(float64) != 150 {
			t.Fatalf("FriendNum %v", r["FriendNum"])
		}
		for _, it := range r["UserDataItem"].([]any) {
			m := it.(map[string]any)
			got = append(got, m["To_Account"].(string))
			if m["To_Account"] == "p000" {
				b, _ := json.Marshal(m["ValueItem"])
				if want := `"Tag":"Tag_SNS_IM_Remark","Value":"first"`; !json.Valid(b) || !contains(string(b), want) || !contains(string(b), `"Tag_SNS_Custom_Color","Value":"red"`) {
					t.Fatalf("p000's values: %s", b)
				}
			}
		}
		if r["CompleteFlag"].(float64) != 0 {
			break
		}
		next = int(r["NextStartIndex"].(float64))
	}
	if len(got) != 150 || got[0] != "p000" || got[149] != "p149" {
		t.Fatalf("paged list: %d entries %v…", len(got), got[:3])
	}
	f.ok("owner", "sns/friend_delete_all", map[string]any{})
	if r := f.ok("owner", "sns/friend_get", map[string]any{"StartIndex": 0}); r["FriendNum"].(float64) != 0 {
		t.Fatalf("after delete_all: %v", r)
	}
	if n, _ := f.st.RelCounts("owner"); n.Friends != 0 {
		t.Fatalf("counter after delete_all: %+v", n)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// Profiles: portrait_get returns set values and defaults, the account's
// Nick stands in until set, and SenderProfile follows portrait_set.
func TestProfiles(t *testing.T) {
	f := newFixture(t, nil, "alice", "bob")
	if got := string(f.svc.senderProfile("alice")); got != `{"Tag_Profile_IM_Image":"","Tag_Profile_IM_Nick":"nick-alice"}` {
		t.Fatalf("initial SenderProfile %s", got)
	}
	f.ok("alice", "profile/portrait_set", map[string]any{"ProfileItem": []any{
		map[string]any{"Tag": "Tag_Profile_IM_Nick", "Value": "Alice"},
		map[string]any{"Tag": "Tag_Profile_IM_Image", "Value": "https://img/a.png"},
		map[string]any{"Tag": "Tag_Profile_IM_BirthDay", "Value": 20190419},
		map[string]any{"Tag": "Tag_Profile_Custom_Hobby", "Value": "chess"},
	}})
	if got := string(f.svc.senderProfile("alice")); got != `{"Tag_Profile_IM_Image":"https://img/a.png","Tag_Profile_IM_Nick":"Alice"}` {
		t.Fatalf("SenderProfile after portrait_set %s", got)
	}
	r := f.ok("bob", "profile/portrait_get", map[string]any{"To_Account": []string{"alice", "ghost"},
		"TagList": []string{"Tag_Profile_IM_Nick", "Tag_Profile_IM_BirthDay", "Tag_Profile_IM_Gender", "Tag_Profile_Custom_Hobby"}})
	b, _ := json.Marshal(r["UserProfileItem"])
	want := `[{"ProfileItem":[{"Tag":"Tag_Profile_IM_Nick","Value":"Alice"},{"Tag":"Tag_Profile_IM_BirthDay","Value":20190419},{"Tag":"Tag_Profile_IM_Gender","Value":"Gender_Type_Unknown"},{"Tag":"Tag_Profile_Custom_Hobby","Value":"chess"}],"ResultCode":0,"ResultInfo":"","To_Account":"alice"},` +
		`{"ProfileItem":[],"ResultCode":40003,"ResultInfo":"To_Account \"ghost\" does not exist","To_Account":"ghost"}]`
	if string(b) != want {
		t.Fatalf("portrait_get:\n got %s\nwant %s", b, want)
	}
	if _, ok := r["ErrorDisplay"]; !ok {
		t.Fatalf("no ErrorDisplay: %v", r)
	}
	// 20 custom tags at most.
	var items []any
	for i := 0; i < 20; i++ {
		items = append(items, map[string]any{"Tag": "Tag_Profile_Custom_T" + string(rune('a'+i)), "Value": "v"})
	}
	if r := f.exec("alice", "profile/portrait_set", map[string]any{"ProfileItem": items}); code(r) != 40001 {
		t.Fatalf("21st custom tag: %v", r)
	}
}

// BenchmarkSendPolicy measures openim/sendmsg throughput with many
// parallel senders, each pair friends both ways and each recipient with a
// 200-entry blacklist; "on" switches friends-only and blacklist-error on.
func BenchmarkSendPolicy(b *testing.B) {
	const pairs = 64
	for _, on := range []bool{false, true} {
		b.Run(fmt.Sprintf("checks=%v", on), func(b *testing.B) {
			f := newFixture(b, func(c *Config) { c.FriendCheck, c.BlacklistError = on, on })
			var users []string
			for i := 0; i < 2*pairs+200; i++ {
				users = append(users, fmt.Sprintf("u%d", i))
			}
			f.users(users...)
			blocked := users[2*pairs:]
			var wg sync.WaitGroup
			for i := 0; i < pairs; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					a, c := users[2*i], users[2*i+1]
					f.ok(a, "sns/friend_import", map[string]any{"AddFriendItem": []any{map[string]any{"To_Account": c, "AddSource": "AddSource_Type_B"}}})
					f.ok(c, "sns/friend_import", map[string]any{"AddFriendItem": []any{map[string]any{"To_Account": a, "AddSource": "AddSource_Type_B"}}})
					f.ok(c, "sns/black_list_add", map[string]any{"To_Account": blocked})
				}()
			}
			wg.Wait()
			var next, random atomic.Int64
			body := `{"To_Account":%q,"MsgRandom":%d,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hello"}}]}`
			b.SetParallelism(16) // many senders per core: the store's group commit needs them
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(1)) % pairs
				from, to := users[2*i], users[2*i+1]
				c := &Caller{UserID: from, Transport: MQTT}
				for pb.Next() {
					r := f.svc.Exec(context.Background(), c, "openim/sendmsg", []byte(fmt.Sprintf(body, to, random.Add(1))))
					if r.Err != nil {
						b.Fatal(r.Err)
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkCheckSend is the policy check alone, all switches on.
func BenchmarkCheckSend(b *testing.B) {
	f := newFixture(b, func(c *Config) { c.FriendCheck, c.BlacklistError = true, true }, "a", "b")
	f.ok("a", "sns/friend_import", map[string]any{"AddFriendItem": []any{map[string]any{"To_Account": "b", "AddSource": "AddSource_Type_B"}}})
	f.ok("b", "sns/friend_import", map[string]any{"AddFriendItem": []any{map[string]any{"To_Account": "a", "AddSource": "AddSource_Type_B"}}})
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if ok, err := f.svc.checkSend("a", "b"); !ok || err != nil {
				b.Fatal(err)
			}
		}
	})
}

// ForgetRelations leaves nothing of a deleted account's relationships.
func TestForgetRelations(t *testing.T) {
	f := newFixture(t, nil, "alice", "bob", "carol", "dave")
	f.ok("carol", "sns/friend_add", map[string]any{"AddFriendItem": []any{map[string]any{"To_Account": "bob", "AddSource": "AddSource_Type_X"}}}) // pending
	f.ok("bob", "sns/black_list_add", map[string]any{"To_Account": []string{"dave"}})
	allowAnyone(f, "bob")
	f.ok("alice", "sns/friend_add", map[string]any{"AddFriendItem": []any{map[string]any{"To_Account": "bob", "AddSource": "AddSource_Type_X"}}})
	if rq, _ := f.st.FriendRequests("bob"); len(rq) != 1 {
		t.Fatalf("setup: bob's requests %v", rq)
	}
	f.ok("bob", "profile/portrait_set", map[string]any{"ProfileItem": []any{map[string]any{"Tag": "Tag_Profile_IM_Nick", "Value": "Bob"}}})
	f.svc.checkSend("alice", "bob") // fill the caches
	if err := f.svc.ForgetRelations("bob"); err != nil {
		t.Fatal(err)
	}
	if fr, _ := f.st.Friends("alice"); len(fr) != 0 {
		t.Fatalf("alice still lists %v", fr)
	}
	for _, u := range []string{"bob"} {
		fr, _ := f.st.Friends(u)
		bl, _ := f.st.Blacklist(u)
		rq, _ := f.st.FriendRequests(u)
		p, _ := f.st.GetProfile(u)
		c, _ := f.st.RelCounts(u)
		if len(fr)+len(bl)+len(rq) != 0 || p != nil || c != (store.RelCounts{}) {
			t.Fatalf("%s left: friends %v blacklist %v requests %v profile %v counts %+v", u, fr, bl, rq, p, c)
		}
	}
	if c, _ := f.st.RelCounts("alice"); c.Friends != 0 {
		t.Fatalf("alice's counter: %+v", c)
	}
	if r := f.svc.rel; r.m["alice"] != nil || r.m["bob"] != nil {
		t.Fatal("caches still hold the wiped relationships")
	}
}

// The 3,001st friend is refused: 30010 for my list, 30014 for the peer's.
func TestFriendLimit(t *testing.T) {
	var peers []string
	for i := 0; i < 3001; i++ {
		peers = append(peers, fmt.Sprintf("f%04d", i))
	}
	f := newFixture(t, nil, append(peers, "owner", "other")...)
	for i := 0; i < 3000; i += 1000 {
		var items []any
		for _, p := range peers[i : i+1000] {
			items = append(items, map[string]any{"To_Account": p, "AddSource": "AddSource_Type_Import"})
		}
		if r := f.ok("owner", "sns/friend_import", map[string]any{"AddFriendItem": items}); r["Fail_Account"] != nil {
			t.Fatalf("import %d: %v", i, r["Fail_Account"])
		}
	}
	r := f.ok("owner", "sns/friend_import", map[string]any{"AddFriendItem": []any{map[string]any{"To_Account": peers[3000], "AddSource": "AddSource_Type_Import"}}})
	if c := itemCodes(r, "ResultItem")[peers[3000]]; c != 30010 {
		t.Fatalf("3001st friend: %d", c)
	}
	allowAnyone(f, "owner")
	r = f.ok("other", "sns/friend_add", map[string]any{"AddFriendItem": []any{map[string]any{"To_Account": "owner", "AddSource": "AddSource_Type_X"}}})
	if c := itemCodes(r, "ResultItem")["owner"]; c != 30014 {
		t.Fatalf("adding a user whose list is full: %d", c)
	}
	if fr, _ := f.st.Friends("other"); len(fr) != 0 {
		t.Fatalf("refused add stored %v", fr)
	}
}

// The send-policy cache keeps at most its bound of users however many send
// (the least recently used go first), and still answers for users it
// dropped by reloading them.
func TestSendPolicyCacheBounded(t *testing.T) {
	const users = 300
	ids := make([]string, users)
	for i := range ids {
		ids[i] = fmt.Sprintf("u%03d", i)
	}
	f := newFixture(t, func(c *Config) { c.BlacklistError = true }, ids...)
	f.svc.rel.max = 50
	f.ok("u000", "sns/black_list_add", map[string]any{"To_Account": []string{"u001"}})
	for i := 0; i < users; i++ {
		if _, e := f.svc.checkSend(ids[i], ids[(i+1)%users]); e != nil && i != 1 {
			t.Fatalf("%s → %s: %v", ids[i], ids[(i+1)%users], e)
		}
		if n := f.svc.rel.len(); n > 50 {
			t.Fatalf("after %d senders the cache holds %d users; the bound is 50", i+1, n)
		}
	}
	if len(f.svc.rel.m) != f.svc.rel.len() {
		t.Fatalf("index %d and list %d disagree", len(f.svc.rel.m), f.svc.rel.len())
	}
	// u000 fell out long ago; its blacklist still applies after a reload.
	if _, e := f.svc.checkSend("u001", "u000"); e == nil || e.Code != 20007 {
		t.Fatalf("u001 → u000 after eviction: %v", e)
	}
	// The most recently used stay: u000 was just reloaded.
	if f.svc.rel.m["u000"] == nil {
		t.Fatal("the user just read is not cached")
	}
}

// Deleting an account clears other users' blacklist entries naming it from
// the store and from the send-policy cache: a new account with the same
// UserID is not blocked by its predecessor's entries.
func TestAccountDeleteClearsBlacklistOfOthers(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.BlacklistError = true }, "alice", "zed")
	f.ok("alice", "sns/black_list_add", map[string]any{"To_Account": []string{"zed"}})
	if r := f.exec("zed", "openim/sendmsg", map[string]any{"To_Account": "alice", "MsgRandom": 1, "MsgBody": []any{map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": "hi"}}}}); code(r) != 20007 {
		t.Fatalf("blocked send: %v", r)
	}
	f.ok("administrator", "im_open_login_svc/account_delete", map[string]any{"DeleteItem": []any{map[string]any{"UserID": "zed"}}})
	f.users("zed")
	if bl, _ := f.st.Blacklist("alice"); len(bl) != 0 {
		t.Fatalf("alice's blacklist: %v", bl)
	}
	f.ok("zed", "openim/sendmsg", map[string]any{"To_Account": "alice", "MsgRandom": 2, "MsgBody": []any{map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": "hi"}}}})
}
