package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble"
)

// Offline push state: each device's push token, an index from token to the
// device that holds it (a token belongs to one device, and moves with it
// when another user logs in there), and the durable queue of notifications
// accepted for sending. The push package owns what the queue values mean.

// PushToken is the offline-push registration of one device of a user.
type PushToken struct {
	User     string `json:"User"`
	Device   string `json:"Device"`
	Vendor   string `json:"Vendor"`
	Token    string `json:"Token"`
	BundleID string `json:"BundleID,omitempty"`
	Updated  int64  `json:"Updated"`
}

func pushTokenPrefix(user string) []byte { return key([]byte("pt/"), []byte(user), []byte{sep}) }

func pushTokenKey(user, device string) []byte {
	return append(pushTokenPrefix(user), device...)
}

func pushTokenIndex(vendor, token string) []byte {
	return key([]byte("px/"), []byte(vendor), []byte{sep}, []byte(token))
}

func pushQueueKey(id uint64) []byte { return key([]byte("pq/"), u64(id)) }

var pushSeqKey = []byte("ps")

// SetPushToken registers t (User, Device, Vendor, Token, BundleID) durably.
// Whoever held the same token before, another user on the same phone or an
// older client id, loses it (DropMovedPushToken); the device's previous
// token is dropped. Its home (docs/cluster.md §11.1) is t.User, the user
// push/set_token names.
//
// With partitions the token's index px/ is in its holder's partition: a
// holder in another partition than t.User's is found by the front in that
// partition's view (pushTokenHolders) and loses the token by an intent.
func (s *Store) SetPushToken(t PushToken) error {
	if s.parts == nil {
		return s.setPushToken(t, nil)
	}
	home := s.UserPartition(t.User)
	moved, err := s.pushTokenHolders(t.Vendor, t.Token, home)
	if err != nil {
		return err
	}
	return s.parts[home].setPushToken(t, moved)
}

// setPushToken is SetPushToken in t.User's partition; moved are the
// holders of the token that other partitions name.
func (s *Store) setPushToken(t PushToken, moved []tokenHolder) error {
	t.Updated = s.Now().Unix()
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	// The user may have been known to have no token: forget that once the
	// new one is readable; forget also keeps a reader that looked before
	// the commit from recording "none" after it.
	defer s.tokenless.Forget(t.User)
	return s.UpdateFor(t.User, func(tx *Tx) error {
		// Who holds the token is read from px/ of t.User's partition, and
		// of the others (moved) from their views (docs/cluster.md §11.2,
		// item 7): DropMovedPushToken defers itself to the holder's.
		ik := pushTokenIndex(t.Vendor, t.Token)
		v, err := tx.Get(ik)
		if err != nil {
			return err
		}
		holders := moved
		if h, ok := tokenHolderOf(v); ok {
			holders = append(slices.Clip(moved), h)
		}
		for _, h := range holders {
			if h != (tokenHolder{t.User, t.Device}) {
				if err := tx.DropMovedPushToken(h.user, h.device, t.Vendor, t.Token); err != nil {
					return err
				}
			}
		}
		dk := pushTokenKey(t.User, t.Device)
		if old, err := tx.Get(dk); err != nil {
			return err
		} else if old != nil {
			var prev PushToken
			if json.Unmarshal(old, &prev) == nil && (prev.Vendor != t.Vendor || prev.Token != t.Token) {
				tx.Delete(pushTokenIndex(prev.Vendor, prev.Token))
			}
		}
		tx.Put(dk, b)
		tx.Put(ik, key([]byte(t.User), []byte{sep}, []byte(t.Device)))
		return nil
	})
}

// DropMovedPushToken removes user's device's token if it is still token
// of vendor, which another device has taken over (SetPushToken). It reads
// and writes only keys of user's partition: with partitions, a transaction
// homed at the device that took the token records it for user's partition
// (docs/cluster.md §11.1), where the device may have registered another
// token meanwhile. With partitions, the token's index px/ there goes too
// if it still names the device: the new holder's is in the new holder's
// partition (with one, SetPushToken rewrites the one index itself).
func (tx *Tx) DropMovedPushToken(user, device, vendor, token string) error {
	if p, ok := tx.foreign(user); ok {
		tx.deferOp(p, user, opDropToken, appendBytes(appendBytes(appendBytes(nil, device), vendor), token))
		return nil
	}
	if tx.s.opts.PartitionOf != nil {
		ik := pushTokenIndex(vendor, token)
		if owner, err := tx.Get(ik); err != nil {
			return err
		} else if bytes.Equal(owner, key([]byte(user), []byte{sep}, []byte(device))) {
			tx.Delete(ik)
		}
	}
	dk := pushTokenKey(user, device)
	old, err := tx.Get(dk)
	if err != nil || old == nil {
		return err
	}
	var prev PushToken
	if json.Unmarshal(old, &prev) == nil && (prev.Vendor != vendor || prev.Token != token) {
		return nil
	}
	tx.Delete(dk)
	return nil
}

// DeletePushToken removes device's token; it reports whether there was one.
// Its home (docs/cluster.md §11.1) is user.
func (s *Store) DeletePushToken(user, device string) (bool, error) {
	if o := s.part(user); o != s {
		return o.DeletePushToken(user, device)
	}
	found := false
	err := s.UpdateFor(user, func(tx *Tx) error {
		found = false
		return deleteTokenTx(tx, user, device, "", &found)
	})
	return found, err
}

// DeletePushTokenIf removes device's token only if it is still token: a
// vendor's "unregistered" answer must not remove a token the device has
// replaced meanwhile.
func (s *Store) DeletePushTokenIf(user, device, token string) (bool, error) {
	if o := s.part(user); o != s {
		return o.DeletePushTokenIf(user, device, token)
	}
	found := false
	err := s.UpdateFor(user, func(tx *Tx) error {
		found = false
		return deleteTokenTx(tx, user, device, token, &found)
	})
	return found, err
}

func deleteTokenTx(tx *Tx, user, device, only string, found *bool) error {
	dk := pushTokenKey(user, device)
	old, err := tx.Get(dk)
	if err != nil || old == nil {
		return err
	}
	var prev PushToken
	if err := json.Unmarshal(old, &prev); err != nil {
		tx.Delete(dk)
		*found = true
		return nil
	}
	if only != "" && prev.Token != only {
		return nil
	}
	tx.Delete(dk)
	// The index may already name another device that took the token over.
	ik := pushTokenIndex(prev.Vendor, prev.Token)
	if owner, err := tx.Get(ik); err != nil {
		return err
	} else if bytes.Equal(owner, key([]byte(user), []byte{sep}, []byte(device))) {
		tx.Delete(ik)
	}
	*found = true
	return nil
}

// DeleteUserPushTokens removes every token of user (logout, kick) and
// reports how many there were.
func (s *Store) DeleteUserPushTokens(user string) (int, error) {
	if o := s.part(user); o != s {
		return o.DeleteUserPushTokens(user)
	}
	toks, err := s.PushTokens(user)
	if err != nil || len(toks) == 0 {
		return 0, err
	}
	n := 0
	err = s.UpdateFor(user, func(tx *Tx) error {
		n = 0
		for _, t := range toks {
			found := false
			if err := deleteTokenTx(tx, user, t.Device, "", &found); err != nil {
				return err
			}
			if found {
				n++
			}
		}
		return nil
	})
	return n, err
}

// PushTokens lists user's registered devices. It runs for every message
// stored, and most users have no token: those answers come from memory.
func (s *Store) PushTokens(user string) ([]PushToken, error) {
	if o := s.part(user); o != s {
		return o.PushTokens(user)
	}
	if _, none := s.tokenless.Get(user); none {
		return nil, nil
	}
	gen := s.tokenless.Begin()
	p := pushTokenPrefix(user)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []PushToken
	for ok := it.First(); ok; ok = it.Next() {
		var t PushToken
		if err := json.Unmarshal(it.Value(), &t); err != nil {
			return nil, fmt.Errorf("store: push token %q: %w", it.Key(), err)
		}
		out = append(out, t)
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		// Not if a token was registered since we began: SetPushToken's
		// forget, after its commit, moved the generation.
		s.tokenless.Fill(user, struct{}{}, gen, nil)
	}
	return out, nil
}

// QueuedPush is one entry of the durable push queue.
type QueuedPush struct {
	ID   uint64
	Data []byte
}

// EnqueuePushes adds items to the push queue durably, in one commit, and
// returns their ids (increasing, never reused).
func (s *Store) EnqueuePushes(items [][]byte) ([]uint64, error) {
	ids := make([]uint64, len(items))
	err := s.Update(func(tx *Tx) error {
		v, err := tx.Get(pushSeqKey)
		if err != nil {
			return err
		}
		var last uint64
		if len(v) == 8 {
			last = binary.BigEndian.Uint64(v)
		}
		for i, it := range items {
			last++
			ids[i] = last
			tx.Put(pushQueueKey(last), it)
		}
		tx.Put(pushSeqKey, u64(last))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// UpdatePush rewrites a queued item (e.g. its attempt count) if it is still queued.
func (s *Store) UpdatePush(id uint64, data []byte) error {
	return s.Update(func(tx *Tx) error {
		k := pushQueueKey(id)
		if v, err := tx.Get(k); err != nil || v == nil {
			return err
		}
		tx.Put(k, data)
		return nil
	})
}

// ShownPush is a notification a vendor accepted for a device, kept until
// Expire so that a recall of its message can take it back — after a
// restart, or on another cluster node than the one that sent it.
type ShownPush struct {
	User, MsgKey, Vendor, Device string
	Data                         []byte // the push package's record
	Expire                       time.Time
}

func shownPrefix(user, msgKey string) []byte {
	return key([]byte("pw/"), []byte(user), []byte{sep}, []byte(msgKey), []byte{sep})
}

// SettlePushes removes items from the push queue and records notifications
// shown, durably, in one commit.
func (s *Store) SettlePushes(ids []uint64, shown []ShownPush) error {
	return s.Update(func(tx *Tx) error {
		for _, id := range ids {
			tx.Delete(pushQueueKey(id))
		}
		for _, sp := range shown {
			k := key(shownPrefix(sp.User, sp.MsgKey), []byte(sp.Vendor), []byte{sep}, []byte(sp.Device))
			tx.Put(k, sp.Data)
			tx.ExpireAt(sp.Expire, k)
		}
		return nil
	})
}

// TakeShown returns the records of SettlePushes for user's message msgKey
// that have not expired, and deletes them, in one transaction (the
// message was recalled: its notifications are being taken back). Their
// expiry entries stay and find nothing. With nothing recorded it commits
// nothing.
func (s *Store) TakeShown(user, msgKey string) ([][]byte, error) {
	if o := s.part(user); o != s {
		return o.TakeShown(user, msgKey)
	}
	var out [][]byte
	err := s.Update(func(tx *Tx) error {
		out = out[:0]
		return tx.scan(shownPrefix(user, msgKey), func(k, v []byte) error {
			out = append(out, v)
			tx.Delete(k)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// QueuedPushes returns up to max queued items with an id above after.
func (s *Store) QueuedPushes(after uint64, max int) ([]QueuedPush, error) {
	p := []byte("pq/")
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: pushQueueKey(after + 1), UpperBound: prefixEnd(p)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []QueuedPush
	for ok := it.First(); ok && len(out) < max; ok = it.Next() {
		out = append(out, QueuedPush{ID: binary.BigEndian.Uint64(it.Key()[len(p):]), Data: bytes.Clone(it.Value())})
	}
	return out, it.Error()
}
