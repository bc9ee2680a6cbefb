package broker_test

import (
	"sync/atomic"
	"testing"
	"time"
)

// fixedClock only moves when the test moves it, so a test can place two
// sends in one second or in two.
type fixedClock struct{ ns atomic.Int64 }

func newFixedClock() *fixedClock {
	c := &fixedClock{}
	// 100 ms past the start of a second.
	c.ns.Store(time.Now().Truncate(time.Second).Add(time.Second + 100*time.Millisecond).UnixNano())
	return c
}

func (c *fixedClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fixedClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// PROTOCOL §3 over MQTT: a send that reuses a MsgRandom (no MsgSeq) with
// another text 1.2 s later is a new message — delivered and in history with
// its own MsgKey — while the same text again, or any text within the same
// second, is a resend: the original MsgKey, nothing stored or delivered.
func TestReusedRandomIsANewMessage(t *testing.T) {
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			clock := newFixedClock()
			s := startServer(t, serverOpts{clock: clock.Now})
			s.users("alice", "bob")
			alice := s.connect("alice", connectOpts{v5: v.v5})
			alice.syncComplete()
			bob := s.connect("bob", connectOpts{v5: v.v5})
			bob.syncComplete()
			text := func(s string) map[string]any {
				return map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": s}}
			}

			first := alice.send("bob", 1287657, text("first"))
			clock.Advance(1200 * time.Millisecond)
			second := alice.send("bob", 1287657, text("second"))
			if second.str("MsgKey") == first.str("MsgKey") {
				t.Fatalf("a different message that reuses MsgRandom got the first's MsgKey %s", first.str("MsgKey"))
			}
			// True resends: the same text later, another text in the same second.
			clock.Advance(1200 * time.Millisecond)
			if r := alice.send("bob", 1287657, text("first")); r.str("MsgKey") != first.str("MsgKey") {
				t.Fatalf("resend of the first text: MsgKey %s, want %s", r.str("MsgKey"), first.str("MsgKey"))
			}
			third := alice.send("bob", 1287657, text("third"))
			clock.Advance(300 * time.Millisecond)
			if r := alice.send("bob", 1287657, text("fourth")); r.str("MsgKey") != third.str("MsgKey") {
				t.Fatalf("another text within the same second: MsgKey %s, want %s", r.str("MsgKey"), third.str("MsgKey"))
			}
			barrier := alice.send("bob", 99, text("barrier"))

			for _, want := range []event{first, second, third, barrier} {
				if e := bob.nextMsg(); e.str("MsgKey") != want.str("MsgKey") {
					t.Fatalf("bob got %v, want MsgKey %s", e, want.str("MsgKey"))
				}
			}
			page, _ := bob.request("openim/getmsg", map[string]any{"Peer_Account": "alice", "MaxTime": clock.Now().Unix() + 10})
			list, _ := page["MsgList"].([]any)
			got := map[string]string{}
			for _, it := range list {
				m := event(it.(map[string]any))
				got[m.str("MsgKey")] = m["MsgBody"].([]any)[0].(map[string]any)["MsgContent"].(map[string]any)["Text"].(string)
			}
			want := map[string]string{first.str("MsgKey"): "first", second.str("MsgKey"): "second", third.str("MsgKey"): "third", barrier.str("MsgKey"): "barrier"}
			if len(got) != len(want) {
				t.Fatalf("history %v, want %v", got, want)
			}
			for k, txt := range want {
				if got[k] != txt {
					t.Fatalf("history %v, want %v", got, want)
				}
			}
		})
	}
}
