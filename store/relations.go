package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"sort"

	"github.com/cockroachdb/pebble"
)

// Relationships (reference §6.3): friend lists, friend groups, blacklists,
// pending friend requests and per-user counters, each with a reverse index
// by the user it names. Every change goes through the Tx methods below,
// which keep the reverse indexes and the counters in step with the records
// in the same transaction, so limits (3,000 friends, 1,000 blacklist
// entries) are checked without scanning and deleting an account finds
// every record that names it (WipeRelations).

// Friend is one entry of an owner's friend list.
type Friend struct {
	AddTime    int64             `json:"AddTime"`
	AddSource  string            `json:"AddSource,omitempty"`
	AddWording string            `json:"AddWording,omitempty"`
	Remark     string            `json:"Remark,omitempty"`
	RemarkTime int64             `json:"RemarkTime,omitempty"`
	Groups     []string          `json:"Groups,omitempty"`
	Custom     map[string]string `json:"Custom,omitempty"`
}

// FriendEntry is a friend record with the peer it names.
type FriendEntry struct {
	Peer string
	Friend
}

// Blocked is one entry of an owner's blacklist.
type Blocked struct {
	Peer    string `json:"-"`
	AddTime int64  `json:"AddTime"`
}

// FriendRequest is a pending friend request awaiting the recipient.
type FriendRequest struct {
	From       string `json:"-"`
	AddType    string `json:"AddType"`
	AddSource  string `json:"AddSource,omitempty"`
	AddWording string `json:"AddWording,omitempty"`
	Remark     string `json:"Remark,omitempty"`
	GroupName  string `json:"GroupName,omitempty"`
	AddTime    int64  `json:"AddTime"`
}

// RelCounts are a user's relationship counters. The sequences grow on every
// change of the list they name (friend_get's StandardSequence,
// black_list_get's CurruentSequence).
type RelCounts struct {
	Friends   int    `json:"Friends,omitempty"`
	Blacklist int    `json:"Blacklist,omitempty"`
	Pending   int    `json:"Pending,omitempty"` // requests awaiting this user
	FriendSeq uint64 `json:"FriendSeq,omitempty"`
	BlackSeq  uint64 `json:"BlackSeq,omitempty"`
}

func pairKey(prefix, a, b string) []byte {
	return key([]byte(prefix), []byte(a), []byte{sep}, []byte(b))
}

// RelationKey is the key of the relationship record or index prefix
// ("rf/", "rg/", "rb/", "rh/", "rq/", "rs/") of a and b; it belongs to a.
// It is for tests that build, with Tx.Put and Tx.Delete, what a node sees
// while its view of another partition lags (docs/cluster.md §11.2): one
// user's half of a relationship without the other's.
func RelationKey(prefix, a, b string) []byte { return pairKey(prefix, a, b) }

func ownerPrefix(prefix, owner string) []byte {
	return key([]byte(prefix), []byte(owner), []byte{sep})
}

// FriendGroups is a user's list of friend groups (sns/group_*). A group
// named in a friend's Groups is always in the list; group_add can also
// create empty ones. Seq grows on every change of the list.
type FriendGroups struct {
	Names []string `json:"Names,omitempty"`
	Seq   uint64   `json:"Seq,omitempty"`
}

func friendKey(owner, peer string) []byte    { return pairKey("rf/", owner, peer) }
func friendedKey(peer, owner string) []byte  { return pairKey("rg/", peer, owner) }
func blockedKey(owner, peer string) []byte   { return pairKey("rb/", owner, peer) }
func blockedByKey(peer, owner string) []byte { return pairKey("rh/", peer, owner) } // reverse of rb/
func requestKey(to, from string) []byte      { return pairKey("rq/", to, from) }
func requestedKey(from, to string) []byte    { return pairKey("rs/", from, to) } // reverse of rq/
func relCountsKey(user string) []byte        { return key([]byte("rc/"), []byte(user)) }
func friendGroupsKey(user string) []byte     { return key([]byte("rl/"), []byte(user)) }

// relIndexKey marks a store whose rh/ and rs/ indexes cover every rb/ and
// rq/ record (stores written before the indexes existed are filled in by
// fillRelIndex, at Open).
var relIndexKey = []byte("ri/1")

// ---- reads outside transactions ----

// scan calls fn for every key under prefix, in key order, with the part of
// the key after the prefix.
func (s *Store) scan(prefix []byte, fn func(rest, v []byte) error) error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		if err := fn(it.Key()[len(prefix):], it.Value()); err != nil {
			return err
		}
	}
	return it.Error()
}

// Friends returns owner's friend list, ordered by peer.
func (s *Store) Friends(owner string) ([]FriendEntry, error) {
	if o := s.part(owner); o != s {
		return o.Friends(owner)
	}
	var out []FriendEntry
	err := s.scan(ownerPrefix("rf/", owner), func(rest, v []byte) error {
		e := FriendEntry{Peer: string(rest)}
		if err := json.Unmarshal(v, &e.Friend); err != nil {
			return fmt.Errorf("store: friend %s/%s: %w", owner, rest, err)
		}
		out = append(out, e)
		return nil
	})
	return out, err
}

// FriendedBy returns the users who have user in their friend list.
func (s *Store) FriendedBy(user string) ([]string, error) {
	if o := s.part(user); o != s {
		return o.FriendedBy(user)
	}
	var out []string
	err := s.scan(ownerPrefix("rg/", user), func(rest, _ []byte) error {
		out = append(out, string(rest))
		return nil
	})
	return out, err
}

// Blacklist returns owner's blacklist, ordered by peer.
func (s *Store) Blacklist(owner string) ([]Blocked, error) {
	if o := s.part(owner); o != s {
		return o.Blacklist(owner)
	}
	var out []Blocked
	err := s.scan(ownerPrefix("rb/", owner), func(rest, v []byte) error {
		b := Blocked{Peer: string(rest)}
		if err := json.Unmarshal(v, &b); err != nil {
			return fmt.Errorf("store: blacklist %s/%s: %w", owner, rest, err)
		}
		out = append(out, b)
		return nil
	})
	return out, err
}

// FriendRequests returns the pending requests awaiting user.
func (s *Store) FriendRequests(user string) ([]FriendRequest, error) {
	if o := s.part(user); o != s {
		return o.FriendRequests(user)
	}
	var out []FriendRequest
	err := s.scan(ownerPrefix("rq/", user), func(rest, v []byte) error {
		r := FriendRequest{From: string(rest)}
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("store: request %s/%s: %w", user, rest, err)
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

// GetFriend returns owner's record of peer, or nil.
func (s *Store) GetFriend(owner, peer string) (*Friend, error) {
	if o := s.part(owner); o != s {
		return o.GetFriend(owner, peer)
	}
	return decodeFriend(get(s.db, friendKey(owner, peer)))
}

// IsBlocked reports whether owner has peer in the blacklist.
func (s *Store) IsBlocked(owner, peer string) (bool, error) {
	if o := s.part(owner); o != s {
		return o.IsBlocked(owner, peer)
	}
	v, err := get(s.db, blockedKey(owner, peer))
	return v != nil, err
}

// RelCounts returns user's relationship counters.
func (s *Store) RelCounts(user string) (RelCounts, error) {
	if o := s.part(user); o != s {
		return o.RelCounts(user)
	}
	return decodeCounts(get(s.db, relCountsKey(user)))
}

// FriendGroups returns user's friend groups.
func (s *Store) FriendGroups(user string) (FriendGroups, error) {
	if o := s.part(user); o != s {
		return o.FriendGroups(user)
	}
	return decodeGroups(get(s.db, friendGroupsKey(user)))
}

func decodeGroups(v []byte, err error) (FriendGroups, error) {
	var g FriendGroups
	if err != nil || v == nil {
		return g, err
	}
	if err := json.Unmarshal(v, &g); err != nil {
		return g, fmt.Errorf("store: friend groups: %w", err)
	}
	return g, nil
}

func decodeFriend(v []byte, err error) (*Friend, error) {
	if err != nil || v == nil {
		return nil, err
	}
	var f Friend
	if err := json.Unmarshal(v, &f); err != nil {
		return nil, fmt.Errorf("store: friend record: %w", err)
	}
	return &f, nil
}

func decodeCounts(v []byte, err error) (RelCounts, error) {
	var c RelCounts
	if err != nil || v == nil {
		return c, err
	}
	if err := json.Unmarshal(v, &c); err != nil {
		return c, fmt.Errorf("store: relation counters: %w", err)
	}
	return c, nil
}

// ---- transactions ----

// RelCounts returns user's counters as of this transaction.
func (tx *Tx) RelCounts(user string) (RelCounts, error) {
	return decodeCounts(tx.Get(relCountsKey(user)))
}

func (tx *Tx) updateCounts(user string, fn func(*RelCounts)) error {
	c, err := tx.RelCounts(user)
	if err != nil {
		return err
	}
	fn(&c)
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	tx.Put(relCountsKey(user), b)
	return nil
}

// FriendGroups returns user's friend groups as of this transaction.
func (tx *Tx) FriendGroups(user string) (FriendGroups, error) {
	return decodeGroups(tx.Get(friendGroupsKey(user)))
}

// PutFriendGroups writes user's group list, raising its Seq.
func (tx *Tx) PutFriendGroups(user string, g FriendGroups) error {
	g.Seq++
	b, err := json.Marshal(g)
	if err != nil {
		return err
	}
	tx.Put(friendGroupsKey(user), b)
	return nil
}

// ensureGroups adds to user's group list the names it lacks.
func (tx *Tx) ensureGroups(user string, names []string) error {
	if len(names) == 0 {
		return nil
	}
	g, err := tx.FriendGroups(user)
	if err != nil {
		return err
	}
	added := false
	for _, n := range names {
		if !slices.Contains(g.Names, n) {
			g.Names = append(g.Names, n)
			added = true
		}
	}
	if !added {
		return nil
	}
	return tx.PutFriendGroups(user, g)
}

// GetFriend returns owner's record of peer as of this transaction, or nil.
func (tx *Tx) GetFriend(owner, peer string) (*Friend, error) {
	return decodeFriend(tx.Get(friendKey(owner, peer)))
}

// PutFriend writes owner's record of peer, keeping the reverse index, the
// counters and the group list (a group a friend is put in exists); it
// reports whether peer is new in the list.
func (tx *Tx) PutFriend(owner, peer string, f *Friend) (created bool, err error) {
	if p, ok := tx.foreign(owner); ok {
		return false, tx.deferJSON(p, owner, opPutFriend, appendBytes(nil, peer), f, nil)
	}
	old, err := tx.Get(friendKey(owner, peer))
	if err != nil {
		return false, err
	}
	if err := tx.ensureGroups(owner, f.Groups); err != nil {
		return false, err
	}
	b, err := json.Marshal(f)
	if err != nil {
		return false, err
	}
	tx.Put(friendKey(owner, peer), b)
	created = old == nil
	if created {
		tx.putSide(peer, friendedKey(peer, owner), nil)
	}
	return created, tx.updateCounts(owner, func(c *RelCounts) {
		if created {
			c.Friends++
		}
		c.FriendSeq++
	})
}

// DeleteFriend removes peer from owner's list; it reports whether it was there.
func (tx *Tx) DeleteFriend(owner, peer string) (existed bool, err error) {
	if p, ok := tx.foreign(owner); ok {
		tx.deferOp(p, owner, opDeleteFriend, appendBytes(nil, peer))
		return false, nil
	}
	old, err := tx.Get(friendKey(owner, peer))
	if err != nil || old == nil {
		return false, err
	}
	tx.Delete(friendKey(owner, peer))
	tx.deleteSide(peer, friendedKey(peer, owner))
	return true, tx.updateCounts(owner, func(c *RelCounts) {
		c.Friends--
		c.FriendSeq++
	})
}

// IsFriendedBy reports whether owner has user in its friend list, from
// user's own reverse index rg/{user}{owner} (owner's record, rf/, is
// owner's key). A transaction homed at user decides with it what depends
// on owner's record, which with partitions it sees only through a view
// (docs/cluster.md §11.2).
func (tx *Tx) IsFriendedBy(user, owner string) (bool, error) {
	v, err := tx.Get(friendedKey(user, owner))
	return v != nil, err
}

// FriendPeers lists owner's friends as of this transaction.
func (tx *Tx) FriendPeers(owner string) ([]string, error) {
	return tx.scanKeys(ownerPrefix("rf/", owner))
}

// IsBlocked reports whether owner has peer in the blacklist, as of this
// transaction.
func (tx *Tx) IsBlocked(owner, peer string) (bool, error) {
	v, err := tx.Get(blockedKey(owner, peer))
	return v != nil, err
}

// PutBlocked adds peer to owner's blacklist; it reports whether peer is new there.
func (tx *Tx) PutBlocked(owner, peer string, at int64) (created bool, err error) {
	if p, ok := tx.foreign(owner); ok {
		tx.deferOp(p, owner, opPutBlocked, binary.AppendVarint(appendBytes(nil, peer), at))
		return false, nil
	}
	old, err := tx.Get(blockedKey(owner, peer))
	if err != nil || old != nil {
		return false, err
	}
	b, _ := json.Marshal(Blocked{AddTime: at})
	tx.Put(blockedKey(owner, peer), b)
	tx.putSide(peer, blockedByKey(peer, owner), nil)
	return true, tx.updateCounts(owner, func(c *RelCounts) {
		c.Blacklist++
		c.BlackSeq++
	})
}

// DeleteBlocked removes peer from owner's blacklist; it reports whether it was there.
func (tx *Tx) DeleteBlocked(owner, peer string) (existed bool, err error) {
	if p, ok := tx.foreign(owner); ok {
		tx.deferOp(p, owner, opDeleteBlocked, appendBytes(nil, peer))
		return false, nil
	}
	old, err := tx.Get(blockedKey(owner, peer))
	if err != nil || old == nil {
		return false, err
	}
	tx.Delete(blockedKey(owner, peer))
	tx.deleteSide(peer, blockedByKey(peer, owner))
	return true, tx.updateCounts(owner, func(c *RelCounts) {
		c.Blacklist--
		c.BlackSeq++
	})
}

// GetRequest returns the pending request from `from` to `to`, or nil.
func (tx *Tx) GetRequest(to, from string) (*FriendRequest, error) {
	v, err := tx.Get(requestKey(to, from))
	if err != nil || v == nil {
		return nil, err
	}
	r := FriendRequest{From: from}
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("store: request: %w", err)
	}
	return &r, nil
}

// HasSentRequest reports whether from has a request pending with `to`,
// from from's own reverse index rs/{from}{to} (the request, rq/, is to's
// key): what a transaction homed at from decides with (docs/cluster.md
// §11.2).
func (tx *Tx) HasSentRequest(from, to string) (bool, error) {
	v, err := tx.Get(requestedKey(from, to))
	return v != nil, err
}

// PutRequest records (or refreshes) a pending request from r.From to `to`.
func (tx *Tx) PutRequest(to string, r *FriendRequest) error {
	if p, ok := tx.foreign(to); ok {
		return tx.deferJSON(p, to, opPutRequest, appendBytes(nil, r.From), r, nil)
	}
	old, err := tx.Get(requestKey(to, r.From))
	if err != nil {
		return err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tx.Put(requestKey(to, r.From), b)
	tx.putSide(r.From, requestedKey(r.From, to), nil)
	if old != nil {
		return nil
	}
	return tx.updateCounts(to, func(c *RelCounts) { c.Pending++ })
}

// DeleteRequest removes the pending request from `from` to `to`; it reports
// whether there was one.
func (tx *Tx) DeleteRequest(to, from string) (existed bool, err error) {
	if p, ok := tx.foreign(to); ok {
		tx.deferOp(p, to, opDeleteRequest, appendBytes(nil, from))
		return false, nil
	}
	old, err := tx.Get(requestKey(to, from))
	if err != nil || old == nil {
		return false, err
	}
	tx.Delete(requestKey(to, from))
	tx.deleteSide(from, requestedKey(from, to))
	return true, tx.updateCounts(to, func(c *RelCounts) { c.Pending-- })
}

// scanKeys lists the key suffixes under prefix as this transaction sees
// them: the group's batch (earlier transactions and the database) with this
// transaction's own writes laid over it.
func (tx *Tx) scanKeys(prefix []byte) ([]string, error) {
	it, err := tx.group.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, err
	}
	present := map[string]bool{}
	for ok := it.First(); ok; ok = it.Next() {
		present[string(it.Key()[len(prefix):])] = true
	}
	if err := it.Error(); err != nil {
		it.Close()
		return nil, err
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	for _, p := range tx.puts {
		if bytes.HasPrefix(p.k, prefix) {
			present[string(p.k[len(prefix):])] = !p.del
		}
	}
	out := make([]string, 0, len(present))
	for k, ok := range present {
		if ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out, nil
}

// FriendedBy lists, as of this transaction, the users who have user in
// their friend list.
func (tx *Tx) FriendedBy(user string) ([]string, error) {
	return tx.scanKeys(ownerPrefix("rg/", user))
}

// WipeRelations removes everything user's relationships and profile left in
// the store (for account deletion, reference §6.1): the friend list both
// ways, the user's blacklist and other users' blacklist entries naming the
// user, pending requests to and from the user, the friend groups, counters,
// profile and mute. It returns the other users whose lists changed.
//
// It finds those users in user's own keys (rf/, rg/, rb/, rh/, rq/, rs/
// of user), and changes each one's list by an operation on that user
// alone (DeleteFriend(owner, user), DeleteBlocked(p, user),
// DeleteRequest(p, user)) whose result it does not use: with partitions,
// those run in the other users' partitions (docs/cluster.md §11.1).
func (tx *Tx) WipeRelations(user string) (changed []string, err error) {
	if p, ok := tx.foreign(user); ok {
		tx.deferOp(p, user, opWipeRelations, nil)
		return nil, nil
	}
	friends, err := tx.FriendPeers(user)
	if err != nil {
		return nil, err
	}
	for _, p := range friends {
		if _, err := tx.DeleteFriend(user, p); err != nil {
			return nil, err
		}
	}
	fans, err := tx.FriendedBy(user)
	if err != nil {
		return nil, err
	}
	for _, owner := range fans {
		if _, err := tx.DeleteFriend(owner, user); err != nil {
			return nil, err
		}
	}
	changed = append(friends, fans...)
	// Each pair is removed through DeleteBlocked / DeleteRequest, which
	// drop the reverse entry and keep the other side's counters right.
	for _, w := range []struct {
		prefix string
		del    func(peer string) (bool, error)
		other  bool // the peer's own list changes
	}{
		{"rb/", func(p string) (bool, error) { return tx.DeleteBlocked(user, p) }, false},
		{"rh/", func(p string) (bool, error) { return tx.DeleteBlocked(p, user) }, true},
		{"rq/", func(p string) (bool, error) { return tx.DeleteRequest(user, p) }, false},
		{"rs/", func(p string) (bool, error) { return tx.DeleteRequest(p, user) }, true},
	} {
		peers, err := tx.scanKeys(ownerPrefix(w.prefix, user))
		if err != nil {
			return nil, err
		}
		for _, p := range peers {
			if _, err := w.del(p); err != nil {
				return nil, err
			}
			if w.other {
				changed = append(changed, p)
			}
		}
	}
	tx.Delete(relCountsKey(user))
	tx.Delete(friendGroupsKey(user))
	tx.Delete(profileKey(user))
	tx.Delete(muteKey(user))
	return changed, nil
}

// fillRelIndex writes, once, the rh/ and rs/ entries of every blacklist
// entry and request of a store written before those indexes existed, and
// marks the store as covered (relIndexKey). Open runs it on a single
// node's store before the writer starts: it scans every user's rb/ and rq/
// keys, a migration no transaction homed at one user may make
// (docs/cluster.md §11.2). A cluster node's view is not migrated here: it
// is written only by its log, whose entries keep the indexes, and a single
// node's data reaches a cluster (seed, restore of its backup) through Open.
func fillRelIndex(db *pebble.DB) error {
	if v, err := get(db, relIndexKey); err != nil || v != nil {
		return err
	}
	b := db.NewBatch()
	defer b.Close()
	for _, ix := range []struct {
		from string
		rev  func(a, b string) []byte
	}{{"rb/", blockedByKey}, {"rq/", requestedKey}} {
		it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte(ix.from), UpperBound: prefixEnd([]byte(ix.from))})
		if err != nil {
			return err
		}
		for ok := it.First(); ok; ok = it.Next() {
			if a, p, found := bytes.Cut(it.Key()[len(ix.from):], []byte{sep}); found {
				if err := b.Set(ix.rev(string(p), string(a)), nil, nil); err != nil {
					it.Close()
					return err
				}
			}
		}
		if err := it.Close(); err != nil {
			return err
		}
	}
	if err := b.Set(relIndexKey, []byte{1}, nil); err != nil {
		return err
	}
	return b.Commit(pebble.Sync)
}
