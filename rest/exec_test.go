package rest_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/internal/logcapture"
)

// A handler that panics gets its caller 91000 and leaves the server
// serving (issue 13); the next call works.
func TestHandlerPanic(t *testing.T) {
	log, lines := logcapture.New(slog.LevelInfo)
	e := newEnv(t, envOpts{log: log})
	e.users("alice", "bob")
	e.svc.Register("test/panic", func(_ context.Context, _ *command.Caller, body []byte) (any, error) {
		return []int{}[len(body)], nil // index out of range: a real bug's panic
	})
	for i := 0; i < 2; i++ {
		if m := e.call("test/panic", `{}`); code(m) != command.CodeInternal {
			t.Fatalf("call %d: %v, want 91000", i, m)
		}
	}
	// The operator gets the panic with its stack, once per call.
	if got := lines.Matching("level=ERROR", "command panicked", "command=test/panic", "index out of range", "exec_test.go"); len(got) != 2 {
		t.Fatalf("%d panic lines with a stack, want 2:\n%s", len(got), strings.Join(lines.Lines(), "\n"))
	}
	expectCode(t, e.call("openim/sendmsg", `{"From_Account":"alice","To_Account":"bob","MsgRandom":1,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"x"}}]}`), 0)
}

// Once the store is closed, every command answers 20005 (retry) — reads
// (which make Pebble panic on a closed database) and writes alike — and
// nothing takes the process down (issue 13).
func TestClosedStoreAnswers20005(t *testing.T) {
	text := `[{"MsgType":"TIMTextElem","MsgContent":{"Text":"x"}}]`
	cases := []struct{ cmd, body string }{
		{"openim/sendmsg", `{"From_Account":"alice","To_Account":"bob","MsgRandom":7,"MsgBody":` + text + `}`},
		{"openim/batchsendmsg", `{"From_Account":"alice","To_Account":["bob"],"MsgRandom":7,"MsgBody":` + text + `}`},
		{"openim/importmsg", `{"SyncFromOldSystem":1,"From_Account":"alice","To_Account":"bob","MsgRandom":8,"MsgTimeStamp":1557387418,"MsgBody":` + text + `}`},
		{"openim/admin_getroammsg", `{"From_Account":"alice","To_Account":"bob","MaxCnt":10,"MinTime":0,"MaxTime":2000000000}`},
		{"openim/get_c2c_unread_msg_num", `{"To_Account":"bob"}`},
		{"im_open_login_svc/account_import", `{"UserID":"carol"}`},
		{"im_open_login_svc/account_check", `{"CheckItem":[{"UserID":"alice"}]}`},
		{"profile/portrait_get", `{"To_Account":["alice"],"TagList":["Tag_Profile_IM_Nick"]}`},
		{"profile/portrait_set", `{"From_Account":"alice","ProfileItem":[{"Tag":"Tag_Profile_IM_Nick","Value":"A"}]}`},
		{"sns/friend_add", `{"From_Account":"alice","AddFriendItem":[{"To_Account":"bob","AddSource":"AddSource_Type_X"}]}`},
		{"sns/friend_get", `{"From_Account":"alice","StartIndex":0}`},
		{"openconfigsvr/setnospeaking", `{"Set_Account":"alice","C2CmsgNospeakingTime":60}`},
		{"recentcontact/get_list", `{"From_Account":"alice","TimeStamp":0,"StartIndex":0,"TopTimeStamp":0,"TopStartIndex":0,"AssistFlags":3}`},
	}
	e := newEnv(t, envOpts{})
	e.users("alice", "bob")
	// Each command works while the store is open, so a 20005 below is the
	// closed store's doing.
	if err := e.st.Close(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.cmd, func(t *testing.T) {
			expectCode(t, e.call(tc.cmd, tc.body), command.CodeRetry)
		})
	}
}

// A refused REST call is logged once, at info, as one line with the
// identifier, the command, the ErrorCode and the ErrorInfo — not the body
// (issue 16). Before, only 6xxxx/7xxxx refusals were logged, at debug.
func TestRefusalLoggedOnce(t *testing.T) {
	const secret = "the-private-message-text"
	log, lines := logcapture.New(slog.LevelDebug)
	e := newEnv(t, envOpts{log: log})
	e.users("alice")
	expectCode(t, e.call("openim/sendmsg", `{"From_Account":"alice","To_Account":"nobody","MsgRandom":1,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"`+secret+`"}}]}`), 90012)
	got := lines.Matching("request refused")
	if len(got) != 1 {
		t.Fatalf("%d refusal lines, want 1:\n%s", len(got), strings.Join(lines.Lines(), "\n"))
	}
	for _, want := range []string{"level=INFO", "user=" + admin, "command=openim/sendmsg", "ErrorCode=90012", "ErrorInfo=", "nobody"} {
		if !strings.Contains(got[0], want) {
			t.Errorf("log line lacks %s: %s", want, got[0])
		}
	}
	if leak := lines.Matching(secret); len(leak) > 0 {
		t.Fatalf("the log holds the message text: %s", leak)
	}
}
