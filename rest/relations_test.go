package rest_test

import (
	"fmt"
	"testing"
)

// The relationship, profile and mute commands over REST, with the request
// shapes of reference §6 and an admin identity: From_Account is required,
// replies carry the documented keys.
func TestRESTRelations(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.users("alice", "bob", "carol")

	// From_Account is required over REST (it is not implied by a login).
	expectCode(t, e.call("sns/friend_add", `{"AddFriendItem":[{"To_Account":"bob","AddSource":"AddSource_Type_Web"}]}`), 30001)
	expectCode(t, e.call("profile/portrait_set", `{"ProfileItem":[{"Tag":"Tag_Profile_IM_Nick","Value":"A"}]}`), 40001)

	// The admin adds for alice; bob's default AllowType asks him first.
	m := e.call("sns/friend_add", `{"From_Account":"alice","AddFriendItem":[{"To_Account":"bob","AddSource":"AddSource_Type_Web","AddWording":"hi"}],"AddType":"Add_Type_Both"}`)
	expectCode(t, m, 0)
	if items := m["ResultItem"].([]any); len(items) != 1 || items[0].(map[string]any)["ResultCode"].(float64) != 30539 {
		t.Fatalf("friend_add: %v", m)
	}
	if _, ok := m["ErrorDisplay"]; !ok {
		t.Fatalf("sns reply without ErrorDisplay: %v", m)
	}
	// ForceAddFlags lets the back-end skip the peer's confirmation.
	m = e.call("sns/friend_add", `{"From_Account":"alice","AddFriendItem":[{"To_Account":"carol","AddSource":"AddSource_Type_Web"}],"ForceAddFlags":1}`)
	if items := m["ResultItem"].([]any); items[0].(map[string]any)["ResultCode"].(float64) != 0 {
		t.Fatalf("forced friend_add: %v", m)
	}
	m = e.call("sns/friend_check", `{"From_Account":"alice","To_Account":["bob","carol"],"CheckType":"CheckResult_Type_Both"}`)
	got := map[string]string{}
	for _, it := range m["InfoItem"].([]any) {
		got[it.(map[string]any)["To_Account"].(string)] = it.(map[string]any)["Relation"].(string)
	}
	if got["bob"] != "CheckResult_Type_NoRelation" || got["carol"] != "CheckResult_Type_BothWay" {
		t.Fatalf("friend_check: %v", m)
	}

	// Blacklist: the reply keys of §6.3, misspelling included.
	expectCode(t, e.call("sns/black_list_add", `{"From_Account":"carol","To_Account":["alice"]}`), 0)
	_, m, raw := e.post("sns/black_list_get", e.query(admin), `{"From_Account":"carol","StartIndex":0,"MaxLimited":30,"LastSequence":0}`)
	expectCode(t, m, 0)
	items := m["BlackListItem"].([]any)
	if len(items) != 1 || items[0].(map[string]any)["To_Account"] != "alice" || m["StartIndex"].(float64) != 0 {
		t.Fatalf("black_list_get: %s", raw)
	}
	if _, ok := m["CurruentSequence"]; !ok {
		t.Fatalf("black_list_get without CurruentSequence: %s", raw)
	}
	// Blacklisting ended the forced friendship both ways.
	m = e.call("sns/friend_check", `{"From_Account":"alice","To_Account":["carol"],"CheckType":"CheckResult_Type_Both"}`)
	if r := m["InfoItem"].([]any)[0].(map[string]any)["Relation"]; r != "CheckResult_Type_NoRelation" {
		t.Fatalf("after blacklisting: %v", r)
	}

	// Profiles.
	expectCode(t, e.call("profile/portrait_set", `{"From_Account":"alice","ProfileItem":[{"Tag":"Tag_Profile_IM_Nick","Value":"Alice"},{"Tag":"Tag_Profile_IM_Level","Value":3}]}`), 0)
	m = e.call("profile/portrait_get", `{"To_Account":["alice"],"TagList":["Tag_Profile_IM_Nick","Tag_Profile_IM_Level"]}`)
	if s := fmt.Sprint(m["UserProfileItem"]); s != "[map[ProfileItem:[map[Tag:Tag_Profile_IM_Nick Value:Alice] map[Tag:Tag_Profile_IM_Level Value:3]] ResultCode:0 ResultInfo: To_Account:alice]]" {
		t.Fatalf("portrait_get: %s", s)
	}

	// Mute: set, read back, and its codes.
	expectCode(t, e.call("openconfigsvr/setnospeaking", `{"Set_Account":"bob","C2CmsgNospeakingTime":4294967295}`), 0)
	m = e.call("openconfigsvr/getnospeaking", `{"Get_Account":"bob"}`)
	if m["C2CmsgNospeakingTime"].(float64) != 4294967295 || m["GroupmsgNospeakingTime"].(float64) != 0 {
		t.Fatalf("getnospeaking: %v", m)
	}
	expectCode(t, e.call("openconfigsvr/setnospeaking", `{"Set_Account":"bob"}`), 130008)
	expectCode(t, e.call("openconfigsvr/getnospeaking", `{}`), 130004)

	// batchsendmsg: the partial-failure form of §5.2; a muted From_Account
	// is not checked on REST sends.
	_, m, raw = e.post("openim/batchsendmsg", e.query(admin), `{"From_Account":"bob","To_Account":["alice","rong"],"MsgRandom":1287657,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]}`)
	if m["ActionStatus"] != "SomeError" || code(m) != 0 || m["MsgKey"] == "" {
		t.Fatalf("batchsendmsg: %s", raw)
	}
	if el := m["ErrorList"].([]any); len(el) != 1 || el[0].(map[string]any)["To_Account"] != "rong" || el[0].(map[string]any)["ErrorCode"].(float64) != 70107 {
		t.Fatalf("ErrorList: %s", raw)
	}
	expectCode(t, e.call("openim/batchsendmsg", `{"To_Account":["rong"],"MsgRandom":1,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]}`), 90012)
}
