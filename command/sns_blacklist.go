package command

import (
	"context"

	"github.com/duet-im/duet/store"
)

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
				res.fail(p, Errorf(CodeSNSParam, "Err_SNS_BlackListAdd_Already_Exist: %s is already in your blacklist", p))
				continue
			}
			counts, err := tx.RelCounts(from)
			if err != nil {
				return err
			}
			if counts.Blacklist >= maxBlacklist {
				res.fail(p, Errorf(CodeSNSBlacklistFull, "your blacklist is full (%d)", maxBlacklist))
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
				res.fail(p, Errorf(CodeSNSParam, "%s is not in your blacklist", p))
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
		return nil, Errorf(CodeSNSParam, "StartIndex (≥ 0), MaxLimited (≥ 1) and LastSequence (≥ 0) are required Integers")
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
