package broker_test

// The sns and recentcontact commands of issue 12 §3 over real MQTT clients:
// a device asks for itself (From_Account implied by its login).

import (
	"fmt"
	"strings"
	"testing"
)

// recentcontact/delete with "type" in lower case (as dobyte/tencent-im
// sends it) removes the conversation over MQTT as over REST.
func TestMQTTRecentContactDeleteFieldCase(t *testing.T) {
	s := startServer(t, serverOpts{})
	s.users("alice", "bob")
	alice := s.connect("alice", connectOpts{v5: true})
	alice.send("bob", 1)
	list := func() string {
		r, _ := alice.request("recentcontact/get_list", map[string]any{"TimeStamp": 0, "StartIndex": 0, "TopTimeStamp": 0, "TopStartIndex": 0, "AssistFlags": 7})
		if r.str("ActionStatus") != "OK" {
			t.Fatalf("get_list: %v", r)
		}
		return fmt.Sprint(r["SessionItem"])
	}
	if !strings.Contains(list(), "bob") {
		t.Fatalf("alice's conversations: %s", list())
	}
	r, _ := alice.request("recentcontact/delete", map[string]any{"type": 1, "to_account": "bob"})
	if r.str("ActionStatus") != "OK" {
		t.Fatalf("recentcontact/delete with \"type\": %v", r)
	}
	if l := list(); strings.Contains(l, "bob") {
		t.Fatalf("bob still listed: %s", l)
	}
}

// friend_get_list and the friend groups over MQTT.
func TestMQTTFriendGroups(t *testing.T) {
	s := startServer(t, serverOpts{})
	s.users("alice", "bob", "carol")
	alice := s.connect("alice", connectOpts{v5: true})
	ok := func(cmd string, body map[string]any) event {
		t.Helper()
		r, _ := alice.request(cmd, body)
		if r.str("ActionStatus") != "OK" {
			t.Fatalf("%s: %v", cmd, r)
		}
		return r
	}
	ok("sns/friend_import", map[string]any{"AddFriendItem": []any{map[string]any{"To_Account": "bob", "AddSource": "AddSource_Type_X", "Remark": "B"}}})
	r := ok("sns/group_add", map[string]any{"GroupName": []string{"work"}, "To_Account": []string{"bob", "carol"}})
	if s := fmt.Sprint(r["ResultItem"]); !strings.Contains(s, "ResultCode:32216") || r.num("CurrentSequence") != 1 {
		t.Fatalf("group_add: %v", r)
	}
	r = ok("sns/group_get", map[string]any{"NeedFriend": "Need_Friend_Type_Yes"})
	if s := fmt.Sprint(r["ResultItem"]); s != "[map[FriendNumber:1 GroupName:work To_Account:[bob]]]" {
		t.Fatalf("group_get: %s", s)
	}
	r = ok("sns/friend_get_list", map[string]any{"To_Account": []string{"bob"}, "TagList": []string{"Tag_SNS_IM_Remark", "Tag_SNS_IM_Group"}})
	if s := fmt.Sprint(r["InfoItem"]); s != "[map[ResultCode:0 ResultInfo: SnsProfileItem:[map[Tag:Tag_SNS_IM_Remark Value:B] map[Tag:Tag_SNS_IM_Group Value:[work]]] To_Account:bob]]" {
		t.Fatalf("friend_get_list: %s", s)
	}
	// Acting for someone else needs an admin.
	if r, _ := alice.request("sns/group_get", map[string]any{"From_Account": "bob"}); r.num("ErrorCode") != 30004 {
		t.Fatalf("group_get for bob: %v", r)
	}
	ok("sns/group_delete", map[string]any{"GroupName": []string{"work"}})
	r = ok("sns/group_get", map[string]any{})
	if s := fmt.Sprint(r["ResultItem"]); s != "[]" || r.num("CurrentSequence") != 2 {
		t.Fatalf("group_get after delete: %v", r)
	}
}
