package command

import (
	"context"
	"encoding/json"
	"sort"

	"github.com/duet-im/duet/store"
)

// Friends (reference §6.3): friend_add, friend_import, friend_update,
// friend_delete, friend_delete_all, friend_check, friend_get and
// friend_get_list.

// ---- friend_add / friend_import ----

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
		return nil, Errorf(CodeSNSParam, "AddType is not a String")
	case addType == "":
		addType = addTypeBoth
	case addType != addTypeSingle && addType != addTypeBoth:
		return nil, Errorf(CodeSNSParam, "AddType must be Add_Type_Single or Add_Type_Both, not %q", addType)
	}
	force, _, ok := f.integer("ForceAddFlags", 0, 1)
	if !ok {
		return nil, Errorf(CodeSNSParam, "ForceAddFlags must be 0 or 1")
	}
	// Forcing past the peer's AllowType is the back-end's privilege.
	forced := force == 1 && c.Admin
	if !c.Admin {
		p, err := s.store.GetProfile(from)
		if err != nil {
			return nil, err
		}
		if forbidsAdding(p) {
			return nil, Errorf(CodeSNSAddForbidden, "%s is forbidden to add friends (Tag_Profile_IM_AdminForbidType)", from)
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
			if e != nil && e.Code != CodeSNSPending {
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
		return Errorf(CodeSNSPeerBlacklisted, "%s is in your blacklist", to), err
	}
	if b, err := tx.IsBlocked(to, from); err != nil || b {
		return Errorf(CodeSNSInPeerBlacklist, "you are in %s's blacklist", to), err
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
			return Errorf(CodeSNSPeerDeniesAll, "%s accepts no friend requests", to), nil
		}
	}
	mc, err := tx.RelCounts(from)
	if err != nil {
		return nil, err
	}
	if mine == nil && mc.Friends >= maxFriends {
		return Errorf(CodeSNSFriendsFull, "your friend list is full (%d)", maxFriends), nil
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
			return Errorf(CodeSNSPendingFull, "%s has too many pending friend requests (%d)", to, maxPending), nil
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
		return Errorf(CodeSNSPending, "%s must confirm; the request is pending", to), nil
	}
	back := theirs == nil && (wantBack || theirReq != nil)
	if back {
		tc, err := tx.RelCounts(to)
		if err != nil {
			return nil, err
		}
		if tc.Friends >= maxFriends {
			return Errorf(CodeSNSPeerFriendsFull, "%s's friend list is full (%d)", to, maxFriends), nil
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
				res.fail(to, Errorf(CodeSNSPeerBlacklisted, "%s is in your blacklist", to))
				continue
			}
			if b, err := tx.IsBlocked(to, from); err != nil || b {
				if err != nil {
					return err
				}
				res.fail(to, Errorf(CodeSNSInPeerBlacklist, "you are in %s's blacklist", to))
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
				res.fail(to, Errorf(CodeSNSFriendsFull, "your friend list is full (%d)", maxFriends))
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
		return nil, Errorf(CodeSNSParam, "UpdateItem must be a non-empty Array of {To_Account, SnsItem}")
	}
	if len(items) > maxSNSBatch {
		return nil, Errorf(CodeSNSParam, "UpdateItem has %d entries; the limit is %d", len(items), maxSNSBatch)
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
			return nil, Errorf(CodeSNSParam, "UpdateItem[%d] needs To_Account and a non-empty SnsItem", i)
		}
		ch := change{to: *it.To}
		for _, si := range it.SnsItem {
			switch si.Tag {
			case "Tag_SNS_IM_Remark":
				var v string
				if json.Unmarshal(si.Value, &v) != nil || len(v) > maxRemark {
					return nil, Errorf(CodeSNSParam, "Tag_SNS_IM_Remark must be a String of at most %d bytes", maxRemark)
				}
				ch.remark = &v
			case "Tag_SNS_IM_Group":
				var g []string
				if json.Unmarshal(si.Value, &g) != nil {
					return nil, Errorf(CodeSNSParam, "Tag_SNS_IM_Group must be an Array of String")
				}
				if e := checkGroups(g); e != nil {
					return nil, e
				}
				ch.groups, ch.setGrp = g, true
			default:
				v, e := snsCustom(si.Tag, si.Value)
				if e != nil {
					return nil, Errorf(CodeSNSParam, "%s (friend_update sets Tag_SNS_IM_Remark, Tag_SNS_IM_Group and Tag_SNS_Custom_*)", e.Info)
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
				res.fail(ch.to, Errorf(CodeSNSNotFriends, "%s is not in your friend list", ch.to))
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
		return "", Errorf(CodeSNSParam, "DeleteType is not a String")
	case t == "":
		return def, nil
	case t != deleteTypeSingle && t != deleteTypeBoth:
		return "", Errorf(CodeSNSParam, "DeleteType must be Delete_Type_Single or Delete_Type_Both, not %q", t)
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
				res.fail(p, Errorf(CodeSNSNotFriends, "%s is not a friend", p))
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

// ---- friend_check / friend_get / friend_get_list ----

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
		return nil, Errorf(CodeSNSParam, "StartIndex is missing or is not a non-negative Integer")
	}
	if _, _, ok := f.integer("StandardSequence", 0, 1<<62); !ok {
		return nil, Errorf(CodeSNSParam, "StandardSequence is not an Integer")
	}
	if _, _, ok := f.integer("CustomSequence", 0, 1<<62); !ok {
		return nil, Errorf(CodeSNSParam, "CustomSequence is not an Integer")
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
		return nil, Errorf(CodeSNSParam, "TagList must be a non-empty Array of String")
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
			return nil, Errorf(CodeSNSParam, "unknown tag %q in TagList (Tag_SNS_IM_*, Tag_SNS_Custom_*, Tag_Profile_IM_* or Tag_Profile_Custom_*)", t)
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
			out.InfoItem = append(out.InfoItem, snsProfileItem{To: p, ResultCode: CodeSNSParam, ResultInfo: "Err_SNS_FriendGetList_Friend_Not_Exist"})
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
