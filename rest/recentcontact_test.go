package rest_test

import (
	"testing"
	"time"
)

// sessions returns get_list's SessionItem as (To_Account, TopFlag) pairs, in order.
func sessions(t *testing.T, m map[string]any) [][2]any {
	t.Helper()
	expectCode(t, m, 0)
	items, _ := m["SessionItem"].([]any)
	out := make([][2]any, 0, len(items))
	for _, it := range items {
		s := it.(map[string]any)
		out = append(out, [2]any{s["To_Account"], s["TopFlag"]})
	}
	return out
}

// TestGoldenRecentContactTop runs Tencent's published recentcontact/top
// example over HTTP. Its second item is a group conversation: Duet has no
// groups, so such items are ignored and the C2C item is pinned.
func TestGoldenRecentContactTop(t *testing.T) {
	e := newEnv(t, envOpts{fixed: true})
	e.users("id1", "id2", "id3", "id4")
	for _, to := range []string{"id2", "id4"} {
		expectCode(t, e.call("openim/sendmsg", `{"From_Account":"id1","To_Account":"`+to+`","MsgRandom":1,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]}`), 0)
		e.advance(time.Second) // id4's message is the newer
	}
	_, _, raw := e.post("recentcontact/top", e.query(admin),
		`{"From_Account":"id1","OperationType":1,"RecentContactItem":[{"Type":1,"To_Account":"id2"},{"Type":2,"GroupId":"group1"}]}`)
	sameJSON(t, raw, `{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","ErrorDisplay":""}`)

	// Tencent's get_list example (AssistFlags 7): the pinned conversation
	// first, although id4's message is newer.
	list := `{"From_Account":"id1","TimeStamp":0,"StartIndex":0,"TopTimeStamp":0,"TopStartIndex":0,"AssistFlags":7}`
	got := sessions(t, e.call("recentcontact/get_list", list))
	if len(got) != 2 || got[0] != [2]any{"id2", 1.0} || got[1] != [2]any{"id4", 0.0} {
		t.Fatalf("get_list after pin: %v, want id2 pinned first, then id4", got)
	}
	// The peer's list is not touched: pins are the owner's.
	if got := sessions(t, e.call("recentcontact/get_list", `{"From_Account":"id2","AssistFlags":1}`)); len(got) != 1 || got[0][1] != 0.0 {
		t.Fatalf("id2's list: %v, want id1 unpinned", got)
	}

	expectCode(t, e.call("recentcontact/top", `{"From_Account":"id1","OperationType":2,"RecentContactItem":[{"Type":1,"To_Account":"id2"}]}`), 0)
	got = sessions(t, e.call("recentcontact/get_list", list))
	if len(got) != 2 || got[0] != [2]any{"id4", 0.0} || got[1] != [2]any{"id2", 0.0} {
		t.Fatalf("get_list after unpin: %v, want newest first, none pinned", got)
	}
	// Unpinning what is not pinned (or not listed) is not an error.
	expectCode(t, e.call("recentcontact/top", `{"From_Account":"id1","OperationType":2,"RecentContactItem":[{"Type":1,"To_Account":"id3"}]}`), 0)

	// A deleted conversation loses its pin: its next message brings it
	// back unpinned.
	expectCode(t, e.call("recentcontact/top", `{"From_Account":"id1","OperationType":1,"RecentContactItem":[{"Type":1,"To_Account":"id2"}]}`), 0)
	expectCode(t, e.call("recentcontact/delete", `{"From_Account":"id1","Type":1,"To_Account":"id2"}`), 0)
	e.advance(time.Second)
	expectCode(t, e.call("openim/sendmsg", `{"From_Account":"id2","To_Account":"id1","MsgRandom":2,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"back"}}]}`), 0)
	got = sessions(t, e.call("recentcontact/get_list", list))
	if len(got) != 2 || got[0] != [2]any{"id2", 0.0} {
		t.Fatalf("get_list after delete and a new message: %v, want id2 first (newest), unpinned", got)
	}
}

func TestRecentContactTopBadInput(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.users("alice", "bob", "carol")
	expectCode(t, e.call("openim/sendmsg", `{"From_Account":"alice","To_Account":"bob","MsgRandom":1,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]}`), 0)
	for _, c := range []struct {
		name, body string
		code       int
	}{
		{"not an object", `[1]`, 50002},
		{"unknown owner", `{"From_Account":"nobody","OperationType":1,"RecentContactItem":[{"Type":1,"To_Account":"bob"}]}`, 50001},
		{"no OperationType", `{"From_Account":"alice","RecentContactItem":[{"Type":1,"To_Account":"bob"}]}`, 50002},
		{"OperationType 3", `{"From_Account":"alice","OperationType":3,"RecentContactItem":[{"Type":1,"To_Account":"bob"}]}`, 50002},
		{"no items", `{"From_Account":"alice","OperationType":1}`, 50002},
		{"empty items", `{"From_Account":"alice","OperationType":1,"RecentContactItem":[]}`, 50002},
		{"items not an array", `{"From_Account":"alice","OperationType":1,"RecentContactItem":{"Type":1}}`, 50002},
		{"Type 3", `{"From_Account":"alice","OperationType":1,"RecentContactItem":[{"Type":3,"To_Account":"bob"}]}`, 50002},
		{"no Type", `{"From_Account":"alice","OperationType":1,"RecentContactItem":[{"To_Account":"bob"}]}`, 50002},
		{"bad To_Account", `{"From_Account":"alice","OperationType":1,"RecentContactItem":[{"Type":1,"To_Account":"a b"}]}`, 50002},
		{"no conversation: all or nothing", `{"From_Account":"alice","OperationType":1,"RecentContactItem":[{"Type":1,"To_Account":"bob"},{"Type":1,"To_Account":"carol"}]}`, 50002},
	} {
		t.Run(c.name, func(t *testing.T) {
			expectCode(t, e.call("recentcontact/top", c.body), c.code)
		})
	}
	if got := sessions(t, e.call("recentcontact/get_list", `{"From_Account":"alice","AssistFlags":1}`)); len(got) != 1 || got[0][1] != 0.0 {
		t.Fatalf("a refused request pinned something: %v", got)
	}
	_, m, _ := e.post("recentcontact/top", e.query("bob"), `{"From_Account":"alice","OperationType":1,"RecentContactItem":[{"Type":1,"To_Account":"bob"}]}`)
	expectCode(t, m, 50003)
}
