package command

import (
	"encoding/json"
	"errors"

	"github.com/duet-im/duet/store"
)

// Relationships (reference §6.3): friend lists, friend requests and
// blacklists. Every per-peer decision is taken inside the store transaction
// that applies it, so concurrent requests cannot push a list past its limit,
// and the built-in notifications (docs/events.md) enter the timelines in
// that same transaction.

const (
	maxFriends       = 3000
	maxBlacklist     = 1000
	maxPending       = 100  // requests awaiting one user
	maxSNSBatch      = 1000 // To_Account / AddFriendItem per call
	maxRemark        = 96
	maxAddWording    = 256
	maxGroupName     = 30
	maxGroups        = 32
	maxSNSCustom     = 500
	friendGetPage    = 100
	addTypeSingle    = "Add_Type_Single"
	addTypeBoth      = "Add_Type_Both"
	deleteTypeSingle = "Delete_Type_Single"
	deleteTypeBoth   = "Delete_Type_Both"
)

func (s *Service) registerRelations() {
	s.rel = newRelCache()
	handle(s, "profile/portrait_set", CodeProfileParam, nil, s.portraitSet)
	handle(s, "profile/portrait_get", CodeProfileParam, nil, s.portraitGet)
	handle(s, "sns/friend_add", CodeSNSParam, nil, s.friendAdd)
	handle(s, "sns/friend_import", CodeSNSParam, nil, s.friendImport)
	handle(s, "sns/friend_update", CodeSNSParam, nil, s.friendUpdate)
	handle(s, "sns/friend_delete", CodeSNSParam, nil, s.friendDelete)
	handle(s, "sns/friend_delete_all", CodeSNSParam, nil, s.friendDeleteAll)
	handle(s, "sns/friend_check", CodeSNSParam, nil, s.friendCheck)
	handle(s, "sns/friend_get", CodeSNSParam, nil, s.friendGet)
	handle(s, "sns/friend_get_list", CodeSNSParam, nil, s.friendGetList)
	handle(s, "sns/group_add", CodeSNSParam, nil, s.groupAdd)
	handle(s, "sns/group_delete", CodeSNSParam, nil, s.groupDelete)
	handle(s, "sns/group_get", CodeSNSParam, nil, s.groupGet)
	handle(s, "sns/friend_response", CodeSNSParam, nil, s.friendResponse)
	handle(s, "sns/friend_request_get", CodeSNSParam, nil, s.friendRequestGet)
	handle(s, "sns/black_list_add", CodeSNSParam, nil, s.blackListAdd)
	handle(s, "sns/black_list_delete", CodeSNSParam, nil, s.blackListDelete)
	handle(s, "sns/black_list_get", CodeSNSParam, nil, s.blackListGet)
	handle(s, "sns/black_list_check", CodeSNSParam, nil, s.blackListCheck)
	handle(s, "openconfigsvr/setnospeaking", CodeMuteParam, adminOnly(CodeNeedsAdmin, "setnospeaking needs an App admin"), s.setNoSpeaking)
	handle(s, "openconfigsvr/getnospeaking", CodeMuteParam, nil, s.getNoSpeaking)
	handle(s, "openim/batchsendmsg", CodeJSON, adminOnly(CodeOpenIMNeedsAdmin, "batchsendmsg needs an App admin"), s.batchSendMsg)
}

// ---- replies ----

type resultItem struct {
	To         string `json:"To_Account"`
	ResultCode int    `json:"ResultCode"`
	ResultInfo string `json:"ResultInfo"`
}

type snsResult struct {
	ResultItem   []resultItem `json:"ResultItem"`
	FailAccount  []string     `json:"Fail_Account,omitempty"`
	ErrorDisplay string       `json:"ErrorDisplay"`
}

func (r *snsResult) ok(to string) { r.ResultItem = append(r.ResultItem, resultItem{To: to}) }

func (r *snsResult) fail(to string, e *Error) {
	r.ResultItem = append(r.ResultItem, resultItem{To: to, ResultCode: e.Code, ResultInfo: e.Info})
	r.FailAccount = append(r.FailAccount, to)
}

// perPeer applies one to each of to, in order, in one transaction, and
// answers per peer: one's *Error is that peer's refusal (ResultItem and
// Fail_Account), nil its success, and 30539 (a request left pending) a
// success that carries its code. pre[i], when pre is given and it is set,
// refuses to[i] without running one. After the commit the relation caches
// of from and of every peer that succeeded are dropped.
func (s *Service) perPeer(from string, to []string, pre []*Error, one func(tx *store.Tx, i int, now int64) (*Error, error)) (snsResult, error) {
	var res snsResult
	var touched []string
	err := s.store.UpdateFor(from, func(tx *store.Tx) error {
		res, touched = snsResult{}, nil
		now := tx.Now().Unix()
		for i, p := range to {
			var e *Error
			if pre != nil {
				e = pre[i]
			}
			if e == nil {
				var err error
				if e, err = one(tx, i, now); err != nil {
					return err
				}
			}
			switch {
			case e == nil:
				res.ok(p)
			case e.Code == CodeSNSPending:
				res.ResultItem = append(res.ResultItem, resultItem{To: p, ResultCode: e.Code, ResultInfo: e.Info})
			default:
				res.fail(p, e)
				continue
			}
			touched = append(touched, p)
		}
		return nil
	})
	if err != nil {
		return snsResult{}, storeErr(err)
	}
	s.rel.drop(append(touched, from)...)
	return res, nil
}

// ---- events (docs/events.md) ----

type relationEvent struct {
	Event      string `json:"Event"`
	From       string `json:"From_Account"`
	To         string `json:"To_Account"`
	AddType    string `json:"AddType,omitempty"`
	DeleteType string `json:"DeleteType,omitempty"`
	AddSource  string `json:"AddSource,omitempty"`
	AddWording string `json:"AddWording,omitempty"`
	Reason     string `json:"Reason,omitempty"`
	Time       int64  `json:"Time"`
}

// notify appends ev to each user's timeline (once per user), kept as long
// as messages are.
func (s *Service) notify(tx *store.Tx, ev any, users ...string) error {
	b, err := marshal(ev)
	if err != nil {
		return err
	}
	t := b[1:]
	seen := make(map[string]bool, len(users))
	for _, u := range users {
		if seen[u] {
			continue
		}
		seen[u] = true
		if s.cfg.MaxLifeTime > 0 {
			_, err = tx.AppendUntil(u, t, tx.Now().Add(s.cfg.MaxLifeTime))
		} else {
			_, err = tx.Append(u, t)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// ---- request parsing ----

// snsActor is actor() with the sns codes: 30001 malformed, 30004 needs
// admin, 30003 no such user.
func (s *Service) snsActor(c *Caller, f fields) (string, error) {
	return s.actor(c, f, CodeSNSParam, CodeSNSNeedsAdmin, CodeSNSNoUser)
}

// snsRequest is what every sns request has: the user it acts for
// (snsActor).
type snsRequest struct {
	from string
}

func (r *snsRequest) decode(s *Service, c *Caller, f fields) (err error) {
	r.from, err = s.snsActor(c, f)
	return err
}

// snsPeers is an sns request on a list of peers, To_Account.
type snsPeers struct {
	snsRequest
	to []string
}

func (r *snsPeers) decode(s *Service, c *Caller, f fields) (err error) {
	if err = r.snsRequest.decode(s, c, f); err != nil {
		return err
	}
	r.to, err = peers(f)
	return err
}

// peers reads a To_Account array of 1..maxSNSBatch entries.
func peers(f fields) ([]string, error) {
	to, present, ok := f.strings("To_Account")
	if !ok {
		return nil, Errorf(CodeSNSParam, "To_Account must be an Array of String")
	}
	if !present || len(to) == 0 {
		return nil, Errorf(CodeSNSParam, "To_Account is missing or empty")
	}
	if len(to) > maxSNSBatch {
		return nil, Errorf(CodeSNSParam, "To_Account has %d entries; the limit is %d", len(to), maxSNSBatch)
	}
	return to, nil
}

// peerErrors are the per-peer refusals that need no transaction: self, bad
// or unknown UserID (nil entries for the others).
func (s *Service) peerErrors(from string, to []string, selfMsg string) ([]*Error, error) {
	pre := make([]*Error, len(to))
	for i, p := range to {
		if p == from {
			pre[i] = Errorf(CodeSNSParam, "%s", selfMsg)
			continue
		}
		if err := s.mustExist(p, CodeSNSNoUser, "To_Account"); err != nil {
			if !errors.As(err, &pre[i]) {
				return nil, err
			}
		}
	}
	return pre, nil
}

func addSourceOK(src string) bool { return prefixedLetters(src, "AddSource_Type_") }

type addItem struct {
	To         *string         `json:"To_Account"`
	Remark     string          `json:"Remark"`
	RemarkTime int64           `json:"RemarkTime"`
	GroupName  json.RawMessage `json:"GroupName"`
	AddSource  *string         `json:"AddSource"`
	AddWording string          `json:"AddWording"`
	AddTime    int64           `json:"AddTime"`
	CustomItem []struct {
		Tag   string          `json:"Tag"`
		Value json.RawMessage `json:"Value"`
	} `json:"CustomItem"`

	groups []string
	custom map[string]string
}

// parseAddItems validates AddFriendItem; groupArray says whether GroupName
// is an Array (friend_import) or a single String (friend_add).
func parseAddItems(f fields, groupArray bool) ([]addItem, error) {
	var items []addItem
	if !f.has("AddFriendItem") || json.Unmarshal(f["AddFriendItem"], &items) != nil || len(items) == 0 {
		return nil, Errorf(CodeSNSParam, "AddFriendItem must be a non-empty Array of objects")
	}
	if len(items) > maxSNSBatch {
		return nil, Errorf(CodeSNSParam, "AddFriendItem has %d entries; the limit is %d", len(items), maxSNSBatch)
	}
	for i := range items {
		it := &items[i]
		switch {
		case it.To == nil:
			return nil, Errorf(CodeSNSParam, "AddFriendItem[%d].To_Account is missing", i)
		case it.AddSource == nil || !addSourceOK(*it.AddSource):
			return nil, Errorf(CodeSNSParam, "AddFriendItem[%d].AddSource must be AddSource_Type_ followed by 1-8 letters", i)
		case len(it.Remark) > maxRemark:
			return nil, Errorf(CodeSNSParam, "AddFriendItem[%d].Remark is %d bytes; the limit is %d", i, len(it.Remark), maxRemark)
		case len(it.AddWording) > maxAddWording:
			return nil, Errorf(CodeSNSParam, "AddFriendItem[%d].AddWording is %d bytes; the limit is %d", i, len(it.AddWording), maxAddWording)
		}
		if len(it.GroupName) > 0 && string(it.GroupName) != "null" {
			if groupArray {
				if json.Unmarshal(it.GroupName, &it.groups) != nil {
					return nil, Errorf(CodeSNSParam, "AddFriendItem[%d].GroupName must be an Array of String", i)
				}
			} else {
				var g string
				if json.Unmarshal(it.GroupName, &g) != nil {
					return nil, Errorf(CodeSNSParam, "AddFriendItem[%d].GroupName must be a String", i)
				}
				if g != "" {
					it.groups = []string{g}
				}
			}
		}
		if e := checkGroups(it.groups); e != nil {
			return nil, e
		}
		for _, ci := range it.CustomItem {
			v, e := snsCustom(ci.Tag, ci.Value)
			if e != nil {
				return nil, e
			}
			if it.custom == nil {
				it.custom = map[string]string{}
			}
			it.custom[ci.Tag] = v
		}
	}
	return items, nil
}

func checkGroups(g []string) *Error {
	if len(g) > maxGroups {
		return Errorf(CodeSNSParam, "a friend is in at most %d groups, not %d", maxGroups, len(g))
	}
	for _, name := range g {
		if name == "" || len(name) > maxGroupName {
			return Errorf(CodeSNSParam, "group name %q must be 1-%d bytes", name, maxGroupName)
		}
	}
	return nil
}

// snsCustom validates a Tag_SNS_Custom_* friend field (a String).
func snsCustom(tag string, raw json.RawMessage) (string, *Error) {
	name, ok := cutPrefix(tag, "Tag_SNS_Custom_")
	if !ok || name == "" || len(name) > 8 {
		return "", Errorf(CodeSNSParam, "unknown friend tag %q", tag)
	}
	var v string
	if json.Unmarshal(raw, &v) != nil {
		return "", Errorf(CodeSNSParam, "%s takes a String", tag)
	}
	if len(v) > maxSNSCustom {
		return "", Errorf(CodeSNSParam, "%s is %d bytes; the limit is %d", tag, len(v), maxSNSCustom)
	}
	return v, nil
}

// allowTypeOf is a user's Tag_Profile_IM_AllowType; unset means
// NeedConfirm, Tencent's default.
func allowTypeOf(p *store.Profile) string {
	if p != nil {
		var v string
		if json.Unmarshal(p.Tags[tagAllowType], &v) == nil && v != "" {
			return v
		}
	}
	return allowNeedConfirm
}

func forbidsAdding(p *store.Profile) bool {
	if p == nil {
		return false
	}
	var v string
	return json.Unmarshal(p.Tags[tagAdminForbidType], &v) == nil && v == forbidSendOut
}

// ---- friend_check / black_list_check ----

type checkItem struct {
	To         string `json:"To_Account"`
	Relation   string `json:"Relation"`
	ResultCode int    `json:"ResultCode"`
	ResultInfo string `json:"ResultInfo"`
}

// checkRequest is friend_check's and black_list_check's: the peers and
// whether to look both ways (CheckType).
type checkRequest struct {
	snsPeers
	both bool
}

// read decodes it; single and both are the command's two CheckTypes.
func (r *checkRequest) read(s *Service, c *Caller, f fields, single, both string) error {
	if err := r.snsPeers.decode(s, c, f); err != nil {
		return err
	}
	ct, _, ok := f.str("CheckType")
	if !ok || (ct != single && ct != both) {
		return Errorf(CodeSNSParam, "CheckType must be %s or %s", single, both)
	}
	r.both = ct == both
	return nil
}

// relation answers friend_check and black_list_check: has(a, b) says
// whether b is in a's list.
func (s *Service) relation(r *checkRequest, names [4]string, has func(a, b string) (bool, error)) (items []checkItem, fail []string, err error) {
	from, to := r.from, r.to
	// names: none, AWithB, BWithA, BothWay
	items = []checkItem{}
	for _, p := range to {
		if e := s.mustExist(p, CodeSNSNoUser, "To_Account"); e != nil {
			var ce *Error
			if !errors.As(e, &ce) {
				return nil, nil, e
			}
			items = append(items, checkItem{To: p, Relation: names[0], ResultCode: ce.Code, ResultInfo: ce.Info})
			fail = append(fail, p)
			continue
		}
		ab, err := has(from, p)
		if err != nil {
			return nil, nil, err
		}
		rel := names[0]
		if ab {
			rel = names[1]
		}
		if r.both {
			ba, err := has(p, from)
			if err != nil {
				return nil, nil, err
			}
			switch {
			case ab && ba:
				rel = names[3]
			case ba:
				rel = names[2]
			}
		}
		items = append(items, checkItem{To: p, Relation: rel})
	}
	return items, fail, nil
}

// ForgetRelations wipes the relationships, profile and mute of deleted
// accounts (reference §6.1: account_delete also wipes relationship and
// profile data) and drops what the caches hold about them. The first user
// is the transaction's home, as account_delete's first account is.
func (s *Service) ForgetRelations(users ...string) error {
	if len(users) == 0 {
		return nil
	}
	var changed []string
	err := s.store.UpdateFor(users[0], func(tx *store.Tx) error {
		var err error
		changed, err = wipeRelations(tx, users)
		return err
	})
	if err != nil {
		return storeErr(err)
	}
	s.relationsForgotten(users, changed)
	return nil
}

// wipeRelations wipes users' relationships, profile and mute inside tx and
// returns the other users whose relations changed.
func wipeRelations(tx *store.Tx, users []string) ([]string, error) {
	var changed []string
	for _, u := range users {
		c, err := tx.WipeRelations(u)
		if err != nil {
			return nil, err
		}
		changed = append(changed, c...)
	}
	return changed, nil
}

// relationsForgotten drops what the caches hold about a committed wipe.
func (s *Service) relationsForgotten(users, changed []string) {
	s.rel.drop(append(changed, users...)...)
	for _, u := range users {
		s.ForgetProfile(u)
	}
}
