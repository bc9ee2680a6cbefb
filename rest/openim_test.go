package rest_test

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// The openim admin commands over REST, with the reference's examples (§5,
// §12): history paging with admin_getroammsg, recall, read, unread counts
// and edit.

func textBody(s string) string {
	return fmt.Sprintf(`[{"MsgType":"TIMTextElem","MsgContent":{"Text":%q}}]`, s)
}

// §12's admin_getroammsg walk: pages go backwards from MaxTime, ascending
// inside a page, LastMsgTime/LastMsgKey naming the oldest; the next request
// sets MaxTime = LastMsgTime and LastMsgKey, until Complete is 1. Imported
// messages (importmsg) and REST sends are both there.
func TestGoldenAdminGetRoamMsg(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.users("user1", "user2")
	base := time.Now().Unix() - 3600
	var want []string
	for i := 0; i < 17; i++ {
		from, to := "user1", "user2"
		if i%2 == 1 {
			from, to = to, from
		}
		ts := base + int64(i)
		m := e.call("openim/importmsg", fmt.Sprintf(`{"SyncFromOldSystem":2,"From_Account":%q,"To_Account":%q,"MsgSeq":%d,"MsgRandom":%d,"MsgTimeStamp":%d,"MsgBody":%s,"CloudCustomData":"your cloud custom data"}`,
			from, to, 1000+i, 7000+i, ts, textBody(fmt.Sprintf("msg %d", i))))
		expectCode(t, m, 0)
		want = append(want, fmt.Sprintf("%d_%d_%d", 1000+i, 7000+i, ts))
	}
	// A REST send after the imports is in the same history.
	sent := e.call("openim/sendmsg", `{"SyncOtherMachine":1,"From_Account":"user1","To_Account":"user2","MsgRandom":99,"MsgSeq":5,"MsgBody":`+textBody("live")+`}`)
	expectCode(t, sent, 0)
	want = append(want, sent["MsgKey"].(string))

	req := fmt.Sprintf(`{"Operator_Account":"user2","Peer_Account":"user1","MaxCnt":12,"MinTime":%d,"MaxTime":%d}`, base, time.Now().Unix()+1)
	var got []string
	for pages := 0; ; pages++ {
		if pages > 3 {
			t.Fatal("paging does not end")
		}
		r := e.call("openim/admin_getroammsg", req)
		expectCode(t, r, 0)
		list := r["MsgList"].([]any)
		if int(r["MsgCnt"].(float64)) != len(list) {
			t.Fatalf("MsgCnt %v for %d messages", r["MsgCnt"], len(list))
		}
		var page []string
		for _, it := range list {
			m := it.(map[string]any)
			for _, k := range []string{"From_Account", "To_Account", "MsgSeq", "MsgRandom", "MsgTimeStamp", "MsgFlagBits", "MsgKey", "MsgBody", "CloudCustomData", "IsPeerRead"} {
				if _, ok := m[k]; !ok {
					t.Fatalf("MsgList item lacks %s: %v", k, m)
				}
			}
			page = append(page, m["MsgKey"].(string))
		}
		if oldest := list[0].(map[string]any); r["LastMsgKey"] != oldest["MsgKey"] || r["LastMsgTime"] != oldest["MsgTimeStamp"] {
			t.Fatalf("LastMsgKey/LastMsgTime %v/%v do not name the page's oldest %v", r["LastMsgKey"], r["LastMsgTime"], oldest)
		}
		got = append(page, got...)
		if r["Complete"] == float64(1) {
			break
		}
		req = fmt.Sprintf(`{"From_Account":"user2","To_Account":"user1","MaxCnt":12,"MinTime":%d,"MaxTime":%v,"LastMsgKey":%q}`,
			base, r["LastMsgTime"], r["LastMsgKey"]) // the legacy field names
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("walked history\n got %v\nwant %v", got, want)
	}
	for _, bad := range []struct {
		body string
		code int
	}{
		{`{"Operator_Account":"user2","Peer_Account":"nobody","MaxCnt":10,"MinTime":0,"MaxTime":1}`, 90003},
		{`{"Operator_Account":"nobody","Peer_Account":"user1","MaxCnt":10,"MinTime":0,"MaxTime":1}`, 90008},
		{`{"Operator_Account":"user2","Peer_Account":"user1","MinTime":0,"MaxTime":1}`, 90001},
		{`{"Operator_Account":"user2","Peer_Account":"user1","MaxCnt":"10","MinTime":0,"MaxTime":1}`, 90001},
		{`{"Operator_Account":"user2","Peer_Account":"user1","MaxCnt":10,"MinTime":0,"MaxTime":9999999999,"LastMsgKey":"1_2_3"}`, 90054},
		{`{"Operator_Account":"user2",`, 90001},
	} {
		expectCode(t, e.call("openim/admin_getroammsg", bad.body), bad.code)
	}
}

// admin_msgwithdraw (§5.5, §12's request shape), admin_set_msg_read (§5.6),
// get_c2c_unread_msg_num (§5.7) and modify_c2c_msg (§5.8).
func TestGoldenRecallReadUnreadModify(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.users("vinson", "dramon", "carol")
	var keys []string
	for i := 0; i < 3; i++ {
		r := e.call("openim/sendmsg", fmt.Sprintf(`{"From_Account":"vinson","To_Account":"dramon","MsgRandom":%d,"MsgBody":%s}`, 10+i, textBody("hi")))
		expectCode(t, r, 0)
		keys = append(keys, r["MsgKey"].(string))
	}
	_, _, raw := e.post("openim/get_c2c_unread_msg_num", e.query(admin), `{"To_Account":"dramon"}`)
	sameJSON(t, raw, `{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"AllC2CUnreadMsgNum":3}`)
	_, _, raw = e.post("openim/get_c2c_unread_msg_num", e.query(admin), `{"To_Account":"dramon","Peer_Account":["vinson","carol","nobody"]}`)
	sameJSON(t, raw, `{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,
		"C2CUnreadMsgNumList":[{"Peer_Account":"vinson","C2CUnreadMsgNum":3},{"Peer_Account":"carol","C2CUnreadMsgNum":0}],
		"ErrorList":[{"Peer_Account":"nobody","ErrorCode":70107}]}`)

	// An admin recalls any message, whatever its age.
	_, _, raw = e.post("openim/admin_msgwithdraw", e.query(admin), fmt.Sprintf(`{"From_Account": "vinson","To_Account": "dramon","MsgKey": %q}`, keys[0]))
	sameJSON(t, raw, `{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}`)
	for _, c := range []struct {
		body string
		code int
	}{
		{fmt.Sprintf(`{"From_Account":"vinson","To_Account":"dramon","MsgKey":%q}`, keys[0]), 20023},
		{`{"From_Account":"vinson","To_Account":"dramon","MsgKey":"31906_833502_1572869830"}`, 20022},
		{`{"From_Account":"vinson","To_Account":"dramon"}`, 90054},
		{`{"From_Account":"nobody","To_Account":"dramon","MsgKey":"1_1_1"}`, 90008},
		{`{"From_Account":"vinson","To_Account":"nobody","MsgKey":"1_1_1"}`, 90003},
	} {
		expectCode(t, e.call("openim/admin_msgwithdraw", c.body), c.code)
	}
	if m, _ := e.st.GetMessage("vinson", "dramon", keys[0]); m.MsgFlagBits != 8 {
		t.Fatalf("recalled message has MsgFlagBits %d", m.MsgFlagBits)
	}
	expectCode(t, e.call("openim/get_c2c_unread_msg_num", `{"To_Account":"dramon"}`), 0)
	if r := e.call("openim/get_c2c_unread_msg_num", `{"To_Account":"dramon"}`); r["AllC2CUnreadMsgNum"] != float64(2) {
		t.Fatalf("unread after recall: %v", r)
	}

	// MsgReadTime is documented as a String holding a Unix time.
	_, _, raw = e.post("openim/admin_set_msg_read", e.query(admin), fmt.Sprintf(`{"Report_Account":"dramon","Peer_Account":"vinson","MsgReadTime":"%d"}`, time.Now().Unix()+5))
	sameJSON(t, raw, `{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}`)
	if r := e.call("openim/get_c2c_unread_msg_num", `{"To_Account":"dramon"}`); r["AllC2CUnreadMsgNum"] != float64(0) {
		t.Fatalf("unread after admin_set_msg_read: %v", r)
	}
	expectCode(t, e.call("openim/admin_set_msg_read", `{"Report_Account":"dramon","Peer_Account":"nobody"}`), 90008)
	expectCode(t, e.call("openim/admin_set_msg_read", `{"Peer_Account":"vinson"}`), 90003)

	// modify_c2c_msg overwrites the given fields.
	expectCode(t, e.call("openim/modify_c2c_msg", fmt.Sprintf(`{"From_Account":"vinson","To_Account":"dramon","MsgKey":%q,"MsgBody":%s,"CloudCustomData":"edited"}`, keys[1], textBody("changed"))), 0)
	if m, _ := e.st.GetMessage("vinson", "dramon", keys[1]); !strings.Contains(string(m.MsgBody), "changed") || m.CloudCustomData != "edited" {
		t.Fatalf("modified message %s %q", m.MsgBody, m.CloudCustomData)
	}
	for _, c := range []struct {
		body string
		code int
	}{
		{fmt.Sprintf(`{"From_Account":"vinson","To_Account":"dramon","MsgKey":%q}`, keys[1]), 90001},
		{fmt.Sprintf(`{"From_Account":"vinson","To_Account":"dramon","MsgKey":%q,"MsgBody":{"x":1}}`, keys[1]), 90007},
		{fmt.Sprintf(`{"From_Account":"vinson","To_Account":"dramon","MsgKey":%q,"MsgBody":%s}`, keys[0], textBody("x")), 20023},
		{`{"From_Account":"vinson","To_Account":"dramon","MsgKey":"9_9_9","CloudCustomData":"x"}`, 20022},
	} {
		expectCode(t, e.call("openim/modify_c2c_msg", c.body), c.code)
	}
	// The timelines got withdraw and modify events after the messages.
	evs, _ := e.st.ReadTimeline("dramon", 0, 10)
	var kinds []string
	for _, ev := range evs {
		for _, k := range []string{"msg", "withdraw", "modify", "read"} {
			if strings.Contains(string(ev.Data), `"Event":"`+k+`"`) {
				kinds = append(kinds, k)
			}
		}
	}
	if strings.Join(kinds, ",") != "msg,msg,msg,withdraw,read,modify" {
		t.Fatalf("dramon's timeline: %v", kinds)
	}
}

// account_delete wipes the account's relationships in the same request
// (reference §6.1): its friends no longer list it.
func TestAccountDeleteWipesRelations(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.users("alice", "bob")
	expectCode(t, e.call("sns/friend_import", `{"From_Account":"alice","AddFriendItem":[{"To_Account":"bob","AddSource":"AddSource_Type_Test"}]}`), 0)
	check := func() string {
		r := e.call("sns/friend_check", `{"From_Account":"alice","To_Account":["bob"],"CheckType":"CheckResult_Type_Single"}`)
		items, _ := r["InfoItem"].([]any)
		if len(items) != 1 {
			t.Fatalf("friend_check %v", r)
		}
		rel, _ := items[0].(map[string]any)["Relation"].(string)
		return rel
	}
	if rel := check(); rel != "CheckResult_Type_AWithB" {
		t.Fatalf("before delete: %s", rel)
	}
	expectCode(t, e.call("im_open_login_svc/account_delete", `{"DeleteItem":[{"UserID":"bob"}]}`), 0)
	e.users("bob") // imported again: a new account with no past
	if rel := check(); rel != "CheckResult_Type_NoRelation" {
		t.Fatalf("after delete and re-import: %s", rel)
	}
}
