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
	s.handlers["profile/portrait_set"] = s.portraitSet
	s.handlers["profile/portrait_get"] = s.portraitGet
	s.handlers["sns/friend_add"] = s.friendAdd
	s.handlers["sns/friend_import"] = s.friendImport
	s.handlers["sns/friend_update"] = s.friendUpdate
	s.handlers["sns/friend_delete"] = s.friendDelete
	s.handlers["sns/friend_delete_all"] = s.friendDeleteAll
	s.handlers["sns/friend_check"] = s.friendCheck
	s.handlers["sns/friend_get"] = s.friendGet
	s.handlers["sns/friend_get_list"] = s.friendGetList
	s.handlers["sns/group_add"] = s.groupAdd
	s.handlers["sns/group_delete"] = s.groupDelete
	s.handlers["sns/group_get"] = s.groupGet
	s.handlers["sns/friend_response"] = s.friendResponse
	s.handlers["sns/friend_request_get"] = s.friendRequestGet
	s.handlers["sns/black_list_add"] = s.blackListAdd
	s.handlers["sns/black_list_delete"] = s.blackListDelete
	s.handlers["sns/black_list_get"] = s.blackListGet
	s.handlers["sns/black_list_check"] = s.blackListCheck
	s.handlers["openconfigsvr/setnospeaking"] = s.setNoSpeaking
	s.handlers["openconfigsvr/getnospeaking"] = s.getNoSpeaking
	s.handlers["openim/batchsendmsg"] = s.batchSendMsg
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

// snsRequest decodes an sns request body and names the user it acts for.
func (s *Service) snsRequest(c *Caller, body []byte) (fields, string, error) {
	f, err := parseObject(body, CodeSNSParam)
	if err != nil {
		return nil, "", err
	}
	from, err := s.snsActor(c, f)
	return f, from, err
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

// peerError is the per-peer refusal that needs no transaction: self, bad
// or unknown UserID.
func (s *Service) peerError(from, to string, selfMsg string) (*Error, error) {
	if to == from {
		return Errorf(CodeSNSParam, "%s", selfMsg), nil
	}
	if err := s.mustExist(to, CodeSNSNoUser, "To_Account"); err != nil {
		var ce *Error
		if errors.As(err, &ce) {
			return ce, nil
		}
		return nil, err
	}
	return nil, nil
}

func addSourceOK(src string) bool {
	name, ok := cutPrefix(src, "AddSource_Type_")
	if !ok || len(name) == 0 || len(name) > 8 {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

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

// relation answers friend_check and black_list_check: has(a, b) says
// whether b is in a's list.
func (s *Service) relation(c *Caller, body []byte, single, both string, names [4]string,
	has func(a, b string) (bool, error)) (from string, items []checkItem, fail []string, err error) {
	f, err := parseObject(body, CodeSNSParam)
	if err != nil {
		return "", nil, nil, err
	}
	if from, err = s.snsActor(c, f); err != nil {
		return "", nil, nil, err
	}
	to, err := peers(f)
	if err != nil {
		return "", nil, nil, err
	}
	ct, _, ok := f.str("CheckType")
	if !ok || (ct != single && ct != both) {
		return "", nil, nil, Errorf(CodeSNSParam, "CheckType must be %s or %s", single, both)
	}
	// names: none, AWithB, BWithA, BothWay
	items = []checkItem{}
	for _, p := range to {
		if e := s.mustExist(p, CodeSNSNoUser, "To_Account"); e != nil {
			var ce *Error
			if !errors.As(e, &ce) {
				return "", nil, nil, e
			}
			items = append(items, checkItem{To: p, Relation: names[0], ResultCode: ce.Code, ResultInfo: ce.Info})
			fail = append(fail, p)
			continue
		}
		ab, err := has(from, p)
		if err != nil {
			return "", nil, nil, err
		}
		rel := names[0]
		if ab {
			rel = names[1]
		}
		if ct == both {
			ba, err := has(p, from)
			if err != nil {
				return "", nil, nil, err
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
	return from, items, fail, nil
}

// ForgetRelations wipes the relationships, profile and mute of deleted
// accounts (reference §6.1: account_delete also wipes relationship and
// profile data) and drops what the caches hold about them.
func (s *Service) ForgetRelations(users ...string) error {
	var changed []string
	err := s.store.Update(func(tx *store.Tx) error {
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
