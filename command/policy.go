package command

import (
	"container/list"
	"encoding/json"
	"sync"

	"github.com/duet-im/duet/internal/fnv1a"
	"github.com/duet-im/duet/store"
)

// checkSend applies the deployment's send policy to a user's own send from
// `from` to `to` (reference §7.1). It returns deliver=false when the message
// must look sent but never reach the recipient (blacklist "show as sent"),
// or an *Error when the send is refused.
//
// It runs on every send, so it reads only memory: each user's friend set,
// blacklist, MsgSettings and mute are loaded once and dropped when a
// command changes them (relCache).
func (s *Service) checkSend(from, to string) (deliver bool, err *Error) {
	a, e := s.rel.get(s.store, from)
	if e != nil {
		return false, Errorf(CodeRetry, "internal error reading the send policy, retry: %v", e)
	}
	// §6.4: a C2C-muted user's every send fails with 20012.
	if a.muteUntil != 0 && (a.muteUntil >= store.MuteForever || s.store.Now().Unix() < a.muteUntil) {
		if a.muteUntil >= store.MuteForever {
			return false, Errorf(CodeMuted, "%s is muted (C2C) without end", from)
		}
		return false, Errorf(CodeMuted, "%s is muted (C2C) until %d", from, a.muteUntil)
	}
	if from == to {
		return true, nil
	}
	b, e := s.rel.get(s.store, to)
	if e != nil {
		return false, Errorf(CodeRetry, "internal error reading the send policy, retry: %v", e)
	}
	// §7.1: blacklisting is one-way — only the blocked side is stopped. A
	// recipient whose MsgSettings bit 0 refuses all messages is treated as
	// one who blocked everyone (docs/events.md, "Send policy").
	if _, blocked := b.black[from]; blocked || b.refuseAll {
		if s.cfg.BlacklistError {
			if blocked {
				return false, Errorf(CodeBlacklisted, "%s has blacklisted %s", to, from)
			}
			return false, Errorf(CodeBlacklisted, "%s does not accept messages (Tag_Profile_IM_MsgSettings)", to)
		}
		return false, nil
	}
	if s.cfg.FriendCheck {
		_, aHasB := a.friends[to]
		_, bHasA := b.friends[from]
		switch {
		case !aHasB && !bHasA:
			return false, Errorf(CodeNotFriends, "%s and %s are not friends; this deployment allows friends only", from, to)
		case !bHasA:
			return false, Errorf(CodeNotInPeerFriends, "%s is not in %s's friend list", from, to)
		case !aHasB:
			return false, Errorf(CodeNotInOwnFriends, "%s is not in %s's friend list", to, from)
		}
	}
	return true, nil
}

// relState is what checkSend needs to know about one user.
type relState struct {
	friends   map[string]struct{} // peers in the user's friend list
	black     map[string]struct{} // peers the user blocked
	refuseAll bool                // Tag_Profile_IM_MsgSettings bit 0
	muteUntil int64               // C2C mute end, Unix s (0: none)
}

// relCacheSize bounds how many users' relState the send-policy cache keeps
// (docs/events.md, "Send policy"); beyond it the least recently used user
// is dropped and reloaded from the store on their next send. An entry holds
// the user's friend and blacklist sets: well under 1 KB for most users, up
// to a few hundred KB for one at the 3,000-friend limit.
const relCacheSize = 50000

// relGenStripes is how many generation counters guard cache loads (see
// relCache); a fixed number, so the guard does not grow with the users.
const relGenStripes = 256

// relCache holds relState per user, least recently used first out once it
// holds max users. A loader notes the generation of the user's stripe
// before reading the store and keeps its result only if no change to a
// user of that stripe was committed meanwhile (drop bumps the generation
// after the commit), so a stale read never outlives the change that made it
// stale; a change to another user of the stripe only costs a reload.
type relCache struct {
	mu  sync.Mutex // a leaf (locksordering.txt)
	max int
	m   map[string]*list.Element // user → element holding *relEntry
	lru list.List                // front: most recently used
	gen [relGenStripes]uint64
}

type relEntry struct {
	user  string
	state *relState
}

func newRelCache() *relCache {
	return &relCache{max: relCacheSize, m: make(map[string]*list.Element)}
}

// relStripe is user's stripe: fnv1a, which does not allocate on the hot path.
func relStripe(user string) int {
	return int(fnv1a.Sum32(user) % relGenStripes)
}

func (rc *relCache) get(st *store.Store, user string) (*relState, error) {
	stripe := relStripe(user)
	rc.mu.Lock()
	if el, ok := rc.m[user]; ok {
		rc.lru.MoveToFront(el)
		r := el.Value.(*relEntry).state
		rc.mu.Unlock()
		return r, nil
	}
	g := rc.gen[stripe]
	rc.mu.Unlock()
	r, err := loadRelState(st, user)
	if err != nil {
		return nil, err
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.gen[stripe] != g {
		return r, nil // changed while loading: use it once, do not keep it
	}
	if el, ok := rc.m[user]; ok { // a concurrent load got there first
		el.Value.(*relEntry).state = r
		rc.lru.MoveToFront(el)
		return r, nil
	}
	rc.m[user] = rc.lru.PushFront(&relEntry{user: user, state: r})
	for rc.lru.Len() > rc.max {
		old := rc.lru.Back()
		rc.lru.Remove(old)
		delete(rc.m, old.Value.(*relEntry).user)
	}
	return r, nil
}

// len is how many users the cache holds.
func (rc *relCache) len() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.lru.Len()
}

// drop forgets users after a committed change to their relationships,
// profile or mute.
func (rc *relCache) drop(users ...string) {
	rc.mu.Lock()
	for _, u := range users {
		if el, ok := rc.m[u]; ok {
			rc.lru.Remove(el)
			delete(rc.m, u)
		}
		rc.gen[relStripe(u)]++
	}
	rc.mu.Unlock()
}

// clear forgets every user; loads under way are not kept.
func (rc *relCache) clear() {
	rc.mu.Lock()
	clear(rc.m)
	rc.lru.Init()
	for i := range rc.gen {
		rc.gen[i]++
	}
	rc.mu.Unlock()
}

func loadRelState(st *store.Store, user string) (*relState, error) {
	r := &relState{}
	friends, err := st.Friends(user)
	if err != nil {
		return nil, err
	}
	if len(friends) > 0 {
		r.friends = make(map[string]struct{}, len(friends))
		for _, f := range friends {
			r.friends[f.Peer] = struct{}{}
		}
	}
	black, err := st.Blacklist(user)
	if err != nil {
		return nil, err
	}
	if len(black) > 0 {
		r.black = make(map[string]struct{}, len(black))
		for _, b := range black {
			r.black[b.Peer] = struct{}{}
		}
	}
	p, err := st.GetProfile(user)
	if err != nil {
		return nil, err
	}
	if p != nil {
		var ms uint32
		if v, ok := p.Tags[tagMsgSettings]; ok && json.Unmarshal(v, &ms) == nil {
			r.refuseAll = ms&1 != 0
		}
	}
	m, err := st.GetMute(user)
	if err != nil {
		return nil, err
	}
	r.muteUntil = m.C2CUntil
	return r, nil
}
