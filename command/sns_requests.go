package command

import (
	"context"
	"encoding/json"

	"github.com/duet-im/duet/store"
)

// Pending friend requests: how they end (clearRequests) and Duet's own
// commands to answer and list them (docs/events.md).

// clearRequests removes pending requests between home, the user the
// transaction is homed at (docs/cluster.md §11.1), and peer in both
// directions, telling both sides. Whether each was there is read from
// home's own keys: peer's request is home's record rq/{home}{peer}; home's
// request is peer's record rq/{peer}{home}, indexed in home's
// rs/{home}{peer}. Deleting peer's record is an operation on peer whose
// result is not used: with partitions it runs in peer's partition, later
// (§11.2).
func (s *Service) clearRequests(tx *store.Tx, home, peer, reason string, now int64) error {
	for _, d := range [][2]string{{home, peer}, {peer, home}} { // from, to
		var had bool
		var err error
		if d[1] == home {
			had, err = tx.DeleteRequest(home, peer)
		} else if had, err = tx.HasSentRequest(home, peer); err == nil {
			_, err = tx.DeleteRequest(peer, home)
		}
		if err != nil {
			return err
		}
		if had {
			ev := relationEvent{Event: "friend_request_delete", From: d[0], To: d[1], Reason: reason, Time: now}
			if err := s.notify(tx, ev, home, peer); err != nil {
				return err
			}
		}
	}
	return nil
}

type responseItem struct {
	To     *string `json:"To_Account"`
	Action string  `json:"ResponseAction"`
	Remark string  `json:"Remark"`
}

type friendResponseRequest struct {
	snsRequest
	items []responseItem
	to    []string // the requesters, the items' To_Account
}

func (r *friendResponseRequest) decode(s *Service, c *Caller, f fields) error {
	if err := r.snsRequest.decode(s, c, f); err != nil {
		return err
	}
	if !f.has("ResponseFriendItem") || json.Unmarshal(f["ResponseFriendItem"], &r.items) != nil || len(r.items) == 0 {
		return Errorf(CodeSNSParam, "ResponseFriendItem must be a non-empty Array of {To_Account, ResponseAction}")
	}
	if len(r.items) > maxSNSBatch {
		return Errorf(CodeSNSParam, "ResponseFriendItem has %d entries; the limit is %d", len(r.items), maxSNSBatch)
	}
	r.to = make([]string, len(r.items))
	for i, it := range r.items {
		switch {
		case it.To == nil:
			return Errorf(CodeSNSParam, "ResponseFriendItem[%d].To_Account is missing", i)
		case it.Action != "Response_Action_Agree" && it.Action != "Response_Action_AgreeAndAdd" && it.Action != "Response_Action_Reject":
			return Errorf(CodeSNSParam, "ResponseFriendItem[%d].ResponseAction must be Response_Action_Agree, Response_Action_AgreeAndAdd or Response_Action_Reject", i)
		case len(it.Remark) > maxRemark:
			return Errorf(CodeSNSParam, "ResponseFriendItem[%d].Remark is %d bytes; the limit is %d", i, len(it.Remark), maxRemark)
		}
		r.to[i] = *it.To
	}
	return nil
}

// friendResponse answers pending requests (a Duet command; Tencent's REST
// API has none — its SDK's accept/refuse): From_Account is the one asked,
// each ResponseFriendItem names a requester and a ResponseAction.
func (s *Service) friendResponse(ctx context.Context, c *Caller, r *friendResponseRequest) (any, error) {
	me := r.from
	return s.perPeer(me, r.to, nil, func(tx *store.Tx, i int, now int64) (*Error, error) {
		it, from := &r.items[i], r.to[i] // from: the requester
		req, err := tx.GetRequest(me, from)
		if err != nil {
			return nil, err
		}
		if req == nil {
			return Errorf(CodeSNSNoPending, "no pending friend request from %s", from), nil
		}
		if it.Action == "Response_Action_Reject" {
			return nil, s.clearRequests(tx, me, from, "rejected", now)
		}
		theirs, err := tx.GetFriend(from, me)
		if err != nil {
			return nil, err
		}
		mine, err := tx.GetFriend(me, from)
		if err != nil {
			return nil, err
		}
		addMine := mine == nil && it.Action == "Response_Action_AgreeAndAdd"
		fc, err := tx.RelCounts(from)
		if err != nil {
			return nil, err
		}
		mc, err := tx.RelCounts(me)
		if err != nil {
			return nil, err
		}
		if theirs == nil && fc.Friends >= maxFriends {
			return Errorf(CodeSNSPeerFriendsFull, "%s's friend list is full (%d)", from, maxFriends), nil
		}
		if addMine && mc.Friends >= maxFriends {
			return Errorf(CodeSNSFriendsFull, "your friend list is full (%d)", maxFriends), nil
		}
		if theirs == nil {
			rec := &store.Friend{AddTime: now, AddSource: req.AddSource, AddWording: req.AddWording, Remark: req.Remark}
			if req.GroupName != "" {
				rec.Groups = []string{req.GroupName}
			}
			if _, err := tx.PutFriend(from, me, rec); err != nil {
				return nil, err
			}
		}
		if addMine {
			if _, err := tx.PutFriend(me, from, &store.Friend{AddTime: now, AddSource: req.AddSource, Remark: it.Remark}); err != nil {
				return nil, err
			}
		}
		if err := s.clearRequests(tx, me, from, "accepted", now); err != nil {
			return nil, err
		}
		return nil, s.notifyAdd(tx, from, me, mine != nil || addMine, now)
	})
}

type requestItem struct {
	From       string `json:"From_Account"`
	AddType    string `json:"AddType"`
	AddSource  string `json:"AddSource"`
	AddWording string `json:"AddWording"`
	AddTime    int64  `json:"AddTime"`
}

// friendRequestGet lists the requests awaiting From_Account (Duet command).
func (s *Service) friendRequestGet(ctx context.Context, c *Caller, r *snsRequest) (any, error) {
	reqs, err := s.store.FriendRequests(r.from)
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
