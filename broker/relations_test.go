package broker_test

// Relationships, the send policy, profiles, admin sends and the built-in
// notifications, end to end: real MQTT clients, real broker, real store.

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/internal/wait"
	"github.com/duet-im/duet/store"
)

// relClock is a store and broker clock the mute tests move forward.
type relClock struct{ off atomic.Int64 }

func (c *relClock) now() time.Time { return time.Now().Add(time.Duration(c.off.Load())) }

// relSeen is the highest Seq each device has been seen to receive.
var relSeen sync.Map // *device → int64

func relNext(d *device) event {
	e := d.nextMsg()
	if seq := e.num("Seq"); seq > 0 {
		relSeen.Store(d, seq)
	}
	return e
}

// relSettle waits until every device has received its user's whole
// timeline, so no delivery is in flight when the test's server stops (the
// broker's Close does not wait for device pumps, which then read a closed
// store).
func relSettle(t *testing.T, s *testServer, devs ...*device) {
	t.Helper()
	for _, d := range devs {
		last, err := s.store.LastSeq(d.user)
		if err != nil {
			t.Fatal(err)
		}
		if last == 0 {
			continue
		}
		wait.For(t, 5*time.Second, time.Millisecond, func() error {
			for {
				select {
				case e := <-d.in:
					if seq := e.num("Seq"); seq > 0 {
						relSeen.Store(d, seq)
					}
					continue
				default:
				}
				break
			}
			if v, _ := relSeen.Load(d); (v == nil || v.(int64) < int64(last)) && d.ownSeq.Load() < int64(last) {
				return fmt.Errorf("%s has seen Seq %v of %d", d.user, v, last)
			}
			return nil
		})
	}
}

// relEvent waits for the next timeline event, skipping sync_complete, and
// checks its Event name.
func relEvent(t *testing.T, d *device, name string) event {
	t.Helper()
	e := relNext(d)
	if e.str("Event") != name {
		t.Fatalf("%s: want a %s event, got %v", d.user, name, e)
	}
	return e
}

// relOK runs a command that must succeed and returns the reply.
func relOK(t *testing.T, d *device, cmd string, body map[string]any) event {
	t.Helper()
	r, _ := d.request(cmd, body)
	if r.str("ActionStatus") != "OK" {
		t.Fatalf("%s %s: %v", d.user, cmd, r)
	}
	return r
}

// relItem is the ResultCode of To_Account `to` in a ResultItem list.
func relItem(t *testing.T, r event, to string) int64 {
	t.Helper()
	items, _ := r["ResultItem"].([]any)
	for _, it := range items {
		m := it.(map[string]any)
		if m["To_Account"] == to {
			return int64(m["ResultCode"].(float64))
		}
	}
	t.Fatalf("no ResultItem for %s in %v", to, r)
	return 0
}

func friendItem(to string) map[string]any {
	return map[string]any{"To_Account": to, "AddSource": "AddSource_Type_Test"}
}

// TestRelationsSendPolicy runs the permission matrix over MQTT: what the
// sender is told and whether the recipient's devices get the message.
func TestRelationsSendPolicy(t *testing.T) {
	type step func(t *testing.T, s *testServer, admin *device)
	importFriend := func(owner, peer string) step {
		return func(t *testing.T, s *testServer, admin *device) {
			relOK(t, admin, "sns/friend_import", map[string]any{"From_Account": owner, "AddFriendItem": []any{friendItem(peer)}})
		}
	}
	block := func(owner, peer string) step {
		return func(t *testing.T, s *testServer, admin *device) {
			relOK(t, admin, "sns/black_list_add", map[string]any{"From_Account": owner, "To_Account": []string{peer}})
		}
	}
	refuseAll := func(t *testing.T, s *testServer, admin *device) {
		relOK(t, admin, "profile/portrait_set", map[string]any{"From_Account": "bob", "ProfileItem": []any{map[string]any{"Tag": "Tag_Profile_IM_MsgSettings", "Value": 1}}})
	}
	mute := func(t *testing.T, s *testServer, admin *device) {
		relOK(t, admin, "openconfigsvr/setnospeaking", map[string]any{"Set_Account": "alice", "C2CmsgNospeakingTime": 60})
	}
	cases := []struct {
		name           string
		friendsOnly    bool
		blacklistError bool
		steps          []step
		code           int64 // what alice's send to bob gets
		delivered      bool
	}{
		{name: "strangers", delivered: true},
		{name: "friends-only strangers", friendsOnly: true, code: 20009},
		{name: "friends-only both-way", friendsOnly: true, steps: []step{importFriend("alice", "bob"), importFriend("bob", "alice")}, delivered: true},
		{name: "friends-only alice has bob only", friendsOnly: true, steps: []step{importFriend("alice", "bob")}, code: 20010},
		{name: "friends-only bob has alice only", friendsOnly: true, steps: []step{importFriend("bob", "alice")}, code: 20011},
		{name: "blacklisted, show as sent", steps: []step{block("bob", "alice")}},
		{name: "blacklisted, error", blacklistError: true, steps: []step{block("bob", "alice")}, code: 20007},
		{name: "blocker sends", steps: []step{block("alice", "bob")}, delivered: true},
		{name: "MsgSettings refuses", steps: []step{refuseAll}},
		{name: "MsgSettings refuses, error", blacklistError: true, steps: []step{refuseAll}, code: 20007},
		{name: "muted", steps: []step{mute}, code: 20012},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, serverOpts{command: func(c *command.Config) {
				c.FriendCheck, c.BlacklistError = tc.friendsOnly, tc.blacklistError
			}})
			s.users("administrator", "alice", "bob", "carol")
			admin := s.connect("administrator", connectOpts{v5: true})
			alice := s.connect("alice", connectOpts{})
			bob := s.connect("bob", connectOpts{v5: true})
			alice.syncComplete()
			bob.syncComplete()
			for _, st := range tc.steps {
				st(t, s, admin)
			}
			before, _ := s.store.LastSeq("bob")
			r, pr := alice.request("openim/sendmsg", map[string]any{"To_Account": "bob", "MsgRandom": 7,
				"MsgBody": []any{map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": "probe"}}}})
			if r.num("ErrorCode") != tc.code {
				t.Fatalf("alice → bob: %v, want code %d", r, tc.code)
			}
			if tc.code != 0 && pr.err != nil {
				t.Fatalf("publish: %v", pr.err)
			}
			// An admin sending as alice skips the policy (admin bypass), and
			// marks the end of what bob may receive.
			relOK(t, admin, "openim/sendmsg", map[string]any{"From_Account": "alice", "To_Account": "bob", "MsgRandom": 8,
				"MsgBody": []any{map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": "marker"}}}})
			var got []string
			for {
				e := relNext(bob)
				if e.str("Event") != "msg" {
					continue // notifications the steps caused
				}
				body, _ := e["MsgBody"].([]any)
				text, _ := body[0].(map[string]any)["MsgContent"].(map[string]any)["Text"].(string)
				if e.str("From_Account") != "alice" {
					t.Fatalf("bob got %v", e)
				}
				got = append(got, text)
				if text == "marker" {
					break
				}
			}
			wantSeen := []string{"marker"}
			if tc.delivered {
				wantSeen = []string{"probe", "marker"}
			}
			if fmt.Sprint(got) != fmt.Sprint(wantSeen) {
				t.Fatalf("bob received %v, want %v", got, wantSeen)
			}
			if !tc.delivered && tc.code == 0 {
				// Show as sent: alice was told OK, and the probe never
				// entered bob's timeline.
				evs, _ := s.store.ReadTimeline("bob", before, 100)
				for _, e := range evs {
					if relContains(string(e.Data), `"Text":"probe"`) {
						t.Fatalf("blocked message entered bob's timeline: %s", e.Data)
					}
				}
			}
			relSettle(t, s, admin, alice, bob)
		})
	}
}

func relContains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// A C2C mute refuses sends (20012) until it expires by the clock.
func TestRelationsMuteExpiry(t *testing.T) {
	clk := &relClock{}
	s := startServer(t, serverOpts{clock: clk.now})
	s.users("administrator", "alice", "bob")
	admin := s.connect("administrator", connectOpts{})
	alice := s.connect("alice", connectOpts{v5: true})
	relOK(t, admin, "openconfigsvr/setnospeaking", map[string]any{"Set_Account": "alice", "C2CmsgNospeakingTime": 60})
	body := func(n int) map[string]any {
		return map[string]any{"To_Account": "bob", "MsgRandom": n, "MsgBody": []any{map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": "x"}}}}
	}
	r, pr := alice.request("openim/sendmsg", body(1))
	if r.num("ErrorCode") != 20012 || pr.reason != 0x87 {
		t.Fatalf("muted send: %v, PUBACK 0x%02x", r, pr.reason)
	}
	if g := relOK(t, alice, "openconfigsvr/getnospeaking", map[string]any{}); g.num("C2CmsgNospeakingTime") <= 0 {
		t.Fatalf("getnospeaking: %v", g)
	}
	clk.off.Add(int64(61 * time.Second))
	if r, _ := alice.request("openim/sendmsg", body(2)); r.str("ActionStatus") != "OK" {
		t.Fatalf("after the mute expired: %v", r)
	}
	// An ordinary user cannot mute anyone.
	if r, _ := alice.request("openconfigsvr/setnospeaking", map[string]any{"Set_Account": "bob", "C2CmsgNospeakingTime": 60}); r.num("ErrorCode") != 60010 {
		t.Fatalf("user mutes: %v", r)
	}
	relSettle(t, s, admin, alice)
}

// An admin device sends as a user (the recipient sees that user; the
// user's own devices follow SyncOtherMachine) and as the system.
func TestRelationsImpersonationAndSystem(t *testing.T) {
	s := startServer(t, serverOpts{})
	s.users("administrator", "alice", "bob")
	admin := s.connect("administrator", connectOpts{v5: true})
	alice := s.connect("alice", connectOpts{})
	alice2 := s.connect("alice", connectOpts{clientID: "alice:tablet", v5: true})
	bob := s.connect("bob", connectOpts{})
	for _, d := range []*device{alice, alice2, bob} {
		d.syncComplete()
	}
	text := func(s string) []any {
		return []any{map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": s}}}
	}
	// SyncOtherMachine 1: bob and both of alice's devices.
	r := relOK(t, admin, "openim/sendmsg", map[string]any{"From_Account": "alice", "To_Account": "bob", "MsgRandom": 1, "SyncOtherMachine": 1, "MsgBody": text("as alice, synced")})
	for _, d := range []*device{bob, alice, alice2} {
		e := relEvent(t, d, "msg")
		if e.str("From_Account") != "alice" || e.str("To_Account") != "bob" || e.num("System") != 0 || e.str("MsgKey") != r.str("MsgKey") {
			t.Fatalf("%s got %v", d.user, e)
		}
	}
	// SyncOtherMachine 2: bob only; alice's devices next see a message bob
	// sends later, proving this one never reached them.
	relOK(t, admin, "openim/sendmsg", map[string]any{"From_Account": "alice", "To_Account": "bob", "MsgRandom": 2, "SyncOtherMachine": 2, "MsgBody": text("as alice, not synced")})
	if e := relEvent(t, bob, "msg"); e.str("From_Account") != "alice" {
		t.Fatalf("bob got %v", e)
	}
	// System message: no From_Account.
	relOK(t, admin, "openim/sendmsg", map[string]any{"To_Account": "bob", "MsgRandom": 3, "MsgBody": text("maintenance at noon")})
	if e := relEvent(t, bob, "msg"); e.num("System") != 1 || e.str("From_Account") != "administrator" {
		t.Fatalf("system message: %v", e)
	}
	bob.send("alice", 4)
	for _, d := range []*device{alice, alice2} {
		if e := relEvent(t, d, "msg"); e.str("From_Account") != "bob" {
			t.Fatalf("%s: the SyncOtherMachine 2 send reached the impersonated user: %v", d.user, e)
		}
	}
	// An ordinary user cannot act for another: sendmsg, sns, profile.
	for _, c := range []struct {
		cmd  string
		body map[string]any
		code int64
	}{
		{"openim/sendmsg", map[string]any{"From_Account": "alice", "To_Account": "alice", "MsgRandom": 5, "MsgBody": text("x")}, 90009},
		{"sns/friend_add", map[string]any{"From_Account": "alice", "AddFriendItem": []any{friendItem("bob")}}, 30004},
		{"sns/black_list_get", map[string]any{"From_Account": "alice", "StartIndex": 0, "MaxLimited": 10, "LastSequence": 0}, 30004},
		{"profile/portrait_set", map[string]any{"From_Account": "alice", "ProfileItem": []any{map[string]any{"Tag": "Tag_Profile_IM_Nick", "Value": "evil"}}}, 40004},
	} {
		if r, _ := bob.request(c.cmd, c.body); r.num("ErrorCode") != c.code || r.str("ErrorInfo") == "" {
			t.Fatalf("bob %s as alice: %v, want %d", c.cmd, r, c.code)
		}
	}
	relSettle(t, s, admin, alice, alice2, bob)
}

// SenderProfile starts from the account's Nick and FaceUrl and follows
// portrait_set from the next message on.
func TestRelationsSenderProfile(t *testing.T) {
	s := startServer(t, serverOpts{})
	s.users("bob")
	if _, err := s.store.ImportAccount(store.Account{UserID: "alice", Nick: "Alice0", FaceURL: "https://img/0.png"}); err != nil {
		t.Fatal(err)
	}
	s.settle()
	alice := s.connect("alice", connectOpts{})
	bob := s.connect("bob", connectOpts{v5: true})
	bob.syncComplete()
	prof := func() map[string]any {
		e := relEvent(t, bob, "msg")
		p, _ := e["SenderProfile"].(map[string]any)
		return p
	}
	alice.send("bob", 1)
	if p := prof(); p["Tag_Profile_IM_Nick"] != "Alice0" || p["Tag_Profile_IM_Image"] != "https://img/0.png" {
		t.Fatalf("initial SenderProfile %v", p)
	}
	relOK(t, alice, "profile/portrait_set", map[string]any{"ProfileItem": []any{
		map[string]any{"Tag": "Tag_Profile_IM_Nick", "Value": "Alice1"},
		map[string]any{"Tag": "Tag_Profile_IM_Image", "Value": "https://img/1.png"},
	}})
	alice.send("bob", 2)
	if p := prof(); p["Tag_Profile_IM_Nick"] != "Alice1" || p["Tag_Profile_IM_Image"] != "https://img/1.png" {
		t.Fatalf("SenderProfile after portrait_set %v", p)
	}
	r := relOK(t, bob, "profile/portrait_get", map[string]any{"To_Account": []string{"alice"}, "TagList": []string{"Tag_Profile_IM_Nick"}})
	if _, ok := r["ErrorDisplay"]; !ok {
		t.Fatalf("portrait_get without ErrorDisplay: %v", r)
	}
	relSettle(t, s, alice, bob)
}

// The 1,001st blacklist entry is refused (30013); black_list_get pages.
func TestRelationsBlacklistLimit(t *testing.T) {
	s := startServer(t, serverOpts{})
	var peers []string
	for i := 0; i < 1001; i++ {
		peers = append(peers, fmt.Sprintf("peer%04d", i))
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, p := range append(peers, "alice") {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := s.store.ImportAccount(store.Account{UserID: p}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	// In -cluster mode the accounts went into the owner's store and alice
	// logs in on another node, whose view must have applied them first
	// (as users() does).
	s.settle()
	alice := s.connect("alice", connectOpts{})
	if r, _ := alice.request("sns/black_list_add", map[string]any{"To_Account": peers}); r.num("ErrorCode") != 30001 {
		t.Fatalf("1001 in one call: %v", r)
	}
	r := relOK(t, alice, "sns/black_list_add", map[string]any{"To_Account": peers[:1000]})
	if fa, _ := r["Fail_Account"].([]any); len(fa) != 0 {
		t.Fatalf("first 1000 refused: %v", fa)
	}
	r = relOK(t, alice, "sns/black_list_add", map[string]any{"To_Account": peers[1000:]})
	if c := relItem(t, r, peers[1000]); c != 30013 {
		t.Fatalf("1001st entry: %d", c)
	}
	total, start := 0, 0
	for {
		r := relOK(t, alice, "sns/black_list_get", map[string]any{"StartIndex": start, "MaxLimited": 300, "LastSequence": 0})
		total += len(r["BlackListItem"].([]any))
		if _, ok := r["CurruentSequence"]; !ok {
			t.Fatalf("no CurruentSequence: %v", r)
		}
		if start = int(r.num("StartIndex")); start == 0 {
			break
		}
	}
	if total != 1000 {
		t.Fatalf("black_list_get listed %d", total)
	}
	relSettle(t, s, alice)
}

// Built-in notifications reach both sides: request, acceptance, deletion
// by blacklisting, and a profile change reaching a friend.
func TestRelationsNotifications(t *testing.T) {
	s := startServer(t, serverOpts{})
	s.users("alice", "bob")
	alice := s.connect("alice", connectOpts{v5: true})
	bob := s.connect("bob", connectOpts{})
	alice.syncComplete()
	bob.syncComplete()

	r := relOK(t, alice, "sns/friend_add", map[string]any{"AddFriendItem": []any{map[string]any{"To_Account": "bob", "AddSource": "AddSource_Type_Search", "AddWording": "hi bob"}}})
	if c := relItem(t, r, "bob"); c != 30539 {
		t.Fatalf("friend_add to NeedConfirm: %d", c)
	}
	for _, d := range []*device{alice, bob} {
		e := relEvent(t, d, "friend_request")
		if e.str("From_Account") != "alice" || e.str("To_Account") != "bob" || e.str("AddWording") != "hi bob" || e.str("AddType") != "Add_Type_Both" {
			t.Fatalf("%s: %v", d.user, e)
		}
	}
	// Bob accepts by adding alice back.
	relOK(t, bob, "sns/friend_add", map[string]any{"AddFriendItem": []any{friendItem("alice")}})
	for _, d := range []*device{alice, bob} {
		if e := relEvent(t, d, "friend_request_delete"); e.str("Reason") != "accepted" {
			t.Fatalf("%s: %v", d.user, e)
		}
		if e := relEvent(t, d, "friend_add"); e.str("AddType") != "Add_Type_Both" {
			t.Fatalf("%s: %v", d.user, e)
		}
	}
	// A profile change reaches the user's devices and their friends.
	relOK(t, alice, "profile/portrait_set", map[string]any{"ProfileItem": []any{map[string]any{"Tag": "Tag_Profile_IM_SelfSignature", "Value": "busy"}}})
	for _, d := range []*device{alice, bob} {
		e := relEvent(t, d, "profile_change")
		items, _ := e["ProfileItem"].([]any)
		if e.str("From_Account") != "alice" || len(items) != 1 || items[0].(map[string]any)["Value"] != "busy" {
			t.Fatalf("%s: %v", d.user, e)
		}
	}
	// Blacklisting: the friendship ends on both sides; only the blocker
	// hears of the blacklist.
	relOK(t, bob, "sns/black_list_add", map[string]any{"To_Account": []string{"alice"}})
	for _, d := range []*device{alice, bob} {
		if e := relEvent(t, d, "friend_delete"); e.str("DeleteType") != "Delete_Type_Both" {
			t.Fatalf("%s: %v", d.user, e)
		}
	}
	if e := relEvent(t, bob, "blacklist_add"); e.str("To_Account") != "alice" {
		t.Fatalf("bob: %v", e)
	}
	relOK(t, bob, "sns/black_list_delete", map[string]any{"To_Account": []string{"alice"}})
	relEvent(t, bob, "blacklist_delete")
	// Alice's next event is a message: no blacklist event reached her.
	bob.send("alice", 1)
	if e := relEvent(t, alice, "msg"); e.str("From_Account") != "bob" {
		t.Fatalf("alice: %v", e)
	}
	relSettle(t, s, alice, bob)
}

// openim/batchsendmsg: per-user errors, one MsgKey, the limit, admins only.
func TestRelationsBatchSend(t *testing.T) {
	s := startServer(t, serverOpts{})
	s.users("administrator", "alice", "bob", "carol")
	admin := s.connect("administrator", connectOpts{v5: true})
	bob := s.connect("bob", connectOpts{})
	carol := s.connect("carol", connectOpts{v5: true})
	bob.syncComplete()
	carol.syncComplete()
	text := []any{map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": "news"}}}

	r, _ := admin.request("openim/batchsendmsg", map[string]any{"From_Account": "alice", "To_Account": []string{"bob", "ghost", "carol"}, "MsgRandom": 9, "MsgBody": text})
	if r.str("ActionStatus") != "SomeError" || r.num("ErrorCode") != 0 || r.str("MsgKey") == "" {
		t.Fatalf("partial batch: %v", r)
	}
	el, _ := r["ErrorList"].([]any)
	if len(el) != 1 || el[0].(map[string]any)["To_Account"] != "ghost" || el[0].(map[string]any)["ErrorCode"].(float64) != 70107 {
		t.Fatalf("ErrorList: %v", el)
	}
	for _, d := range []*device{bob, carol} {
		e := relEvent(t, d, "msg")
		if e.str("From_Account") != "alice" || e.str("MsgKey") != r.str("MsgKey") {
			t.Fatalf("%s: %v (batch MsgKey %s)", d.user, e, r.str("MsgKey"))
		}
	}
	// System batch: all OK, System 1.
	r = relOK(t, admin, "openim/batchsendmsg", map[string]any{"To_Account": []string{"bob", "carol"}, "MsgRandom": 10, "MsgBody": text})
	if _, ok := r["ErrorList"]; ok {
		t.Fatalf("all-OK batch with ErrorList: %v", r)
	}
	for _, d := range []*device{bob, carol} {
		if e := relEvent(t, d, "msg"); e.num("System") != 1 {
			t.Fatalf("%s: %v", d.user, e)
		}
	}
	many := make([]string, 501)
	for i := range many {
		many[i] = fmt.Sprintf("u%d", i)
	}
	bobReq, _ := bob.request("openim/batchsendmsg", map[string]any{"To_Account": []string{"carol"}, "MsgRandom": 11, "MsgBody": text})
	for _, c := range []struct {
		r    event
		code int64
	}{
		{func() event {
			r, _ := admin.request("openim/batchsendmsg", map[string]any{"To_Account": many, "MsgRandom": 11, "MsgBody": text})
			return r
		}(), 90011},
		{func() event {
			r, _ := admin.request("openim/batchsendmsg", map[string]any{"To_Account": []string{"ghost"}, "MsgRandom": 11, "MsgBody": text})
			return r
		}(), 90012},
		{func() event {
			r, _ := admin.request("openim/batchsendmsg", map[string]any{"To_Account": []string{"bob"}, "MsgRandom": 11, "MsgBody": "x"})
			return r
		}(), 90007},
		{bobReq, 90009},
	} {
		if c.r.str("ActionStatus") != "FAIL" || c.r.num("ErrorCode") != c.code {
			t.Fatalf("got %v, want FAIL %d", c.r, c.code)
		}
	}
	relSettle(t, s, admin, bob, carol)
}
