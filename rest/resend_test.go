package rest_test

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// PROTOCOL §3's resend rule over REST: a send with the same sender,
// recipient and MsgRandom within 24 hours is the same message — answered
// with the original MsgKey and stored once — only when it is the same
// request: the same MsgSeq if it gives one; without MsgSeq, the same
// MsgBody or any body within the same second. A different message that
// merely reuses a MsgRandom is stored as a new one.

// roam is the conversation's history as admin_getroammsg gives it: the
// MsgKeys and texts, oldest first.
func (e *env) roam(a, b string) (keys, texts []string) {
	e.t.Helper()
	r := e.call("openim/admin_getroammsg", fmt.Sprintf(`{"Operator_Account":%q,"Peer_Account":%q,"MaxCnt":100,"MinTime":0,"MaxTime":%d}`,
		a, b, e.clock().Unix()+1))
	if code(r) != 0 {
		e.t.Fatalf("admin_getroammsg: %v", r)
	}
	list, _ := r["MsgList"].([]any)
	for _, it := range list {
		m := it.(map[string]any)
		keys = append(keys, m["MsgKey"].(string))
		body := m["MsgBody"].([]any)
		texts = append(texts, body[0].(map[string]any)["MsgContent"].(map[string]any)["Text"].(string))
	}
	return keys, texts
}

// atSecond moves the test clock to 100 ms past the start of a second.
func (e *env) atSecond() {
	e.mu.Lock()
	e.now = e.now.Truncate(time.Second).Add(time.Second + 100*time.Millisecond)
	e.mu.Unlock()
}

// A send of the resend tables: after waiting `after`, the request with text
// and MsgSeq (-1: none); same says whether it must be taken as a resend of
// the table's first send.
type resendStep struct {
	after time.Duration
	seq   int
	text  string
	same  bool
}

var resendCases = []struct {
	name  string
	steps []resendStep
	want  []string // the history's texts afterwards
}{
	{"different text 1.2 s apart, no MsgSeq (issue 12)",
		[]resendStep{{0, -1, "first", true}, {1200 * time.Millisecond, -1, "second", false}}, []string{"first", "second"}},
	{"same text 1.2 s apart, no MsgSeq",
		[]resendStep{{0, -1, "once", true}, {1200 * time.Millisecond, -1, "once", true}}, []string{"once"}},
	{"same text an hour apart, no MsgSeq",
		[]resendStep{{0, -1, "once", true}, {time.Hour, -1, "once", true}}, []string{"once"}},
	{"different text within the same second, no MsgSeq (Tencent's rule)",
		[]resendStep{{0, -1, "first", true}, {800 * time.Millisecond, -1, "other", true}}, []string{"first"}},
	{"same MsgSeq, different text 1.2 s apart",
		[]resendStep{{0, 7, "first", true}, {1200 * time.Millisecond, 7, "other", true}}, []string{"first"}},
	{"different MsgSeq, same text and second",
		[]resendStep{{0, 7, "same", true}, {0, 8, "same", false}}, []string{"same", "same"}},
	{"a resend of the first after a second message",
		[]resendStep{{0, -1, "A", true}, {1200 * time.Millisecond, -1, "B", false}, {1200 * time.Millisecond, -1, "A", true},
			{1200 * time.Millisecond, -1, "C", false}, {1200 * time.Millisecond, -1, "A", true}}, []string{"A", "B", "C"}},
	{"MsgSeq 0 given is not the same as no MsgSeq",
		[]resendStep{{0, 0, "zero", true}, {1200 * time.Millisecond, -1, "none", false}, {1200 * time.Millisecond, 0, "zero again", true}}, []string{"zero", "none"}},
	{"a day later the same text is a new message",
		[]resendStep{{0, -1, "daily", true}, {24*time.Hour + time.Second, -1, "daily", false}}, []string{"daily", "daily"}},
}

func TestSendmsgResendRule(t *testing.T) {
	for _, tc := range resendCases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOpts{fixed: true})
			e.users("alice", "bob")
			e.atSecond()
			var first string
			keys := map[string]bool{}
			for i, st := range tc.steps {
				e.advance(st.after)
				seq := ""
				if st.seq >= 0 {
					seq = fmt.Sprintf(`"MsgSeq":%d,`, st.seq)
				}
				r := e.call("openim/sendmsg", fmt.Sprintf(`{"From_Account":"alice","To_Account":"bob",%s"MsgRandom":1287657,"MsgBody":%s}`, seq, textBody(st.text)))
				if code(r) != 0 {
					t.Fatalf("send %d: %v", i, r)
				}
				k, _ := r["MsgKey"].(string)
				if i == 0 {
					first = k
				}
				if st.same != (k == first) {
					t.Fatalf("send %d (%q): MsgKey %s, first %s: want the same: %v", i, st.text, k, first, st.same)
				}
				if !st.same && keys[k] {
					t.Fatalf("send %d (%q): a new message got the MsgKey %s of an earlier one", i, st.text, k)
				}
				keys[k] = true
			}
			hk, texts := e.roam("alice", "bob")
			if fmt.Sprint(texts) != fmt.Sprint(tc.want) {
				t.Fatalf("history holds %q, want %q", texts, tc.want)
			}
			for _, k := range hk {
				if !keys[k] {
					t.Fatalf("history has MsgKey %s, which no reply named (%v)", k, keys)
				}
			}
		})
	}
}

// batchsendmsg applies the rule per recipient: a repeated batch without
// MsgSeq is not sent again, a different message with the batch's MsgRandom is.
func TestBatchsendmsgResendRule(t *testing.T) {
	cases := []struct {
		name   string
		after  time.Duration
		second string
		seq    string
		want   []string
	}{
		{"repeated 1.2 s later", 1200 * time.Millisecond, "news", "", []string{"news"}},
		{"repeated an hour later", time.Hour, "news", "", []string{"news"}},
		{"different text 1.2 s later", 1200 * time.Millisecond, "more news", "", []string{"news", "more news"}},
		{"different text within the same second", 500 * time.Millisecond, "more news", "", []string{"news"}},
		{"same MsgSeq, different text", 1200 * time.Millisecond, "more news", `"MsgSeq":9,`, []string{"news"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOpts{fixed: true})
			e.users("alice", "bob", "carol")
			e.atSecond()
			batch := func(text string) string {
				r := e.call("openim/batchsendmsg", fmt.Sprintf(`{"From_Account":"alice","To_Account":["bob","carol"],%s"MsgRandom":1287657,"MsgBody":%s}`, tc.seq, textBody(text)))
				if code(r) != 0 || r["ErrorList"] != nil {
					t.Fatalf("batchsendmsg: %v", r)
				}
				return r["MsgKey"].(string)
			}
			k1 := batch("news")
			e.advance(tc.after)
			k2 := batch(tc.second)
			if resend := len(tc.want) == 1; resend != (k1 == k2) {
				t.Fatalf("MsgKeys %s then %s; want the same: %v", k1, k2, resend)
			}
			for _, to := range []string{"bob", "carol"} {
				if _, texts := e.roam("alice", to); fmt.Sprint(texts) != fmt.Sprint(tc.want) {
					t.Fatalf("%s's history holds %q, want %q", to, texts, tc.want)
				}
			}
		})
	}
}

// importmsg's first-import-wins rule against the same case: the same
// MsgRandom with another body or another time is another message; only the
// same (MsgSeq, MsgRandom, MsgTimeStamp) — or, without MsgSeq, the same
// message again — is a duplicate.
func TestImportmsgReusedRandom(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.users("alice", "bob")
	ts := time.Now().Unix() - 600
	imp := func(seq string, at int64, text string) bool {
		t.Helper()
		r := e.call("openim/importmsg", fmt.Sprintf(`{"SyncFromOldSystem":2,"From_Account":"alice","To_Account":"bob",%s"MsgRandom":1287657,"MsgTimeStamp":%d,"MsgBody":%s}`, seq, at, textBody(text)))
		if code(r) != 0 {
			t.Fatalf("importmsg: %v", r)
		}
		return r["Duplicate"] == float64(1)
	}
	steps := []struct {
		seq  string
		at   int64
		text string
		dup  bool
	}{
		{"", ts, "first", false},
		{"", ts, "second", false},           // same second, other body
		{"", ts + 1, "first", false},        // same body, other second
		{"", ts, "first", true},             // the same line again
		{`"MsgSeq":5,`, ts, "x", false},     // with MsgSeq
		{`"MsgSeq":5,`, ts, "y", true},      // same triple: first import wins
		{`"MsgSeq":5,`, ts + 2, "y", false}, // same MsgSeq, other time
	}
	for i, st := range steps {
		if dup := imp(st.seq, st.at, st.text); dup != st.dup {
			t.Fatalf("import %d (%s %d %q): Duplicate %v, want %v", i, st.seq, st.at, st.text, dup, st.dup)
		}
	}
	// Within a second history is ordered by MsgSeq, not by arrival.
	_, texts := e.roam("alice", "bob")
	slices.Sort(texts)
	if want := []string{"first", "first", "second", "x", "y"}; !slices.Equal(texts, want) {
		t.Fatalf("history holds %q, want %q", texts, want)
	}
}
