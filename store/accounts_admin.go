package store

import (
	"encoding/binary"
	"encoding/json"
	"time"
)

// Account administration beyond ImportAccount: batch import with partial
// updates, deletion, and kicks (reference §6.1).

func kickKey(user string) []byte { return key([]byte("x/"), []byte(user)) }

// AccountUpdate is one account to create or update. A nil Nick or FaceURL
// leaves the stored value as it is, so re-importing by UserID alone (the
// `Accounts` form of multiaccount_import) never wipes a profile.
type AccountUpdate struct {
	UserID  string
	Nick    *string
	FaceURL *string
}

// ImportAccounts creates or updates every account in one durable
// transaction and reports, per item, whether it was new. Its home
// (docs/cluster.md §11.1) is the first item's account, the one
// command.Service.Home names for account_import and multiaccount_import;
// every account is written by PutAccount, an operation on that account
// alone (for the others, with partitions, run by their partitions).
func (s *Store) ImportAccounts(items []AccountUpdate) (created []bool, err error) {
	created = make([]bool, len(items))
	if len(items) == 0 {
		return created, nil
	}
	if o := s.part(items[0].UserID); o != s {
		return o.ImportAccounts(items)
	}
	err = s.UpdateFor(items[0].UserID, func(tx *Tx) error {
		now := tx.Now().Unix()
		for i, it := range items {
			// Whether an account other than the home's was new is what
			// this transaction sees of it: exact at P = 1, a view of its
			// partition otherwise (§11.2); PutAccount decides for itself.
			old, err := tx.Get(accountKey(it.UserID))
			if err != nil {
				return err
			}
			created[i] = old == nil
			f := AccountFields{}
			if it.Nick != nil {
				f.Nick, f.SetNick = *it.Nick, true
			}
			if it.FaceURL != nil {
				f.FaceURL, f.SetFaceURL = *it.FaceURL, true
			}
			if err := tx.PutAccount(it.UserID, f, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, it := range items {
		if s.local(it.UserID) { // the others' partitions keep theirs (noteWrite)
			s.accounts.Set(it.UserID, true)
		}
	}
	return created, nil
}

// AccountFields are the fields PutAccount sets: Nick and FaceURL, each
// only when its Set flag is.
type AccountFields struct {
	Nick, FaceURL       string
	SetNick, SetFaceURL bool
}

// PutAccount creates user's account (Created = now) if it has none, and
// sets the fields f names. It reads and writes only user's a/ key: with
// partitions, a transaction homed at another user records it for user's
// partition (docs/cluster.md §11.1).
func (tx *Tx) PutAccount(user string, f AccountFields, now int64) error {
	if p, ok := tx.foreign(user); ok {
		return tx.deferJSON(p, user, opPutAccount, nil, f, binary.AppendVarint(nil, now))
	}
	k := accountKey(user)
	old, err := tx.Get(k)
	if err != nil {
		return err
	}
	var a Account
	if old != nil {
		if err := json.Unmarshal(old, &a); err != nil {
			return err
		}
	} else {
		a = Account{UserID: user, Created: now}
	}
	if f.SetNick {
		a.Nick = f.Nick
	}
	if f.SetFaceURL {
		a.FaceURL = f.FaceURL
	}
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	tx.Put(k, b)
	return nil
}

// DeleteAccounts removes the account records of users, durably, and records
// a kick for each so UserSigs issued before the deletion stay refused should
// the account be imported again. It reports which users existed. also, when
// given, runs in the same transaction with the users deleted (so what else
// goes with an account goes all or nothing). Timelines, history and
// conversations are left to expire with their retention.
//
// Its home (docs/cluster.md §11.1) is users[0], the first valid account
// account_delete names (command.Service.Home); each account is deleted by
// DeleteAccount, an operation on that account alone.
func (s *Store) DeleteAccounts(users []string, also func(tx *Tx, deleted []string) error) (existed []bool, err error) {
	existed = make([]bool, len(users))
	if len(users) == 0 {
		return existed, nil
	}
	if o := s.part(users[0]); o != s {
		return o.DeleteAccounts(users, also)
	}
	now := s.Now()
	err = s.UpdateFor(users[0], func(tx *Tx) error {
		var deleted []string
		for i, u := range users {
			// Whether an account other than the home's existed (the
			// item's result, and whether also wipes it) is what this
			// transaction sees of it: exact at P = 1, a view of its
			// partition otherwise (§11.2); DeleteAccount of an account
			// its partition no longer has does nothing.
			old, err := tx.Get(accountKey(u))
			if err != nil {
				return err
			}
			if old == nil {
				continue
			}
			existed[i] = true
			deleted = append(deleted, u)
			if err := tx.DeleteAccount(u, now.UnixNano()); err != nil {
				return err
			}
		}
		if also != nil && len(deleted) > 0 {
			return also(tx, deleted)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i, u := range users {
		if !s.local(u) {
			continue // its partition's caches follow its intent (noteWrite)
		}
		s.accounts.Set(u, false)
		if existed[i] {
			s.kicks.Set(u, earliestAccepted(now))
		}
	}
	return existed, nil
}

// DeleteAccount removes user's account record and records a kick at
// (Unix nanoseconds), if user has an account; it reads and writes only
// user's keys (a/, x/): with partitions, a transaction homed at another
// user records it for user's partition (docs/cluster.md §11.1).
func (tx *Tx) DeleteAccount(user string, at int64) error {
	if p, ok := tx.foreign(user); ok {
		tx.deferOp(p, user, opDeleteAccount, binary.AppendVarint(nil, at))
		return nil
	}
	k := accountKey(user)
	old, err := tx.Get(k)
	if err != nil || old == nil {
		return err
	}
	tx.Delete(k)
	tx.Put(kickKey(user), u64(uint64(at)))
	return nil
}

// Kick records, durably, that user was kicked now: UserSigs issued up to and
// including this second are refused from now on (see KickedAt).
func (s *Store) Kick(user string) (time.Time, error) {
	if o := s.part(user); o != s {
		return o.Kick(user)
	}
	now := s.Now()
	err := s.UpdateFor(user, func(tx *Tx) error {
		tx.Put(kickKey(user), u64(uint64(now.UnixNano())))
		return nil
	})
	if err != nil {
		return time.Time{}, err
	}
	// Every write of an x/ key goes through this file (or a view's Apply),
	// which keeps the cache current.
	s.kicks.Set(user, earliestAccepted(now))
	return now, nil
}

// KickedAt is the earliest UserSig issue time (TLS.time) still accepted for
// user: the second after the last kick, or the zero time when user was
// never kicked.
//
// UserSig times have one-second resolution, so a sig whose TLS.time is the
// very second of the kick cannot be told apart from one issued just before
// it. Both are refused: a sig made in the same second as the kick is
// refused, and a fresh one must be issued at least one second later.
func (s *Store) KickedAt(user string) time.Time {
	if o := s.part(user); o != s {
		return o.KickedAt(user)
	}
	if t, ok := s.kicks.Get(user); ok {
		return t
	}
	gen := s.kicks.Begin()
	v, err := get(s.db, kickKey(user))
	if err != nil {
		s.log.Error("store: reading kick time", "user", user, "error", err)
		// Failing closed would lock everyone out on a read error; the
		// error is logged and the sig's own expiry still applies.
		return time.Time{}
	}
	var at time.Time
	if len(v) == 8 {
		at = earliestAccepted(time.Unix(0, int64(binary.BigEndian.Uint64(v))))
	}
	return s.kicks.Fill(user, at, gen, nil)
}

// earliestAccepted rounds a kick instant up to the next whole second.
func earliestAccepted(kick time.Time) time.Time {
	return time.Unix(kick.Unix()+1, 0)
}

// HasMessage reports whether the conversation of a and b holds a message
// with this (MsgTimeStamp, MsgSeq, MsgRandom): importmsg's duplicate test
// (reference §5.3), which the history key encodes exactly.
func (tx *Tx) HasMessage(a, b string, t int64, msgSeq, random uint32) (bool, error) {
	v, err := tx.Get(historyKey(a, b, t, msgSeq, random))
	return v != nil, err
}
