package command

import (
	"context"

	"github.com/duet-im/duet/store"
)

// ---- blacklist ----

func (s *Service) blackListAdd(ctx context.Context, c *Caller, r *snsPeers) (any, error) {
	from := r.from
	pre, err := s.peerErrors(from, r.to, "cannot blacklist yourself")
	if err != nil {
		return nil, err
	}
	return s.perPeer(from, r.to, pre, func(tx *store.Tx, i int, now int64) (*Error, error) {
		p := r.to[i]
		if b, err := tx.IsBlocked(from, p); err != nil || b {
			return Errorf(CodeSNSParam, "Err_SNS_BlackListAdd_Already_Exist: %s is already in your blacklist", p), err
		}
		counts, err := tx.RelCounts(from)
		if err != nil {
			return nil, err
		}
		if counts.Blacklist >= maxBlacklist {
			return Errorf(CodeSNSBlacklistFull, "your blacklist is full (%d)", maxBlacklist), nil
		}
		if _, err := tx.PutBlocked(from, p, now); err != nil {
			return nil, err
		}
		// §6.3: blacklisting ends the friendship both ways and any
		// pending request between the two. from is the home: what was
		// there is read from its keys (deleteOne, clearRequests;
		// docs/cluster.md §11.2).
		if _, err := s.deleteOne(tx, from, p, deleteTypeBoth, now); err != nil {
			return nil, err
		}
		if err := s.clearRequests(tx, from, p, "blacklisted", now); err != nil {
			return nil, err
		}
		return nil, s.notify(tx, relationEvent{Event: "blacklist_add", From: from, To: p, Time: now}, from)
	})
}

func (s *Service) blackListDelete(ctx context.Context, c *Caller, r *snsPeers) (any, error) {
	from := r.from
	return s.perPeer(from, r.to, nil, func(tx *store.Tx, i int, now int64) (*Error, error) {
		p := r.to[i]
		had, err := tx.DeleteBlocked(from, p)
		if err != nil {
			return nil, err
		}
		if !had {
			return Errorf(CodeSNSParam, "%s is not in your blacklist", p), nil
		}
		return nil, s.notify(tx, relationEvent{Event: "blacklist_delete", From: from, To: p, Time: now}, from)
	})
}

// blackListGetRequest is black_list_get's page: StartIndex, MaxLimited
// and LastSequence, all required.
type blackListGetRequest struct {
	snsRequest
	start, limit int
}

func (r *blackListGetRequest) decode(s *Service, c *Caller, f fields) error {
	if err := r.snsRequest.decode(s, c, f); err != nil {
		return err
	}
	start, p1, ok1 := f.integer("StartIndex", 0, 1<<31)
	limit, p2, ok2 := f.integer("MaxLimited", 1, 1<<31)
	_, p3, ok3 := f.integer("LastSequence", 0, 1<<62)
	if !p1 || !ok1 || !p2 || !ok2 || !p3 || !ok3 {
		return Errorf(CodeSNSParam, "StartIndex (≥ 0), MaxLimited (≥ 1) and LastSequence (≥ 0) are required Integers")
	}
	r.start, r.limit = int(start), int(limit)
	return nil
}

func (s *Service) blackListGet(ctx context.Context, c *Caller, r *blackListGetRequest) (any, error) {
	from, start, limit := r.from, r.start, r.limit
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
	end := min(start+limit, len(list))
	for i := start; i < end; i++ {
		out.BlackListItem = append(out.BlackListItem, item{To: list[i].Peer, AddTime: list[i].AddTime})
	}
	if end < len(list) {
		out.StartIndex = end
	}
	return out, nil
}

type blackListCheckRequest struct{ checkRequest }

func (r *blackListCheckRequest) decode(s *Service, c *Caller, f fields) error {
	return r.read(s, c, f, "BlackCheckResult_Type_Single", "BlackCheckResult_Type_Both")
}

func (s *Service) blackListCheck(ctx context.Context, c *Caller, r *blackListCheckRequest) (any, error) {
	items, fail, err := s.relation(&r.checkRequest,
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
