package store

import (
	"fmt"
	"sync"
	"testing"
)

// shrinkCaches gives every user cache of s room for max entries, so a test
// can go past the bound with a few hundred users.
func shrinkCaches(s *Store, max int) {
	s.accounts.SetLimit(max)
	s.kicks.SetLimit(max)
	s.lastSeq.SetLimit(max)
	s.tokenless.SetLimit(max)
}

// The store's answers about users (account exists, last Seq, kick time, no
// push token) stay right however many users pass through it, and the
// memory they take does not grow past the bound: a server used to
// remember every user it was ever asked about.
func TestUserCachesAreBounded(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	const max, users = 16, 300
	shrinkCaches(s, max)
	name := func(i int) string { return fmt.Sprintf("user%03d", i) }
	appendOne := func(u string) uint64 {
		t.Helper()
		var seq uint64
		if err := s.Update(func(tx *Tx) error {
			var err error
			seq, err = tx.Append(u, []byte(`"Event":"x"}`))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return seq
	}
	kicked, err := s.Kick(name(7))
	if err != nil {
		t.Fatal(err)
	}
	for pass := 1; pass <= 3; pass++ {
		for i := range users {
			u := name(i)
			if pass == 1 {
				if _, err := s.ImportAccount(Account{UserID: u}); err != nil {
					t.Fatal(err)
				}
			}
			if ok, err := s.AccountExists(u); err != nil || !ok {
				t.Fatalf("pass %d: AccountExists(%s) = %v, %v", pass, u, ok, err)
			}
			// Seqs go on from where they were, whatever was dropped.
			if seq := appendOne(u); seq != uint64(pass) {
				t.Fatalf("pass %d: %s's event got Seq %d, want %d", pass, u, seq, pass)
			}
			if last, err := s.LastSeq(u); err != nil || last != uint64(pass) {
				t.Fatalf("pass %d: LastSeq(%s) = %d, %v", pass, u, last, err)
			}
			at := s.KickedAt(u)
			if i == 7 {
				if want := earliestAccepted(kicked); !at.Equal(want) {
					t.Fatalf("pass %d: KickedAt(%s) = %v, want %v", pass, u, at, want)
				}
			} else if !at.IsZero() {
				t.Fatalf("pass %d: KickedAt(%s) = %v, want never", pass, u, at)
			}
			if toks, err := s.PushTokens(u); err != nil || len(toks) != 0 {
				t.Fatalf("pass %d: PushTokens(%s) = %v, %v", pass, u, toks, err)
			}
		}
		for c, n := range map[string]int{"accounts": s.accounts.Len(), "lastSeq": s.lastSeq.Len(), "kicks": s.kicks.Len(), "tokenless": s.tokenless.Len()} {
			if n > max {
				t.Fatalf("pass %d: %s cache holds %d users, bound %d", pass, c, n, max)
			}
		}
	}
	// A token registered after "no token" was cached is seen; an account
	// deleted is gone; both after their users' entries were dropped.
	if err := s.SetPushToken(PushToken{User: name(3), Device: "d", Vendor: "apns", Token: "t3"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteAccounts([]string{name(4)}, nil); err != nil {
		t.Fatal(err)
	}
	for i := range users {
		s.AccountExists(name(i))
		s.PushTokens(name(i))
	}
	if toks, err := s.PushTokens(name(3)); err != nil || len(toks) != 1 {
		t.Fatalf("PushTokens(%s) after registration = %v, %v; want its token", name(3), toks, err)
	}
	if ok, err := s.AccountExists(name(4)); err != nil || ok {
		t.Fatalf("AccountExists(%s) after deletion = %v, %v", name(4), ok, err)
	}
}

// Appends for many users while readers ask for last Seqs, with a cache
// far smaller than the users: every timeline still has 1, 2, 3, … with no
// Seq given twice (a stale fill would make the writer reuse one and
// overwrite an event). Run with -race.
func TestLastSeqUnderDropsIsGapFree(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	shrinkCaches(s, 8)
	const users, rounds = 64, 20
	name := func(i int) string { return fmt.Sprintf("u%02d", i) }
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for r := range 4 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for i := r; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.LastSeq(name(i % users)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	var writers sync.WaitGroup
	for w := range 4 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for round := range rounds {
				for i := w; i < users; i += 4 {
					u := name(i)
					tail := fmt.Appendf(nil, `"Event":"x","N":%d}`, round)
					if err := s.Update(func(tx *Tx) error { _, err := tx.Append(u, tail); return err }); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	writers.Wait()
	close(stop)
	readers.Wait()
	for i := range users {
		evs, err := s.ReadTimeline(name(i), 0, 2*rounds)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != rounds {
			t.Fatalf("%s has %d events, want %d (a Seq given twice overwrites one)", name(i), len(evs), rounds)
		}
		for j, e := range evs {
			if e.Seq != uint64(j+1) {
				t.Fatalf("%s: event %d has Seq %d", name(i), j, e.Seq)
			}
		}
	}
}
