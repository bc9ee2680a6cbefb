package command

import (
	"context"
	"encoding/json"

	"github.com/duet-im/duet/store"
)

// Pending friend requests: how they end (clearRequests) and Duet's own
// commands to answer and list them (docs/events.md).

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
		return nil, Errorf(CodeSNSParam, "ResponseFriendItem must be a non-empty Array of {To_Account, ResponseAction}")
	}
	if len(items) > maxSNSBatch {
		return nil, Errorf(CodeSNSParam, "ResponseFriendItem has %d entries; the limit is %d", len(items), maxSNSBatch)
	}
	for i, it := range items {
		switch {
		case it.To == nil:
			return nil, Errorf(CodeSNSParam, "ResponseFriendItem[%d].To_Account is missing", i)
		case it.Action != "Response_Action_Agree" && it.Action != "Response_Action_AgreeAndAdd" && it.Action != "Response_Action_Reject":
			return nil, Errorf(CodeSNSParam, "ResponseFriendItem[%d].ResponseAction must be Response_Action_Agree, Response_Action_AgreeAndAdd or Response_Action_Reject", i)
		case len(it.Remark) > maxRemark:
			return nil, Errorf(CodeSNSParam, "ResponseFriendItem[%d].Remark is %d bytes; the limit is %d", i, len(it.Remark), maxRemark)
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
				res.fail(from, Errorf(CodeSNSNoPending, "no pending friend request from %s", from))
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
				res.fail(from, Errorf(CodeSNSPeerFriendsFull, "%s's friend list is full (%d)", from, maxFriends))
				continue
			}
			if addMine && mc.Friends >= maxFriends {
				res.fail(from, Errorf(CodeSNSFriendsFull, "your friend list is full (%d)", maxFriends))
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
