package store

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestScanMessages(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	base := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	msgs := []struct {
		from, to string
		at       time.Duration
		seq      uint32
	}{
		{"alice", "bob", -time.Second, 1},
		{"bob", "alice", 0, 2},
		{"carol", "alice", 10 * time.Minute, 3},
		{"alice", "bob", 10 * time.Minute, 1}, // same second: ordered by MsgSeq
		{"alice", "carol", 59*time.Minute + 59*time.Second, 4},
		{"bob", "carol", time.Hour, 5},
	}
	for _, m := range msgs {
		t0 := base.Add(m.at).Unix()
		err := s.Update(func(tx *Tx) error {
			return tx.PutMessage(&Message{From: m.from, To: m.to, MsgSeq: m.seq, MsgRandom: 9, MsgTime: t0,
				MsgKey: fmt.Sprintf("%d_9_%d", m.seq, t0), MsgBody: []byte(`[]`)})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	scan := func(from, to time.Time) string {
		var got []string
		if err := s.ScanMessages(from, to, func(m *Message) error {
			got = append(got, fmt.Sprintf("%s>%s#%d", m.From, m.To, m.MsgSeq))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return strings.Join(got, " ")
	}
	for _, c := range []struct {
		name     string
		from, to time.Time
		want     string
	}{
		{"one hour", base, base.Add(time.Hour), "bob>alice#2 alice>bob#1 carol>alice#3 alice>carol#4"},
		{"before", base.Add(-time.Hour), base, "alice>bob#1"},
		{"next hour", base.Add(time.Hour), base.Add(2 * time.Hour), "bob>carol#5"},
		{"empty range", base, base, ""},
		{"reversed", base.Add(time.Hour), base, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := scan(c.from, c.to); got != c.want {
				t.Fatalf("got %q, want %q", got, c.want)
			}
		})
	}
	stop := errors.New("stop")
	n := 0
	if err := s.ScanMessages(base, base.Add(time.Hour), func(*Message) error { n++; return stop }); err != stop || n != 1 {
		t.Fatalf("fn's error: %v after %d calls", err, n)
	}
	if first, ok, err := s.FirstMessageTime(); err != nil || !ok || !first.Equal(base.Add(-time.Second)) {
		t.Fatalf("FirstMessageTime = %v %v %v", first, ok, err)
	}
}

func TestUploadRecords(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := open(t, t.TempDir(), Options{Clock: func() time.Time { return now }})
	put := func(id string, deadline int64) *Upload {
		u := &Upload{UUID: id, Owner: "alice", Type: "image", Deadline: deadline}
		if err := s.Update(func(tx *Tx) error { return tx.PutUpload(u) }); err != nil {
			t.Fatal(err)
		}
		return u
	}
	a, b := put("a", now.Unix()-10), put("b", now.Unix()+10)
	pending := func(at time.Time) int {
		p, err := s.PendingUploads(at, 10)
		if err != nil {
			t.Fatal(err)
		}
		return len(p)
	}
	if n := pending(now); n != 1 {
		t.Fatalf("%d pending at now, want 1 (a)", n)
	}
	if err := s.Update(func(tx *Tx) error { return tx.CommitUpload(b) }); err != nil {
		t.Fatal(err)
	}
	if n := pending(now.Add(time.Hour)); n != 1 {
		t.Fatalf("%d pending after b's commit, want 1", n)
	}
	// Retention never removes a committed upload, and removes a forgotten one.
	if _, err := s.Sweep(now.Add(uploadGrace+time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	if u, err := s.GetUpload("b"); err != nil || !u.Committed {
		t.Fatalf("committed upload after the sweep: %v %v", u, err)
	}
	if _, err := s.GetUpload(a.UUID); err != ErrNotFound {
		t.Fatalf("forgotten upload after the sweep: %v", err)
	}
	if n := pending(now.Add(uploadGrace + time.Hour)); n != 0 {
		t.Fatalf("%d pending after the sweep", n)
	}
}

// A store whose uploads were committed and sent before media followed its
// messages (no references, no scheduled looks) gets both once, from its
// history: an upload a message still carries is kept, one none carries is
// due for removal (issue 12 §6).
func TestPrepareMediaLifetimesFromHistory(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	now := time.Now()
	for _, id := range []string{"sent", "unsent"} {
		u := &Upload{UUID: id, Owner: "alice", Type: "file", Created: now.Unix(), Deadline: now.Add(time.Hour).Unix()}
		if err := s.Update(func(tx *Tx) error {
			if err := tx.PutUpload(u); err != nil {
				return err
			}
			return tx.CommitUpload(u)
		}); err != nil {
			t.Fatal(err)
		}
	}
	body := []byte(`[{"MsgType":"TIMFileElem","MsgContent":{"UUID":"sent","Url":"http://x/media/sent/orig"}}]`)
	expire := now.Add(48 * time.Hour).Unix()
	if err := s.Update(func(tx *Tx) error {
		return tx.PutMessage(&Message{From: "alice", To: "bob", MsgSeq: 1, MsgRandom: 2, MsgTime: now.Unix(),
			MsgKey: fmt.Sprintf("1_2_%d", now.Unix()), MsgBody: body, Expire: expire})
	}); err != nil {
		t.Fatal(err)
	}
	// What an older Duet left: no mr/ references, no mc/ looks.
	if err := s.Update(func(tx *Tx) error {
		for _, p := range []string{"mr/", "mc/"} {
			if err := tx.scan([]byte(p), func(k, _ []byte) error { tx.Delete(k); return nil }); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.PrepareMediaLifetimes(now); err != nil {
		t.Fatal(err)
	}
	due, err := s.DueChecks(now, 10)
	if err != nil || len(due) != 2 {
		t.Fatalf("due %v %v, want both uploads", due, err)
	}
	fate := map[string]bool{}
	for _, d := range due {
		if err := s.Update(func(tx *Tx) error {
			_, keep, err := tx.CheckCarried(d, now)
			fate[d.UUID] = keep
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if !fate["sent"] || fate["unsent"] {
		t.Fatalf("kept: %v, want only the sent upload", fate)
	}
	// The reference expires with its message: then the upload goes too.
	later, err := s.DueChecks(time.Unix(expire, 0), 10)
	if err != nil || len(later) != 2 {
		t.Fatalf("due at the message's expiry: %v %v", later, err)
	}
	for _, d := range later {
		if d.UUID != "sent" {
			continue
		}
		if err := s.Update(func(tx *Tx) error {
			_, keep, err := tx.CheckCarried(d, time.Unix(expire, 0))
			if keep {
				t.Error("kept after its message expired")
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	// Once only.
	if err := s.PrepareMediaLifetimes(now); err != nil {
		t.Fatal(err)
	}
}
