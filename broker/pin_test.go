package broker_test

import (
	"testing"
	"time"
)

// Pinning a conversation from one device (im/{me}/req/recentcontact/top):
// the reply says OK, my other device gets a recentcontact_top event on
// im/{me}/in, the peer gets nothing, and get_list shows the pin first —
// also after a restart.
func TestPinConversationMQTT(t *testing.T) {
	clock := &testClock{}
	s := startServer(t, serverOpts{clock: clock.Now})
	s.users("alice", "bob", "carol")
	phone := s.connect("alice", connectOpts{clientID: "alice:phone"})
	phone.syncComplete()
	laptop := s.connect("alice", connectOpts{clientID: "alice:laptop", v5: true})
	laptop.syncComplete()
	bob := s.connect("bob", connectOpts{v5: true})
	bob.syncComplete()
	phone.send("bob", 1)
	laptop.nextMsg()
	bob.nextMsg()
	clock.Advance(time.Second) // carol's conversation is the newer one
	phone.send("carol", 2)
	laptop.nextMsg()

	r, _ := phone.request("recentcontact/top", map[string]any{"OperationType": 1, "RecentContactItem": []any{map[string]any{"Type": 1, "To_Account": "bob"}}})
	if r.str("ActionStatus") != "OK" {
		t.Fatalf("pin: %v", r)
	}
	e := laptop.next()
	if e.str("Event") != "recentcontact_top" || e.str("From_Account") != "alice" || e.str("To_Account") != "bob" ||
		e.num("TopFlag") != 1 || e.num("Type") != 1 || e.num("Seq") == 0 || e.num("Time") == 0 {
		t.Fatalf("laptop got %v, want a recentcontact_top event pinning bob", e)
	}
	if e := phone.next(); e.str("Event") != "recentcontact_top" {
		t.Fatalf("phone got %v, want its own recentcontact_top (the timeline is the user's)", e)
	}
	// Pinning again changes nothing and says nothing.
	if r, _ := phone.request("recentcontact/top", map[string]any{"OperationType": 1, "RecentContactItem": []any{map[string]any{"Type": 1, "To_Account": "bob"}}}); r.str("ActionStatus") != "OK" {
		t.Fatalf("pin again: %v", r)
	}
	phone.send("carol", 3) // the next event after the pin must be this message
	if e := laptop.next(); e.str("Event") != "msg" {
		t.Fatalf("a repeated pin sent %v", e)
	}
	select {
	case e := <-bob.in:
		t.Fatalf("the peer was told: %v", e)
	default:
	}

	first := func(d *device) event {
		t.Helper()
		list, _ := d.request("recentcontact/get_list", map[string]any{"AssistFlags": 1})
		items, _ := list["SessionItem"].([]any)
		if len(items) != 2 {
			t.Fatalf("get_list: %v", list)
		}
		return event(items[0].(map[string]any))
	}
	if it := first(laptop); it.str("To_Account") != "bob" || it.num("TopFlag") != 1 {
		t.Fatalf("first item %v, want bob pinned (carol's message is newer)", it)
	}
	phone.close()
	laptop.close()
	bob.close()
	s.restart()
	laptop = s.connect("alice", connectOpts{clientID: "alice:laptop", v5: true})
	laptop.drainToSync()
	if it := first(laptop); it.str("To_Account") != "bob" || it.num("TopFlag") != 1 {
		t.Fatalf("after restart: first item %v, want bob pinned", it)
	}
	r, _ = laptop.request("recentcontact/top", map[string]any{"OperationType": 2, "RecentContactItem": []any{map[string]any{"Type": 1, "To_Account": "bob"}}})
	if r.str("ActionStatus") != "OK" {
		t.Fatalf("unpin: %v", r)
	}
	if e := laptop.next(); e.str("Event") != "recentcontact_top" || e.num("TopFlag") != 0 {
		t.Fatalf("got %v, want recentcontact_top with TopFlag 0", e)
	}
	if it := first(laptop); it.str("To_Account") != "carol" || it.num("TopFlag") != 0 {
		t.Fatalf("after unpin: first item %v, want carol (newest), unpinned", it)
	}
}
