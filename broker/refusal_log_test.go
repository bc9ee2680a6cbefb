package broker_test

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/duet-im/duet/internal/logcapture"
)

// A refused request is logged once, at info, as one line naming the user,
// the device, the command, the ErrorCode and the ErrorInfo — and never the
// request's bytes (issue 16).
func TestRefusalLoggedOnce(t *testing.T) {
	const secret = "the-private-message-text"
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			log, lines := logcapture.New(slog.LevelDebug)
			s := startServer(t, serverOpts{log: log})
			s.users("alice")
			alice := s.connect("alice", connectOpts{v5: v.v5, clientID: "alice:phone"})
			alice.syncComplete()
			r, _ := alice.request("openim/sendmsg", map[string]any{"To_Account": "nobody", "MsgRandom": 1,
				"MsgBody": []any{map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": secret}}}})
			if r.num("ErrorCode") != 20003 {
				t.Fatalf("reply %v, want 20003", r)
			}
			// The line is written before the reply: it is there now.
			got := lines.Matching("nobody")
			if len(got) != 1 {
				t.Fatalf("%d log lines mention the refused send, want 1:\n%s", len(got), strings.Join(lines.Lines(), "\n"))
			}
			for _, want := range []string{"level=INFO", "user=alice", "device=alice:phone", "command=openim/sendmsg", "ErrorCode=20003", `ErrorInfo="recipient \"nobody\" does not exist"`} {
				if !strings.Contains(got[0], want) {
					t.Errorf("log line lacks %s: %s", want, got[0])
				}
			}
			if leak := lines.Matching(secret); len(leak) > 0 {
				t.Fatalf("the log holds the message text: %s", leak)
			}
		})
	}
}
