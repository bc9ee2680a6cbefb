package sdk

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"
)

// logConn adds the connection changes to the recorder's log.
func logConn(rec *recorder) func(*Options) {
	return func(o *Options) {
		o.OnConnectionChanged = func(up bool, reason string) {
			defer rec.enter()()
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if up {
				rec.log = append(rec.log, "up "+reason)
			} else {
				rec.log = append(rec.log, "down")
			}
		}
	}
}

// Issue 18 §4: OnConnectionChanged comes in the same place at login and at
// reconnect: before the backlog the connection brings.
func TestConnectionChangedOrder(t *testing.T) {
	s := startServer(t)
	s.users("alice", "bob")
	ctx := ctxT(t)
	a := s.login(t, "alice", "phone", "", MQTT5)
	send := func(texts ...string) {
		for _, txt := range texts {
			if _, err := a.SendText(ctx, "bob", txt); err != nil {
				t.Fatal(err)
			}
		}
	}
	send("a1", "a2")
	rec := newRecorder(t)
	b := s.login(t, "bob", "phone", "", MQTT5, func(o *Options) {
		o.Listeners = rec.listeners()
		logConn(rec)(o)
		// Bob comes back late after the restart, so a backlog waits for him.
		o.MinBackoff, o.MaxBackoff = 5*time.Second, 5*time.Second
	})
	_ = b
	rec.waitRefreshes(1)
	s.restart()
	send("b1", "b2")
	rec.waitRefreshes(2)
	log, _, _ := rec.snapshot()
	want := []string{"up login", "msg alice a1", "msg alice a2", "contacts alice:2", "refresh",
		"down", "up reconnected", "msg alice b1", "msg alice b2", "contacts alice:4", "refresh"}
	if !reflect.DeepEqual(log, want) {
		t.Fatalf("listener order\n got %q\nwant %q", log, want)
	}
}

// Issue 18 §4: with the server unreachable, a device that was logged in
// before starts offline from its store, and connects once it can.
func TestOfflineStart(t *testing.T) {
	s := startServer(t)
	s.users("alice", "bob")
	ctx := ctxT(t)
	a := s.login(t, "alice", "phone", "", MQTT5)
	if _, err := a.SendText(ctx, "bob", "cached"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	b := s.login(t, "bob", "phone", dir, MQTT5)
	b.rec.waitRefreshes(1)
	if err := b.Logout(); err != nil {
		t.Fatal(err)
	}
	s.stop()

	rec := newRecorder(t)
	var mu sync.Mutex
	var totals []int
	b2 := s.login(t, "bob", "phone", dir, MQTT5, logConn(rec), func(o *Options) {
		o.Listeners.OnNewMessage, o.Listeners.OnRefresh = rec.listeners().OnNewMessage, rec.listeners().OnRefresh
		o.OnTotalUnreadChanged = func(n int) {
			mu.Lock()
			totals = append(totals, n)
			mu.Unlock()
		}
	})
	h, err := b2.GetMessage(ctx, "alice", 10, time.Time{})
	if len(h) != 1 || h[0].Text() != "cached" {
		t.Fatalf("offline history: %q %v", texts(h), err)
	}
	cs, err := b2.GetRecentContacts(ctx)
	if err != nil || len(cs) != 1 || cs[0].Unread != 1 {
		t.Fatalf("offline conversations: %+v %v", cs, err)
	}
	if n, err := b2.TotalUnread(ctx); err != nil || n != 1 {
		t.Fatalf("offline TotalUnread %d %v", n, err)
	}
	checkFor(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if !reflect.DeepEqual(totals, []int{1}) {
			return fmt.Errorf("OnTotalUnreadChanged %v, want [1]", totals)
		}
		return nil
	})
	// A first login (an empty store) still needs the server.
	if _, err := Login(ctx, Options{Addr: s.addr, UserID: "bob", UserSig: s.sig(t, "bob"), DeviceID: "new", Dir: t.TempDir(), Logger: testLogger()}); err == nil {
		t.Fatal("a first login succeeded with the server down")
	}
	s.start()
	if _, err := a.SendText(ctx, "bob", "live"); err != nil {
		t.Fatal(err)
	}
	msgs := rec.waitMsgs(1)
	if msgs[0].Text() != "live" {
		t.Fatalf("after connecting: %q", texts(msgs))
	}
	if log, _, _ := rec.snapshot(); log[0] != "up reconnected" {
		t.Fatalf("listener log %q, want it to start with the background connection", log)
	}
	checkFor(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(totals, []int{1, 2}) {
			return fmt.Errorf("OnTotalUnreadChanged %v, want [1 2]", totals)
		}
		return nil
	})
	if err := b2.MarkRead(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(totals, []int{1, 2, 0}) {
			return fmt.Errorf("OnTotalUnreadChanged %v, want [1 2 0]", totals)
		}
		return nil
	})
}

// Issue 18 §4: every call after Logout answers ErrClosed (the local store's
// "database not open" leaked out).
func TestErrorsAfterLogout(t *testing.T) {
	s := startServer(t)
	s.users("alice", "bob")
	b := s.login(t, "bob", "phone", "", MQTT5)
	if err := b.Logout(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	calls := map[string]func() error{
		"GetMessage":        func() error { _, err := b.GetMessage(ctx, "alice", 10, time.Time{}); return err },
		"GetRecentContacts": func() error { _, err := b.GetRecentContacts(ctx); return err },
		"TotalUnread":       func() error { _, err := b.TotalUnread(ctx); return err },
		"LastSeq":           func() error { _, err := b.LastSeq(); return err },
		"SendText":          func() error { _, err := b.SendText(ctx, "alice", "x"); return err },
		"MarkRead":          func() error { return b.MarkRead(ctx, "alice") },
		"Outbox":            func() error { _, err := b.Outbox(ctx); return err },
		"GetFriends":        func() error { _, err := b.GetFriends(ctx); return err },
	}
	for name, f := range calls {
		if err := f(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Logout: %v, want ErrClosed", name, err)
		}
	}
}

// Issue 18 §4: listeners set, replaced and removed after Login; a Login
// without listeners holds its events until SetListeners.
func TestSetListenersAfterLogin(t *testing.T) {
	s := startServer(t)
	s.users("alice", "bob")
	ctx := ctxT(t)
	a := s.login(t, "alice", "phone", "", MQTT5)
	if _, err := a.SendText(ctx, "bob", "waiting"); err != nil {
		t.Fatal(err)
	}
	b, err := Login(ctx, Options{Addr: s.addr, UserID: "bob", UserSig: s.sig(t, "bob"), DeviceID: "phone", Dir: t.TempDir(),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 300 * time.Millisecond, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Logout()
	first, second := newRecorder(t), newRecorder(t)
	b.SetListeners(first.listeners())
	if msgs := first.waitMsgs(1); msgs[0].Text() != "waiting" {
		t.Fatalf("held event: %q", texts(msgs))
	}
	first.waitRefreshes(1)
	b.SetListeners(second.listeners())
	if _, err := a.SendText(ctx, "bob", "to the second"); err != nil {
		t.Fatal(err)
	}
	if msgs := second.waitMsgs(1); msgs[0].Text() != "to the second" {
		t.Fatalf("second listener got %q", texts(msgs))
	}
	b.SetListeners(Listeners{}) // removed: nothing is delivered, nothing breaks
	if _, err := a.SendText(ctx, "bob", "to nobody"); err != nil {
		t.Fatal(err)
	}
	s.waitHighWater("bob", 3)
	if _, msgs, _ := first.snapshot(); len(msgs) != 1 {
		t.Fatalf("the replaced listener got %q", texts(msgs))
	}
	if h, err := b.GetMessage(ctx, "alice", 10, time.Time{}); err != nil || len(h) != 3 {
		t.Fatalf("history %q %v", texts(h), err)
	}
	checkFor(t, 5*time.Second, func() error {
		if _, msgs, _ := second.snapshot(); len(msgs) != 1 {
			return fmt.Errorf("the removed listener got %q", texts(msgs))
		}
		return nil
	})
}
