package sdk

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/duet-im/duet/command"
)

// Issue 12 §7: a recalled unread message leaves the unread count at once,
// not only at the next reconnect's list reload.
func TestUnreadDropsOnRecall(t *testing.T) {
	s := startServer(t)
	s.users("alice", "bob")
	ctx := ctxT(t)
	a := s.login(t, "alice", "phone", "", MQTT5)
	b := s.login(t, "bob", "phone", "", MQTT5)
	b.rec.waitRefreshes(1)
	var keys []string
	for i := range 3 {
		k, err := a.SendText(ctx, "bob", fmt.Sprintf("m%d", i))
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	b.rec.waitMsgs(3)
	unread := func(want int) {
		t.Helper()
		checkFor(t, 10*time.Second, func() error {
			c, _ := b.rec.contact("alice")
			cs, _ := b.GetRecentContacts(ctx)
			if c.Unread != want || len(cs) != 1 || cs[0].Unread != want {
				return fmt.Errorf("unread: reported %d, stored %+v; want %d", c.Unread, cs, want)
			}
			return nil
		})
	}
	unread(3)
	if err := a.Withdraw(ctx, "bob", keys[1]); err != nil {
		t.Fatal(err)
	}
	unread(2)
	if err := a.Withdraw(ctx, "bob", keys[2]); err != nil { // the last message
		t.Fatal(err)
	}
	unread(1)
	if n, err := b.TotalUnread(ctx); err != nil || n != 1 {
		t.Fatalf("TotalUnread %d %v, want 1", n, err)
	}
}

// Issue 12 §7: history paged back from a message the server no longer has
// (its LastMsgKey answers 90054) is asked for again by time.
func TestHistoryBeforeExpiredMessage(t *testing.T) {
	s := startServer(t)
	s.users("alice", "bob")
	ctx := ctxT(t)
	b := s.login(t, "bob", "phone", "", MQTT5)
	b.rec.waitRefreshes(1)
	caller := &command.Caller{UserID: "alice", Device: "alice:tool", Transport: command.MQTT}
	for i := range 3 {
		r := s.svc.Exec(ctx, caller, "openim/sendmsg", []byte(fmt.Sprintf(
			`{"To_Account":"bob","MsgRandom":%d,"MsgSeq":%d,"MsgLifeTime":60,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"short %d"}}]}`, i+1, i+1, i)))
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	msgs := b.rec.waitMsgs(3) // seen live: stored, but no range is known complete
	s.advance(2 * time.Minute)
	if n, err := s.store.Sweep(s.now(), 0); err != nil || n == 0 {
		t.Fatalf("sweep: %d %v", n, err)
	}
	h, err := b.GetMessagesBefore(ctx, "alice", 10, msgs[2])
	if err != nil || !reflect.DeepEqual(texts(h), []string{"short 0", "short 1"}) {
		t.Fatalf("history before an expired message: %q %v", texts(h), err)
	}
}

// Issue 12 §7: the SDK connects over WebSocket (ws://host:port/mqtt), as
// the server serves it, with either MQTT version.
func TestWebSocket(t *testing.T) {
	s := startServer(t)
	if s.wsAddr == "" {
		t.Fatal("no WebSocket listener")
	}
	s.users("alice", "bob")
	for _, pr := range protocols {
		t.Run(pr.name, func(t *testing.T) {
			a := s.login(t, "alice", "ws-"+pr.name, "", pr.p, func(o *Options) { o.Addr = "ws://" + s.wsAddr + "/mqtt" })
			b := s.login(t, "bob", "ws-"+pr.name, "", pr.p, func(o *Options) { o.Addr = "ws://" + s.wsAddr + "/mqtt" })
			b.rec.waitRefreshes(1)
			if _, err := a.SendText(ctxT(t), "bob", "over ws "+pr.name); err != nil {
				t.Fatal(err)
			}
			checkFor(t, 10*time.Second, func() error {
				_, got, _ := b.rec.snapshot()
				if n := len(got); n == 0 || got[n-1].Text() != "over ws "+pr.name {
					return fmt.Errorf("bob got %q", texts(got))
				}
				return nil
			})
		})
	}
}
