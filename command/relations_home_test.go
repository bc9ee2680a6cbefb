package command

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/duet-im/duet/store"
)

// relEvents lists the relation events in user's timeline after Seq
// after, as "Event From→To".
func (f *fixture) relEvents(user string, after uint64) []string {
	f.t.Helper()
	evs, err := f.st.ReadTimeline(user, after, 1000)
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		var ev relationEvent
		if err := json.Unmarshal(e.Data, &ev); err != nil {
			f.t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %s→%s", ev.Event, ev.From, ev.To))
	}
	return out
}

// lag removes one key alone: what the home alice's transaction sees when
// one half of a relationship has not reached its partition yet
// (docs/cluster.md §11.2). Removing the foreign half (bob's record)
// leaves alice's reverse index saying it is there; removing alice's index
// leaves bob's record, as alice's view of bob's partition shows it, saying
// so.
func (f *fixture) lag(prefix, a, b string) {
	f.t.Helper()
	err := f.st.Update(func(tx *store.Tx) error {
		if v, err := tx.Get(store.RelationKey(prefix, a, b)); err != nil || v == nil {
			return fmt.Errorf("%s%s/%s is not there to remove (%v)", prefix, a, b, err)
		}
		tx.Delete(store.RelationKey(prefix, a, b))
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

// TestForeignDeleteDecidedByHome: whether a relationship between the home
// H (alice) and another user (bob) was there, which decides the events
// written to H's timeline and the reply's per-peer result, comes from
// H's own keys — the request bob holds from alice (rq/bob/alice, bob's)
// from alice's rs/alice/bob, bob's friendship with alice (rf/bob/alice)
// from alice's rg/alice/bob — never from the result of the delete of
// bob's record, which with partitions is an operation bob's partition
// runs later (docs/cluster.md §11.2, items (4)). Each case makes H's key
// and bob's record disagree, as a lagging view does.
func TestForeignDeleteDecidedByHome(t *testing.T) {
	const item = "AddSource_Type_Test"
	pending := func(f *fixture) { // alice asked bob (NeedConfirm): rq/bob/alice, rs/alice/bob
		r := f.ok("alice", "sns/friend_add", map[string]any{"AddFriendItem": []any{map[string]any{"To_Account": "bob", "AddSource": item}}})
		if c := itemCodes(r, "ResultItem")["bob"]; c != CodeSNSPending {
			t.Fatalf("alice's request to bob: %d", c)
		}
	}
	friended := func(f *fixture) { // bob has alice, alice not bob: rf/bob/alice, rg/alice/bob
		f.ok("administrator", "sns/friend_import", map[string]any{"From_Account": "bob", "AddFriendItem": []any{map[string]any{"To_Account": "alice", "AddSource": item}}})
	}
	blacklist := func(f *fixture) map[string]any {
		return f.ok("alice", "sns/black_list_add", map[string]any{"To_Account": []string{"bob"}})
	}
	deleteBoth := func(f *fixture) map[string]any {
		return f.ok("alice", "sns/friend_delete", map[string]any{"To_Account": []string{"bob"}, "DeleteType": "Delete_Type_Both"})
	}
	for _, tc := range []struct {
		name  string
		setup func(*fixture)
		lag   [3]string // the key removed alone
		run   func(*fixture) map[string]any
		event string // the event H's key decides, "" for none
		code  int    // the reply's ResultCode for bob
	}{
		{"clearRequests: bob's request record lags, alice's rs/ says pending", pending, [3]string{"rq/", "bob", "alice"}, blacklist,
			"friend_request_delete alice→bob", 0},
		{"clearRequests: alice's rs/ says none, bob's record in the view", pending, [3]string{"rs/", "alice", "bob"}, blacklist,
			"", 0},
		{"deleteOne: bob's friend record lags, alice's rg/ says friended", friended, [3]string{"rf/", "bob", "alice"}, deleteBoth,
			"friend_delete alice→bob", 0},
		{"deleteOne: alice's rg/ says not friended, bob's record in the view", friended, [3]string{"rg/", "alice", "bob"}, deleteBoth,
			"", CodeSNSNotFriends},
		{"black_list_add's deleteOne: alice's rg/ says friended", friended, [3]string{"rf/", "bob", "alice"}, blacklist,
			"friend_delete alice→bob", 0},
		{"black_list_add's deleteOne: alice's rg/ says not friended", friended, [3]string{"rg/", "alice", "bob"}, blacklist,
			"", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil, "alice", "bob")
			tc.setup(f)
			f.lag(tc.lag[0], tc.lag[1], tc.lag[2])
			marks := map[string]uint64{}
			for _, u := range []string{"alice", "bob"} {
				seq, err := f.st.LastSeq(u)
				if err != nil {
					t.Fatal(err)
				}
				marks[u] = seq
			}
			r := tc.run(f)
			if c := itemCodes(r, "ResultItem")["bob"]; c != tc.code {
				t.Errorf("ResultCode for bob %d, want %d (%v)", c, tc.code, r)
			}
			want := map[string]bool{}
			if tc.event != "" {
				want[tc.event] = true
			}
			for _, u := range []string{"alice", "bob"} {
				got := map[string]bool{}
				for _, e := range f.relEvents(u, marks[u]) {
					if e == "friend_request_delete alice→bob" || e == "friend_delete alice→bob" {
						got[e] = true
					}
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("%s's timeline has %v, want %v (removed alone: %s%s/%s)", u, got, want, tc.lag[0], tc.lag[1], tc.lag[2])
				}
			}
		})
	}
}
