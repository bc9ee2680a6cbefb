package broker_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/wait"
	"github.com/duet-im/duet/store"
)

// The product brief's offline flow over plain MQTT: A sends 50 messages to
// an offline B; B's phone gets all 50 in order then sync_complete; the
// conversation list shows A with 50 unread; B's laptop, seen for the first
// time later, starts after what the phone received; B's send from the phone
// reaches the laptop.
func TestOfflineFlow(t *testing.T) {
	s := startServer(t, serverOpts{})
	s.users("alice", "bob")
	alice := s.connect("alice", connectOpts{})
	alice.syncComplete()
	keys := make([]string, 50)
	for i := range keys {
		keys[i] = alice.send("bob", i+1).str("MsgKey")
	}
	// bob comes later: with partitions his side of each send is his
	// partition's, a few milliseconds after alice's acknowledgement
	// (docs/cluster.md §11.3); the 50th could otherwise still come live,
	// after sync_complete.
	wait.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		if last, _ := s.store.LastSeq("bob"); last != 50 {
			return fmt.Errorf("bob's timeline at %d", last)
		}
		return nil
	})
	phone := s.connect("bob", connectOpts{clientID: "bob:phone", v5: true})
	for i, k := range keys {
		e := phone.next()
		if e.str("Event") != "msg" || e.num("Seq") != int64(i+1) || e.str("MsgKey") != k {
			t.Fatalf("replay %d: %v", i, e)
		}
	}
	if last := phone.syncComplete(); last != 50 {
		t.Fatalf("LastSeq %d", last)
	}
	list, _ := phone.request("recentcontact/get_list", map[string]any{})
	items, _ := list["SessionItem"].([]any)
	if len(items) != 1 {
		t.Fatalf("contact list %v", list)
	}
	item := event(items[0].(map[string]any))
	if item.str("To_Account") != "alice" || item.num("UnreadMsgNum") != 50 || item.num("Type") != 1 {
		t.Fatalf("contact %v", item)
	}
	if lm, _ := item["LastMsg"].(map[string]any); lm == nil || lm["MsgKey"] != keys[49] {
		t.Fatalf("last message %v", item["LastMsg"])
	}
	// The phone acknowledged everything before the laptop appears.
	wait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if hw, _ := s.store.HighWater("bob"); hw != 50 {
			return fmt.Errorf("high water %d", hw)
		}
		return nil
	})
	laptop := s.connect("bob", connectOpts{clientID: "bob:laptop"})
	if last := laptop.syncComplete(); last != 50 {
		t.Fatalf("laptop LastSeq %d", last)
	}
	r := phone.send("alice", 1000)
	if e := laptop.nextMsg(); e.str("MsgKey") != r.str("MsgKey") || e.str("From_Account") != "bob" {
		t.Fatalf("laptop got %v", e)
	}
	// History reaches what the laptop never received live.
	page, _ := laptop.request("openim/getmsg", map[string]any{"Peer_Account": "alice", "MaxCnt": 100})
	if page.num("MsgCnt") != 51 || page.num("Complete") != 1 {
		t.Fatalf("history: %d messages, complete %d", page.num("MsgCnt"), page.num("Complete"))
	}
}

// openim/sync replays after FromSeq; its reply comes after the replayed
// events and before sync_complete.
func TestSyncCommand(t *testing.T) {
	s := startServer(t, serverOpts{})
	s.users("alice", "bob")
	alice := s.connect("alice", connectOpts{})
	alice.syncComplete()
	for i := 1; i <= 5; i++ {
		alice.send("bob", i)
	}
	bob := s.connect("bob", connectOpts{v5: true})
	bob.drainToSync()
	r, _ := bob.request("openim/sync", map[string]any{"FromSeq": 2})
	if r.str("ActionStatus") != "OK" || r.num("LastSeq") != 5 {
		t.Fatalf("sync reply %v", r)
	}
	var lastArrival int64
	for want := int64(3); want <= 5; want++ {
		e := bob.next()
		if e.num("Seq") != want {
			t.Fatalf("replayed %v, want Seq %d", e, want)
		}
		lastArrival = e.num("_arrival")
	}
	done := bob.next()
	if done.str("Event") != "sync_complete" || done.num("LastSeq") != 5 {
		t.Fatalf("after replay: %v", done)
	}
	if !(lastArrival < r.num("_arrival") && r.num("_arrival") < done.num("_arrival")) {
		t.Fatalf("order: last event %d, reply %d, sync_complete %d", lastArrival, r.num("_arrival"), done.num("_arrival"))
	}
	// FromSeq beyond the end is refused, and nothing is replayed.
	bad, _ := bob.request("openim/sync", map[string]any{"FromSeq": 99})
	if bad.num("ErrorCode") != 20001 || !strings.Contains(bad.str("ErrorInfo"), "beyond") {
		t.Fatalf("FromSeq beyond the end: %v", bad)
	}
	neg, _ := bob.request("openim/sync", map[string]any{"FromSeq": -1})
	if neg.num("ErrorCode") != 90001 {
		t.Fatalf("negative FromSeq: %v", neg)
	}
}

// appendBacklog puts n msg events in user's timeline straight through the
// store (fast), as sendmsg would.
func appendBacklog(t testing.TB, st *store.Store, user string, n int) {
	t.Helper()
	for done := 0; done < n; {
		batch := min(1000, n-done)
		err := st.UpdateFor(user, func(tx *store.Tx) error {
			for i := 0; i < batch; i++ {
				if _, err := tx.Append(user, []byte(fmt.Sprintf(`"Event":"msg","From_Account":"alice","To_Account":%q,"MsgKey":"k%d","MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"backlog"}}]}`, user, done+i))); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		done += batch
	}
}

// A 100,000-event backlog reaches a device with a small receive maximum:
// nothing lost, in order, and the server never had more than its window of
// events in flight for it.
func TestLargeBacklogFlowControl(t *testing.T) {
	n := 100000
	if testing.Short() {
		n = 10000
	}
	s := startServer(t, serverOpts{window: 32})
	s.users("alice", "bob")
	appendBacklog(t, s.store, "bob", n)
	bob := s.connect("bob", connectOpts{v5: true, recvMax: 8, topics: []string{"im/bob/in"}})
	for want := int64(1); want <= int64(n); want++ {
		if e := bob.next(); e.num("Seq") != want {
			t.Fatalf("got %v, want Seq %d", e, want)
		}
	}
	if last := bob.syncComplete(); last != int64(n) {
		t.Fatalf("LastSeq %d", last)
	}
	if max := s.broker.Devices.Metrics.PendingMax.Load(); max > 8 {
		t.Fatalf("%d events were in flight to a device whose receive maximum is 8", max)
	}
}

// A restart in the middle of a replay loses nothing: the device resumes
// from its cursor.
func TestRestartMidReplay(t *testing.T) {
	s := startServer(t, serverOpts{window: 16})
	s.users("alice", "bob")
	appendBacklog(t, s.store, "bob", 2000)
	bob := s.connect("bob", connectOpts{clientID: "bob:phone"})
	seen := map[int64]bool{}
	for i := 0; i < 300; i++ {
		seen[bob.next().num("Seq")] = true
	}
	s.restart()
	bob.close()
	// Whatever the old connection received, read or not, counts as seen.
	maxSeen := int64(0)
	for drained := false; !drained; {
		select {
		case e := <-bob.in:
			seen[e.num("Seq")] = true
		default:
			drained = true
		}
	}
	for seq := range seen {
		maxSeen = max(maxSeen, seq)
	}
	bob = s.connect("bob", connectOpts{clientID: "bob:phone"})
	first := bob.next().num("Seq")
	if first > maxSeen+1 || first < 1 {
		t.Fatalf("resumed at Seq %d after receiving up to %d", first, maxSeen)
	}
	seen[first] = true
	for {
		e := bob.next()
		if e.str("Event") == "sync_complete" {
			if e.num("LastSeq") != 2000 {
				t.Fatalf("LastSeq %d", e.num("LastSeq"))
			}
			break
		}
		seen[e.num("Seq")] = true
	}
	for seq := int64(1); seq <= 2000; seq++ {
		if !seen[seq] {
			t.Fatalf("Seq %d lost across the restart", seq)
		}
	}
}

// Messages leave timelines, history and the conversation list when their
// MsgLifeTime passes, and the disk space comes back.
func TestRetentionExpiry(t *testing.T) {
	clock := &testClock{}
	s := startServer(t, serverOpts{clock: clock.Now})
	s.users("alice", "bob")
	alice := s.connect("alice", connectOpts{topics: []string{"im/alice/rsp"}})
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := 1; i <= 300; i++ {
		// Incompressible text, so the store's size follows the messages'.
		pad := make([]byte, 6000)
		for j := range pad {
			pad[j] = 'a' + byte(rnd.IntN(26))
		}
		r, _ := alice.request("openim/sendmsg", map[string]any{"To_Account": "bob", "MsgRandom": i, "MsgLifeTime": 60,
			"MsgBody": []any{map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": string(pad)}}}})
		if r.str("ActionStatus") != "OK" {
			t.Fatal(r)
		}
	}
	keep := alice.send("bob", 9999) // default lifetime: 7 days
	if err := s.store.Compact(); err != nil {
		t.Fatal(err)
	}
	before := s.store.LiveSize()

	clock.Advance(61 * time.Second)
	n, err := s.store.Sweep(clock.Now(), 0)
	if err != nil || n == 0 {
		t.Fatalf("sweep: %d %v", n, err)
	}
	if err := s.store.Compact(); err != nil {
		t.Fatal(err)
	}
	after := s.store.LiveSize()
	if after >= before/2 {
		t.Fatalf("disk not reclaimed: %d bytes before, %d after", before, after)
	}
	evs, _ := s.store.ReadTimeline("bob", 0, 1000)
	if len(evs) != 1 || evs[0].Seq != 301 {
		t.Fatalf("bob's timeline after expiry: %d events", len(evs))
	}
	page, _ := alice.request("openim/getmsg", map[string]any{"Peer_Account": "bob"})
	list, _ := page["MsgList"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["MsgKey"] != keep.str("MsgKey") {
		t.Fatalf("history after expiry: %v", page)
	}
	// Seq continues past expired events.
	if r := alice.send("bob", 10000); r.num("Seq") != 302 {
		t.Fatalf("alice's Seq after expiry %d", r.num("Seq"))
	}
	// A device whose cursor is before the expired events skips them.
	bob := s.connect("bob", connectOpts{})
	for _, want := range []int64{301, 302} {
		if e := bob.next(); e.num("Seq") != want {
			t.Fatalf("replay across expired events: %v, want Seq %d", e, want)
		}
	}
	if last := bob.syncComplete(); last != 302 {
		t.Fatalf("LastSeq %d", last)
	}
}

// Recall: only one's own message, only within the window, only once; both
// users' devices get the withdraw event and the unread count drops.
func TestRecall(t *testing.T) {
	clock := &testClock{}
	s := startServer(t, serverOpts{clock: clock.Now})
	s.users("alice", "bob")
	alice := s.connect("alice", connectOpts{})
	alice.syncComplete()
	bob := s.connect("bob", connectOpts{})
	bob.syncComplete()
	m1 := alice.send("bob", 1)
	m2 := alice.send("bob", 2)
	bob.nextMsg()
	bob.nextMsg()

	for _, tc := range []struct {
		who  *device
		body map[string]any
		code int64
	}{
		{bob, map[string]any{"To_Account": "alice", "MsgKey": m1.str("MsgKey")}, 20022},           // not the sender
		{alice, map[string]any{"To_Account": "bob", "MsgKey": "1_2_3"}, 20022},                    // unknown key
		{alice, map[string]any{"To_Account": "bob"}, 90054},                                       // no key
		{alice, map[string]any{"To_Account": "nobody", "MsgKey": "1_2_3"}, 90003},                 // unknown peer
		{alice, map[string]any{"From_Account": "bob", "To_Account": "bob", "MsgKey": "x"}, 90009}, // for someone else
	} {
		if r, _ := tc.who.request("openim/msgwithdraw", tc.body); r.num("ErrorCode") != tc.code {
			t.Fatalf("%v: %v, want %d", tc.body, r, tc.code)
		}
	}
	r, _ := alice.request("openim/msgwithdraw", map[string]any{"To_Account": "bob", "MsgKey": m1.str("MsgKey")})
	if r.str("ActionStatus") != "OK" {
		t.Fatal(r)
	}
	for _, d := range []*device{alice, bob} {
		e := d.next()
		if e.str("Event") != "withdraw" || e.str("MsgKey") != m1.str("MsgKey") {
			t.Fatalf("%s got %v", d.user, e)
		}
	}
	if r, _ := alice.request("openim/msgwithdraw", map[string]any{"To_Account": "bob", "MsgKey": m1.str("MsgKey")}); r.num("ErrorCode") != 20023 {
		t.Fatalf("second recall: %v", r)
	}
	unread, _ := bob.request("openim/get_c2c_unread_msg_num", map[string]any{})
	if unread.num("AllC2CUnreadMsgNum") != 1 {
		t.Fatalf("unread after recall: %v", unread)
	}
	clock.Advance(3 * time.Minute)
	if r, _ := alice.request("openim/msgwithdraw", map[string]any{"To_Account": "bob", "MsgKey": m2.str("MsgKey")}); r.num("ErrorCode") != 20016 {
		t.Fatalf("recall after the window: %v", r)
	}
	// History shows the recalled message with MsgFlagBits 8 and no content.
	page, _ := bob.request("openim/getmsg", map[string]any{"Peer_Account": "alice", "MaxTime": clock.Now().Unix() + 10})
	list, _ := page["MsgList"].([]any)
	if len(list) != 2 {
		t.Fatalf("history %v", page)
	}
	// Both messages share a second, so history orders them by MsgSeq.
	var recalled, kept event
	for _, it := range list {
		if e := event(it.(map[string]any)); e.str("MsgKey") == m1.str("MsgKey") {
			recalled = e
		} else {
			kept = e
		}
	}
	if recalled == nil || recalled.num("MsgFlagBits") != 8 || len(recalled["MsgBody"].([]any)) != 0 {
		t.Fatalf("recalled message in history: %v", recalled)
	}
	if kept.num("MsgFlagBits") != 0 || len(kept["MsgBody"].([]any)) != 1 {
		t.Fatalf("the other message: %v", kept)
	}
	// A device replaying from scratch sees the recalled copy without content.
	evs, _ := s.store.ReadTimeline("bob", 0, 1)
	if !strings.Contains(string(evs[0].Data), `"MsgFlagBits":8`) || strings.Contains(string(evs[0].Data), "hello 1\"") {
		t.Fatalf("timeline copy not rewritten: %s", evs[0].Data)
	}
}

// Reading on one device resets the unread count everywhere and gives the
// sender a read receipt.
func TestReadReceipts(t *testing.T) {
	s := startServer(t, serverOpts{})
	s.users("alice", "bob")
	alice := s.connect("alice", connectOpts{})
	alice.syncComplete()
	phone := s.connect("bob", connectOpts{clientID: "bob:phone"})
	phone.syncComplete()
	laptop := s.connect("bob", connectOpts{clientID: "bob:laptop", v5: true})
	laptop.syncComplete()
	for i := 1; i <= 3; i++ {
		alice.send("bob", i)
		phone.nextMsg()
		laptop.nextMsg()
	}
	if u, _ := laptop.request("openim/get_c2c_unread_msg_num", map[string]any{"Peer_Account": []string{"alice", "nobody"}}); fmt.Sprint(u["C2CUnreadMsgNumList"]) != "[map[C2CUnreadMsgNum:3 Peer_Account:alice]]" || u["ErrorList"] == nil {
		t.Fatalf("unread before read: %v", u)
	}
	r, _ := phone.request("openim/set_msg_read", map[string]any{"Peer_Account": "alice"})
	if r.str("ActionStatus") != "OK" {
		t.Fatal(r)
	}
	receipt := alice.next()
	if receipt.str("Event") != "read" || receipt.str("Report_Account") != "bob" || receipt.str("Peer_Account") != "alice" || receipt.num("MsgReadTime") == 0 {
		t.Fatalf("receipt %v", receipt)
	}
	if e := laptop.next(); e.str("Event") != "read" || e.str("Report_Account") != "bob" {
		t.Fatalf("laptop %v", e)
	}
	list, _ := laptop.request("recentcontact/get_list", map[string]any{})
	item := event(list["SessionItem"].([]any)[0].(map[string]any))
	if item.num("UnreadMsgNum") != 0 {
		t.Fatalf("unread after read %v", item)
	}
	// The history now says alice's messages were read by bob.
	page, _ := alice.request("openim/getmsg", map[string]any{"Peer_Account": "bob"})
	for _, m := range page["MsgList"].([]any) {
		if m.(map[string]any)["IsPeerRead"] != float64(1) {
			t.Fatalf("IsPeerRead not set: %v", m)
		}
	}
}

// getmsg pages backwards with MaxCnt and LastMsgKey and says when it is done.
func TestHistoryPaging(t *testing.T) {
	clock := &testClock{}
	s := startServer(t, serverOpts{clock: clock.Now})
	s.users("alice", "bob")
	alice := s.connect("alice", connectOpts{topics: []string{"im/alice/rsp"}})
	var keys []string
	for i := 1; i <= 45; i++ {
		keys = append(keys, alice.send("bob", i).str("MsgKey"))
		clock.Advance(time.Second)
	}
	var got []string
	req := map[string]any{"Peer_Account": "bob", "MaxCnt": 20}
	for pages := 0; ; pages++ {
		if pages > 3 {
			t.Fatal("paging does not end")
		}
		page, _ := alice.request("openim/getmsg", req)
		list := page["MsgList"].([]any)
		var chunk []string
		for _, m := range list {
			chunk = append(chunk, m.(map[string]any)["MsgKey"].(string))
		}
		got = append(chunk, got...)
		if page.num("Complete") == 1 {
			break
		}
		if len(list) != 20 {
			t.Fatalf("incomplete page of %d", len(list))
		}
		req = map[string]any{"Peer_Account": "bob", "MaxCnt": 20, "MaxTime": page.num("LastMsgTime") + 1, "LastMsgKey": page.str("LastMsgKey")}
	}
	if strings.Join(got, ",") != strings.Join(keys, ",") {
		t.Fatalf("paged history differs:\n got %v\nwant %v", got, keys)
	}
	for _, bad := range []map[string]any{
		{"Peer_Account": "bob", "MaxCnt": 101},
		{"Peer_Account": "bob", "MaxTime": -1},
		{"Peer_Account": "bob", "LastMsgKey": "no_such_key"},
		{"Peer_Account": "nobody"},
	} {
		if r, _ := alice.request("openim/getmsg", bad); r.str("ActionStatus") != "FAIL" || r.str("ErrorInfo") == "" {
			t.Fatalf("%v accepted: %v", bad, r)
		}
	}
}

// Typing and online-only messages travel on live and are never stored.
func TestLiveEvents(t *testing.T) {
	s := startServer(t, serverOpts{})
	s.users("alice", "bob")
	alice := s.connect("alice", connectOpts{})
	alice.syncComplete()
	bob := s.connect("bob", connectOpts{v5: true})
	bob.syncComplete()
	alice.request("openim/typing", map[string]any{"To_Account": "bob"})
	select {
	case e := <-bob.live:
		if e.str("Event") != "typing" || e.str("From_Account") != "alice" {
			t.Fatalf("live %v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no typing event")
	}
	r, _ := alice.request("openim/sendmsg", map[string]any{"To_Account": "bob", "MsgRandom": 5, "MsgLifeTime": 0,
		"MsgBody": []any{map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": "ephemeral"}}}})
	select {
	case e := <-bob.live:
		if e.str("Event") != "msg" || e.str("MsgKey") != r.str("MsgKey") {
			t.Fatalf("live %v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no online-only message")
	}
	if last, _ := s.store.LastSeq("bob"); last != 0 {
		t.Fatalf("online-only message stored: LastSeq %d", last)
	}
}

// SendMsgControl: NoUnread does not count the message unread, NoLastMsg
// leaves the conversation's last message as it was.
func TestSendMsgControl(t *testing.T) {
	s := startServer(t, serverOpts{})
	s.users("alice", "bob")
	alice := s.connect("alice", connectOpts{topics: []string{"im/alice/rsp"}})
	bob := s.connect("bob", connectOpts{topics: []string{"im/bob/rsp"}})
	text := []any{map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": "x"}}}
	first := alice.send("bob", 1)
	for i, ctl := range []string{"NoUnread", "NoLastMsg"} {
		r, _ := alice.request("openim/sendmsg", map[string]any{"To_Account": "bob", "MsgRandom": 10 + i, "MsgBody": text, "SendMsgControl": []string{ctl}})
		if r.str("ActionStatus") != "OK" {
			t.Fatal(r)
		}
	}
	// 1 (the plain message) + 1 (NoLastMsg still counts) — not the NoUnread
	// one. With partitions bob's side of a send is his partition's, a few
	// milliseconds after alice's acknowledgement (docs/cluster.md §11.3).
	var item event
	wait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		list, _ := bob.request("recentcontact/get_list", map[string]any{})
		items, _ := list["SessionItem"].([]any)
		if len(items) == 0 {
			return fmt.Errorf("no conversation: %v", list)
		}
		item = event(items[0].(map[string]any))
		if item.num("UnreadMsgNum") != 2 {
			return fmt.Errorf("unread %d, want 2", item.num("UnreadMsgNum"))
		}
		return nil
	})
	last, _ := item["LastMsg"].(map[string]any)
	if last == nil || last["MsgRandom"] != float64(10) {
		t.Fatalf("last message %v, want the NoUnread one (MsgRandom 10), not the NoLastMsg one; first was %s", last, first.str("MsgKey"))
	}
}

// A second openim/sync while the first is replaying supersedes it, and both
// requests are answered.
func TestSyncSuperseded(t *testing.T) {
	s := startServer(t, serverOpts{window: 4})
	s.users("alice", "bob")
	appendBacklog(t, s.store, "bob", 2000)
	bob := s.connect("bob", connectOpts{v5: true, recvMax: 4})
	bob.drainToSync()
	replies := make(chan event, 2)
	for _, id := range []string{"s1", "s2"} {
		ch := make(chan event, 1)
		bob.mu.Lock()
		bob.replies[id] = ch
		bob.mu.Unlock()
		go func() { replies <- <-ch }()
		bob.publish("im/bob/req/openim/sync", []byte(`{"ReqId":"`+id+`","FromSeq":0}`))
	}
	for i := 0; i < 2; i++ {
		select {
		case r := <-replies:
			if r.str("ActionStatus") != "OK" {
				t.Fatalf("sync reply %v", r)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("a superseded openim/sync was never answered")
		}
	}
	if last := bob.drainToSync(); last != 2000 {
		t.Fatalf("LastSeq %d", last)
	}
}

var errNotYet = fmt.Errorf("not yet")

// appendBacklogText appends n msg events carrying text to user's timeline.
func appendBacklogText(t testing.TB, s *testServer, user string, n int, text string) {
	t.Helper()
	err := s.store.UpdateFor(user, func(tx *store.Tx) error {
		for i := 0; i < n; i++ {
			if _, err := tx.Append(user, []byte(fmt.Sprintf(`"Event":"msg","From_Account":"alice","To_Account":%q,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":%q}}]}`, user, text))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The sender's copies of messages are stored as references to the
// recipient's: a device of the sender replaying them from the store (past
// the recent-events ring) gets each in full, with the sender's Seqs.
func TestSenderCopiesReplayed(t *testing.T) {
	s := startServer(t, serverOpts{})
	s.users("alice", "bob")
	tablet := s.connect("alice", connectOpts{clientID: "alice:tablet"})
	tablet.syncComplete()
	tablet.close()
	phone := s.connect("alice", connectOpts{clientID: "alice:phone"})
	phone.syncComplete()
	var replies []event
	for i := 1; i <= 40; i++ {
		replies = append(replies, phone.send("bob", i))
	}
	tablet = s.connect("alice", connectOpts{clientID: "alice:tablet"})
	for i, r := range replies {
		e := tablet.nextMsg()
		if e.num("Seq") != r.num("Seq") || e.str("MsgKey") != r.str("MsgKey") || e.str("To_Account") != "bob" || e["MsgBody"] == nil {
			t.Fatalf("replayed copy %d: %v, reply %v", i+1, e, r)
		}
	}
	if last := tablet.syncComplete(); last != 40 {
		t.Fatalf("sync_complete at %d, want 40", last)
	}
}
