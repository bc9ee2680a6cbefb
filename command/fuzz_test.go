package command

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
)

// The fuzz targets of the command layer. `go test` runs their seed corpus
// (the seeds below plus testdata/fuzz/…); `make fuzz` runs each for a
// bounded time, and a failing input it finds is written to testdata/fuzz/,
// where it stays as a regression case.

// fuzzUsers are the accounts every FuzzExec input may name.
var fuzzUsers = []string{"alice", "bob", "carol", "administrator"}

// fuzzBodies are seed bodies in the shapes the commands take; every command
// is seeded with each, so the fuzzer starts from inputs that get past the
// first checks of most handlers.
var fuzzBodies = []string{
	`{}`,
	`[]`,
	`null`,
	`{"To_Account":"bob","MsgRandom":1,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]}`,
	`{"From_Account":"alice","To_Account":"bob","MsgRandom":2,"MsgSeq":3,"MsgTimeStamp":1700000000,"SyncFromOldSystem":1,"MsgBody":[{"MsgType":"TIMFaceElem","MsgContent":{"Index":1,"Data":"x"}}]}`,
	`{"To_Account":["bob","carol"],"MsgRandom":4,"MsgBody":[{"MsgType":"TIMCustomElem","MsgContent":{"Data":"d","Desc":"e"}}]}`,
	`{"Operator_Account":"alice","Peer_Account":"bob","MaxCnt":10,"MinTime":0,"MaxTime":4000000000}`,
	`{"From_Account":"alice","To_Account":"bob","MsgKey":"1_2_3"}`,
	`{"From_Account":"alice","AddFriendItem":[{"To_Account":"bob","AddSource":"AddSource_Type_Web","AddWording":"hi"}]}`,
	`{"From_Account":"alice","To_Account":["bob"],"CheckType":"CheckResult_Type_Both","DeleteType":"Delete_Type_Both"}`,
	`{"From_Account":"alice","ResponseFriendItem":[{"To_Account":"bob","ResponseAction":"Response_Action_Agree"}]}`,
	`{"From_Account":"alice","StartIndex":0,"MaxLimited":30,"PendencyType":"Pendency_Type_ComeIn"}`,
	`{"From_Account":"alice","UpdateItem":[{"To_Account":"bob","SnsItem":[{"Tag":"Tag_SNS_IM_Remark","Value":"B"}]}]}`,
	`{"From_Account":"alice","ProfileItem":[{"Tag":"Tag_Profile_IM_Nick","Value":"A"}]}`,
	`{"To_Account":["alice","bob"],"TagList":["Tag_Profile_IM_Nick"]}`,
	`{"UserID":"dave","Nick":"D","FaceUrl":"x"}`,
	`{"Accounts":["erin","frank"],"DeleteItem":[{"UserID":"erin"}],"CheckItem":[{"UserID":"bob"}]}`,
	`{"Set_Account":"bob","C2CmsgNospeakingTime":60,"Get_Account":"bob"}`,
	`{"From_Account":"alice","TimeStamp":0,"StartIndex":0,"TopTimeStamp":0,"TopStartIndex":0,"AssistFlags":15}`,
	`{"From_Account":"alice","To_Account":"bob","Type":1,"ClearRamble":1}`,
	`{"Report_Account":"bob","Peer_Account":"alice","MsgReadTime":1700000000}`,
	`{"FromSeq":0}`,
	`{"ReqId":"r","To_Account":"bob","MsgLifeTime":0,"MsgRandom":5,"MsgBody":[{"MsgType":"TIMLocationElem","MsgContent":{"Desc":"d","Latitude":1.5,"Longitude":2.5}}]}`,
}

// fuzzCommands lists the registered commands in a stable order, so that a
// corpus entry keeps naming the same command.
func fuzzCommands(s *Service) []string {
	names := make([]string, 0, len(s.routes))
	for n := range s.routes {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// fuzzState is what a refused command must leave as it was: every fuzz
// user's timeline end and conversation list.
func fuzzState(f *fixture) string {
	var b []byte
	for _, u := range fuzzUsers {
		seq, err := f.st.LastSeq(u)
		if err != nil {
			f.t.Fatal(err)
		}
		convs, err := f.st.Conversations(u)
		if err != nil {
			f.t.Fatal(err)
		}
		b = fmt.Appendf(b, "%s:%d:%d;", u, seq, len(convs))
		for _, c := range convs {
			b = fmt.Appendf(b, "%s/%d/%d/%d,", c.Peer, c.MsgTime, c.Unread, c.ReadTime)
		}
	}
	return string(b)
}

// FuzzExec feeds every registered command random bodies, as a user over
// MQTT and as the app admin over REST. Whatever the body, Exec answers
// (no panic), the answer encodes to valid JSON and carries the body's
// ReqId over MQTT, a refusal carries a Tencent
// code that is not an internal error, and a refused command changed nothing
// (issue 11 §6; the layer's promise in the package comment).
func FuzzExec(f *testing.F) {
	fx := newFixture(f, nil, fuzzUsers...)
	names := fuzzCommands(fx.svc)
	for i := range names {
		for _, body := range fuzzBodies {
			f.Add(uint16(i), []byte(body), false, false)
			f.Add(uint16(i), []byte(body), true, true)
		}
	}
	f.Fuzz(func(t *testing.T, cmd uint16, body []byte, admin, rest bool) {
		name := names[int(cmd)%len(names)]
		c := &Caller{UserID: "alice", Device: "alice:fuzz", Transport: MQTT}
		if admin {
			c.UserID, c.Admin = "administrator", true
		}
		if rest {
			c.Device, c.Transport = "", REST
		}
		before := fuzzState(fx)
		r := fx.svc.Exec(context.Background(), c, name, body)
		// The reply's ReqId comes from the one decode of the body, the same
		// as RequestID's (which the transport uses before Exec), and only
		// over MQTT.
		if want := RequestID(body); r.ReqID != want && !rest {
			t.Fatalf("%s %q: ReqID %q, RequestID says %q", name, body, r.ReqID, want)
		} else if rest && r.ReqID != "" {
			t.Fatalf("%s %q: ReqID %q over REST", name, body, r.ReqID)
		}
		if out := r.Encode("ReqId", r.ReqID, "Command", name); !json.Valid(out) {
			t.Fatalf("%s %q: reply is not JSON: %s", name, body, out)
		}
		if r.Err == nil {
			return
		}
		if r.Err.Code == 0 || r.Err.Info == "" {
			t.Fatalf("%s %q: refusal without a code or ErrorInfo: %+v", name, body, r.Err)
		}
		if r.Err.Code == 91000 {
			t.Fatalf("%s %q: bad input answered as an internal error: %s", name, body, r.Err.Info)
		}
		if after := fuzzState(fx); after != before {
			t.Fatalf("%s %q refused (%d %s) but changed the store:\nbefore %s\nafter  %s",
				name, body, r.Err.Code, r.Err.Info, before, after)
		}
	})
}

// FuzzMsgBody checks MsgBody validation: it never panics, and what it
// accepts is a JSON array of elements, each with a known MsgType.
func FuzzMsgBody(f *testing.F) {
	for _, b := range fuzzBodies {
		var doc struct {
			MsgBody json.RawMessage
		}
		if json.Unmarshal([]byte(b), &doc) == nil && doc.MsgBody != nil {
			f.Add([]byte(doc.MsgBody))
		}
	}
	f.Add([]byte(`[{"MsgType":"TIMImageElem","MsgContent":{"UUID":"u","ImageFormat":1,"ImageInfoArray":[{"Type":1,"Size":1,"Width":1,"Height":1,"URL":"http://x"}]}}]`))
	f.Add([]byte(`[{"MsgType":"TIMSoundElem","MsgContent":{"Url":"http://x","Size":1,"Second":1,"Download_Flag":2}}]`))
	f.Add([]byte(`[{"MsgType":"TIMFileElem","MsgContent":{"Url":"http://x","FileSize":1,"FileName":"f","Download_Flag":2}}]`))
	f.Add([]byte(`[{"MsgType":"TIMVideoFileElem","MsgContent":{"VideoUrl":"http://x","VideoSize":1,"VideoSecond":1,"VideoFormat":"mp4","VideoDownloadFlag":2,"ThumbUrl":"http://y","ThumbSize":1,"ThumbWidth":1,"ThumbHeight":1,"ThumbFormat":"JPG","ThumbDownloadFlag":2}}]`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		els, err := parseMsgBody(raw)
		if err != nil {
			if err.Code == 0 || err.Info == "" {
				t.Fatalf("%q: refusal without a code or ErrorInfo: %+v", raw, err)
			}
			return
		}
		if !json.Valid(raw) {
			t.Fatalf("%q: invalid JSON accepted as a MsgBody", raw)
		}
		if len(els) == 0 {
			t.Fatalf("%q: an empty MsgBody was accepted", raw)
		}
	})
}

// FuzzStringValue holds the String fast path of the body's fields to
// encoding/json: on every JSON value the two agree on whether it is a
// String and on its value.
func FuzzStringValue(f *testing.F) {
	for _, s := range []string{`"a"`, `""`, `"a\"b"`, `"\u00e9"`, "\"\xff\"", `"é"`, `1`, `null`, `["a"]`, `"\/"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) {
			return // a body's fields are always valid JSON
		}
		var want string
		wantOK := json.Unmarshal(raw, &want) == nil
		got, ok := stringValue(raw)
		if ok != wantOK || got != want {
			t.Fatalf("stringValue(%q) = %q, %v; encoding/json: %q, %v", raw, got, ok, want, wantOK)
		}
	})
}
