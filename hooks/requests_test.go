package hooks

import (
	"encoding/json"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/duet-im/duet/command"
)

// reqIDByDecoding is the ReqId by a plain decode (keys match exactly, the
// last of duplicate keys wins). command.RequestID, which the replies'
// ReqId comes from, must agree with it on every valid document.
func reqIDByDecoding(payload []byte) string {
	var m map[string]json.RawMessage
	if json.Unmarshal(payload, &m) != nil || len(m["ReqId"]) == 0 || string(m["ReqId"]) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(m["ReqId"], &s) == nil {
		return s
	}
	return string(m["ReqId"])
}

var reqIDCases = []struct {
	doc  string
	want string
}{
	{`{"ReqId":"r1","To_Account":"bob"}`, "r1"},
	{`{"To_Account":"bob","ReqId":"r2"}`, "r2"},
	{` { "MsgBody" : [{"MsgType":"TIMTextElem","MsgContent":{"Text":"{\"ReqId\":\"inner\"}"}}] , "ReqId" : "r3" } `, "r3"},
	{`{"MsgBody":{"ReqId":"nested"}}`, ""},
	{`{"ReqId":12345}`, "12345"},
	{`{"ReqId":-1.5e3,"x":true}`, "-1.5e3"},
	{`{"x":true,"ReqId":"last"}`, "last"},
	{`{"a":[1,[2,{"b":"]"}]],"ReqId":"after-arrays"}`, "after-arrays"},
	{`{"Req\u0049d":"escaped-key"}`, "escaped-key"},
	{`{"ReqId":"esc\"aped\\"}`, "esc\"aped\\"},
	{`{"ReqId":null}`, ""},
	{`{"ReqId":"first","ReqId":"second"}`, "second"},
	{`{"reqid":"other case"}`, ""},
	{`{"ReqId":"exact","reqid":"folded"}`, "exact"},
	{`{"reqid":"folded","ReqId":"exact"}`, "exact"},
	{`{}`, ""},
	{`[{"ReqId":"array"}]`, ""},
	{`"ReqId"`, ""},
	{``, ""},
	{`{"ReqId":"unterminated`, ""},
	{`{"ReqId" "no colon"}`, ""},
	{`{"x":1 "ReqId":"no comma"}`, ""},
}

func TestRequestID(t *testing.T) {
	for _, tc := range reqIDCases {
		if got := command.RequestID([]byte(tc.doc)); got != tc.want {
			t.Errorf("RequestID(%s) = %q, want %q", tc.doc, got, tc.want)
		}
	}
}

// FuzzRequestID checks command.RequestID against a plain decode on every
// valid document the fuzzer finds.
func FuzzRequestID(f *testing.F) {
	for _, tc := range reqIDCases {
		f.Add([]byte(tc.doc))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		got := command.RequestID(doc)
		if !json.Valid(doc) {
			return // malformed: any answer will do, the command reports the error
		}
		if want := reqIDByDecoding(doc); got != want {
			t.Fatalf("RequestID(%q) = %q, a plain decode says %q", doc, got, want)
		}
	})
}

// A reply goes out only when one of the device's filters covers its topic,
// whether the filter is one of the common ones (looked up directly) or not.
func TestSubscribed(t *testing.T) {
	srv := mqtt.New(nil)
	for _, tc := range []struct {
		filters []string
		topic   string
		want    bool
	}{
		{[]string{"im/alice/rsp"}, "im/alice/rsp", true},
		{[]string{"im/alice/#"}, "im/alice/rsp", true},
		{[]string{"im/alice/+"}, "im/alice/rsp", true},
		{[]string{"im/alice/in", "im/alice/live"}, "im/alice/rsp", false},
		{[]string{"im/alice/replies/#"}, "im/alice/replies/app/1", true},
		{[]string{"im/alice/+/app/+"}, "im/alice/replies/app/1", true},
		{[]string{"im/alice/replies/+"}, "im/alice/replies/app/1", false},
		{[]string{"im/#"}, "im/alice/rsp", true},
		{nil, "im/alice/rsp", false},
	} {
		cl := srv.NewClient(nil, "t", "alice:phone", false)
		for _, f := range tc.filters {
			cl.State.Subscriptions.Add(f, packets.Subscription{Filter: f, Qos: 1})
		}
		if got := Subscribed(cl, tc.topic); got != tc.want {
			t.Errorf("filters %v, topic %s: %v, want %v", tc.filters, tc.topic, got, tc.want)
		}
	}
}
