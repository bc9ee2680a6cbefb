package command

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

type listed struct {
	peer string
	time int64
	top  bool
}

// getList pages recentcontact/get_list to the end the way Tencent's clients
// do (the reply's cursors go into the next request) and returns each page.
func getList(f *fixture, user string, flags int) [][]listed {
	f.t.Helper()
	var pages [][]listed
	body := map[string]any{"TimeStamp": 0, "StartIndex": 0, "TopTimeStamp": 0, "TopStartIndex": 0, "AssistFlags": flags}
	for len(pages) < 10 {
		r := f.ok(user, "recentcontact/get_list", body)
		var page []listed
		for _, it := range r["SessionItem"].([]any) {
			s := it.(map[string]any)
			page = append(page, listed{s["To_Account"].(string), int64(s["MsgTime"].(float64)), s["TopFlag"].(float64) == 1})
		}
		pages = append(pages, page)
		if r["CompleteFlag"].(float64) == 1 {
			return pages
		}
		for _, k := range []string{"TimeStamp", "StartIndex", "TopTimeStamp", "TopStartIndex"} {
			body[k] = r[k]
		}
	}
	f.t.Fatalf("get_list AssistFlags %d: no CompleteFlag after %d pages", flags, len(pages))
	return nil
}

// TestContactListPinnedPaging: 230 conversations over three seconds (so
// many share a MsgTime), 105 of them pinned; pages hold 100 conversations
// of each kind.
func TestContactListPinnedPaging(t *testing.T) {
	const n, pinned = 230, 105
	f := newFixture(t, func(c *Config) { c.MaxContacts = 300 }, "alice")
	peers := make([]string, n)
	for i := range peers {
		peers[i] = fmt.Sprintf("u%03d", i)
	}
	f.users(peers...)
	for batch := range 3 {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 32)
		for i := batch; i < n; i += 3 {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				f.ok("alice", "openim/sendmsg", map[string]any{"To_Account": peers[i], "MsgRandom": i + 1,
					"MsgBody": []any{map[string]any{"MsgType": "TIMTextElem", "MsgContent": map[string]any{"Text": "hi"}}}})
			}()
		}
		wg.Wait()
		f.clock.advance(time.Second)
	}
	isPinned := map[string]bool{}
	for lo := 0; lo < pinned; lo += 100 {
		var items []any
		for i := lo; i < min(lo+100, pinned); i++ {
			items = append(items, map[string]any{"Type": 1, "To_Account": peers[i*2]})
			isPinned[peers[i*2]] = true
		}
		f.ok("alice", "recentcontact/top", map[string]any{"OperationType": 1, "RecentContactItem": items})
	}
	over101 := f.exec("alice", "recentcontact/top", map[string]any{"OperationType": 1, "RecentContactItem": make([]any, 101)})
	if code(over101) != 50002 {
		t.Fatalf("101 items: %v, want 50002", over101)
	}

	// check: every conversation exactly once, TopFlag right, each page's
	// sections newest first, and what pinnedFirst says about the order.
	check := func(flags int, pages [][]listed, pinnedFirst bool) {
		t.Helper()
		seen := map[string]bool{}
		for pi, page := range pages {
			var prev *listed
			inPinned := pinnedFirst
			for i := range page {
				it := &page[i]
				if seen[it.peer] {
					t.Fatalf("flags %d: %s listed twice", flags, it.peer)
				}
				seen[it.peer] = true
				if it.top != isPinned[it.peer] {
					t.Fatalf("flags %d: %s TopFlag %v, want %v", flags, it.peer, it.top, isPinned[it.peer])
				}
				if pinnedFirst && inPinned && !it.top {
					inPinned, prev = false, nil // the unpinned section starts
				}
				if pinnedFirst && !inPinned && it.top {
					t.Fatalf("flags %d page %d: pinned %s after an unpinned conversation", flags, pi, it.peer)
				}
				if prev != nil && (it.time > prev.time || (it.time == prev.time && it.peer < prev.peer)) {
					t.Fatalf("flags %d page %d: %v after %v: not newest first", flags, pi, *it, *prev)
				}
				prev = it
			}
		}
		if len(seen) != n {
			t.Fatalf("flags %d: %d conversations listed, want %d", flags, len(seen), n)
		}
	}
	sizes := func(pages [][]listed) (out [][2]int) {
		for _, p := range pages {
			var s [2]int
			for _, it := range p {
				if it.top {
					s[0]++
				} else {
					s[1]++
				}
			}
			out = append(out, s)
		}
		return out
	}

	// Without bit 0 pins do not order the list: 100 a page, by time.
	p := getList(f, "alice", 0)
	check(0, p, false)
	if len(p) != 3 || len(p[0]) != 100 || len(p[1]) != 100 || len(p[2]) != 30 {
		t.Fatalf("flags 0: pages %v, want 100+100+30", sizes(p))
	}
	// Bit 0: every pinned conversation on the first page, before the
	// first 100 others.
	p = getList(f, "alice", 1)
	check(1, p, true)
	if got := sizes(p); len(got) != 2 || got[0] != [2]int{105, 100} || got[1] != [2]int{0, 25} {
		t.Fatalf("flags 1: pages (pinned, other) %v, want [105 100] [0 25]", got)
	}
	// Bits 0 and 2 (Tencent's 7): pinned conversations are paged too.
	p = getList(f, "alice", 7)
	check(7, p, true)
	if got := sizes(p); len(got) != 2 || got[0] != [2]int{100, 100} || got[1] != [2]int{5, 25} {
		t.Fatalf("flags 7: pages (pinned, other) %v, want [100 100] [5 25]", got)
	}
}
