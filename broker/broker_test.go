package broker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/duet-im/duet/internal/wait"
	"github.com/duet-im/duet/usersig"
)

func t5ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var versions = []struct {
	name string
	v5   bool
}{{"v3", false}, {"v5", true}}

// Every element type of reference §3.2 travels unchanged, on both protocol
// versions.
func TestElementTypes(t *testing.T) {
	elements := map[string]map[string]any{
		"text":     {"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": "hi <b>&</b> 你好 😀"}},
		"face":     {"MsgType": "TIMFaceElem", "MsgContent": map[string]any{"Index": 3, "Data": "smile"}},
		"location": {"MsgType": "TIMLocationElem", "MsgContent": map[string]any{"Desc": "office", "Latitude": 22.54, "Longitude": 113.93}},
		"custom":   {"MsgType": "TIMCustomElem", "MsgContent": map[string]any{"Data": `{"red_packet":88}`, "Desc": "a red packet", "Ext": "x", "Sound": "coin.aiff"}},
		"sound":    {"MsgType": "TIMSoundElem", "MsgContent": map[string]any{"Url": "https://m.example/s.m4a", "UUID": "s1", "Size": 1024, "Second": 3, "Download_Flag": 2}},
		"image": {"MsgType": "TIMImageElem", "MsgContent": map[string]any{"UUID": "i1", "ImageFormat": 1, "ImageInfoArray": []any{
			map[string]any{"Type": 1, "Size": 1000, "Width": 800, "Height": 600, "URL": "https://m.example/i1"},
			map[string]any{"Type": 2, "Size": 500, "Width": 720, "Height": 540, "URL": "https://m.example/i1l"},
			map[string]any{"Type": 3, "Size": 100, "Width": 198, "Height": 148, "URL": "https://m.example/i1t"},
		}}},
		"file": {"MsgType": "TIMFileElem", "MsgContent": map[string]any{"Url": "https://m.example/f", "UUID": "f1", "FileSize": 2048, "FileName": "a.pdf", "Download_Flag": 2}},
		"video": {"MsgType": "TIMVideoFileElem", "MsgContent": map[string]any{
			"VideoUrl": "https://m.example/v", "VideoUUID": "v1", "VideoSize": 4096, "VideoSecond": 9, "VideoFormat": "mp4", "VideoDownloadFlag": 2,
			"ThumbUrl": "https://m.example/t", "ThumbUUID": "t1", "ThumbSize": 99, "ThumbWidth": 198, "ThumbHeight": 100, "ThumbFormat": "JPG", "ThumbDownloadFlag": 2}},
		"text+face+text": nil, // built below
	}
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			s := startServer(t, serverOpts{})
			s.users("alice", "bob")
			bob := s.connect("bob", connectOpts{v5: v.v5})
			bob.syncComplete()
			alice := s.connect("alice", connectOpts{v5: v.v5})
			alice.syncComplete()
			i, last := 0, int64(0)
			for name, el := range elements {
				body := []map[string]any{el}
				if el == nil {
					body = []map[string]any{elements["text"], elements["face"], elements["text"]}
				}
				i++
				r := alice.send("bob", 1000+i, body...)
				if r.str("MsgKey") == "" || r.num("MsgTime") == 0 || r.num("Seq") == 0 {
					t.Fatalf("%s: reply lacks MsgKey/MsgTime/Seq: %v", name, r)
				}
				got := bob.nextMsg()
				want, _ := json.Marshal(body)
				gotBody, _ := json.Marshal(got["MsgBody"])
				if !jsonEqual(want, gotBody) {
					t.Fatalf("%s: body changed:\n got %s\nwant %s", name, gotBody, want)
				}
				if got.str("From_Account") != "alice" || got.str("To_Account") != "bob" || got.str("MsgKey") != r.str("MsgKey") {
					t.Fatalf("%s: wrong envelope %v", name, got)
				}
				last = r.num("Seq")
			}
			// The sending device holds its messages through the replies
			// (PROTOCOL §4: my sends reach my *other* devices): its next
			// event follows the last reply's Seq with no gap.
			r := bob.send("alice", 1)
			if e := alice.nextMsg(); e.str("MsgKey") != r.str("MsgKey") || e.num("Seq") != last+1 {
				t.Fatalf("sender's next event %v, want bob's message at Seq %d", e, last+1)
			}
		})
	}
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	json.Unmarshal(a, &x)
	json.Unmarshal(b, &y)
	ax, _ := json.Marshal(x)
	by, _ := json.Marshal(y)
	return bytes.Equal(ax, by)
}

// A message reaches both of the recipient's devices and the sender's other
// device, each user's devices seeing the same gap-free Seqs.
func TestMultiDeviceFanout(t *testing.T) {
	s := startServer(t, serverOpts{})
	s.users("alice", "bob")
	phone := s.connect("bob", connectOpts{clientID: "bob:phone"})
	laptop := s.connect("bob", connectOpts{clientID: "bob:laptop", v5: true})
	aliceTab := s.connect("alice", connectOpts{clientID: "alice:tablet", v5: true})
	alice := s.connect("alice", connectOpts{clientID: "alice:phone"})
	for _, d := range []*device{phone, laptop, aliceTab, alice} {
		d.syncComplete()
	}
	for i := 1; i <= 5; i++ {
		r := alice.send("bob", i)
		for _, d := range []*device{phone, laptop} {
			e := d.nextMsg()
			if e.num("Seq") != int64(i) || e.str("MsgKey") != r.str("MsgKey") {
				t.Fatalf("%s: event %d = %v", d.user, i, e)
			}
		}
		if e := aliceTab.nextMsg(); e.num("Seq") != r.num("Seq") || e.str("MsgKey") != r.str("MsgKey") {
			t.Fatalf("alice's other device: %v (reply %v)", e, r)
		}
	}
	// The sending device is not sent its own messages: it has the replies.
	// Its next event is bob's answer, right after them.
	r := laptop.send("alice", 6)
	for _, d := range []*device{alice, aliceTab} {
		if e := d.nextMsg(); e.num("Seq") != 6 || e.str("MsgKey") != r.str("MsgKey") {
			t.Fatalf("%s: %v, want bob's answer at Seq 6", d.user, e)
		}
	}
	// Skipped counts as received: reconnecting replays none of them (only
	// bob's answer, if its PUBACK had not reached the server yet).
	alice.close()
	again := s.connect("alice", connectOpts{clientID: "alice:phone"})
	for {
		e := again.next()
		if e.str("Event") == "sync_complete" {
			if e.num("LastSeq") != 6 {
				t.Fatalf("reconnected: sync_complete at %v, want 6", e["LastSeq"])
			}
			break
		}
		if e.num("Seq") != 6 {
			t.Fatalf("reconnected: replayed %v, one of the device's own sends", e)
		}
	}
}

// PROTOCOL §1: every way a login can be wrong, on both versions.
func TestLoginMatrix(t *testing.T) {
	s := startServer(t, serverOpts{})
	s.users("alice")
	expired, _ := usersig.Gen(testAppID, testKey, "alice", 60, time.Now().Add(-time.Hour))
	otherApp, _ := usersig.Gen(testAppID+1, testKey, "alice", 3600, time.Now())
	forged, _ := usersig.Gen(testAppID, "not-the-key", "alice", 3600, time.Now())
	cases := []struct {
		name     string
		user     string
		password string
		clientID string
		v3Code   byte
		v5Code   byte
		reason   string
	}{
		{"bad signature", "alice", forged, "", 0x04, 0x86, "bad signature"},
		{"garbage password", "alice", "hunter2", "", 0x04, 0x86, "bad signature"},
		{"expired", "alice", expired, "", 0x04, 0x86, "expired"},
		{"another user's sig", "alice", sig(t, "mallory"), "", 0x04, 0x86, "another user"},
		{"wrong sdkappid", "alice", otherApp, "", 0x04, 0x86, "sdkappid"},
		{"wrong client id prefix", "alice", "", "mallory:phone", 0x05, 0x87, "client id"},
		{"client id without device", "alice", "", "alice", 0x05, 0x87, "client id"},
		{"unknown user", "nobody", "", "", 0x05, 0x87, "unknown user"},
	}
	for _, v := range versions {
		for _, tc := range cases {
			t.Run(v.name+"/"+tc.name, func(t *testing.T) {
				_, err := s.dial(tc.user, connectOpts{v5: v.v5, password: tc.password, clientID: tc.clientID, noSub: true})
				if err == nil {
					t.Fatal("login accepted")
				}
				if v.v5 {
					var r *refused
					if !errors.As(err, &r) || r.code != tc.v5Code || !strings.Contains(r.reason, tc.reason) {
						t.Fatalf("got %v, want 0x%02x %q", err, tc.v5Code, tc.reason)
					}
				} else if !strings.Contains(err.Error(), v3Refusal[tc.v3Code]) {
					t.Fatalf("got %v, want return code 0x%02x", err, tc.v3Code)
				}
			})
		}
	}
	// The server keeps serving: a good login still works.
	s.connect("alice", connectOpts{}).syncComplete()
}

// paho.mqtt's texts for CONNACK return codes.
var v3Refusal = map[byte]string{0x04: "bad user name or password", 0x05: "not Authorized"}

func TestAutoAccounts(t *testing.T) {
	s := startServer(t, serverOpts{autoAccounts: true})
	s.users("bob")
	newbie := s.connect("newbie", connectOpts{})
	newbie.syncComplete()
	newbie.send("bob", 1)
	if ok, _ := s.store.AccountExists("newbie"); !ok {
		t.Fatal("auto account not stored")
	}
	// Even with auto accounts, a bad signature is refused.
	forged, _ := usersig.Gen(testAppID, "nope", "other", 3600, time.Now())
	if _, err := s.dial("other", connectOpts{password: forged, noSub: true}); err == nil {
		t.Fatal("forged sig accepted")
	}
}

// An empty MQTT 5 client id gets a server-assigned device.
func TestAssignedClientID(t *testing.T) {
	s := startServer(t, serverOpts{})
	s.users("alice", "bob")
	bob := s.connect("bob", connectOpts{v5: true, clientID: "-"})
	bob.syncComplete()
	alice := s.connect("alice", connectOpts{})
	alice.syncComplete()
	r := alice.send("bob", 1)
	if e := bob.nextMsg(); e.str("MsgKey") != r.str("MsgKey") {
		t.Fatalf("bob got %v", e)
	}
	if s.broker.Devices.Online("bob") != 1 {
		t.Fatal("assigned device not registered")
	}
}

// PROTOCOL §2: the ACL matrix.
func TestACLMatrix(t *testing.T) {
	subs := []struct {
		filter string
		ok     bool
	}{
		{"im/alice/in", true},
		{"im/alice/#", true},
		{"im/alice/+", true},
		{"im/bob/in", false},
		{"im/bob/#", false},
		{"im/+/in", false},
		{"#", false},
		{"im/#", false},
		{"$SYS/#", false},
		{"other/topic", false},
	}
	for _, v := range versions {
		for _, who := range []string{"alice", "administrator"} {
			for _, sc := range subs {
				filter := strings.ReplaceAll(sc.filter, "alice", who)
				t.Run(fmt.Sprintf("%s/%s/sub %s", v.name, who, filter), func(t *testing.T) {
					s := startServer(t, serverOpts{})
					s.users("alice", "bob", "administrator")
					d := s.connect(who, connectOpts{v5: v.v5, noSub: true, clientID: who + ":acl"})
					code := d.subscribeCode(filter)
					if sc.ok && code >= 0x80 {
						t.Fatalf("refused 0x%02x", code)
					}
					if !sc.ok && code < 0x80 {
						t.Fatalf("granted 0x%02x", code)
					}
					if !sc.ok && v.v5 && code != 0x87 {
						t.Fatalf("v5 refusal 0x%02x, want 0x87", code)
					}
				})
			}
		}
	}
	pubs := []struct {
		topic string
		ok    bool
	}{
		{"im/alice/req/openim/sendmsg", true},
		{"im/bob/req/openim/sendmsg", false},
		{"im/alice/in", false},
		{"im/alice/rsp", false},
		{"im/bob/in", false},
		{"other", false},
	}
	for _, v := range versions {
		for _, pc := range pubs {
			t.Run(fmt.Sprintf("%s/pub %s", v.name, pc.topic), func(t *testing.T) {
				s := startServer(t, serverOpts{})
				s.users("alice", "bob")
				alice := s.connect("alice", connectOpts{v5: v.v5, clientID: "alice:pub"})
				alice.syncComplete()
				bob := s.connect("bob", connectOpts{v5: v.v5, clientID: "bob:watch"})
				bob.syncComplete()
				body := `{"To_Account":"bob","MsgRandom":7,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"x"}}]}`
				r := alice.publish(pc.topic, []byte(body))
				switch {
				case pc.ok:
					if r.err != nil || r.reason >= 0x80 {
						t.Fatalf("refused: %+v", r)
					}
					bob.nextMsg()
				case v.v5:
					if r.reason != 0x87 {
						t.Fatalf("v5 PUBACK 0x%02x, want 0x87", r.reason)
					}
				default:
					// MQTT 3.1.1 has no negative PUBACK: the broker closes the connection.
					wait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
						if alice.v3.IsConnectionOpen() {
							return errors.New("still connected")
						}
						return nil
					})
				}
				if !pc.ok {
					// Nothing reached bob: his next event is a legitimate message.
					other := s.connect("alice", connectOpts{v5: v.v5, clientID: "alice:other"})
					other.drainToSync()
					r := other.send("bob", 99)
					if e := bob.nextMsg(); e.str("MsgKey") != r.str("MsgKey") {
						t.Fatalf("bob saw %v", e)
					}
				}
			})
		}
	}
}

func (d *device) subscribeCode(filter string) byte {
	d.t.Helper()
	if d.v5 {
		ack, err := d.c5.Subscribe(t5ctx(d.t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
		if ack != nil && len(ack.Reasons) == 1 {
			return ack.Reasons[0]
		}
		d.t.Fatalf("subscribe %s: %v", filter, err)
	}
	tok := d.v3.Subscribe(filter, 1, nil)
	if !tok.WaitTimeout(5 * time.Second) {
		d.t.Fatal("subscribe timeout")
	}
	st := tok.(*pahov3.SubscribeToken)
	return st.Result()[filter]
}

// PROTOCOL §3: a resend with the same MsgRandom, MsgSeq and To_Account is
// stored once and answered with the original MsgKey.
func TestIdempotentResend(t *testing.T) {
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			s := startServer(t, serverOpts{})
			s.users("alice", "bob")
			alice := s.connect("alice", connectOpts{v5: v.v5})
			alice.syncComplete()
			bob := s.connect("bob", connectOpts{v5: v.v5})
			bob.syncComplete()
			body := map[string]any{"To_Account": "bob", "MsgRandom": 42, "MsgSeq": 7, "MsgBody": []any{map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": "once"}}}}
			first, _ := alice.request("openim/sendmsg", body)
			again, _ := alice.request("openim/sendmsg", body)
			if first.str("MsgKey") == "" || again.str("MsgKey") != first.str("MsgKey") || again.num("Seq") != first.num("Seq") {
				t.Fatalf("resend not idempotent: %v vs %v", first, again)
			}
			// Without MsgSeq too.
			body2 := map[string]any{"To_Account": "bob", "MsgRandom": 43, "MsgBody": body["MsgBody"]}
			a, _ := alice.request("openim/sendmsg", body2)
			b, _ := alice.request("openim/sendmsg", body2)
			if a.str("MsgKey") != b.str("MsgKey") {
				t.Fatalf("resend without MsgSeq stored twice: %v vs %v", a, b)
			}
			// A different MsgRandom is a different message.
			c := alice.send("bob", 44)
			if e := bob.nextMsg(); e.str("MsgKey") != first.str("MsgKey") || e.num("Seq") != 1 {
				t.Fatalf("first event %v", e)
			}
			if e := bob.nextMsg(); e.str("MsgKey") != a.str("MsgKey") || e.num("Seq") != 2 {
				t.Fatalf("second event %v", e)
			}
			if e := bob.nextMsg(); e.str("MsgKey") != c.str("MsgKey") || e.num("Seq") != 3 {
				t.Fatalf("third event %v", e)
			}
			// The owner of bob's data reports it once its own commit is
			// done: with partitions another node's view may deliver it a
			// moment before (the recipient's side is an intent).
			wait.For(t, 5*time.Second, 5*time.Millisecond, func() error {
				if last, _ := s.store.LastSeq("bob"); last != 3 {
					return fmt.Errorf("bob's timeline has %d events, want 3", last)
				}
				return nil
			})
		})
	}
}

// Bad input gets the reference's code, a clear ErrorInfo and (MQTT 5) a
// PUBACK reason; nothing is stored and the connection keeps working.
func TestBadInput(t *testing.T) {
	text := `[{"MsgType":"TIMTextElem","MsgContent":{"Text":"x"}}]`
	big := strings.Repeat("a", 13<<10)
	cases := []struct {
		name    string
		payload string
		code    int
		reason  byte
		info    string
	}{
		{"malformed JSON", `{"To_Account":"bob",`, 90001, 0x99, "json"},
		{"not an object", `[1,2]`, 90001, 0x99, "object"},
		{"invalid UTF-8", "{\"To_Account\":\"bob\",\"MsgRandom\":1,\"MsgBody\":[{\"MsgType\":\"TIMTextElem\",\"MsgContent\":{\"Text\":\"\xff\xfe\"}}]}", 90001, 0x99, "UTF-8"},
		{"missing To_Account", `{"MsgRandom":1,"MsgBody":` + text + `}`, 90003, 0x99, "To_Account"},
		{"To_Account a number", `{"To_Account":5,"MsgRandom":1,"MsgBody":` + text + `}`, 90003, 0x99, "To_Account"},
		{"missing MsgRandom", `{"To_Account":"bob","MsgBody":` + text + `}`, 90005, 0x99, "MsgRandom"},
		{"MsgRandom a string", `{"To_Account":"bob","MsgRandom":"1","MsgBody":` + text + `}`, 90005, 0x99, "MsgRandom"},
		{"MsgRandom negative", `{"To_Account":"bob","MsgRandom":-1,"MsgBody":` + text + `}`, 90005, 0x99, "MsgRandom"},
		{"missing MsgBody", `{"To_Account":"bob","MsgRandom":1}`, 90007, 0x99, "MsgBody"},
		{"MsgBody an object", `{"To_Account":"bob","MsgRandom":1,"MsgBody":{"MsgType":"TIMTextElem"}}`, 90007, 0x99, "array"},
		{"MsgBody empty", `{"To_Account":"bob","MsgRandom":1,"MsgBody":[]}`, 90002, 0x99, "empty"},
		{"unknown element", `{"To_Account":"bob","MsgRandom":1,"MsgBody":[{"MsgType":"TIMBogusElem","MsgContent":{}}]}`, 90010, 0x99, "TIMBogusElem"},
		{"text without Text", `{"To_Account":"bob","MsgRandom":1,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{}}]}`, 90010, 0x99, "Text"},
		{"Text a number", `{"To_Account":"bob","MsgRandom":1,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":1}}]}`, 90010, 0x99, "Text"},
		{"location without latitude", `{"To_Account":"bob","MsgRandom":1,"MsgBody":[{"MsgType":"TIMLocationElem","MsgContent":{"Longitude":1}}]}`, 90010, 0x99, "Latitude"},
		{"two custom elements", `{"To_Account":"bob","MsgRandom":1,"MsgBody":[{"MsgType":"TIMCustomElem","MsgContent":{"Data":"a"}},{"MsgType":"TIMCustomElem","MsgContent":{"Data":"b"}}]}`, 90010, 0x99, "TIMCustomElem"},
		{"sound Download_Flag 1", `{"To_Account":"bob","MsgRandom":1,"MsgBody":[{"MsgType":"TIMSoundElem","MsgContent":{"UUID":"u","Download_Flag":1}}]}`, 90010, 0x99, "Download_Flag"},
		{"image bad Type", `{"To_Account":"bob","MsgRandom":1,"MsgBody":[{"MsgType":"TIMImageElem","MsgContent":{"UUID":"u","ImageInfoArray":[{"Type":9,"Width":1,"Height":1,"URL":"u"}]}}]}`, 90010, 0x99, "Type"},
		{"message over 12 KB", `{"To_Account":"bob","MsgRandom":1,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"` + big + `"}}]}`, 93000, 0x97, "limit"},
		{"request over the maximum", `{"To_Account":"bob","MsgRandom":1,"Pad":"` + strings.Repeat("p", 70<<10) + `"}`, 93000, 0x97, "limit"},
		{"unknown recipient", `{"To_Account":"nobody","MsgRandom":1,"MsgBody":` + text + `}`, 20003, 0x80, "nobody"},
		{"invalid recipient id", `{"To_Account":"bad id!","MsgRandom":1,"MsgBody":` + text + `}`, 20003, 0x80, "bad id"},
		{"negative MsgLifeTime", `{"To_Account":"bob","MsgRandom":1,"MsgLifeTime":-5,"MsgBody":` + text + `}`, 90026, 0x99, "MsgLifeTime"},
		{"OfflinePushInfo not an object", `{"To_Account":"bob","MsgRandom":1,"OfflinePushInfo":"x","MsgBody":` + text + `}`, 90043, 0x99, "OfflinePushInfo"},
		{"impersonation by a user", `{"From_Account":"bob","To_Account":"bob","MsgRandom":1,"MsgBody":` + text + `}`, 90009, 0x87, "admin"},
	}
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			s := startServer(t, serverOpts{})
			s.users("alice", "bob")
			alice := s.connect("alice", connectOpts{v5: v.v5})
			alice.syncComplete()
			bob := s.connect("bob", connectOpts{v5: v.v5})
			bob.syncComplete()
			for i, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					reqID := fmt.Sprintf("bad%d", i)
					ch := make(chan event, 1)
					alice.mu.Lock()
					alice.replies[reqID] = ch
					alice.mu.Unlock()
					payload := tc.payload
					if strings.HasPrefix(payload, "{") && json.Valid([]byte(payload)) {
						payload = `{"ReqId":"` + reqID + `",` + payload[1:]
					}
					pr := alice.publish("im/alice/req/openim/sendmsg", []byte(payload))
					if pr.err != nil {
						t.Fatalf("publish: %v", pr.err)
					}
					if v.v5 && (pr.reason != tc.reason || pr.info == "") {
						t.Fatalf("PUBACK 0x%02x %q, want 0x%02x with a reason", pr.reason, pr.info, tc.reason)
					}
					var r event
					select {
					case r = <-ch:
					case r = <-alice.rsp: // replies to bodies we could not tag
					case <-time.After(5 * time.Second):
						t.Fatal("no reply")
					}
					if r.str("ActionStatus") != "FAIL" || r.num("ErrorCode") != int64(tc.code) || !strings.Contains(strings.ToLower(r.str("ErrorInfo")), strings.ToLower(tc.info)) {
						t.Fatalf("reply %v, want %d mentioning %q", r, tc.code, tc.info)
					}
				})
			}
			// Nothing was stored, and the connection still works.
			for _, u := range []string{"alice", "bob"} {
				if last, _ := s.store.LastSeq(u); last != 0 {
					t.Fatalf("%s's timeline has %d events after refused sends", u, last)
				}
			}
			r := alice.send("bob", 1)
			if e := bob.nextMsg(); e.num("Seq") != 1 || e.str("MsgKey") != r.str("MsgKey") {
				t.Fatalf("after bad input, bob got %v", e)
			}
		})
	}
}

// A stop and a start on the same data directory: Seqs continue, stored
// messages are replayed to a device that missed them.
func TestRestart(t *testing.T) {
	s := startServer(t, serverOpts{})
	s.users("alice", "bob")
	alice := s.connect("alice", connectOpts{})
	alice.syncComplete()
	bob := s.connect("bob", connectOpts{clientID: "bob:phone"})
	bob.syncComplete()
	for i := 1; i <= 3; i++ {
		alice.send("bob", i)
		if e := bob.nextMsg(); e.num("Seq") != int64(i) {
			t.Fatalf("event %v", e)
		}
	}
	// Wait until bob's device acknowledged all three, so the cursor is 3.
	wait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := s.broker.Devices.Metrics.Acked.Load(); n < 3 {
			return fmt.Errorf("%d acked", n)
		}
		return nil
	})
	bob.close()
	alice.send("bob", 4) // bob is offline
	s.restart()

	alice = s.connect("alice", connectOpts{clientID: "alice:dev2"})
	alice.drainToSync() // event 4 too, unless alice:dev acknowledged it before the stop
	r5 := alice.send("bob", 5)
	if r5.num("Seq") != 5 {
		t.Fatalf("alice's Seq after restart = %d, want 5", r5.num("Seq"))
	}
	bob = s.connect("bob", connectOpts{clientID: "bob:phone"})
	for want := int64(4); want <= 5; want++ {
		if e := bob.next(); e.num("Seq") != want || e.str("Event") != "msg" {
			t.Fatalf("replay: got %v, want Seq %d", e, want)
		}
	}
	if last := bob.syncComplete(); last != 5 {
		t.Fatalf("sync_complete LastSeq %d, want 5", last)
	}
}

// A device with a receive maximum smaller than the server's window gets a
// large backlog complete and in order.
func TestFlowControl(t *testing.T) {
	s := startServer(t, serverOpts{window: 16})
	s.users("alice", "bob")
	alice := s.connect("alice", connectOpts{topics: []string{"im/alice/rsp"}})
	for i := 1; i <= 500; i++ {
		r, _ := alice.request("openim/sendmsg", map[string]any{"To_Account": "bob", "MsgRandom": i, "MsgBody": []any{map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": "x"}}}})
		if r == nil {
			break
		}
	}
	bob := s.connect("bob", connectOpts{v5: true, recvMax: 5})
	for want := int64(1); want <= 500; want++ {
		if e := bob.next(); e.num("Seq") != want {
			t.Fatalf("got %v, want Seq %d", e, want)
		}
	}
	if last := bob.syncComplete(); last != 500 {
		t.Fatalf("LastSeq %d", last)
	}
}

// An independent client: Debian's mosquitto_pub and mosquitto_sub send and
// receive one message.
func TestMosquittoClients(t *testing.T) {
	pub, errPub := exec.LookPath("mosquitto_pub")
	sub, errSub := exec.LookPath("mosquitto_sub")
	if errPub != nil || errSub != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("mosquitto-clients is not installed; the README's test command installs it")
		}
		t.Skip("mosquitto-clients not installed")
	}
	s := startServer(t, serverOpts{})
	s.users("alice", "bob")
	host, port, _ := strings.Cut(s.addr, ":")
	subCmd := exec.Command(sub, "-h", host, "-p", port, "-V", "mqttv311", "-i", "bob:mosq", "-u", "bob", "-P", sig(t, "bob"),
		"-t", "im/bob/in", "-q", "1", "-C", "2", "-W", "20")
	var out bytes.Buffer
	subCmd.Stdout = &out
	if err := subCmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait for the subscriber's device to be attached before sending.
	wait.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if s.broker.Devices.Online("bob") == 0 {
			return errors.New("bob not online")
		}
		return nil
	})
	msg := `{"To_Account":"bob","MsgRandom":77,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"from mosquitto"}}]}`
	pubOut, err := exec.Command(pub, "-h", host, "-p", port, "-i", "alice:mosq", "-u", "alice", "-P", sig(t, "alice"),
		"-t", "im/alice/req/openim/sendmsg", "-q", "1", "-m", msg).CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, pubOut)
	}
	if err := subCmd.Wait(); err != nil {
		t.Fatalf("mosquitto_sub: %v (%s)", err, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "sync_complete") || !strings.Contains(lines[1], "from mosquitto") {
		t.Fatalf("mosquitto_sub printed %q", out.String())
	}
}

// PROTOCOL §1: browsers connect over WebSocket at /mqtt, with the same login,
// topics and delivery as TCP.
func TestWebSocket(t *testing.T) {
	s := startServer(t, serverOpts{websocket: true})
	s.users("alice", "bob")
	bob := s.connect("bob", connectOpts{ws: true, clientID: "bob:browser"})
	bob.syncComplete()
	alice := s.connect("alice", connectOpts{ws: true})
	alice.syncComplete()
	r := alice.send("bob", 1)
	if e := bob.nextMsg(); e.str("MsgKey") != r.str("MsgKey") {
		t.Fatalf("bob got %v", e)
	}
	if _, err := s.dial("bob", connectOpts{ws: true, password: "forged", noSub: true}); err == nil {
		t.Fatal("forged login accepted over WebSocket")
	}
}

// The sending device is never sent its own message, even while its pump is
// busy with incoming traffic when the message commits (the pump must learn
// that the event is the device's own before it can see the event at all).
func TestNoEchoUnderLoad(t *testing.T) {
	s := startServer(t, serverOpts{})
	s.users("alice", "bob")
	alice := s.connect("alice", connectOpts{clientID: "alice:phone"})
	alice.syncComplete()
	bob := s.connect("bob", connectOpts{clientID: "bob:phone"})
	bob.syncComplete()
	const n = 150
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= n; i++ {
			bob.send("alice", 10000+i)
		}
	}()
	for i := 1; i <= n; i++ {
		alice.send("bob", i)
	}
	<-done
	for got := 0; got < n; got++ {
		if e := alice.nextMsg(); e.str("From_Account") != "bob" {
			t.Fatalf("alice's device was sent %v", e)
		}
	}
	// Every Seq of alice's timeline is accounted for: n from bob received,
	// n of her own held through the replies; the next event follows them.
	r := bob.send("alice", 99999)
	if e := alice.nextMsg(); e.num("Seq") != 2*n+1 || e.str("MsgKey") != r.str("MsgKey") {
		t.Fatalf("after the load: %v, want Seq %d", e, 2*n+1)
	}
}
