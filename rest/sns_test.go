package rest_test

import (
	"fmt"
	"strings"
	"testing"
)

// contacts are the To_Account of owner's conversation list.
func (e *env) contacts(owner string) []string {
	e.t.Helper()
	m := e.call("recentcontact/get_list", fmt.Sprintf(`{"From_Account":%q,"TimeStamp":0,"StartIndex":0,"TopTimeStamp":0,"TopStartIndex":0,"AssistFlags":7}`, owner))
	expectCode(e.t.(*testing.T), m, 0)
	var out []string
	items, _ := m["SessionItem"].([]any)
	for _, it := range items {
		out = append(out, it.(map[string]any)["To_Account"].(string))
	}
	return out
}

// Field names match case-insensitively, as on Tencent's server
// (docs/rest.md, "Field names"): each body below spells its fields the way
// some client sends them, and gets the answer the canonical spelling gets.
func TestFieldNamesMatchCaseInsensitively(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.users("alice", "bob", "carol")
	for _, peer := range []string{"bob", "carol"} {
		expectCode(t, e.call("openim/sendmsg", `{"From_Account":"alice","To_Account":"`+peer+`","MsgRandom":1,"MsgBody":`+textBody("hi")+`}`), 0)
	}
	if got := strings.Join(e.contacts("alice"), ","); got != "bob,carol" && got != "carol,bob" {
		t.Fatalf("alice's conversations before: %s", got)
	}
	// dobyte/tencent-im's DeleteSession sends exactly this body: "type" in
	// lower case, the rest as documented.
	expectCode(t, e.call("recentcontact/delete", `{"From_Account":"alice","type":1,"To_Account":"bob"}`), 0)
	if got := strings.Join(e.contacts("alice"), ","); got != "carol" {
		t.Fatalf("after deleting bob with \"type\": %s", got)
	}

	for _, c := range []struct {
		name, cmd, body string
		code            int
		check           func(m map[string]any) error
	}{
		{"all lower case", "recentcontact/delete", `{"from_account":"alice","type":1,"to_account":"carol","clearramble":1}`, 0, nil},
		{"sendmsg, odd case", "openim/sendmsg", `{"from_account":"bob","TO_ACCOUNT":"carol","msgRandom":7,"msgbody":` + textBody("x") + `}`, 0,
			func(m map[string]any) error {
				if k, _ := m["MsgKey"].(string); !strings.Contains(k, "_7_") {
					return fmt.Errorf("MsgKey %q does not carry MsgRandom 7", k)
				}
				return nil
			}},
		{"friend_check", "sns/friend_check", `{"from_account":"alice","to_account":["bob"],"checktype":"CheckResult_Type_Single"}`, 0,
			func(m map[string]any) error {
				if s := fmt.Sprint(m["InfoItem"]); !strings.Contains(s, "CheckResult_Type_NoRelation") {
					return fmt.Errorf("InfoItem %s", s)
				}
				return nil
			}},
		{"portrait_get", "profile/portrait_get", `{"to_Account":["alice"],"tagList":["Tag_Profile_IM_Nick"]}`, 0, nil},
		{"nested items", "sns/friend_import", `{"From_Account":"alice","addfriendItem":[{"to_account":"bob","addSource":"AddSource_Type_Web"}]}`, 0,
			func(m map[string]any) error {
				if s := fmt.Sprint(m["ResultItem"]); !strings.Contains(s, "ResultCode:0") {
					return fmt.Errorf("ResultItem %s", s)
				}
				return nil
			}},
		// The same name twice in different cases: the last one counts, as
		// encoding/json decides for nested items.
		{"repeated name, last wins", "recentcontact/delete", `{"From_Account":"alice","Type":1,"type":3,"To_Account":"bob"}`, 50002, nil},
		{"repeated name, last wins (valid)", "recentcontact/delete", `{"From_Account":"alice","type":3,"Type":1,"To_Account":"bob"}`, 0, nil},
		// Message elements are stored and delivered as sent: their names
		// must be exact, or receivers could not read them.
		{"element names are exact", "openim/sendmsg", `{"From_Account":"bob","To_Account":"carol","MsgRandom":8,"MsgBody":[{"msgtype":"TIMTextElem","MsgContent":{"Text":"x"}}]}`, 90010, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := e.call(c.cmd, c.body)
			expectCode(t, m, c.code)
			if c.check != nil {
				if err := c.check(m); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	if got := e.contacts("alice"); len(got) != 0 {
		t.Fatalf("alice's conversations after deleting both: %v", got)
	}
}

// sns/friend_get_list with the request and reply of Tencent's example
// (拉取指定好友, batch form): UserID_4 is not a friend.
func TestGoldenFriendGetList(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.users("UserID_1", "UserID_4")
	for _, u := range []string{"UserID_2", "UserID_3"} {
		n := strings.TrimPrefix(u, "UserID_")
		expectCode(t, e.call("im_open_login_svc/account_import", `{"UserID":"`+u+`","Nick":"nick_`+n+`"}`), 0)
		expectCode(t, e.call("profile/portrait_set", `{"From_Account":"`+u+`","ProfileItem":[{"Tag":"Tag_Profile_Custom_Test","Value":"custom_profile_`+n+`"}]}`), 0)
	}
	expectCode(t, e.call("sns/friend_import", `{"From_Account":"UserID_1","AddFriendItem":[
		{"To_Account":"UserID_2","Remark":"remark_2","GroupName":["group1","group2"],"AddSource":"AddSource_Type_Android","CustomItem":[{"Tag":"Tag_SNS_Custom_Test","Value":"custom_sns_2"}]},
		{"To_Account":"UserID_3","Remark":"remark_3","AddSource":"AddSource_Type_Android"}]}`), 0)

	_, _, raw := e.post("sns/friend_get_list", e.query(admin), `{
		"From_Account":"UserID_1",
		"To_Account":["UserID_2","UserID_3","UserID_4"],
		"TagList":["Tag_Profile_Custom_Test","Tag_Profile_IM_Image","Tag_Profile_IM_Nick","Tag_SNS_Custom_Test","Tag_SNS_IM_Remark","Tag_SNS_IM_Group"]}`)
	sameJSON(t, raw, `{
		"InfoItem": [
			{"To_Account": "UserID_2", "SnsProfileItem": [
				{"Tag": "Tag_SNS_IM_Remark", "Value": "remark_2"},
				{"Tag": "Tag_SNS_IM_Group", "Value": ["group1","group2"]},
				{"Tag": "Tag_Profile_IM_Nick", "Value": "nick_2"},
				{"Tag": "Tag_SNS_Custom_Test", "Value": "custom_sns_2"},
				{"Tag": "Tag_Profile_Custom_Test", "Value": "custom_profile_2"}],
			 "ResultCode": 0, "ResultInfo": ""},
			{"To_Account": "UserID_3", "SnsProfileItem": [
				{"Tag": "Tag_SNS_IM_Remark", "Value": "remark_3"},
				{"Tag": "Tag_Profile_IM_Nick", "Value": "nick_3"},
				{"Tag": "Tag_Profile_Custom_Test", "Value": "custom_profile_3"}],
			 "ResultCode": 0, "ResultInfo": ""},
			{"To_Account": "UserID_4", "ResultCode": 30001, "ResultInfo": "Err_SNS_FriendGetList_Friend_Not_Exist"}],
		"Fail_Account": ["UserID_4"],
		"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", "ErrorDisplay": ""}`)

	for _, c := range []struct{ name, body string }{
		{"no TagList", `{"From_Account":"UserID_1","To_Account":["UserID_2"]}`},
		{"unknown tag", `{"From_Account":"UserID_1","To_Account":["UserID_2"],"TagList":["Tag_Nope"]}`},
		{"no To_Account", `{"From_Account":"UserID_1","TagList":["Tag_SNS_IM_Remark"]}`},
		{"no From_Account", `{"To_Account":["UserID_2"],"TagList":["Tag_SNS_IM_Remark"]}`},
	} {
		t.Run(c.name, func(t *testing.T) { expectCode(t, e.call("sns/friend_get_list", c.body), 30001) })
	}
}

// sns/group_add, group_get and group_delete with the requests of Tencent's
// examples (添加分组, 拉取分组, 删除分组). CurrentSequence counts this
// user's own changes, so its values are Duet's; the shapes are Tencent's.
func TestGoldenFriendGroups(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.users("id", "id1", "id2", "friend1")
	expectCode(t, e.call("sns/friend_import", `{"From_Account":"id","AddFriendItem":[{"To_Account":"id1","AddSource":"AddSource_Type_Web"},{"To_Account":"friend1","AddSource":"AddSource_Type_Web"}]}`), 0)

	// Basic form.
	_, _, raw := e.post("sns/group_add", e.query(admin), `{"From_Account":"id","GroupName":["group1","group2","group3"]}`)
	sameJSON(t, raw, `{"CurrentSequence": 1, "ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", "ErrorDisplay": ""}`)
	// Complete form: id2 is not a friend, id3 does not exist. (Tencent's
	// example lists id1 in Fail_Account although its ResultCode is 0.)
	_, _, raw = e.post("sns/group_add", e.query(admin), `{"From_Account":"id","GroupName":["group1","group4"],"To_Account":["id1","id2","id3"]}`)
	sameJSON(t, raw, `{
		"ResultItem": [
			{"To_Account": "id1", "ResultCode": 0, "ResultInfo": ""},
			{"To_Account": "id2", "ResultCode": 32216, "ResultInfo": "Err_SNS_GroupAdd_ToTinyId_Not_Friend: id2 is not in id's friend list"},
			{"To_Account": "id3", "ResultCode": 32216, "ResultInfo": "Err_SNS_GroupAdd_ToTinyId_Not_Friend: id3 is not in id's friend list"}],
		"Fail_Account": ["id2","id3"],
		"CurrentSequence": 2, "ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", "ErrorDisplay": ""}`)
	expectCode(t, e.call("sns/friend_update", `{"From_Account":"id","UpdateItem":[{"To_Account":"friend1","SnsItem":[{"Tag":"Tag_SNS_IM_Group","Value":["group3"]}]}]}`), 0)

	_, _, raw = e.post("sns/group_get", e.query(admin), `{"From_Account":"id"}`)
	sameJSON(t, raw, `{
		"ResultItem": [
			{"GroupName": "group1", "FriendNumber": 1},
			{"GroupName": "group2", "FriendNumber": 0},
			{"GroupName": "group3", "FriendNumber": 1},
			{"GroupName": "group4", "FriendNumber": 1}],
		"CurrentSequence": 2, "ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", "ErrorDisplay": ""}`)
	_, _, raw = e.post("sns/group_get", e.query(admin), `{"From_Account":"id","NeedFriend":"Need_Friend_Type_Yes","GroupName":["group3"]}`)
	sameJSON(t, raw, `{
		"ResultItem": [{"GroupName": "group3", "FriendNumber": 1, "To_Account": ["friend1"]}],
		"CurrentSequence": 2, "ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", "ErrorDisplay": ""}`)

	_, _, raw = e.post("sns/group_delete", e.query(admin), `{"From_Account":"id","GroupName":["group1","group2","group3"]}`)
	sameJSON(t, raw, `{"CurrentSequence": 3, "ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", "ErrorDisplay": ""}`)
	// The friends stay, out of the deleted groups.
	m := e.call("sns/friend_get_list", `{"From_Account":"id","To_Account":["id1","friend1"],"TagList":["Tag_SNS_IM_Group"]}`)
	if s := fmt.Sprint(m["InfoItem"]); s != "[map[ResultCode:0 ResultInfo: SnsProfileItem:[map[Tag:Tag_SNS_IM_Group Value:[group4]]] To_Account:id1] map[ResultCode:0 ResultInfo: SnsProfileItem:[] To_Account:friend1]]" {
		t.Fatalf("friends after group_delete: %s", s)
	}
	_, _, raw = e.post("sns/group_get", e.query(admin), `{"From_Account":"id","NeedFriend":"Need_Friend_Type_Yes"}`)
	sameJSON(t, raw, `{
		"ResultItem": [{"GroupName": "group4", "FriendNumber": 1, "To_Account": ["id1"]}],
		"CurrentSequence": 3, "ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", "ErrorDisplay": ""}`)

	// Refusals leave nothing behind.
	many := make([]string, 32)
	for i := range many {
		many[i] = fmt.Sprintf("%q", fmt.Sprintf("g%02d", i))
	}
	for _, c := range []struct {
		name, cmd, body string
		code            int
	}{
		{"name too long", "sns/group_add", `{"From_Account":"id","GroupName":["` + strings.Repeat("x", 31) + `"]}`, 30001},
		{"empty name", "sns/group_add", `{"From_Account":"id","GroupName":[""]}`, 30001},
		{"no GroupName", "sns/group_add", `{"From_Account":"id"}`, 30001},
		{"over 32 groups", "sns/group_add", `{"From_Account":"id","GroupName":[` + strings.Join(many, ",") + `]}`, 30011},
		{"unknown user", "sns/group_add", `{"From_Account":"nobody","GroupName":["g"]}`, 30003},
		{"delete unknown group", "sns/group_delete", `{"From_Account":"id","GroupName":["group4","nope"]}`, 30001},
		{"bad NeedFriend", "sns/group_get", `{"From_Account":"id","NeedFriend":"yes"}`, 30001},
	} {
		t.Run(c.name, func(t *testing.T) { expectCode(t, e.call(c.cmd, c.body), c.code) })
	}
	_, _, raw = e.post("sns/group_get", e.query(admin), `{"From_Account":"id"}`)
	sameJSON(t, raw, `{"ResultItem": [{"GroupName": "group4", "FriendNumber": 1}], "CurrentSequence": 3, "ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", "ErrorDisplay": ""}`)
}

// account_delete removes what other users' lists hold about the account
// (reference §6.1): their blacklist entries naming it and the requests it
// sent them, so a later account with the same UserID starts clean.
func TestAccountDeleteCleansOtherUsersLists(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.users("alice", "bob", "carol", "zed")
	expectCode(t, e.call("sns/black_list_add", `{"From_Account":"alice","To_Account":["zed"]}`), 0)
	expectCode(t, e.call("sns/black_list_add", `{"From_Account":"zed","To_Account":["carol"]}`), 0)
	m := e.call("sns/friend_add", `{"From_Account":"zed","AddFriendItem":[{"To_Account":"bob","AddSource":"AddSource_Type_Web"}]}`)
	if s := fmt.Sprint(m["ResultItem"]); !strings.Contains(s, "30539") {
		t.Fatalf("zed's request to bob is not pending: %s", s)
	}
	m = e.call("sns/friend_add", `{"From_Account":"carol","AddFriendItem":[{"To_Account":"bob","AddSource":"AddSource_Type_Web"}]}`)
	if s := fmt.Sprint(m["ResultItem"]); !strings.Contains(s, "30539") {
		t.Fatalf("carol's request to bob is not pending: %s", s)
	}
	blacklist := func(owner string) string {
		m := e.call("sns/black_list_get", `{"From_Account":"`+owner+`","StartIndex":0,"MaxLimited":100,"LastSequence":0}`)
		expectCode(t, m, 0)
		return fmt.Sprint(m["BlackListItem"])
	}
	requests := func(owner string) string {
		m := e.call("sns/friend_request_get", `{"From_Account":"`+owner+`"}`)
		expectCode(t, m, 0)
		return fmt.Sprint(m["RequestItem"])
	}
	if !strings.Contains(blacklist("alice"), "zed") || !strings.Contains(requests("bob"), "zed") {
		t.Fatalf("setup: alice's blacklist %s, bob's requests %s", blacklist("alice"), requests("bob"))
	}

	expectCode(t, e.call("im_open_login_svc/account_delete", `{"DeleteItem":[{"UserID":"zed"}]}`), 0)
	if s := blacklist("alice"); s != "[]" {
		t.Fatalf("alice's blacklist still names the deleted account: %s", s)
	}
	if s := requests("bob"); strings.Contains(s, "zed") || !strings.Contains(s, "carol") {
		t.Fatalf("bob's pending requests after zed's deletion: %s", s)
	}
	// The counters followed (they bound the lists), and a new zed starts
	// clean.
	if c, err := e.st.RelCounts("alice"); err != nil || c.Blacklist != 0 {
		t.Fatalf("alice's counters: %+v, %v", c, err)
	}
	if c, err := e.st.RelCounts("bob"); err != nil || c.Pending != 1 {
		t.Fatalf("bob's counters: %+v, %v", c, err)
	}
	e.users("zed")
	if s := blacklist("zed"); s != "[]" {
		t.Fatalf("new zed's blacklist: %s", s)
	}
	m = e.call("sns/black_list_check", `{"From_Account":"alice","To_Account":["zed"],"CheckType":"BlackCheckResult_Type_Both"}`)
	if s := fmt.Sprint(m["BlackListCheckItem"]); !strings.Contains(s, "BlackCheckResult_Type_NO") {
		t.Fatalf("black_list_check after re-import: %s", s)
	}
}
