package store

import (
	"testing"
)

// The operations a transaction homed at one user makes on another
// (docs/cluster.md §11.1: with partitions, run later by the other user's
// partition) decide from that user's keys alone. Each case builds the
// state the target's partition holds when the home's view of it lagged.
func TestTargetOpsDecideFromTheirUser(t *testing.T) {
	t.Run("a moved push token spares the token its device registered since", func(t *testing.T) {
		s := open(t, t.TempDir(), Options{})
		defer s.Close()
		if err := s.SetPushToken(PushToken{User: "bob", Device: "bob:p", Vendor: "fcm", Token: "T2"}); err != nil {
			t.Fatal(err)
		}
		// carol's home still sees bob's phone holding T1 (px/ lags).
		err := s.Update(func(tx *Tx) error {
			tx.Put(pushTokenIndex("fcm", "T1"), key([]byte("bob"), []byte{sep}, []byte("bob:p")))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SetPushToken(PushToken{User: "carol", Device: "carol:p", Vendor: "fcm", Token: "T1"}); err != nil {
			t.Fatal(err)
		}
		if toks, err := s.PushTokens("bob"); err != nil || len(toks) != 1 || toks[0].Token != "T2" {
			t.Fatalf("bob's tokens %+v %v; want T2 kept", toks, err)
		}
		if toks, err := s.PushTokens("carol"); err != nil || len(toks) != 1 || toks[0].Token != "T1" {
			t.Fatalf("carol's tokens %+v %v", toks, err)
		}
	})
	t.Run("a moved push token leaves its old device", func(t *testing.T) {
		s := open(t, t.TempDir(), Options{})
		defer s.Close()
		for _, u := range []string{"bob", "carol"} {
			if err := s.SetPushToken(PushToken{User: u, Device: u + ":p", Vendor: "fcm", Token: "T1"}); err != nil {
				t.Fatal(err)
			}
		}
		if toks, err := s.PushTokens("bob"); err != nil || len(toks) != 0 {
			t.Fatalf("bob's tokens %+v %v; want none", toks, err)
		}
	})
	t.Run("deleting an account its partition no longer has writes nothing", func(t *testing.T) {
		s := open(t, t.TempDir(), Options{})
		defer s.Close()
		err := s.Update(func(tx *Tx) error { return tx.DeleteAccount("zed", 1) })
		if err != nil {
			t.Fatal(err)
		}
		if v, err := get(s.db, kickKey("zed")); err != nil || v != nil {
			t.Fatalf("kick recorded for a missing account: %q %v", v, err)
		}
	})
	t.Run("PutAccount creates once and sets only the fields named", func(t *testing.T) {
		s := open(t, t.TempDir(), Options{})
		defer s.Close()
		err := s.Update(func(tx *Tx) error {
			if err := tx.PutAccount("zed", AccountFields{Nick: "Z", SetNick: true}, 100); err != nil {
				return err
			}
			return tx.PutAccount("zed", AccountFields{FaceURL: "f", SetFaceURL: true}, 200)
		})
		if err != nil {
			t.Fatal(err)
		}
		a, err := s.GetAccount("zed")
		if err != nil || a == nil || a.Nick != "Z" || a.FaceURL != "f" || a.Created != 100 {
			t.Fatalf("account %+v %v", a, err)
		}
	})
}
