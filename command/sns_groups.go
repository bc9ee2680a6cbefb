package command

import (
	"context"
	"slices"

	"github.com/duet-im/duet/store"
)

// Friend groups (sns/group_add, group_delete, group_get; reference §6.3):
// a user's named lists of friends. A friend's groups are its
// Tag_SNS_IM_Group; the user's group list holds those and any empty group
// made with group_add (at most 32 groups, names 1–30 bytes). Every change
// of the list raises CurrentSequence.

// groupEvent tells the owner's devices that the group list changed
// (docs/events.md).
type groupEvent struct {
	Event     string   `json:"Event"` // friend_group_add, friend_group_delete
	From      string   `json:"From_Account"`
	GroupName []string `json:"GroupName"`
	Time      int64    `json:"Time"`
}

// groupNames reads a GroupName array of valid names, without repeats.
func groupNames(f fields) ([]string, error) {
	names, present, ok := f.strings("GroupName")
	if !ok || !present || len(names) == 0 {
		return nil, Errorf(CodeSNSParam, "GroupName must be a non-empty Array of String")
	}
	var out []string
	for _, n := range names {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	if e := checkGroups(out); e != nil {
		return nil, e
	}
	return out, nil
}

// groupRequest is an sns request on friend groups: GroupName, required.
type groupRequest struct {
	snsRequest
	names []string
}

func (r *groupRequest) decode(s *Service, c *Caller, f fields) (err error) {
	if err = r.snsRequest.decode(s, c, f); err != nil {
		return err
	}
	r.names, err = groupNames(f)
	return err
}

// groupAddRequest adds the friends to put in the groups, To_Account
// (optional).
type groupAddRequest struct {
	groupRequest
	to []string
}

func (r *groupAddRequest) decode(s *Service, c *Caller, f fields) (err error) {
	if err = r.groupRequest.decode(s, c, f); err != nil {
		return err
	}
	if f.has("To_Account") {
		r.to, err = peers(f)
	}
	return err
}

func (s *Service) groupAdd(ctx context.Context, c *Caller, r *groupAddRequest) (any, error) {
	from, names, to := r.from, r.names, r.to
	type result struct {
		ResultItem      []resultItem `json:"ResultItem,omitempty"`
		FailAccount     []string     `json:"Fail_Account,omitempty"`
		CurrentSequence uint64       `json:"CurrentSequence"`
		ErrorDisplay    string       `json:"ErrorDisplay"`
	}
	var res result
	err := s.store.UpdateFor(from, func(tx *store.Tx) error {
		res = result{}
		now := tx.Now().Unix()
		g, err := tx.FriendGroups(from)
		if err != nil {
			return err
		}
		var added []string
		for _, n := range names {
			if !slices.Contains(g.Names, n) {
				added = append(added, n)
			}
		}
		if len(g.Names)+len(added) > maxGroups {
			return Errorf(CodeSNSGroupsFull, "a user has at most %d friend groups; %s has %d and asks for %d more", maxGroups, from, len(g.Names), len(added))
		}
		if len(added) > 0 {
			g.Names = append(g.Names, added...)
			if err := tx.PutFriendGroups(from, g); err != nil {
				return err
			}
			g.Seq++
			if err := s.notify(tx, groupEvent{Event: "friend_group_add", From: from, GroupName: added, Time: now}, from); err != nil {
				return err
			}
		}
		res.CurrentSequence = g.Seq
		for _, p := range to {
			rec, err := tx.GetFriend(from, p)
			if err != nil {
				return err
			}
			if rec == nil {
				e := Errorf(CodeSNSGroupNotFriend, "Err_SNS_GroupAdd_ToTinyId_Not_Friend: %s is not in %s's friend list", p, from)
				res.ResultItem = append(res.ResultItem, resultItem{To: p, ResultCode: e.Code, ResultInfo: e.Info})
				res.FailAccount = append(res.FailAccount, p)
				continue
			}
			changed := false
			for _, n := range names {
				if !slices.Contains(rec.Groups, n) {
					rec.Groups = append(rec.Groups, n)
					changed = true
				}
			}
			if changed {
				if _, err := tx.PutFriend(from, p, rec); err != nil {
					return err
				}
				if err := s.notify(tx, relationEvent{Event: "friend_update", From: from, To: p, Time: now}, from); err != nil {
					return err
				}
			}
			res.ResultItem = append(res.ResultItem, resultItem{To: p})
		}
		return nil
	})
	if err != nil {
		return nil, storeErr(err)
	}
	return res, nil
}

func (s *Service) groupDelete(ctx context.Context, c *Caller, r *groupRequest) (any, error) {
	from, names := r.from, r.names
	type result struct {
		CurrentSequence uint64 `json:"CurrentSequence"`
		ErrorDisplay    string `json:"ErrorDisplay"`
	}
	var res result
	err := s.store.UpdateFor(from, func(tx *store.Tx) error {
		now := tx.Now().Unix()
		g, err := tx.FriendGroups(from)
		if err != nil {
			return err
		}
		for _, n := range names {
			if !slices.Contains(g.Names, n) {
				return Errorf(CodeSNSParam, "Err_SNS_GroupDel_Group_Not_Exist: %s has no friend group %q", from, n)
			}
		}
		g.Names = slices.DeleteFunc(g.Names, func(n string) bool { return slices.Contains(names, n) })
		if err := tx.PutFriendGroups(from, g); err != nil {
			return err
		}
		res.CurrentSequence = g.Seq + 1
		// The friends stay; they leave the deleted groups.
		friends, err := tx.FriendPeers(from)
		if err != nil {
			return err
		}
		for _, p := range friends {
			rec, err := tx.GetFriend(from, p)
			if err != nil {
				return err
			}
			n := len(rec.Groups)
			rec.Groups = slices.DeleteFunc(rec.Groups, func(n string) bool { return slices.Contains(names, n) })
			if len(rec.Groups) == n {
				continue
			}
			if _, err := tx.PutFriend(from, p, rec); err != nil {
				return err
			}
			if err := s.notify(tx, relationEvent{Event: "friend_update", From: from, To: p, Time: now}, from); err != nil {
				return err
			}
		}
		return s.notify(tx, groupEvent{Event: "friend_group_delete", From: from, GroupName: names, Time: now}, from)
	})
	if err != nil {
		return nil, storeErr(err)
	}
	return res, nil
}

type groupItem struct {
	GroupName    string    `json:"GroupName"`
	FriendNumber int       `json:"FriendNumber"`
	To           *[]string `json:"To_Account,omitempty"`
}

type groupGetRequest struct {
	snsRequest
	need string
	only []string // nil: every group
}

func (r *groupGetRequest) decode(s *Service, c *Caller, f fields) (err error) {
	if err = r.snsRequest.decode(s, c, f); err != nil {
		return err
	}
	need, _, ok := f.str("NeedFriend")
	if !ok || (need != "" && need != "Need_Friend_Type_Yes" && need != "Need_Friend_Type_No") {
		return Errorf(CodeSNSParam, "NeedFriend must be Need_Friend_Type_Yes or left out")
	}
	r.need = need
	if f.has("GroupName") {
		r.only, err = groupNames(f)
	}
	return err
}

func (s *Service) groupGet(ctx context.Context, c *Caller, r *groupGetRequest) (any, error) {
	from, need, only := r.from, r.need, r.only
	// The group list first: friends read after it are at least as new.
	g, err := s.store.FriendGroups(from)
	if err != nil {
		return nil, err
	}
	friends, err := s.store.Friends(from)
	if err != nil {
		return nil, err
	}
	out := struct {
		ResultItem      []groupItem `json:"ResultItem"`
		CurrentSequence uint64      `json:"CurrentSequence"`
		ErrorDisplay    string      `json:"ErrorDisplay"`
	}{ResultItem: []groupItem{}, CurrentSequence: g.Seq}
	for _, name := range g.Names {
		if only != nil && !slices.Contains(only, name) {
			continue
		}
		it := groupItem{GroupName: name}
		members := []string{}
		for _, fr := range friends {
			if slices.Contains(fr.Groups, name) {
				it.FriendNumber++
				members = append(members, fr.Peer)
			}
		}
		if need == "Need_Friend_Type_Yes" {
			it.To = &members
		}
		out.ResultItem = append(out.ResultItem, it)
	}
	return out, nil
}
