package command

import (
	"context"
	"strings"
	"testing"
)

// Exec decodes a body once: the command gets its typed request and the
// reply its ReqId, from the same decode. Every refusal made after the body
// was seen still carries the ReqId (a client matches replies by it), keeps
// the command's own code for a body that is not an object, and the admin
// gates refuse before the body counts.
func TestExecDecodesOnce(t *testing.T) {
	f := newFixture(t, nil, "alice", "bob")
	var raw []byte
	f.svc.Register("test/raw", func(_ context.Context, _ *Caller, body []byte) (any, error) {
		raw = body
		return nil, nil
	})
	text := `"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]`
	user := Caller{UserID: "alice", Device: "alice:phone", Transport: MQTT}
	admin := Caller{UserID: "administrator", Admin: true, Transport: REST}
	adminMQTT := Caller{UserID: "administrator", Admin: true, Device: "administrator:tool", Transport: MQTT}
	for _, tc := range []struct {
		name    string
		caller  Caller
		command string
		body    string
		reqID   string
		code    int // 0: OK
		info    string
	}{
		{"sent", user, "openim/sendmsg", `{"ReqId":"r1","To_Account":"bob","MsgRandom":1,` + text + `}`, "r1", 0, ""},
		{"numeric ReqId keeps its text", user, "openim/sendmsg", `{"ReqId":1.50e3,"To_Account":"bob","MsgRandom":2,` + text + `}`, "1.50e3", 0, ""},
		{"ReqId spelled otherwise is not one", user, "openim/sendmsg", `{"reqid":"r","To_Account":"bob","MsgRandom":3,` + text + `}`, "", 0, ""},
		{"field refused", user, "openim/sendmsg", `{"ReqId":"r2","To_Account":"bob","MsgRandom":"x",` + text + `}`, "r2", CodeMsgRandom, "MsgRandom"},
		{"field name in another case", user, "openim/sendmsg", `{"ReqId":"r3","to_account":"bob","msgrandom":"x",` + text + `}`, "r3", CodeMsgRandom, "MsgRandom"},
		{"unknown command", user, "openim/nosuch", `{"ReqId":"r4"}`, "r4", CodeUnknownCommand, "unknown command"},
		{"not valid UTF-8", user, "openim/sendmsg", "{\"ReqId\":\"r5\",\"To_Account\":\"b\xffb\"}", "r5", CodeJSON, "UTF-8"},
		{"malformed JSON", user, "openim/sendmsg", `{"ReqId":"r6",`, "", CodeJSON, "Fail to Parse json"},
		{"openim body not an object", user, "openim/sendmsg", `[{"ReqId":"r7"}]`, "", CodeJSON, "JSON object"},
		{"sns body not an object", user, "sns/friend_get", `"x"`, "", CodeSNSParam, "JSON object"},
		{"profile body not an object", user, "profile/portrait_get", `[]`, "", CodeProfileParam, "JSON object"},
		{"recentcontact body not an object", user, "recentcontact/get_list", `1`, "", CodeContactParam, "JSON object"},
		{"mute body not an object", user, "openconfigsvr/getnospeaking", ``, "", CodeMuteParam, "JSON object"},
		{"account body not an object", admin, "im_open_login_svc/account_check", `[]`, "", CodeAccountParam, "JSON object"},
		{"admin gate before the body", user, "im_open_login_svc/account_check", `[]`, "", CodeAccountNeedsAdmin, "admin"},
		{"admin gate keeps the ReqId", user, "openim/batchsendmsg", `{"ReqId":"r8"}`, "r8", CodeOpenIMNeedsAdmin, "admin"},
		{"sync gate before the body", admin, "openim/sync", `[]`, "", CodeBadPacket, "MQTT"},
		{"sns actor", user, "sns/friend_get", `{"ReqId":"r9","From_Account":"bob","StartIndex":0}`, "r9", CodeSNSNeedsAdmin, "admin"},
		{"sns peers", adminMQTT, "sns/friend_delete", `{"ReqId":"r10","From_Account":"alice","To_Account":[]}`, "r10", CodeSNSParam, "To_Account"},
		{"REST has no ReqId", admin, "openim/sendmsg", `{"ReqId":"r11","From_Account":"alice","To_Account":"bob","MsgRandom":4,` + text + `}`, "", 0, ""},
		{"raw handler over MQTT", user, "test/raw", `{"ReqId":"r12","x":1}`, "r12", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.caller
			r := f.svc.Exec(context.Background(), &c, tc.command, []byte(tc.body))
			if r.ReqID != tc.reqID {
				t.Errorf("ReqID %q, want %q", r.ReqID, tc.reqID)
			}
			switch {
			case tc.code == 0 && r.Err != nil:
				t.Fatalf("refused: %v", r.Err)
			case tc.code != 0 && r.Err == nil:
				t.Fatalf("accepted, want %d", tc.code)
			case tc.code != 0 && (r.Err.Code != tc.code || !strings.Contains(r.Err.Info, tc.info)):
				t.Fatalf("refused %v, want %d mentioning %q", r.Err, tc.code, tc.info)
			}
		})
	}
	if string(raw) != `{"ReqId":"r12","x":1}` {
		t.Errorf("the raw handler got %q", raw)
	}
}

// A batch's copies share one decode of the message: each valid recipient
// gets the same refusal when the message is invalid, and a valid message
// reaches every recipient once.
func TestBatchDecodesOnce(t *testing.T) {
	f := newFixture(t, nil, "alice", "bob", "carol")
	admin := &Caller{UserID: "administrator", Admin: true, Transport: REST}
	text := `"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]`
	r := f.svc.Exec(context.Background(), admin, "openim/batchsendmsg", []byte(`{"To_Account":["bob","carol","bob"],"MsgRandom":"x",`+text+`}`))
	if r.Err == nil || r.Err.Code != CodeMsgRandom {
		t.Fatalf("invalid batch: %+v, want %d", r, CodeMsgRandom)
	}
	r = f.svc.Exec(context.Background(), admin, "openim/batchsendmsg", []byte(`{"From_Account":"alice","To_Account":["bob","carol","bob","nobody"],"MsgRandom":7,`+text+`}`))
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	res := r.Result.(batchResult)
	if res.MsgKey == "" || len(res.ErrorList) != 1 || res.ErrorList[0].To != "nobody" || res.ErrorList[0].ErrorCode != CodeAccountNotExist {
		t.Fatalf("result %+v", res)
	}
	for _, u := range []string{"bob", "carol"} {
		if last, err := f.st.LastSeq(u); err != nil || last != 1 {
			t.Fatalf("%s's timeline ends at %d (%v), want the one copy", u, last, err)
		}
	}
}
