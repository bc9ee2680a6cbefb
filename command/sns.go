package command

import (
	"context"
	"encoding/json"
	"errors"
	"sort"

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
	return s.actor(c, f, 30001, 30004, 30003)
}

// snsRequest decodes an sns request body and names the user it acts for.
func (s *Service) snsRequest(c *Caller, body []byte) (fields, string, error) {
	f, err := parseObject(body, 30001)
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
		return nil, Errorf(30001, "To_Account must be an Array of String")
	}
	if !present || len(to) == 0 {
		return nil, Errorf(30001, "To_Account is missing or empty")
	}
	if len(to) > maxSNSBatch {
		return nil, Errorf(30001, "To_Account has %d entries; the limit is %d", len(to), maxSNSBatch)
	}
	return to, nil
}

// peerError is the per-peer refusal that needs no transaction: self, bad
// or unknown UserID.
func (s *Service) peerError(from, to string, selfMsg string) (*Error, error) {
	if to == from {
		return Errorf(30001, "%s", selfMsg), nil
	}
	if err := s.mustExist(to, 30003, "To_Account"); err != nil {
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
		return nil, Errorf(30001, "AddFriendItem must be a non-empty Array of objects")
	}
	if len(items) > maxSNSBatch {
		return nil, Errorf(30001, "AddFriendItem has %d entries; the limit is %d", len(items), maxSNSBatch)
	}
	for i := range items {
		it := &items[i]
		switch {
		case it.To == nil:
			return nil, Errorf(30001, "AddFriendItem[%d].To_Account is missing", i)
		case it.AddSource == nil || !addSourceOK(*it.AddSource):
			return nil, Errorf(30001, "AddFriendItem[%d].AddSource must be AddSource_Type_ followed by 1-8 letters", i)
		case len(it.Remark) > maxRemark:
			return nil, Errorf(30001, "AddFriendItem[%d].Remark is %d bytes; the limit is %d", i, len(it.Remark), maxRemark)
		case len(it.AddWording) > maxAddWording:
			return nil, Errorf(30001, "AddFriendItem[%d].AddWording is %d bytes; the limit is %d", i, len(it.AddWording), maxAddWording)
		}
		if len(it.GroupName) > 0 && string(it.GroupName) != "null" {
			if groupArray {
				if json.Unmarshal(it.GroupName, &it.groups) != nil {
					return nil, Errorf(30001, "AddFriendItem[%d].GroupName must be an Array of String", i)
				}
			} else {
				var g string
				if json.Unmarshal(it.GroupName, &g) != nil {
					return nil, Errorf(30001, "AddFriendItem[%d].GroupName must be a String", i)
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
		return Errorf(30001, "a friend is in at most %d groups, not %d", maxGroups, len(g))
	}
	for _, name := range g {
		if name == "" || len(name) > maxGroupName {
			return Errorf(30001, "group name %q must be 1-%d bytes", name, maxGroupName)
		}
	}
	return nil
}

// snsCustom validates a Tag_SNS_Custom_* friend field (a String).
func snsCustom(tag string, raw json.RawMessage) (string, *Error) {
	name, ok := cutPrefix(tag, "Tag_SNS_Custom_")
	if !ok || name == "" || len(name) > 8 {
		return "", Errorf(30001, "unknown friend tag %q", tag)
	}
	var v string
	if json.Unmarshal(raw, &v) != nil {
		return "", Errorf(30001, "%s takes a String", tag)
	}
	if len(v) > maxSNSCustom {
		return "", Errorf(30001, "%s is %d bytes; the limit is %d", tag, len(v), maxSNSCustom)
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

// ---- friend_add / friend_import / friend_response ----

func (s *Service) friendAdd(ctx context.Context, c *Caller, body []byte) (any, error) {
	f, from, err := s.snsRequest(c, body)
	if err != nil {
		return nil, err
	}
	items, err := parseAddItems(f, false)
	if err != nil {
		return nil, err
	}
	addType, _, ok := f.str("AddType")
	switch {
	case !ok:
		return nil, Errorf(30001, "AddType is not a String")
	case addType == "":
		addType = addTypeBoth
	case addType != addTypeSingle && addType != addTypeBoth:
		return nil, Errorf(30001, "AddType must be Add_Type_Single or Add_Type_Both, not %q", addType)
	}
	force, _, ok := f.integer("ForceAddFlags", 0, 1)
	if !ok {
		return nil, Errorf(30001, "ForceAddFlags must be 0 or 1")
	}
	// Forcing past the peer's AllowType is the back-end's privilege.
	forced := force == 1 && c.Admin
	if !c.Admin {
		p, err := s.store.GetProfile(from)
		if err != nil {
			return nil, err
		}
		if forbidsAdding(p) {
			return nil, Errorf(30009, "%s is forbidden to add friends (Tag_Profile_IM_AdminForbidType)", from)
		}
	}
	pre := make([]*Error, len(items))
	for i, it := range items {
		if pre[i], err = s.peerError(from, *it.To, "cannot add yourself as a friend"); err != nil {
			return nil, err
		}
	}
	var res snsResult
	var touched []string
	err = s.store.Update(func(tx *store.Tx) error {
		res, touched = snsResult{}, nil
		now := tx.Now().Unix()
		for i, it := range items {
			to := *it.To
			if pre[i] != nil {
				res.fail(to, pre[i])
				continue
			}
			e, err := s.addOne(tx, from, to, &items[i], addType, forced, now)
			if err != nil {
				return err
			}
			if e != nil && e.Code != 30539 {
				res.fail(to, e)
				continue
			}
			touched = append(touched, to)
			if e != nil {
				res.ResultItem = append(res.ResultItem, resultItem{To: to, ResultCode: e.Code, ResultInfo: e.Info})
			} else {
				res.ok(to)
			}
		}
		return nil
	})
	if err != nil {
		return nil, storeErr(err)
	}
	s.rel.drop(append(touched, from)...)
	return res, nil
}

// addOne is one friend_add item inside the transaction. A 30539 result
// means a request was left pending for the peer.
func (s *Service) addOne(tx *store.Tx, from, to string, it *addItem, addType string, forced bool, now int64) (*Error, error) {
	if b, err := tx.IsBlocked(from, to); err != nil || b {
		return Errorf(30515, "%s is in your blacklist", to), err
	}
	if b, err := tx.IsBlocked(to, from); err != nil || b {
		return Errorf(30525, "you are in %s's blacklist", to), err
	}
	mine, err := tx.GetFriend(from, to)
	if err != nil {
		return nil, err
	}
	theirs, err := tx.GetFriend(to, from)
	if err != nil {
		return nil, err
	}
	wantBack := addType == addTypeBoth
	if mine != nil && (!wantBack || theirs != nil) {
		return nil, nil // already there: nothing to do
	}
	// A request the peer sent me earlier makes this add its acceptance: the
	// peer asked for it, so their AllowType does not apply (docs/events.md).
	theirReq, err := tx.GetRequest(from, to)
	if err != nil {
		return nil, err
	}
	pp, err := tx.GetProfile(to)
	if err != nil {
		return nil, err
	}
	allowed := forced || theirReq != nil
	if !allowed {
		switch allowTypeOf(pp) {
		case allowAny:
			allowed = true
		case allowDenyAny:
			return Errorf(30516, "%s accepts no friend requests", to), nil
		}
	}
	mc, err := tx.RelCounts(from)
	if err != nil {
		return nil, err
	}
	if mine == nil && mc.Friends >= maxFriends {
		return Errorf(30010, "your friend list is full (%d)", maxFriends), nil
	}
	if !allowed {
		tc, err := tx.RelCounts(to)
		if err != nil {
			return nil, err
		}
		prev, err := tx.GetRequest(to, from)
		if err != nil {
			return nil, err
		}
		if prev == nil && tc.Pending >= maxPending {
			return Errorf(30012, "%s has too many pending friend requests (%d)", to, maxPending), nil
		}
		req := &store.FriendRequest{From: from, AddType: addType, AddSource: *it.AddSource, AddWording: it.AddWording, Remark: it.Remark, AddTime: now}
		if len(it.groups) > 0 {
			req.GroupName = it.groups[0]
		}
		if err := tx.PutRequest(to, req); err != nil {
			return nil, err
		}
		ev := relationEvent{Event: "friend_request", From: from, To: to, AddType: addType, AddSource: req.AddSource, AddWording: req.AddWording, Time: now}
		if err := s.notify(tx, ev, from, to); err != nil {
			return nil, err
		}
		return Errorf(30539, "%s must confirm; the request is pending", to), nil
	}
	back := theirs == nil && (wantBack || theirReq != nil)
	if back {
		tc, err := tx.RelCounts(to)
		if err != nil {
			return nil, err
		}
		if tc.Friends >= maxFriends {
			return Errorf(30014, "%s's friend list is full (%d)", to, maxFriends), nil
		}
	}
	if mine == nil {
		rec := &store.Friend{AddTime: now, AddSource: *it.AddSource, AddWording: it.AddWording, Remark: it.Remark, Groups: it.groups}
		if it.Remark != "" {
			rec.RemarkTime = now
		}
		if _, err := tx.PutFriend(from, to, rec); err != nil {
			return nil, err
		}
	}
	if back {
		rec := &store.Friend{AddTime: now, AddSource: *it.AddSource}
		if theirReq != nil {
			rec.AddSource, rec.AddWording, rec.Remark = theirReq.AddSource, theirReq.AddWording, theirReq.Remark
			if theirReq.GroupName != "" {
				rec.Groups = []string{theirReq.GroupName}
			}
		}
		if _, err := tx.PutFriend(to, from, rec); err != nil {
			return nil, err
		}
	}
	if err := s.clearRequests(tx, from, to, "accepted", now); err != nil {
		return nil, err
	}
	both := theirs != nil || back
	return nil, s.notifyAdd(tx, from, to, both, now)
}

func (s *Service) notifyAdd(tx *store.Tx, from, to string, both bool, now int64) error {
	t := addTypeSingle
	if both {
		t = addTypeBoth
	}
	return s.notify(tx, relationEvent{Event: "friend_add", From: from, To: to, AddType: t, Time: now}, from, to)
}

// clearRequests removes pending requests between a and b in both
// directions, telling both sides.
func (s *Service) clearRequests(tx *store.Tx, a, b, reason string, now int64) error {
	for _, p := range [][2]string{{a, b}, {b, a}} {
		had, err := tx.DeleteRequest(p[1], p[0])
		if err != nil {
			return err
		}
		if had {
			ev := relationEvent{Event: "friend_request_delete", From: p[0], To: p[1], Reason: reason, Time: now}
			if err := s.notify(tx, ev, a, b); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Service) friendImport(ctx context.Context, c *Caller, body []byte) (any, error) {
	f, from, err := s.snsRequest(c, body)
	if err != nil {
		return nil, err
	}
	items, err := parseAddItems(f, true)
	if err != nil {
		return nil, err
	}
	pre := make([]*Error, len(items))
	for i, it := range items {
		if pre[i], err = s.peerError(from, *it.To, "cannot import yourself as a friend"); err != nil {
			return nil, err
		}
	}
	var res snsResult
	var touched []string
	err = s.store.Update(func(tx *store.Tx) error {
		res, touched = snsResult{}, nil
		now := tx.Now().Unix()
		for i, it := range items {
			to := *it.To
			if pre[i] != nil {
				res.fail(to, pre[i])
				continue
			}
			if b, err := tx.IsBlocked(from, to); err != nil || b {
				if err != nil {
					return err
				}
				res.fail(to, Errorf(30515, "%s is in your blacklist", to))
				continue
			}
			if b, err := tx.IsBlocked(to, from); err != nil || b {
				if err != nil {
					return err
				}
				res.fail(to, Errorf(30525, "you are in %s's blacklist", to))
				continue
			}
			old, err := tx.GetFriend(from, to)
			if err != nil {
				return err
			}
			mc, err := tx.RelCounts(from)
			if err != nil {
				return err
			}
			if old == nil && mc.Friends >= maxFriends {
				res.fail(to, Errorf(30010, "your friend list is full (%d)", maxFriends))
				continue
			}
			rec := &store.Friend{AddTime: it.AddTime, AddSource: *it.AddSource, AddWording: it.AddWording,
				Remark: it.Remark, RemarkTime: it.RemarkTime, Groups: it.groups, Custom: it.custom}
			if rec.AddTime == 0 {
				rec.AddTime = now
			}
			if _, err := tx.PutFriend(from, to, rec); err != nil {
				return err
			}
			theirs, err := tx.GetFriend(to, from)
			if err != nil {
				return err
			}
			if err := s.notifyAdd(tx, from, to, theirs != nil, now); err != nil {
				return err
			}
			touched = append(touched, to)
			res.ok(to)
		}
		return nil
	})
	if err != nil {
		return nil, storeErr(err)
	}
	s.rel.drop(append(touched, from)...)
	return res, nil
}

// friendResponse answers pending requests (a Duet command; Tencent's REST
// API has none — its SDK's accept/refuse): From_Account is the one asked,
// each ResponseFriendItem names a requester and a ResponseAction.
func (s *Service) friendResponse(ctx context.Context, c *Caller, body []byte) (any, error) {
	f, me, err := s.snsRequest(c, body)
	if err != nil {
		return nil, err
	}
	var items []struct {
		To     *string `json:"To_Account"`
		Action string  `json:"ResponseAction"`
		Remark string  `json:"Remark"`
	}
	if !f.has("ResponseFriendItem") || json.Unmarshal(f["ResponseFriendItem"], &items) != nil || len(items) == 0 {
		return nil, Errorf(30001, "ResponseFriendItem must be a non-empty Array of {To_Account, ResponseAction}")
	}
	if len(items) > maxSNSBatch {
		return nil, Errorf(30001, "ResponseFriendItem has %d entries; the limit is %d", len(items), maxSNSBatch)
	}
	for i, it := range items {
		switch {
		case it.To == nil:
			return nil, Errorf(30001, "ResponseFriendItem[%d].To_Account is missing", i)
		case it.Action != "Response_Action_Agree" && it.Action != "Response_Action_AgreeAndAdd" && it.Action != "Response_Action_Reject":
			return nil, Errorf(30001, "ResponseFriendItem[%d].ResponseAction must be Response_Action_Agree, Response_Action_AgreeAndAdd or Response_Action_Reject", i)
		case len(it.Remark) > maxRemark:
			return nil, Errorf(30001, "ResponseFriendItem[%d].Remark is %d bytes; the limit is %d", i, len(it.Remark), maxRemark)
		}
	}
	var res snsResult
	var touched []string
	err = s.store.Update(func(tx *store.Tx) error {
		res, touched = snsResult{}, nil
		now := tx.Now().Unix()
		for _, it := range items {
			from := *it.To // the requester
			req, err := tx.GetRequest(me, from)
			if err != nil {
				return err
			}
			if req == nil {
				res.fail(from, Errorf(30614, "no pending friend request from %s", from))
				continue
			}
			if it.Action == "Response_Action_Reject" {
				if err := s.clearRequests(tx, me, from, "rejected", now); err != nil {
					return err
				}
				touched = append(touched, from)
				res.ok(from)
				continue
			}
			theirs, err := tx.GetFriend(from, me)
			if err != nil {
				return err
			}
			mine, err := tx.GetFriend(me, from)
			if err != nil {
				return err
			}
			addMine := mine == nil && it.Action == "Response_Action_AgreeAndAdd"
			fc, err := tx.RelCounts(from)
			if err != nil {
				return err
			}
			mc, err := tx.RelCounts(me)
			if err != nil {
				return err
			}
			if theirs == nil && fc.Friends >= maxFriends {
				res.fail(from, Errorf(30014, "%s's friend list is full (%d)", from, maxFriends))
				continue
			}
			if addMine && mc.Friends >= maxFriends {
				res.fail(from, Errorf(30010, "your friend list is full (%d)", maxFriends))
				continue
			}
			if theirs == nil {
				rec := &store.Friend{AddTime: now, AddSource: req.AddSource, AddWording: req.AddWording, Remark: req.Remark}
				if req.GroupName != "" {
					rec.Groups = []string{req.GroupName}
				}
				if _, err := tx.PutFriend(from, me, rec); err != nil {
					return err
				}
			}
			if addMine {
				if _, err := tx.PutFriend(me, from, &store.Friend{AddTime: now, AddSource: req.AddSource, Remark: it.Remark}); err != nil {
					return err
				}
			}
			if err := s.clearRequests(tx, me, from, "accepted", now); err != nil {
				return err
			}
			if err := s.notifyAdd(tx, from, me, mine != nil || addMine, now); err != nil {
				return err
			}
			touched = append(touched, from)
			res.ok(from)
		}
		return nil
	})
	if err != nil {
		return nil, storeErr(err)
	}
	s.rel.drop(append(touched, me)...)
	return res, nil
}

type requestItem struct {
	From       string `json:"From_Account"`
	AddType    string `json:"AddType"`
	AddSource  string `json:"AddSource"`
	AddWording string `json:"AddWording"`
	AddTime    int64  `json:"AddTime"`
}

// friendRequestGet lists the requests awaiting From_Account (Duet command).
func (s *Service) friendRequestGet(ctx context.Context, c *Caller, body []byte) (any, error) {
	_, me, err := s.snsRequest(c, body)
	if err != nil {
		return nil, err
	}
	reqs, err := s.store.FriendRequests(me)
	if err != nil {
		return nil, err
	}
	out := struct {
		RequestItem  []requestItem `json:"RequestItem"`
		ErrorDisplay string        `json:"ErrorDisplay"`
	}{RequestItem: []requestItem{}}
	for _, r := range reqs {
		out.RequestItem = append(out.RequestItem, requestItem{From: r.From, AddType: r.AddType, AddSource: r.AddSource, AddWording: r.AddWording, AddTime: r.AddTime})
	}
	return out, nil
}

// ---- friend_update ----

func (s *Service) friendUpdate(ctx context.Context, c *Caller, body []byte) (any, error) {
	f, from, err := s.snsRequest(c, body)
	if err != nil {
		return nil, err
	}
	var items []struct {
		To      *string `json:"To_Account"`
		SnsItem []struct {
			Tag   string          `json:"Tag"`
			Value json.RawMessage `json:"Value"`
		} `json:"SnsItem"`
	}
	if !f.has("UpdateItem") || json.Unmarshal(f["UpdateItem"], &items) != nil || len(items) == 0 {
		return nil, Errorf(30001, "UpdateItem must be a non-empty Array of {To_Account, SnsItem}")
	}
	if len(items) > maxSNSBatch {
		return nil, Errorf(30001, "UpdateItem has %d entries; the limit is %d", len(items), maxSNSBatch)
	}
	type change struct {
		remark *string
		groups []string
		setGrp bool
		custom map[string]string
		to     string
	}
	changes := make([]change, len(items))
	for i, it := range items {
		if it.To == nil || len(it.SnsItem) == 0 {
			return nil, Errorf(30001, "UpdateItem[%d] needs To_Account and a non-empty SnsItem", i)
		}
		ch := change{to: *it.To}
		for _, si := range it.SnsItem {
			switch si.Tag {
			case "Tag_SNS_IM_Remark":
				var v string
				if json.Unmarshal(si.Value, &v) != nil || len(v) > maxRemark {
					return nil, Errorf(30001, "Tag_SNS_IM_Remark must be a String of at most %d bytes", maxRemark)
				}
				ch.remark = &v
			case "Tag_SNS_IM_Group":
				var g []string
				if json.Unmarshal(si.Value, &g) != nil {
					return nil, Errorf(30001, "Tag_SNS_IM_Group must be an Array of String")
				}
				if e := checkGroups(g); e != nil {
					return nil, e
				}
				ch.groups, ch.setGrp = g, true
			default:
				v, e := snsCustom(si.Tag, si.Value)
				if e != nil {
					return nil, Errorf(30001, "%s (friend_update sets Tag_SNS_IM_Remark, Tag_SNS_IM_Group and Tag_SNS_Custom_*)", e.Info)
				}
				if ch.custom == nil {
					ch.custom = map[string]string{}
				}
				ch.custom[si.Tag] = v
			}
		}
		changes[i] = ch
	}
	var res snsResult
	err = s.store.Update(func(tx *store.Tx) error {
		res = snsResult{}
		now := tx.Now().Unix()
		var updated []string
		for _, ch := range changes {
			rec, err := tx.GetFriend(from, ch.to)
			if err != nil {
				return err
			}
			if rec == nil {
				res.fail(ch.to, Errorf(31704, "%s is not in your friend list", ch.to))
				continue
			}
			if ch.remark != nil {
				rec.Remark, rec.RemarkTime = *ch.remark, now
			}
			if ch.setGrp {
				rec.Groups = ch.groups
			}
			for k, v := range ch.custom {
				if rec.Custom == nil {
					rec.Custom = map[string]string{}
				}
				rec.Custom[k] = v
			}
			if _, err := tx.PutFriend(from, ch.to, rec); err != nil {
				return err
			}
			updated = append(updated, ch.to)
			res.ok(ch.to)
		}
		for _, to := range updated {
			if err := s.notify(tx, relationEvent{Event: "friend_update", From: from, To: to, Time: now}, from); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, storeErr(err)
	}
	return res, nil
}

// ---- friend_delete / friend_delete_all ----

func deleteType(f fields, def string) (string, error) {
	t, _, ok := f.str("DeleteType")
	switch {
	case !ok:
		return "", Errorf(30001, "DeleteType is not a String")
	case t == "":
		return def, nil
	case t != deleteTypeSingle && t != deleteTypeBoth:
		return "", Errorf(30001, "DeleteType must be Delete_Type_Single or Delete_Type_Both, not %q", t)
	}
	return t, nil
}

// deleteOne removes a friendship (and, for Both, its reverse) and tells
// both sides; it reports whether anything was there.
func (s *Service) deleteOne(tx *store.Tx, from, to, dt string, now int64) (bool, error) {
	had, err := tx.DeleteFriend(from, to)
	if err != nil {
		return false, err
	}
	if dt == deleteTypeBoth {
		back, err := tx.DeleteFriend(to, from)
		if err != nil {
			return false, err
		}
		had = had || back
	}
	if !had {
		return false, nil
	}
	ev := relationEvent{Event: "friend_delete", From: from, To: to, DeleteType: dt, Time: now}
	return true, s.notify(tx, ev, from, to)
}

func (s *Service) friendDelete(ctx context.Context, c *Caller, body []byte) (any, error) {
	f, from, err := s.snsRequest(c, body)
	if err != nil {
		return nil, err
	}
	to, err := peers(f)
	if err != nil {
		return nil, err
	}
	// The reference leaves the default open (§11); Both matches the SDK's
	// deleteFromFriendList default.
	dt, err := deleteType(f, deleteTypeBoth)
	if err != nil {
		return nil, err
	}
	var res snsResult
	err = s.store.Update(func(tx *store.Tx) error {
		res = snsResult{}
		now := tx.Now().Unix()
		for _, p := range to {
			had, err := s.deleteOne(tx, from, p, dt, now)
			if err != nil {
				return err
			}
			if !had {
				res.fail(p, Errorf(31704, "%s is not a friend", p))
				continue
			}
			res.ok(p)
		}
		return nil
	})
	if err != nil {
		return nil, storeErr(err)
	}
	s.rel.drop(append(to, from)...)
	return res, nil
}

func (s *Service) friendDeleteAll(ctx context.Context, c *Caller, body []byte) (any, error) {
	f, from, err := s.snsRequest(c, body)
	if err != nil {
		return nil, err
	}
	dt, err := deleteType(f, deleteTypeSingle) // the YAML's documented default
	if err != nil {
		return nil, err
	}
	var gone []string
	err = s.store.Update(func(tx *store.Tx) error {
		gone = nil
		now := tx.Now().Unix()
		list, err := tx.FriendPeers(from)
		if err != nil {
			return err
		}
		for _, p := range list {
			if _, err := s.deleteOne(tx, from, p, dt, now); err != nil {
				return err
			}
		}
		gone = list
		return nil
	})
	if err != nil {
		return nil, storeErr(err)
	}
	s.rel.drop(append(gone, from)...)
	return snsReply{}, nil
}

// ---- friend_check / friend_get ----

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
	f, err := parseObject(body, 30001)
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
		return "", nil, nil, Errorf(30001, "CheckType must be %s or %s", single, both)
	}
	// names: none, AWithB, BWithA, BothWay
	items = []checkItem{}
	for _, p := range to {
		if e := s.mustExist(p, 30003, "To_Account"); e != nil {
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

func (s *Service) friendCheck(ctx context.Context, c *Caller, body []byte) (any, error) {
	_, items, fail, err := s.relation(c, body, "CheckResult_Type_Single", "CheckResult_Type_Both",
		[4]string{"CheckResult_Type_NoRelation", "CheckResult_Type_AWithB", "CheckResult_Type_BWithA", "CheckResult_Type_BothWay"},
		func(a, b string) (bool, error) {
			r, err := s.store.GetFriend(a, b)
			return r != nil, err
		})
	if err != nil {
		return nil, err
	}
	return struct {
		InfoItem     []checkItem `json:"InfoItem"`
		FailAccount  []string    `json:"Fail_Account,omitempty"`
		ErrorDisplay string      `json:"ErrorDisplay"`
	}{InfoItem: items, FailAccount: fail}, nil
}

type valueItem struct {
	Tag   string `json:"Tag"`
	Value any    `json:"Value"`
}

type userDataItem struct {
	To        string      `json:"To_Account"`
	ValueItem []valueItem `json:"ValueItem"`
}

func (s *Service) friendGet(ctx context.Context, c *Caller, body []byte) (any, error) {
	f, from, err := s.snsRequest(c, body)
	if err != nil {
		return nil, err
	}
	start, present, ok := f.integer("StartIndex", 0, 1<<31)
	if !present || !ok {
		return nil, Errorf(30001, "StartIndex is missing or is not a non-negative Integer")
	}
	if _, _, ok := f.integer("StandardSequence", 0, 1<<62); !ok {
		return nil, Errorf(30001, "StandardSequence is not an Integer")
	}
	if _, _, ok := f.integer("CustomSequence", 0, 1<<62); !ok {
		return nil, Errorf(30001, "CustomSequence is not an Integer")
	}
	// Counters first: a list read after them is at least as new.
	counts, err := s.store.RelCounts(from)
	if err != nil {
		return nil, err
	}
	list, err := s.store.Friends(from)
	if err != nil {
		return nil, err
	}
	out := struct {
		UserDataItem     []userDataItem `json:"UserDataItem"`
		StandardSequence uint64         `json:"StandardSequence"`
		CustomSequence   uint64         `json:"CustomSequence"`
		FriendNum        int            `json:"FriendNum"`
		CompleteFlag     int            `json:"CompleteFlag"`
		NextStartIndex   int            `json:"NextStartIndex"`
		ErrorDisplay     string         `json:"ErrorDisplay"`
	}{UserDataItem: []userDataItem{}, StandardSequence: counts.FriendSeq, CustomSequence: counts.FriendSeq, FriendNum: len(list)}
	end := min(int(start)+friendGetPage, len(list))
	for i := int(start); i < end; i++ {
		out.UserDataItem = append(out.UserDataItem, userDataItem{To: list[i].Peer, ValueItem: friendValues(&list[i].Friend)})
	}
	if end >= len(list) {
		out.CompleteFlag = 1
	} else {
		out.NextStartIndex = end
	}
	return out, nil
}

// friendValues is a friend record's standard and custom friend tags as
// friend_get and friend_get_list report them; unset ones are left out.
func friendValues(fr *store.Friend) []valueItem {
	vi := []valueItem{
		{"Tag_SNS_IM_AddSource", fr.AddSource},
		{"Tag_SNS_IM_AddTime", fr.AddTime},
	}
	if fr.Remark != "" {
		vi = append(vi, valueItem{"Tag_SNS_IM_Remark", fr.Remark}, valueItem{"Tag_SNS_IM_RemarkTime", fr.RemarkTime})
	}
	if fr.AddWording != "" {
		vi = append(vi, valueItem{"Tag_SNS_IM_AddWording", fr.AddWording})
	}
	if len(fr.Groups) > 0 {
		vi = append(vi, valueItem{"Tag_SNS_IM_Group", fr.Groups})
	}
	keys := make([]string, 0, len(fr.Custom))
	for k := range fr.Custom {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		vi = append(vi, valueItem{k, fr.Custom[k]})
	}
	return vi
}

// snsStandardTags are the friend tags friend_get_list can ask for besides
// Tag_SNS_Custom_* (reference §6.3).
var snsStandardTags = map[string]bool{
	"Tag_SNS_IM_Group": true, "Tag_SNS_IM_Remark": true, "Tag_SNS_IM_AddSource": true,
	"Tag_SNS_IM_AddWording": true, "Tag_SNS_IM_AddTime": true, "Tag_SNS_IM_RemarkTime": true,
}

func snsCustomTag(tag string) bool {
	name, ok := cutPrefix(tag, "Tag_SNS_Custom_")
	return ok && name != "" && len(name) <= 8
}

type snsProfileItem struct {
	To             string      `json:"To_Account"`
	SnsProfileItem []valueItem `json:"SnsProfileItem,omitzero"` // absent (nil) on a failed item, [] when nothing is set
	ResultCode     int         `json:"ResultCode"`
	ResultInfo     string      `json:"ResultInfo"`
}

// friendGetList answers sns/friend_get_list: the friend and profile tags
// of the named friends (reference §6.3). A name that is not in the list
// gets 30001 Err_SNS_FriendGetList_Friend_Not_Exist in its item, as in
// Tencent's example. Values are grouped as Tencent's example orders them —
// standard friend tags, standard profile tags, custom friend tags, custom
// profile tags — each group in TagList order; unset values are left out.
func (s *Service) friendGetList(ctx context.Context, c *Caller, body []byte) (any, error) {
	f, from, err := s.snsRequest(c, body)
	if err != nil {
		return nil, err
	}
	to, err := peers(f)
	if err != nil {
		return nil, err
	}
	tags, present, ok := f.strings("TagList")
	if !ok || !present || len(tags) == 0 {
		return nil, Errorf(30001, "TagList must be a non-empty Array of String")
	}
	var classes [4][]string // standard friend, standard profile, custom friend, custom profile
	wantProfile := false
	for _, t := range tags {
		switch {
		case snsStandardTags[t]:
			classes[0] = append(classes[0], t)
		case isStandard(t):
			classes[1] = append(classes[1], t)
			wantProfile = true
		case snsCustomTag(t):
			classes[2] = append(classes[2], t)
		case customTag(t):
			classes[3] = append(classes[3], t)
			wantProfile = true
		default:
			return nil, Errorf(30001, "unknown tag %q in TagList (Tag_SNS_IM_*, Tag_SNS_Custom_*, Tag_Profile_IM_* or Tag_Profile_Custom_*)", t)
		}
	}
	out := struct {
		InfoItem     []snsProfileItem `json:"InfoItem"`
		FailAccount  []string         `json:"Fail_Account,omitempty"`
		ErrorDisplay string           `json:"ErrorDisplay"`
	}{InfoItem: []snsProfileItem{}}
	for _, p := range to {
		var fr *store.Friend
		if ValidUserID(p) {
			if fr, err = s.store.GetFriend(from, p); err != nil {
				return nil, err
			}
		}
		if fr == nil {
			out.InfoItem = append(out.InfoItem, snsProfileItem{To: p, ResultCode: 30001, ResultInfo: "Err_SNS_FriendGetList_Friend_Not_Exist"})
			out.FailAccount = append(out.FailAccount, p)
			continue
		}
		have := map[string]any{}
		for _, v := range friendValues(fr) {
			have[v.Tag] = v.Value
		}
		if wantProfile {
			prof, err := s.profileTags(p)
			if err != nil {
				return nil, err
			}
			for k, v := range prof {
				have[k] = v
			}
		}
		item := snsProfileItem{To: p, SnsProfileItem: []valueItem{}}
		for _, class := range classes {
			for _, t := range class {
				if v, ok := have[t]; ok {
					item.SnsProfileItem = append(item.SnsProfileItem, valueItem{t, v})
				}
			}
		}
		out.InfoItem = append(out.InfoItem, item)
	}
	return out, nil
}

// ---- blacklist ----

func (s *Service) blackListAdd(ctx context.Context, c *Caller, body []byte) (any, error) {
	f, from, err := s.snsRequest(c, body)
	if err != nil {
		return nil, err
	}
	to, err := peers(f)
	if err != nil {
		return nil, err
	}
	pre := make([]*Error, len(to))
	for i, p := range to {
		if pre[i], err = s.peerError(from, p, "cannot blacklist yourself"); err != nil {
			return nil, err
		}
	}
	var res snsResult
	err = s.store.Update(func(tx *store.Tx) error {
		res = snsResult{}
		now := tx.Now().Unix()
		for i, p := range to {
			if pre[i] != nil {
				res.fail(p, pre[i])
				continue
			}
			if b, err := tx.IsBlocked(from, p); err != nil || b {
				if err != nil {
					return err
				}
				res.fail(p, Errorf(30001, "Err_SNS_BlackListAdd_Already_Exist: %s is already in your blacklist", p))
				continue
			}
			counts, err := tx.RelCounts(from)
			if err != nil {
				return err
			}
			if counts.Blacklist >= maxBlacklist {
				res.fail(p, Errorf(30013, "your blacklist is full (%d)", maxBlacklist))
				continue
			}
			if _, err := tx.PutBlocked(from, p, now); err != nil {
				return err
			}
			// §6.3: blacklisting ends the friendship both ways and any
			// pending request between the two.
			if _, err := s.deleteOne(tx, from, p, deleteTypeBoth, now); err != nil {
				return err
			}
			if err := s.clearRequests(tx, from, p, "blacklisted", now); err != nil {
				return err
			}
			if err := s.notify(tx, relationEvent{Event: "blacklist_add", From: from, To: p, Time: now}, from); err != nil {
				return err
			}
			res.ok(p)
		}
		return nil
	})
	if err != nil {
		return nil, storeErr(err)
	}
	s.rel.drop(append(to, from)...)
	return res, nil
}

func (s *Service) blackListDelete(ctx context.Context, c *Caller, body []byte) (any, error) {
	f, from, err := s.snsRequest(c, body)
	if err != nil {
		return nil, err
	}
	to, err := peers(f)
	if err != nil {
		return nil, err
	}
	var res snsResult
	err = s.store.Update(func(tx *store.Tx) error {
		res = snsResult{}
		now := tx.Now().Unix()
		for _, p := range to {
			had, err := tx.DeleteBlocked(from, p)
			if err != nil {
				return err
			}
			if !had {
				res.fail(p, Errorf(30001, "%s is not in your blacklist", p))
				continue
			}
			if err := s.notify(tx, relationEvent{Event: "blacklist_delete", From: from, To: p, Time: now}, from); err != nil {
				return err
			}
			res.ok(p)
		}
		return nil
	})
	if err != nil {
		return nil, storeErr(err)
	}
	s.rel.drop(from)
	return res, nil
}

func (s *Service) blackListGet(ctx context.Context, c *Caller, body []byte) (any, error) {
	f, from, err := s.snsRequest(c, body)
	if err != nil {
		return nil, err
	}
	start, p1, ok1 := f.integer("StartIndex", 0, 1<<31)
	limit, p2, ok2 := f.integer("MaxLimited", 1, 1<<31)
	_, p3, ok3 := f.integer("LastSequence", 0, 1<<62)
	if !p1 || !ok1 || !p2 || !ok2 || !p3 || !ok3 {
		return nil, Errorf(30001, "StartIndex (≥ 0), MaxLimited (≥ 1) and LastSequence (≥ 0) are required Integers")
	}
	counts, err := s.store.RelCounts(from)
	if err != nil {
		return nil, err
	}
	list, err := s.store.Blacklist(from)
	if err != nil {
		return nil, err
	}
	type item struct {
		To      string `json:"To_Account"`
		AddTime int64  `json:"AddBlackTimeStamp"`
	}
	out := struct {
		BlackListItem []item `json:"BlackListItem"`
		StartIndex    int    `json:"StartIndex"`
		// The reference's misspelling, kept for wire compatibility (§6.3).
		CurruentSequence uint64 `json:"CurruentSequence"`
		ErrorDisplay     string `json:"ErrorDisplay"`
	}{BlackListItem: []item{}, CurruentSequence: counts.BlackSeq}
	end := min(int(start)+int(limit), len(list))
	for i := int(start); i < end; i++ {
		out.BlackListItem = append(out.BlackListItem, item{To: list[i].Peer, AddTime: list[i].AddTime})
	}
	if end < len(list) {
		out.StartIndex = end
	}
	return out, nil
}

func (s *Service) blackListCheck(ctx context.Context, c *Caller, body []byte) (any, error) {
	_, items, fail, err := s.relation(c, body, "BlackCheckResult_Type_Single", "BlackCheckResult_Type_Both",
		[4]string{"BlackCheckResult_Type_NO", "BlackCheckResult_Type_AWithB", "BlackCheckResult_Type_BWithA", "BlackCheckResult_Type_BothWay"},
		s.store.IsBlocked)
	if err != nil {
		return nil, err
	}
	return struct {
		BlackListCheckItem []checkItem `json:"BlackListCheckItem"`
		FailAccount        []string    `json:"Fail_Account,omitempty"`
		ErrorDisplay       string      `json:"ErrorDisplay"`
	}{BlackListCheckItem: items, FailAccount: fail}, nil
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
