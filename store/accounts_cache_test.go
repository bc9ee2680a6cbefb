package store

import (
	"fmt"
	"testing"
)

// AccountExists answers for IDs that were never imported come from the
// database each time: a sender naming random To_Accounts must not grow the
// account cache. Real accounts are still answered right, before and after
// import and deletion.
func TestAccountExistsCachesOnlyAccounts(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	for i := 0; i < 1000; i++ {
		ok, err := s.AccountExists(fmt.Sprintf("nobody%d", i))
		if err != nil || ok {
			t.Fatalf("AccountExists(nobody%d) = %v, %v; want false, nil", i, ok, err)
		}
	}
	n := s.accounts.Len()
	if n != 0 {
		t.Fatalf("account cache holds %d entries after look-ups of unknown IDs, want 0", n)
	}

	steps := []struct {
		do   func() error
		want bool
	}{
		{func() error { return nil }, false},
		{func() error { _, err := s.ImportAccount(Account{UserID: "alice"}); return err }, true},
		{func() error { _, err := s.DeleteAccounts([]string{"alice"}, nil); return err }, false},
		{func() error { _, err := s.ImportAccounts([]AccountUpdate{{UserID: "alice"}}); return err }, true},
	}
	for i, st := range steps {
		if err := st.do(); err != nil {
			t.Fatal(err)
		}
		for pass := 0; pass < 2; pass++ { // first from disk or cache, then from cache
			if ok, err := s.AccountExists("alice"); err != nil || ok != st.want {
				t.Fatalf("step %d pass %d: AccountExists(alice) = %v, %v; want %v", i, pass, ok, err, st.want)
			}
		}
	}
}
