package sdk

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/duet-im/duet/command"
)

// TestBriefFlow is the product brief's flow end to end through the SDK: A
// sends 50 messages to an offline B; B's phone logs in and gets them in
// order, then the list with A at 50 unread, then OnRefresh; B's laptop logs
// in later and is in sync (history reachable through GetMessage); what B
// sends from the phone appears on the laptop.
func TestBriefFlow(t *testing.T) {
	for _, pc := range protocols {
		t.Run(pc.name, func(t *testing.T) {
			s := startServer(t)
			s.need(t, "recentcontact/get_list", "openim/getmsg")
			s.users("alice", "bob")
			ctx := ctxT(t)
			a := s.login(t, "alice", "phone", "", pc.p)
			a.rec.waitRefreshes(1)

			want := seqTexts("m", 0, 50)
			var keys []string
			for _, txt := range want {
				k, err := a.SendText(ctx, "bob", txt)
				if err != nil {
					t.Fatal(err)
				}
				keys = append(keys, k)
			}

			phone := s.login(t, "bob", "phone", "", pc.p)
			phone.rec.waitRefreshes(1)
			log, msgs, _ := phone.rec.snapshot()
			if got := texts(msgs); !reflect.DeepEqual(got, want) {
				t.Fatalf("phone got %v\nwant %v", got, want)
			}
			// Offline messages, then the list, then OnRefresh — nothing else.
			if len(log) != 52 || log[50] != "contacts alice:50" || log[51] != "refresh" {
				t.Fatalf("phone listener order: %q", log[max(0, len(log)-3):])
			}
			for i, m := range msgs {
				if m.From != "alice" || m.To != "bob" || m.MsgKey != keys[i] || m.Seq == 0 {
					t.Fatalf("message %d: %+v (want MsgKey %s)", i, m, keys[i])
				}
			}
			cs, err := phone.GetRecentContacts(ctx)
			if err != nil || len(cs) != 1 || cs[0].Peer != "alice" || cs[0].Unread != 50 || cs[0].LastMsg == nil || cs[0].LastMsg.Text() != "m49" {
				t.Fatalf("phone contacts %+v, %v", cs, err)
			}
			// Alice's own sends are not reported to her sending device.
			if _, am, _ := a.rec.snapshot(); len(am) != 0 {
				t.Fatalf("alice's phone reported her own sends: %v", texts(am))
			}

			// PROTOCOL §5: a new device starts after what another device
			// received, once the server recorded that (cursors are flushed
			// in the background).
			s.waitHighWater("bob", 50)
			laptop := s.login(t, "bob", "laptop", "", pc.p)
			laptop.rec.waitRefreshes(1)
			if _, lm, _ := laptop.rec.snapshot(); len(lm) != 0 {
				t.Fatalf("the new laptop replayed %d messages another device already had", len(lm))
			}
			if c, ok := laptop.rec.contact("alice"); !ok || c.Unread != 50 {
				t.Fatalf("laptop contact list: %+v %v", c, ok)
			}
			// History: three pages walking back, pulled from roaming.
			page1, err := laptop.GetMessage(ctx, "alice", 20, time.Time{})
			if err != nil || !reflect.DeepEqual(texts(page1), want[30:]) {
				t.Fatalf("page 1: %v %v", texts(page1), err)
			}
			page2, err := laptop.GetMessagesBefore(ctx, "alice", 20, page1[0])
			if err != nil || !reflect.DeepEqual(texts(page2), want[10:30]) {
				t.Fatalf("page 2: %v %v", texts(page2), err)
			}
			page3, err := laptop.GetMessagesBefore(ctx, "alice", 20, page2[0])
			if err != nil || !reflect.DeepEqual(texts(page3), want[:10]) {
				t.Fatalf("page 3: %v %v", texts(page3), err)
			}
			fetches := laptop.fetches.Load()
			again, err := laptop.GetMessage(ctx, "alice", 50, time.Time{})
			if err != nil || !reflect.DeepEqual(texts(again), want) {
				t.Fatalf("all history: %v %v", texts(again), err)
			}
			if laptop.fetches.Load() != fetches {
				t.Fatalf("history known complete was fetched again")
			}

			// B answers from the phone: the laptop and A see it.
			k, err := phone.SendText(ctx, "alice", "from phone")
			if err != nil {
				t.Fatal(err)
			}
			lm := laptop.rec.waitMsgs(1)
			if lm[0].MsgKey != k || lm[0].From != "bob" || lm[0].Text() != "from phone" {
				t.Fatalf("laptop got %+v", lm[0])
			}
			if am := a.rec.waitMsgs(1); am[0].MsgKey != k {
				t.Fatalf("alice got %+v", am[0])
			}
			checkFor(t, 15*time.Second, func() error {
				c, _ := laptop.rec.contact("alice")
				if c.LastMsg == nil || c.LastMsg.MsgKey != k {
					return fmt.Errorf("laptop's contact not updated: %+v", c)
				}
				return nil
			})
			// Not reported to the phone that sent it, but in its history.
			if _, pm, _ := phone.rec.snapshot(); len(pm) != 50 {
				t.Fatalf("phone reported its own send: %d messages", len(pm))
			}
			hist, err := phone.GetMessage(ctx, "alice", 1, time.Time{})
			if err != nil || len(hist) != 1 || hist[0].MsgKey != k {
				t.Fatalf("phone history: %v %v", hist, err)
			}

			// The phone comes back after a while: only what is new arrives.
			phone.Logout()
			for _, txt := range []string{"later 1", "later 2"} {
				if _, err := a.SendText(ctx, "bob", txt); err != nil {
					t.Fatal(err)
				}
			}
			again2 := s.login(t, "bob", "phone", phone.dir, pc.p)
			again2.rec.waitRefreshes(1)
			if _, m2, _ := again2.rec.snapshot(); !reflect.DeepEqual(texts(m2), []string{"later 1", "later 2"}) {
				t.Fatalf("phone after re-login got %v", texts(m2))
			}
			lastLocal, _ := again2.LastSeq()
			lastServer, _ := s.store.LastSeq("bob")
			if lastLocal != lastServer {
				t.Fatalf("phone's last Seq %d, server's %d", lastLocal, lastServer)
			}
		})
	}
}

// TestReconnectAfterRestart restarts the server while A streams messages
// to B: both reconnect, A's interrupted sends are resent (and stored once),
// and B gets every message exactly once, in order.
func TestReconnectAfterRestart(t *testing.T) {
	for _, pc := range protocols {
		t.Run(pc.name, func(t *testing.T) {
			s := startServer(t)
			s.users("alice", "bob")
			ctx := ctxT(t)
			var mu sync.Mutex
			var ups, downs int
			track := func(o *Options) {
				o.OnConnectionChanged = func(up bool, _ string) {
					mu.Lock()
					defer mu.Unlock()
					if up {
						ups++
					} else {
						downs++
					}
				}
			}
			a := s.login(t, "alice", "phone", "", pc.p)
			b := s.login(t, "bob", "phone", "", pc.p, track)
			b.rec.waitRefreshes(1)

			const n = 40
			want := seqTexts("r", 0, n)
			sent := make(chan error, 1)
			go func() {
				for _, txt := range want {
					if _, err := a.SendText(ctx, "bob", txt); err != nil {
						sent <- err
						return
					}
				}
				sent <- nil
			}()
			b.rec.waitMsgs(10)
			s.restart()
			if err := <-sent; err != nil {
				t.Fatalf("send across the restart: %v", err)
			}
			msgs := b.rec.waitMsgs(n)
			b.rec.waitRefreshes(2)
			if got := texts(msgs); !reflect.DeepEqual(got, want) {
				t.Fatalf("bob got %v", got)
			}
			mu.Lock()
			if downs < 1 || ups < 2 {
				t.Errorf("connection changes: %d down, %d up", downs, ups)
			}
			mu.Unlock()
			hist, err := b.GetMessage(ctx, "alice", 100, time.Time{})
			if err != nil && !errors.Is(err, ErrNotConnected) {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(texts(hist), want) {
				t.Fatalf("bob's history %v", texts(hist))
			}
			checkFor(t, 15*time.Second, func() error {
				local, _ := b.LastSeq()
				server, _ := s.store.LastSeq("bob")
				if local != server {
					return fmt.Errorf("bob at Seq %d, server at %d", local, server)
				}
				return nil
			})
			// Resent requests were recognised: each message stored once.
			if server, _ := s.store.LastSeq("bob"); server != n {
				t.Fatalf("bob's timeline holds %d events for %d messages", server, n)
			}
		})
	}
}

// TestSeqGapFilledBySync loses one timeline event in the SDK (as a broken
// network path would, after the server counted it delivered) and checks
// that openim/sync brings it back in order, live and during the replay.
func TestSeqGapFilledBySync(t *testing.T) {
	cases := []struct {
		name    string
		offline bool   // B logs in after the sends (the gap is in the replay)
		drop    uint64 // Seq lost
	}{
		{"live middle", false, 5},
		{"replay middle", true, 3},
		{"replay tail", true, 8}, // only sync_complete's LastSeq shows it
	}
	for _, tc := range cases {
		for _, pc := range protocols {
			t.Run(tc.name+"/"+pc.name, func(t *testing.T) {
				s := startServer(t)
				s.need(t, "openim/sync")
				s.users("alice", "bob")
				ctx := ctxT(t)
				var once sync.Once
				var dropped bool
				lose := func(o *Options) {
					o.dropEvent = func(seq uint64) bool {
						hit := false
						if seq == tc.drop {
							once.Do(func() { hit, dropped = true, true })
						}
						return hit
					}
				}
				a := s.login(t, "alice", "phone", "", pc.p)
				var b *device
				if !tc.offline {
					b = s.login(t, "bob", "phone", "", pc.p, lose)
					b.rec.waitRefreshes(1)
				}
				want := seqTexts("g", 0, 8)
				for _, txt := range want {
					if _, err := a.SendText(ctx, "bob", txt); err != nil {
						t.Fatal(err)
					}
				}
				if tc.offline {
					b = s.login(t, "bob", "phone", "", pc.p, lose)
					b.rec.waitRefreshes(1)
				}
				msgs := b.rec.waitMsgs(len(want))
				if got := texts(msgs); !reflect.DeepEqual(got, want) {
					t.Fatalf("bob got %v", got)
				}
				if !dropped || b.syncs.Load() == 0 {
					t.Fatalf("no gap was made (dropped %v) or none filled (%d syncs)", dropped, b.syncs.Load())
				}
				if tc.offline {
					if log, _, _ := b.rec.snapshot(); log[len(log)-1] != "refresh" || len(log) != len(want)+2 {
						t.Fatalf("listener order %q", log)
					}
				}
				local, _ := b.LastSeq()
				if local != uint64(len(want)) {
					t.Fatalf("bob's last Seq %d, want %d", local, len(want))
				}
			})
		}
	}
}

// TestGetMessageFillsGap: a device that saw only the newest messages live
// must not serve them as the whole history: the span before them comes
// from roaming, once.
func TestGetMessageFillsGap(t *testing.T) {
	s := startServer(t)
	s.need(t, "openim/getmsg")
	s.users("alice", "bob")
	ctx := ctxT(t)
	a := s.login(t, "alice", "phone", "", MQTT5)
	phone := s.login(t, "bob", "phone", "", MQTT5)
	phone.rec.waitRefreshes(1)
	old := seqTexts("old", 0, 30)
	for _, txt := range old {
		if _, err := a.SendText(ctx, "bob", txt); err != nil {
			t.Fatal(err)
		}
	}
	phone.rec.waitMsgs(30)
	s.waitHighWater("bob", 30)

	laptop := s.login(t, "bob", "laptop", "", MQTT5)
	laptop.rec.waitRefreshes(1)
	fresh := seqTexts("new", 0, 5)
	for _, txt := range fresh {
		if _, err := a.SendText(ctx, "bob", txt); err != nil {
			t.Fatal(err)
		}
	}
	laptop.rec.waitMsgs(5)
	if n := laptop.fetches.Load(); n != 0 {
		t.Fatalf("%d fetches before any history was asked for", n)
	}

	all := append(slices.Clone(old), fresh...)
	got, err := laptop.GetMessage(ctx, "alice", 20, time.Time{})
	if err != nil || !reflect.DeepEqual(texts(got), all[15:]) {
		t.Fatalf("newest 20: %v %v", texts(got), err)
	}
	if n := laptop.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches for the newest page, want 1", n)
	}
	if got, err = laptop.GetMessage(ctx, "alice", 20, time.Time{}); err != nil || !reflect.DeepEqual(texts(got), all[15:]) {
		t.Fatalf("newest 20 again: %v %v", texts(got), err)
	}
	if n := laptop.fetches.Load(); n != 1 {
		t.Fatalf("the same page was fetched again (%d fetches)", n)
	}
	rest, err := laptop.GetMessagesBefore(ctx, "alice", 20, got[0])
	if err != nil || !reflect.DeepEqual(texts(rest), all[:15]) {
		t.Fatalf("older: %v %v", texts(rest), err)
	}
	none, err := laptop.GetMessagesBefore(ctx, "alice", 20, rest[0])
	if err != nil || len(none) != 0 {
		t.Fatalf("before the first message: %v %v", texts(none), err)
	}
	if n := laptop.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2 (the start of history is known)", n)
	}
	// A time bound: everything strictly before the newest message's second.
	newest := got[len(got)-1]
	bounded, err := laptop.GetMessage(ctx, "alice", 100, newest.Time())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range bounded {
		if m.MsgTimeStamp >= newest.MsgTimeStamp {
			t.Fatalf("message at %d returned for before=%d", m.MsgTimeStamp, newest.MsgTimeStamp)
		}
	}

	// Offline, the store answers with what it has and says so.
	s.stop()
	checkFor(t, 15*time.Second, func() error {
		if _, _, err := laptop.waitConn(ctx, false); err == nil {
			return errors.New("still connected")
		}
		return nil
	})
	other, err := laptop.GetMessage(ctx, "carol", 10, time.Time{})
	if !errors.Is(err, ErrNotConnected) || len(other) != 0 {
		t.Fatalf("offline, unknown history: %v %v", other, err)
	}
	if got, err = laptop.GetMessage(ctx, "alice", 20, time.Time{}); err != nil || len(got) != 20 {
		t.Fatalf("offline, known history: %d %v", len(got), err)
	}
}

// TestReadAcrossDevices: reading on one device clears the unread count on
// the user's other devices and sends the peer a read receipt.
func TestReadAcrossDevices(t *testing.T) {
	for _, pc := range protocols {
		t.Run(pc.name, func(t *testing.T) {
			s := startServer(t)
			s.need(t, "openim/set_msg_read", "recentcontact/get_list")
			s.users("alice", "bob")
			ctx := ctxT(t)
			a := s.login(t, "alice", "phone", "", pc.p)
			phone := s.login(t, "bob", "phone", "", pc.p)
			laptop := s.login(t, "bob", "laptop", "", pc.p)
			phone.rec.waitRefreshes(1)
			laptop.rec.waitRefreshes(1)
			for i := 0; i < 3; i++ {
				if _, err := a.SendText(ctx, "bob", fmt.Sprint("u", i)); err != nil {
					t.Fatal(err)
				}
			}
			for _, d := range []*device{phone, laptop} {
				d.rec.waitMsgs(3)
				checkFor(t, 15*time.Second, func() error {
					if c, _ := d.rec.contact("alice"); c.Unread != 3 {
						return fmt.Errorf("%s: unread %d", d.DeviceID(), c.Unread)
					}
					return nil
				})
			}
			if err := phone.MarkRead(ctx, "alice"); err != nil {
				t.Fatal(err)
			}
			for _, d := range []*device{phone, laptop} {
				checkFor(t, 15*time.Second, func() error {
					if c, _ := d.rec.contact("alice"); c.Unread != 0 {
						return fmt.Errorf("%s: unread %d after MarkRead", d.DeviceID(), c.Unread)
					}
					cs, _ := d.GetRecentContacts(ctx)
					if len(cs) != 1 || cs[0].Unread != 0 {
						return fmt.Errorf("%s: stored list %+v", d.DeviceID(), cs)
					}
					return nil
				})
			}
			checkFor(t, 15*time.Second, func() error {
				a.rec.mu.Lock()
				defer a.rec.mu.Unlock()
				if len(a.rec.reads) != 1 || a.rec.reads[0].Peer != "bob" || a.rec.reads[0].Time.IsZero() {
					return fmt.Errorf("alice's receipts %+v", a.rec.reads)
				}
				return nil
			})
			// Bob's own devices get no receipt for their own reading.
			for _, d := range []*device{phone, laptop} {
				d.rec.mu.Lock()
				n := len(d.rec.reads)
				d.rec.mu.Unlock()
				if n != 0 {
					t.Fatalf("%s got %d read receipts", d.DeviceID(), n)
				}
			}
			if s.has("openim/get_c2c_unread_msg_num") {
				if n, err := laptop.TotalUnread(ctx); err != nil || n != 0 {
					t.Fatalf("total unread %d %v", n, err)
				}
			}
		})
	}
}

// TestWithdraw recalls a message: both users' devices learn it, the local
// copies are marked, and the server's refusals come back as *Error.
func TestWithdraw(t *testing.T) {
	for _, pc := range protocols {
		t.Run(pc.name, func(t *testing.T) {
			s := startServer(t)
			s.need(t, "openim/msgwithdraw")
			s.users("alice", "bob")
			ctx := ctxT(t)
			a := s.login(t, "alice", "phone", "", pc.p)
			a2 := s.login(t, "alice", "laptop", "", pc.p)
			b := s.login(t, "bob", "phone", "", pc.p)
			b.rec.waitRefreshes(1)
			a2.rec.waitRefreshes(1)
			k, err := a.SendText(ctx, "bob", "oops")
			if err != nil {
				t.Fatal(err)
			}
			b.rec.waitMsgs(1)
			a2.rec.waitMsgs(1)
			if err := a.Withdraw(ctx, "bob", k); err != nil {
				t.Fatal(err)
			}
			for _, d := range []*device{a, a2, b} {
				checkFor(t, 15*time.Second, func() error {
					d.rec.mu.Lock()
					defer d.rec.mu.Unlock()
					if len(d.rec.withdrawn) != 1 || d.rec.withdrawn[0].MsgKey != k {
						return fmt.Errorf("%s %s: withdrawals %+v", d.UserID(), d.DeviceID(), d.rec.withdrawn)
					}
					return nil
				})
				peer := "bob"
				if d == b {
					peer = "alice"
				}
				if w := d.rec.withdrawn[0]; w.Peer != peer {
					t.Fatalf("%s: withdrawal names peer %q", d.UserID(), w.Peer)
				}
				h, err := d.GetMessage(ctx, peer, 10, time.Time{})
				if err != nil || len(h) != 1 || !h[0].Recalled() {
					t.Fatalf("%s %s: history after recall %+v %v", d.UserID(), d.DeviceID(), h, err)
				}
			}
			for _, tc := range []struct {
				key  string
				code int
			}{{k, 20023}, {"1_2_3", 20022}} {
				var e *Error
				if err := a.Withdraw(ctx, "bob", tc.key); !errors.As(err, &e) || e.Code != tc.code {
					t.Fatalf("withdraw %s: %v, want code %d", tc.key, err, tc.code)
				}
			}
			bk, err := b.SendText(ctx, "alice", "mine")
			if err != nil {
				t.Fatal(err)
			}
			var e *Error
			if err := a.Withdraw(ctx, "bob", bk); !errors.As(err, &e) {
				t.Fatalf("alice recalled bob's message: %v", err)
			}
		})
	}
}

// TestTypingAndOnlineOnly covers the live topic.
func TestTypingAndOnlineOnly(t *testing.T) {
	s := startServer(t)
	s.need(t, "openim/typing")
	s.users("alice", "bob")
	ctx := ctxT(t)
	a := s.login(t, "alice", "phone", "", MQTT5)
	b := s.login(t, "bob", "phone", "", MQTT311)
	b.rec.waitRefreshes(1)
	if err := a.Typing(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 15*time.Second, func() error {
		b.rec.mu.Lock()
		defer b.rec.mu.Unlock()
		if !reflect.DeepEqual(b.rec.typing, []string{"alice"}) {
			return fmt.Errorf("typing %v", b.rec.typing)
		}
		return nil
	})
	m, err := a.Send(ctx, Outgoing{To: "bob", Body: []Elem{Text("ping")}, OnlineOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	got := b.rec.waitMsgs(1)
	if !got[0].OnlineOnly || got[0].MsgKey != m.MsgKey || got[0].Seq != 0 {
		t.Fatalf("online-only message %+v", got[0])
	}
	if h, _ := b.GetMessage(ctx, "alice", 10, time.Time{}); len(h) != 0 {
		t.Fatalf("an online-only message was stored: %v", texts(h))
	}
}

// TestSendErrors: refusals are typed, with Tencent's codes.
func TestSendErrors(t *testing.T) {
	s := startServer(t)
	s.users("alice")
	a := s.login(t, "alice", "phone", "", MQTT5)
	ctx := ctxT(t)
	var e *Error
	if _, err := a.SendText(ctx, "nobody", "hi"); !errors.As(err, &e) || e.Code != 20003 {
		t.Fatalf("send to an unknown user: %v", err)
	}
	if _, err := a.SendMessage(ctx, "alice", Elem{MsgType: "TIMTextElem", MsgContent: []byte(`{}`)}); !errors.As(err, &e) || e.Code/1000 != 90 {
		t.Fatalf("bad body: %v", err)
	}
}

// TestLoginRefused: a bad UserSig is a *RefusedError and leaves nothing
// running.
func TestLoginRefused(t *testing.T) {
	s := startServer(t)
	s.users("alice")
	for _, pc := range protocols {
		t.Run(pc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := Login(ctx, Options{Addr: s.addr, UserID: "alice", UserSig: sig(t, "bob"), Dir: t.TempDir(), Protocol: pc.p, Logger: testLogger()})
			var re *RefusedError
			if !errors.As(err, &re) {
				t.Fatalf("login with another user's sig: %v", err)
			}
			// Nothing listening: a plain error (worth retrying), not a refusal.
			_, err = Login(ctx, Options{Addr: "127.0.0.1:1", UserID: "alice", UserSig: sig(t, "alice"), Dir: t.TempDir(), Protocol: pc.p, Logger: testLogger()})
			if err == nil || errors.As(err, &re) {
				t.Fatalf("login to a closed port: %v", err)
			}
		})
	}
}

// TestDeviceIDKept: a device without an explicit id keeps the one made on
// first use.
func TestDeviceIDKept(t *testing.T) {
	s := startServer(t)
	s.users("alice")
	dir := t.TempDir()
	d1 := s.login(t, "alice", "", dir, MQTT5)
	id := d1.DeviceID()
	d1.Logout()
	d2 := s.login(t, "alice", "", dir, MQTT5)
	if id == "" || d2.DeviceID() != id {
		t.Fatalf("device id %q then %q", id, d2.DeviceID())
	}
}

// TestKicked: an admin's kick reaches the device as OnKicked, once, and
// the client stops (no reconnect with the now-refused UserSig).
func TestKicked(t *testing.T) {
	s := startServer(t)
	s.need(t, "im_open_login_svc/kick")
	// A kick refuses every UserSig issued up to its second: one user per case.
	s.users("mqtt5", "mqtt311")
	for _, pc := range protocols {
		t.Run(pc.name, func(t *testing.T) {
			d := s.login(t, pc.name, "phone", "", pc.p)
			d.rec.waitRefreshes(1)
			r := s.svc.Exec(context.Background(), &command.Caller{UserID: "administrator", Admin: true, Transport: command.REST},
				"im_open_login_svc/kick", []byte(`{"UserID":"`+pc.name+`"}`))
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			checkFor(t, 15*time.Second, func() error {
				if _, err := d.SendText(context.Background(), pc.name, "x"); !errors.Is(err, ErrClosed) {
					return fmt.Errorf("send after kick: %v", err)
				}
				return nil
			})
			checkFor(t, 15*time.Second, func() error {
				d.rec.mu.Lock()
				defer d.rec.mu.Unlock()
				if len(d.rec.kicked) != 1 {
					return fmt.Errorf("OnKicked %d times: %v", len(d.rec.kicked), d.rec.kicked)
				}
				return nil
			})
		})
	}
}

// TestRetentionGap: events that left the server's retention while the
// device was away leave a gap no sync can fill. The device moves past it,
// delivers what remains, and forgets which history it knew complete.
func TestRetentionGap(t *testing.T) {
	// When the events right after a device's cursor have expired, the
	// server's pump skips to the first event it still holds (it once spun
	// there, delivering nothing, not even sync_complete).
	// TestGapPastRetention covers the SDK's side with the events the server
	// sends.
	s := startServer(t)
	s.need(t, "openim/sync", "openim/getmsg")
	s.users("alice", "bob")
	ctx := ctxT(t)
	a := s.login(t, "alice", "phone", "", MQTT5)
	b := s.login(t, "bob", "phone", "", MQTT5)
	b.rec.waitRefreshes(1)
	if _, err := a.SendText(ctx, "bob", "before"); err != nil {
		t.Fatal(err)
	}
	b.rec.waitMsgs(1)
	if h, err := b.GetMessage(ctx, "alice", 10, time.Time{}); err != nil || len(h) != 1 {
		t.Fatalf("history %v %v", texts(h), err)
	}
	dir := b.dir
	b.Logout()

	caller := &command.Caller{UserID: "alice", Device: "alice:tool", Transport: command.MQTT}
	for i := 0; i < 3; i++ {
		r := s.svc.Exec(ctx, caller, "openim/sendmsg", []byte(fmt.Sprintf(
			`{"To_Account":"bob","MsgRandom":%d,"MsgLifeTime":60,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"short %d"}}]}`, i+1, i)))
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	s.advance(2 * time.Minute)
	if n, err := s.store.Sweep(s.now(), 0); err != nil || n == 0 {
		t.Fatalf("sweep: %d %v", n, err)
	}
	if _, err := a.SendText(ctx, "bob", "after"); err != nil {
		t.Fatal(err)
	}

	b2 := s.login(t, "bob", "phone", dir, MQTT5)
	b2.rec.waitRefreshes(1)
	if _, msgs, _ := b2.rec.snapshot(); !reflect.DeepEqual(texts(msgs), []string{"after"}) {
		t.Fatalf("after the gap: %v", texts(msgs))
	}
	if last, _ := b2.LastSeq(); last != 5 {
		t.Fatalf("last Seq %d, want 5", last)
	}
	h, err := b2.GetMessage(ctx, "alice", 10, time.Time{})
	if err != nil || !reflect.DeepEqual(texts(h), []string{"before", "after"}) {
		t.Fatalf("history after the gap: %v %v", texts(h), err)
	}
	if b2.fetches.Load() != 1 {
		t.Fatalf("history was not fetched again after the gap (%d fetches)", b2.fetches.Load())
	}
}

// TestModifyAndSystemEvents: an admin's edit reaches both users as
// OnModify and changes the stored copy; relation notifications reach
// OnSystemEvent with their Seq.
func TestModifyAndSystemEvents(t *testing.T) {
	s := startServer(t)
	s.need(t, "openim/modify_c2c_msg", "sns/friend_add")
	s.users("alice", "bob")
	ctx := ctxT(t)
	a := s.login(t, "alice", "phone", "", MQTT5)
	b := s.login(t, "bob", "phone", "", MQTT311)
	b.rec.waitRefreshes(1)
	k, err := a.SendText(ctx, "bob", "typo")
	if err != nil {
		t.Fatal(err)
	}
	b.rec.waitMsgs(1)
	r := s.svc.Exec(ctx, &command.Caller{UserID: "administrator", Admin: true, Transport: command.REST}, "openim/modify_c2c_msg",
		[]byte(`{"From_Account":"alice","To_Account":"bob","MsgKey":"`+k+`","MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"fixed"}}]}`))
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	for _, d := range []*device{a, b} {
		peer := map[*device]string{a: "bob", b: "alice"}[d]
		checkFor(t, 15*time.Second, func() error {
			h, err := d.GetMessage(ctx, peer, 1, time.Time{})
			if err != nil || len(h) != 1 || h[0].Text() != "fixed" || h[0].MsgKey != k {
				return fmt.Errorf("%s: history %v %v", d.UserID(), texts(h), err)
			}
			cs, _ := d.GetRecentContacts(ctx)
			if len(cs) != 1 || cs[0].LastMsg.Text() != "fixed" {
				return fmt.Errorf("%s: contact %+v", d.UserID(), cs)
			}
			d.rec.mu.Lock()
			defer d.rec.mu.Unlock()
			if len(d.rec.modified) != 1 || d.rec.modified[0].MsgKey != k || d.rec.modified[0].Text() != "fixed" {
				return fmt.Errorf("%s: OnModify %v", d.UserID(), texts(d.rec.modified))
			}
			return nil
		})
	}

	err = a.Request(ctx, "sns/friend_add", map[string]any{
		"AddFriendItem": []map[string]any{{"To_Account": "bob", "AddSource": "AddSource_Type_Test"}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, 15*time.Second, func() error {
		b.rec.mu.Lock()
		defer b.rec.mu.Unlock()
		for _, e := range b.rec.system {
			if strings.HasPrefix(e.Event, "friend_") && e.Seq > 0 && strings.Contains(string(e.Data), `"alice"`) {
				return nil
			}
		}
		return fmt.Errorf("bob's system events %+v", b.rec.system)
	})
	if last, _ := b.LastSeq(); last < 3 {
		t.Fatalf("bob's last Seq %d after message, edit and friend request", last)
	}
}

// TestDeleteRecentContact: a deleted conversation leaves the list here and
// on the server (a later login does not bring it back); with clearHistory
// its messages go too.
func TestDeleteRecentContact(t *testing.T) {
	s := startServer(t)
	s.need(t, "recentcontact/delete", "recentcontact/get_list")
	s.users("alice", "bob", "carol")
	ctx := ctxT(t)
	a := s.login(t, "alice", "phone", "", MQTT5)
	c := s.login(t, "carol", "phone", "", MQTT5)
	b := s.login(t, "bob", "phone", "", MQTT5)
	b.rec.waitRefreshes(1)
	if _, err := a.SendText(ctx, "bob", "from alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SendText(ctx, "bob", "from carol"); err != nil {
		t.Fatal(err)
	}
	b.rec.waitMsgs(2)
	if err := b.DeleteRecentContact(ctx, "alice", true); err != nil {
		t.Fatal(err)
	}
	peers := func(d *device) []string {
		cs, err := d.GetRecentContacts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, c := range cs {
			out = append(out, c.Peer)
		}
		return out
	}
	if got := peers(b); !reflect.DeepEqual(got, []string{"carol"}) {
		t.Fatalf("list after delete: %v", got)
	}
	if h, err := b.GetMessage(ctx, "alice", 10, time.Time{}); err != nil || len(h) != 0 {
		t.Fatalf("history after delete with clearHistory: %v %v", texts(h), err)
	}
	dir := b.dir
	b.Logout()
	b2 := s.login(t, "bob", "phone", dir, MQTT5)
	b2.rec.waitRefreshes(1)
	if got := peers(b2); !reflect.DeepEqual(got, []string{"carol"}) {
		t.Fatalf("list after re-login: %v", got)
	}
}

// TestUserSigOnReconnect: a reconnect after the UserSig expired uses
// RefreshUserSig when the app gives one; without it the login ends with
// OnKicked instead of retrying for ever.
func TestUserSigOnReconnect(t *testing.T) {
	s := startServer(t)
	s.users("renewed", "expired")
	for _, user := range []string{"renewed", "expired"} {
		t.Run(user, func(t *testing.T) {
			var renewals atomic.Int32
			d := s.login(t, user, "phone", "", MQTT5, func(o *Options) {
				if user == "renewed" {
					o.RefreshUserSig = func(context.Context) (string, error) {
						renewals.Add(1)
						return s.sig(t, user), nil
					}
				}
			})
			d.rec.waitRefreshes(1)
			s.advance(2 * time.Hour) // past the first UserSig's 1 h
			s.restart()
			if user == "renewed" {
				d.rec.waitRefreshes(2)
				if _, err := d.SendText(ctxT(t), user, "still here"); err != nil {
					t.Fatal(err)
				}
				if renewals.Load() == 0 {
					t.Fatal("RefreshUserSig was not asked")
				}
				return
			}
			checkFor(t, 15*time.Second, func() error {
				d.rec.mu.Lock()
				defer d.rec.mu.Unlock()
				if len(d.rec.kicked) != 1 {
					return fmt.Errorf("OnKicked %v", d.rec.kicked)
				}
				return nil
			})
			if _, err := d.SendText(ctxT(t), user, "x"); !errors.Is(err, ErrClosed) {
				t.Fatalf("send after the login ended: %v", err)
			}
		})
	}
}

// TestTLS: both protocols over the server's TLS listener, and a
// certificate the client does not trust is refused.
func TestTLS(t *testing.T) {
	s, conf := startTLSServer(t)
	s.users("alice", "bob")
	for _, pc := range protocols {
		t.Run(pc.name, func(t *testing.T) {
			ctx := ctxT(t)
			tlsOpt := func(o *Options) { o.Addr, o.TLS = s.tlsAddr, conf }
			a := s.login(t, "alice", "tls-"+pc.name, "", pc.p, tlsOpt)
			b := s.login(t, "bob", "tls-"+pc.name, "", pc.p, tlsOpt)
			b.rec.waitRefreshes(1)
			k, err := a.SendText(ctx, "bob", "over TLS")
			if err != nil {
				t.Fatal(err)
			}
			if m := b.rec.waitMsgs(1); m[len(m)-1].MsgKey != k {
				t.Fatalf("bob got %+v", m[len(m)-1])
			}
			_, err = Login(ctx, Options{Addr: s.tlsAddr, TLS: &tls.Config{ServerName: "127.0.0.1"}, UserID: "alice",
				UserSig: s.sig(t, "alice"), Dir: t.TempDir(), Protocol: pc.p, RequestTimeout: 3 * time.Second, Logger: testLogger()})
			if err == nil {
				t.Fatal("an untrusted certificate was accepted")
			}
		})
	}
}

// TestLogoutReleases: Logout stops every goroutine the client started and
// closes the local store (it can be opened again at once).
func TestLogoutReleases(t *testing.T) {
	s := startServer(t)
	s.users("alice")
	for _, pc := range protocols {
		t.Run(pc.name, func(t *testing.T) {
			dir := t.TempDir()
			d := s.login(t, "alice", "phone", dir, pc.p)
			d.rec.waitRefreshes(1)
			if _, err := d.SendText(ctxT(t), "alice", "note to self"); err != nil {
				t.Fatal(err)
			}
			d.Logout()
			base := runtime.NumGoroutine()
			for i := 0; i < 5; i++ {
				d := s.login(t, "alice", "phone", dir, pc.p)
				d.rec.waitRefreshes(1)
				if err := d.Logout(); err != nil {
					t.Fatal(err)
				}
			}
			checkFor(t, 15*time.Second, func() error {
				if n := runtime.NumGoroutine(); n > base+2 {
					return fmt.Errorf("%d goroutines, %d before five logins", n, base)
				}
				return nil
			})
		})
	}
}

// TestReplayDeduplicated: when the server replays what the device already
// applied (its cursor was lost, as in a server crash before the cursor
// reached disk), nothing is reported twice and the device stays in step.
func TestReplayDeduplicated(t *testing.T) {
	for _, pc := range protocols {
		t.Run(pc.name, func(t *testing.T) {
			s := startServer(t)
			s.users("alice", "bob")
			ctx := ctxT(t)
			a := s.login(t, "alice", "phone", "", pc.p)
			b := s.login(t, "bob", "phone", "", pc.p)
			b.rec.waitRefreshes(1)
			for _, txt := range seqTexts("d", 0, 5) {
				if _, err := a.SendText(ctx, "bob", txt); err != nil {
					t.Fatal(err)
				}
			}
			b.rec.waitMsgs(5)
			dir := b.dir
			b.Logout()
			// The broker writes the cursor as the device detaches: after that.
			checkFor(t, 15*time.Second, func() error {
				if n := s.broker.Devices.Online("bob"); n != 0 {
					return fmt.Errorf("%d devices of bob still attached", n)
				}
				return nil
			})
			if err := s.store.SetCursor("bob", "bob:phone", 0); err != nil {
				t.Fatal(err)
			}
			if _, err := a.SendText(ctx, "bob", "new"); err != nil {
				t.Fatal(err)
			}
			// Alice's own copy of "new" must be delivered before counting.
			checkFor(t, 15*time.Second, func() error {
				local, _ := a.LastSeq()
				server, _ := s.store.LastSeq("alice")
				if local != server {
					return fmt.Errorf("alice at %d of %d", local, server)
				}
				return nil
			})
			delivered := s.broker.Devices.Metrics.Delivered.Load()
			b2 := s.login(t, "bob", "phone", dir, pc.p)
			b2.rec.waitRefreshes(1)
			if n := s.broker.Devices.Metrics.Delivered.Load() - delivered; n != 6 {
				t.Fatalf("%d events delivered on re-login, want the 5 old ones again and the new one", n)
			}
			if _, msgs, _ := b2.rec.snapshot(); !reflect.DeepEqual(texts(msgs), []string{"new"}) {
				t.Fatalf("after a full replay: %v", texts(msgs))
			}
			if c, _ := b2.rec.contact("alice"); c.Unread != 6 {
				t.Fatalf("unread %d, want 6", c.Unread)
			}
		})
	}
}

// TestLargeBacklog: a backlog several times the server's delivery window
// arrives complete and in Seq order (acknowledgements follow the local
// store's commits, and keep the window moving).
func TestLargeBacklog(t *testing.T) {
	const n, senders = 600, 6
	for _, pc := range protocols {
		t.Run(pc.name, func(t *testing.T) {
			s := startServer(t)
			s.users("alice", "bob")
			caller := &command.Caller{UserID: "alice", Device: "alice:tool", Transport: command.MQTT}
			var wg sync.WaitGroup
			errs := make(chan error, senders)
			for w := 0; w < senders; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < n; i += senders {
						body := fmt.Sprintf(`{"To_Account":"bob","MsgRandom":%d,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"b%03d"}}]}`, i+1, i)
						if r := s.svc.Exec(context.Background(), caller, "openim/sendmsg", []byte(body)); r.Err != nil {
							errs <- r.Err
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			b := s.login(t, "bob", "phone", "", pc.p)
			b.rec.waitRefreshes(1)
			_, msgs, _ := b.rec.snapshot()
			seen := map[string]bool{}
			for i, m := range msgs {
				if m.Seq != uint64(i+1) || seen[m.Text()] {
					t.Fatalf("message %d: Seq %d %q (seen before: %v)", i, m.Seq, m.Text(), seen[m.Text()])
				}
				seen[m.Text()] = true
			}
			if len(msgs) != n {
				t.Fatalf("%d of %d messages before OnRefresh", len(msgs), n)
			}
			// The server counts at most 100 unread per conversation; so does the SDK.
			if c, _ := b.rec.contact("alice"); c.Unread != maxUnread {
				t.Fatalf("unread %d, want %d", c.Unread, maxUnread)
			}
			if _, err := s.login(t, "alice", "phone", "", pc.p).SendText(ctxT(t), "bob", "one more"); err != nil {
				t.Fatal(err)
			}
			b.rec.waitMsgs(n + 1)
			checkFor(t, 15*time.Second, func() error {
				if c, _ := b.rec.contact("alice"); c.Unread != maxUnread || c.LastMsg.Text() != "one more" {
					return fmt.Errorf("after one more: unread %d, last %q", c.Unread, c.LastMsg.Text())
				}
				return nil
			})
		})
	}
}

// TestOwnSendsHoldSeq: the server does not send a device its own messages
// back; the SDK takes their Seqs from the replies, so a conversation where
// both sides send, each interleaving with the other, never looks like a
// gap (no openim/sync) and every Seq ends up applied.
func TestOwnSendsHoldSeq(t *testing.T) {
	for _, pc := range protocols {
		t.Run(pc.name, func(t *testing.T) {
			s := startServer(t)
			s.users("alice", "bob")
			ctx := ctxT(t)
			a := s.login(t, "alice", "phone", "", pc.p)
			b := s.login(t, "bob", "phone", "", pc.p)
			a.rec.waitRefreshes(1)
			b.rec.waitRefreshes(1)
			for i := range 10 {
				from, to := a, "bob"
				if i%3 == 2 {
					from, to = b, "alice"
				}
				if _, err := from.SendText(ctx, to, fmt.Sprint(i)); err != nil {
					t.Fatal(err)
				}
			}
			for _, d := range []*device{a, b} {
				checkFor(t, 15*time.Second, func() error {
					local, _ := d.LastSeq()
					server, _ := s.store.LastSeq(d.me)
					if server != 10 || local != server {
						return fmt.Errorf("%s at %d of %d", d.me, local, server)
					}
					return nil
				})
				if n := d.syncs.Load(); n != 0 {
					t.Fatalf("%s asked for %d syncs", d.me, n)
				}
			}
			// Each device was sent only what the other side wrote.
			if got := len(a.rec.waitMsgs(3)); got != 3 {
				t.Fatalf("alice was told of %d new messages, want 3", got)
			}
			if got := len(b.rec.waitMsgs(7)); got != 7 {
				t.Fatalf("bob was told of %d new messages, want 7", got)
			}
		})
	}
}
