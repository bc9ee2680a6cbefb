package store

import (
	"encoding/json"
	"fmt"
)

// The target-side operations a transaction defers when their user is in
// another partition (docs/cluster.md §11.1; intents.go for the engine).
// Each is a Tx method whose first argument is the user whose keys it
// changes: called for a user of this partition it runs here, as on a
// single node; for a user of another partition its plain arguments are
// recorded, and that partition's writer runs the same method there. Its
// result is then unknown to the caller (false): the command layer decides
// nothing of its home by them (§11.2).
//
// Keys of a second user that such an operation keeps (the reverse indexes
// rg/, rh/, rs/: a fact of one user, indexed under the other) are written
// through putSide and deleteSide: here when that user is this partition's,
// else as a raw write in that user's partition. A reverse index is thus
// written only by the partition that owns the fact it mirrors, in that
// partition's order, and lags it by one intent at most.

// Operation codes beyond intents.go's own.
const (
	opPut           = 'p' // key, value: a reverse-index key of the target's user
	opDel           = 'd' // key
	opPutFriend     = 'F' // peer, Friend JSON
	opDeleteFriend  = 'f' // peer
	opPutBlocked    = 'B' // peer, at
	opDeleteBlocked = 'b' // peer
	opPutRequest    = 'R' // from, FriendRequest JSON
	opDeleteRequest = 'r' // from
	opPutAccount    = 'A' // AccountFields JSON, now
	opDeleteAccount = 'x' // at
	opDropToken     = 'T' // device, vendor, token
	opChangeCopy    = 'C' // peer, msgKey, CopyChange JSON
	opWipeRelations = 'W'
)

// deferOp records op for user of partition p.
func (tx *Tx) deferOp(p int, user string, op byte, args []byte) {
	tx.intents = append(tx.intents, intent{part: p, user: user, op: op, args: args})
}

// putSide writes k = v, a key of user w (not the operation's user).
func (tx *Tx) putSide(w string, k, v []byte) {
	if p, ok := tx.foreign(w); ok {
		a := appendBytes(nil, string(k))
		tx.deferOp(p, w, opPut, appendBytes(a, string(v)))
		return
	}
	tx.Put(k, v)
}

// deleteSide deletes k, a key of user w (not the operation's user).
func (tx *Tx) deleteSide(w string, k []byte) {
	if p, ok := tx.foreign(w); ok {
		tx.deferOp(p, w, opDel, appendBytes(nil, string(k)))
		return
	}
	tx.Delete(k)
}

func jsonArgs(a []byte, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return appendBytes(a, string(b)), nil
}

// runOp runs one deferred target-side operation for user, from its
// recorded arguments.
func (tx *Tx) runOp(user string, op byte, args []byte) error {
	r := entryReader{b: args}
	str := func() string { return string(r.bytes()) }
	fromJSON := func(v any) error {
		b := r.bytes()
		if r.err != nil {
			return r.err
		}
		return json.Unmarshal(b, v)
	}
	var err error
	switch op {
	case opPut:
		k, v := r.bytes(), r.bytes()
		if r.err == nil {
			if !keyOf(k, user) {
				return fmt.Errorf("key %q is not %s's", k, user)
			}
			tx.Put(k, v)
		}
	case opDel:
		k := r.bytes()
		if r.err == nil {
			if !keyOf(k, user) {
				return fmt.Errorf("key %q is not %s's", k, user)
			}
			tx.Delete(k)
		}
	case opPutFriend:
		peer := str()
		var f Friend
		if err = fromJSON(&f); err == nil {
			_, err = tx.PutFriend(user, peer, &f)
		}
	case opDeleteFriend:
		_, err = tx.DeleteFriend(user, str())
	case opPutBlocked:
		peer := str()
		at := r.varint()
		if r.err == nil {
			_, err = tx.PutBlocked(user, peer, at)
		}
	case opDeleteBlocked:
		_, err = tx.DeleteBlocked(user, str())
	case opPutRequest:
		req := FriendRequest{From: str()}
		if err = fromJSON(&req); err == nil {
			err = tx.PutRequest(user, &req)
		}
	case opDeleteRequest:
		_, err = tx.DeleteRequest(user, str())
	case opPutAccount:
		var f AccountFields
		if err = fromJSON(&f); err == nil {
			now := r.varint()
			if r.err == nil {
				err = tx.PutAccount(user, f, now)
			}
		}
	case opDeleteAccount:
		at := r.varint()
		if r.err == nil {
			err = tx.DeleteAccount(user, at)
		}
	case opDropToken:
		d, v, t := str(), str(), str()
		if r.err == nil {
			err = tx.DropMovedPushToken(user, d, v, t)
		}
	case opChangeCopy:
		peer, key := str(), str()
		var c CopyChange
		if err = fromJSON(&c); err == nil {
			err = tx.ChangeCopy(user, peer, key, c)
		}
	case opWipeRelations:
		_, err = tx.WipeRelations(user)
	default:
		return fmt.Errorf("%w %q", errUnknownOp, op)
	}
	if err != nil {
		return err
	}
	if r.err != nil || len(r.b) != 0 {
		return fmt.Errorf("intent %q for %s: %w", op, user, errBadEntry)
	}
	return nil
}

// keyOf reports whether k is one of the reverse-index keys of user that
// putSide writes (rg/, rh/, rs/ + user + 00 …): a raw write from another
// partition may change nothing else.
func keyOf(k []byte, user string) bool {
	if len(k) < 3 || k[0] != 'r' || (k[1] != 'g' && k[1] != 'h' && k[1] != 's') || k[2] != '/' {
		return false
	}
	rest := k[3:]
	return len(rest) > len(user) && string(rest[:len(user)]) == user && rest[len(user)] == sep
}

// deferJSON records op for user of partition p with arguments head, v's
// JSON, then tail.
func (tx *Tx) deferJSON(p int, user string, op byte, head []byte, v any, tail []byte) error {
	a, err := jsonArgs(head, v)
	if err == nil {
		tx.deferOp(p, user, op, append(a, tail...))
	}
	return err
}
