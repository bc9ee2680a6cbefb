package broker_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// Messages sent within one second come back from history in the order they
// were sent, as the timeline has them: history orders a second's messages
// by MsgSeq, which the server chooses when the sender gives none. Chosen at
// random, a burst came back shuffled (the web page's scroll-back showed it).
func TestHistoryKeepsSendOrderWithinASecond(t *testing.T) {
	// The server's clock stands at the start of a second and moves a
	// millisecond per send: all the sends fall in that one second, however
	// slow the machine.
	base := time.Unix(time.Now().Unix(), 0)
	var ms atomic.Int64
	s := startServer(t, serverOpts{clock: func() time.Time { return base.Add(time.Duration(ms.Load()) * time.Millisecond) }})
	s.users("alice", "bob")
	alice := s.connect("alice", connectOpts{})
	alice.syncComplete()
	const n = 20
	for i := 1; i <= n; i++ {
		alice.send("bob", 1000+i, map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": fmt.Sprintf("burst %d", i)}})
		ms.Add(1)
	}
	page, _ := alice.request("openim/getmsg", map[string]any{"Peer_Account": "bob", "MaxCnt": n})
	list, _ := page["MsgList"].([]any)
	if len(list) != n {
		t.Fatalf("history holds %d messages, want %d: %v", len(list), n, page)
	}
	for i, m := range list {
		e := event(m.(map[string]any))
		if e.num("MsgTimeStamp") != base.Unix() {
			t.Fatalf("message %d at %d, not in the one second %d", i, e.num("MsgTimeStamp"), base.Unix())
		}
		body := e["MsgBody"].([]any)[0].(map[string]any)["MsgContent"].(map[string]any)["Text"]
		if want := fmt.Sprintf("burst %d", i+1); body != want {
			t.Fatalf("history position %d holds %q, want %q (send order)", i, body, want)
		}
	}
}
