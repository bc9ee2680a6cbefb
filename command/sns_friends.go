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

// addRequest is the AddFriendItem list of friend_add and friend_import.
type addRequest struct {
	snsRequest
	items []addItem
	to    []string // the items' To_Account
}

// read decodes it; groupArray says whether GroupName is an Array
// (friend_import) or a single String (friend_add).
func (r *addRequest) read(s *Service, c *Caller, f fields, groupArray bool) (err error) {
	if err = r.snsRequest.decode(s, c, f); err != nil {
		return err
	}
	if r.items, err = parseAddItems(f, groupArray); err != nil {
		return err
	}
	r.to = make([]string, len(r.items))
	for i, it := range r.items {
		r.to[i] = *it.To
	}
	return nil
}

type friendAddRequest struct {
	addRequest
	addType string
	force   bool
}

func (r *friendAddRequest) decode(s *Service, c *Caller, f fields) error {
	if err := r.read(s, c, f, false); err != nil {
		return err
	}
	addType, _, ok := f.str("AddType")
	switch {
	case !ok:
		return Errorf(CodeSNSParam, "AddType is not a String")
	case addType == "":
		addType = addTypeBoth
	case addType != addTypeSingle && addType != addTypeBoth:
		return Errorf(CodeSNSParam, "AddType must be Add_Type_Single or Add_Type_Both, not %q", addType)
	}
	force, _, ok := f.integer("ForceAddFlags", 0, 1)
	if !ok {
		return Errorf(CodeSNSParam, "ForceAddFlags must be 0 or 1")
	}
	r.addType, r.force = addType, force == 1
	return nil
}

func (s *Service) friendAdd(ctx context.Context, c *Caller, r *friendAddRequest) (any, error) {
	from := r.from
	// Forcing past the peer's AllowType is the back-end's privilege.
	forced := r.force && c.Admin
	if !c.Admin {
		p, err := s.store.GetProfile(from)
		if err != nil {
			return nil, err
		}
		if forbidsAdding(p) {
			return nil, Errorf(CodeSNSAddForbidden, "%s is forbidden to add friends (Tag_Profile_IM_AdminForbidType)", from)
		}
	}
	pre, err := s.peerErrors(from, r.to, "cannot add yourself as a friend")
	if err != nil {
		return nil, err
	}
	return s.perPeer(from, r.to, pre, func(tx *store.Tx, i int, now int64) (*Error, error) {
		return s.addOne(tx, from, r.to[i], &r.items[i], r.addType, forced, now)
	})
}

// addOne is one friend_add item inside the transaction. A 30539 result
// means a request was left pending for the peer.
func (s *Service) addOne(tx *store.Tx, from, to string, it *addItem, addType string, forced bool, now int64) (*Error, error) {
	if e, err := blocked(tx, from, to); e != nil || err != nil {
		return e, err
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

// blocked refuses a friendship between from and to when either blocks
// the other.
func blocked(tx *store.Tx, from, to string) (*Error, error) {
	if b, err := tx.IsBlocked(from, to); err != nil || b {
		return Errorf(CodeSNSPeerBlacklisted, "%s is in your blacklist", to), err
	}
	if b, err := tx.IsBlocked(to, from); err != nil || b {
		return Errorf(CodeSNSInPeerBlacklist, "you are in %s's blacklist", to), err
	}
	return nil, nil
}

func (s *Service) notifyAdd(tx *store.Tx, from, to string, both bool, now int64) error {
	t := addTypeSingle
	if both {
		t = addTypeBoth
	}
	return s.notify(tx, relationEvent{Event: "friend_add", From: from, To: to, AddType: t, Time: now}, from, to)
}

type friendImportRequest struct{ addRequest }

func (r *friendImportRequest) decode(s *Service, c *Caller, f fields) error {
	return r.read(s, c, f, true)
}

func (s *Service) friendImport(ctx context.Context, c *Caller, r *friendImportRequest) (any, error) {
	from := r.from
	pre, err := s.peerErrors(from, r.to, "cannot import yourself as a friend")
	if err != nil {
		return nil, err
	}
	return s.perPeer(from, r.to, pre, func(tx *store.Tx, i int, now int64) (*Error, error) {
		it, to := &r.items[i], r.to[i]
		if e, err := blocked(tx, from, to); e != nil || err != nil {
			return e, err
		}
		old, err := tx.GetFriend(from, to)
		if err != nil {
			return nil, err
		}
		mc, err := tx.RelCounts(from)
		if err != nil {
			return nil, err
		}
		if old == nil && mc.Friends >= maxFriends {
			return Errorf(CodeSNSFriendsFull, "your friend list is full (%d)", maxFriends), nil
		}
		rec := &store.Friend{AddTime: it.AddTime, AddSource: *it.AddSource, AddWording: it.AddWording,
			Remark: it.Remark, RemarkTime: it.RemarkTime, Groups: it.groups, Custom: it.custom}
		if rec.AddTime == 0 {
			rec.AddTime = now
		}
		if _, err := tx.PutFriend(from, to, rec); err != nil {
			return nil, err
		}
		theirs, err := tx.GetFriend(to, from)
		if err != nil {
			return nil, err
		}
		return nil, s.notifyAdd(tx, from, to, theirs != nil, now)
	})
}

// ---- friend_update ----

// friendChange is one UpdateItem of friend_update.
type friendChange struct {
	remark *string
	groups []string
	setGrp bool
	custom map[string]string
}

type friendUpdateRequest struct {
	snsRequest
	to      []string
	changes []friendChange
}

func (r *friendUpdateRequest) decode(s *Service, c *Caller, f fields) error {
	if err := r.snsRequest.decode(s, c, f); err != nil {
		return err
	}
	var items []struct {
		To      *string `json:"To_Account"`
		SnsItem []struct {
			Tag   string          `json:"Tag"`
			Value json.RawMessage `json:"Value"`
		} `json:"SnsItem"`
	}
	if !f.has("UpdateItem") || json.Unmarshal(f["UpdateItem"], &items) != nil || len(items) == 0 {
		return Errorf(CodeSNSParam, "UpdateItem must be a non-empty Array of {To_Account, SnsItem}")
	}
	if len(items) > maxSNSBatch {
		return Errorf(CodeSNSParam, "UpdateItem has %d entries; the limit is %d", len(items), maxSNSBatch)
	}
	r.to, r.changes = make([]string, len(items)), make([]friendChange, len(items))
	for i, it := range items {
		if it.To == nil || len(it.SnsItem) == 0 {
			return Errorf(CodeSNSParam, "UpdateItem[%d] needs To_Account and a non-empty SnsItem", i)
		}
		ch := &r.changes[i]
		r.to[i] = *it.To
		for _, si := range it.SnsItem {
			switch si.Tag {
			case "Tag_SNS_IM_Remark":
				var v string
				if json.Unmarshal(si.Value, &v) != nil || len(v) > maxRemark {
					return Errorf(CodeSNSParam, "Tag_SNS_IM_Remark must be a String of at most %d bytes", maxRemark)
				}
				ch.remark = &v
			case "Tag_SNS_IM_Group":
				var g []string
				if json.Unmarshal(si.Value, &g) != nil {
					return Errorf(CodeSNSParam, "Tag_SNS_IM_Group must be an Array of String")
				}
				if e := checkGroups(g); e != nil {
					return e
				}
				ch.groups, ch.setGrp = g, true
			default:
				v, e := snsCustom(si.Tag, si.Value)
				if e != nil {
					return Errorf(CodeSNSParam, "%s (friend_update sets Tag_SNS_IM_Remark, Tag_SNS_IM_Group and Tag_SNS_Custom_*)", e.Info)
				}
				if ch.custom == nil {
					ch.custom = map[string]string{}
				}
				ch.custom[si.Tag] = v
			}
		}
	}
	return nil
}

func (s *Service) friendUpdate(ctx context.Context, c *Caller, r *friendUpdateRequest) (any, error) {
	from := r.from
	return s.perPeer(from, r.to, nil, func(tx *store.Tx, i int, now int64) (*Error, error) {
		ch, to := &r.changes[i], r.to[i]
		rec, err := tx.GetFriend(from, to)
		if err != nil {
			return nil, err
		}
		if rec == nil {
			return Errorf(CodeSNSNotFriends, "%s is not in your friend list", to), nil
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
		if _, err := tx.PutFriend(from, to, rec); err != nil {
			return nil, err
		}
		return nil, s.notify(tx, relationEvent{Event: "friend_update", From: from, To: to, Time: now}, from)
	})
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
// both sides; it reports whether anything was there. home is the user the
// transaction is homed at (docs/cluster.md §11.1). Whether to had home as
// a friend is read from home's own reverse index rg/{home}{to}: deleting
// to's record is an operation on to whose result is not used (with
// partitions it runs in to's partition, later: §11.2).
func (s *Service) deleteOne(tx *store.Tx, home, to, dt string, now int64) (bool, error) {
	had, err := tx.DeleteFriend(home, to)
	if err != nil {
		return false, err
	}
	if dt == deleteTypeBoth {
		back, err := tx.IsFriendedBy(home, to)
		if err != nil {
			return false, err
		}
		if _, err := tx.DeleteFriend(to, home); err != nil {
			return false, err
		}
		had = had || back
	}
	if !had {
		return false, nil
	}
	ev := relationEvent{Event: "friend_delete", From: home, To: to, DeleteType: dt, Time: now}
	return true, s.notify(tx, ev, home, to)
}

type friendDeleteRequest struct {
	snsPeers
	deleteType string
}

func (r *friendDeleteRequest) decode(s *Service, c *Caller, f fields) (err error) {
	if err = r.snsPeers.decode(s, c, f); err != nil {
		return err
	}
	// The reference leaves the default open (§11); Both matches the SDK's
	// deleteFromFriendList default.
	r.deleteType, err = deleteType(f, deleteTypeBoth)
	return err
}

func (s *Service) friendDelete(ctx context.Context, c *Caller, r *friendDeleteRequest) (any, error) {
	return s.perPeer(r.from, r.to, nil, func(tx *store.Tx, i int, now int64) (*Error, error) {
		had, err := s.deleteOne(tx, r.from, r.to[i], r.deleteType, now)
		if err != nil || had {
			return nil, err
		}
		return Errorf(CodeSNSNotFriends, "%s is not a friend", r.to[i]), nil
	})
}

type friendDeleteAllRequest struct {
	snsRequest
	deleteType string
}

func (r *friendDeleteAllRequest) decode(s *Service, c *Caller, f fields) (err error) {
	if err = r.snsRequest.decode(s, c, f); err != nil {
		return err
	}
	r.deleteType, err = deleteType(f, deleteTypeSingle) // the YAML's documented default
	return err
}

func (s *Service) friendDeleteAll(ctx context.Context, c *Caller, r *friendDeleteAllRequest) (any, error) {
	from, dt := r.from, r.deleteType
	var gone []string
	err := s.store.UpdateFor(from, func(tx *store.Tx) error {
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

type friendCheckRequest struct{ checkRequest }

func (r *friendCheckRequest) decode(s *Service, c *Caller, f fields) error {
	return r.read(s, c, f, "CheckResult_Type_Single", "CheckResult_Type_Both")
}

func (s *Service) friendCheck(ctx context.Context, c *Caller, r *friendCheckRequest) (any, error) {
	items, fail, err := s.relation(&r.checkRequest,
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

type friendGetRequest struct {
	snsRequest
	start int
}

func (r *friendGetRequest) decode(s *Service, c *Caller, f fields) error {
	if err := r.snsRequest.decode(s, c, f); err != nil {
		return err
	}
	start, present, ok := f.integer("StartIndex", 0, 1<<31)
	if !present || !ok {
		return Errorf(CodeSNSParam, "StartIndex is missing or is not a non-negative Integer")
	}
	if _, _, ok := f.integer("StandardSequence", 0, 1<<62); !ok {
		return Errorf(CodeSNSParam, "StandardSequence is not an Integer")
	}
	if _, _, ok := f.integer("CustomSequence", 0, 1<<62); !ok {
		return Errorf(CodeSNSParam, "CustomSequence is not an Integer")
	}
	r.start = int(start)
	return nil
}

func (s *Service) friendGet(ctx context.Context, c *Caller, r *friendGetRequest) (any, error) {
	from, start := r.from, r.start
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
	end := min(start+friendGetPage, len(list))
	for i := start; i < end; i++ {
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
type friendGetListRequest struct {
	snsPeers
	classes     [4][]string // standard friend, standard profile, custom friend, custom profile
	wantProfile bool
}

func (r *friendGetListRequest) decode(s *Service, c *Caller, f fields) error {
	if err := r.snsPeers.decode(s, c, f); err != nil {
		return err
	}
	tags, present, ok := f.strings("TagList")
	if !ok || !present || len(tags) == 0 {
		return Errorf(CodeSNSParam, "TagList must be a non-empty Array of String")
	}
	for _, t := range tags {
		switch {
		case snsStandardTags[t]:
			r.classes[0] = append(r.classes[0], t)
		case isStandard(t):
			r.classes[1] = append(r.classes[1], t)
			r.wantProfile = true
		case snsCustomTag(t):
			r.classes[2] = append(r.classes[2], t)
		case customTag(t):
			r.classes[3] = append(r.classes[3], t)
			r.wantProfile = true
		default:
			return Errorf(CodeSNSParam, "unknown tag %q in TagList (Tag_SNS_IM_*, Tag_SNS_Custom_*, Tag_Profile_IM_* or Tag_Profile_Custom_*)", t)
		}
	}
	return nil
}

func (s *Service) friendGetList(ctx context.Context, c *Caller, r *friendGetListRequest) (any, error) {
	from, to, classes, wantProfile := r.from, r.to, r.classes, r.wantProfile
	out := struct {
		InfoItem     []snsProfileItem `json:"InfoItem"`
		FailAccount  []string         `json:"Fail_Account,omitempty"`
		ErrorDisplay string           `json:"ErrorDisplay"`
	}{InfoItem: []snsProfileItem{}}
	for _, p := range to {
		var fr *store.Friend
		if ValidUserID(p) {
			var err error
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
