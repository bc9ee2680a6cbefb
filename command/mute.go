package command

import (
	"context"
	"errors"
	"math"

	"github.com/duet-im/duet/store"
)

// Global mute (reference §6.4): openconfigsvr/setnospeaking and
// getnospeaking. Durations are seconds from now; 0 unmutes and 4294967295
// mutes for ever. A C2C-muted user's sends fail with 20012 (checkSend).
// Duet has no groups: the group mute is kept and reported, nothing more.

const muteForeverSecs = math.MaxUint32

// setMuteRequest is setnospeaking's: whom, and the C2C and group mutes
// to set (at least one).
type setMuteRequest struct {
	user           string
	c2c, grp       int64
	hasC2C, hasGrp bool
}

func (r *setMuteRequest) decode(s *Service, c *Caller, f fields) error {
	user, present, ok := f.str("Set_Account")
	if !ok {
		return Errorf(CodeMuteBadAccount, "Set_Account is not a String")
	}
	if !present || user == "" {
		return Errorf(CodeMuteNoAccount, "Set_Account is missing")
	}
	if e := s.mustExist(user, CodeMuteBadAccount, "Set_Account"); e != nil {
		return e
	}
	r.user = user
	if r.c2c, r.hasC2C, ok = f.integer("C2CmsgNospeakingTime", 0, muteForeverSecs); !ok {
		return Errorf(CodeMuteParam, "C2CmsgNospeakingTime must be an Integer from 0 to 4294967295")
	}
	if r.grp, r.hasGrp, ok = f.integer("GroupmsgNospeakingTime", 0, muteForeverSecs); !ok {
		return Errorf(CodeMuteParam, "GroupmsgNospeakingTime must be an Integer from 0 to 4294967295")
	}
	if !r.hasC2C && !r.hasGrp {
		return Errorf(CodeMuteNoTime, "set C2CmsgNospeakingTime or GroupmsgNospeakingTime (or both)")
	}
	return nil
}

func (s *Service) setNoSpeaking(ctx context.Context, c *Caller, r *setMuteRequest) (any, error) {
	user, c2c, grp, hasC2C, hasGrp := r.user, r.c2c, r.grp, r.hasC2C, r.hasGrp
	until := func(secs int64, now int64) int64 {
		switch secs {
		case 0:
			return 0
		case muteForeverSecs:
			return store.MuteForever
		}
		return now + secs
	}
	err := s.store.UpdateFor(user, func(tx *store.Tx) error {
		m, err := tx.GetMute(user)
		if err != nil {
			return err
		}
		now := tx.Now().Unix()
		if hasC2C {
			m.C2CUntil = until(c2c, now)
		}
		if hasGrp {
			m.GroupUntil = until(grp, now)
		}
		return tx.PutMute(user, m)
	})
	if err != nil {
		if errors.Is(err, store.ErrClosed) {
			return nil, storeErr(err)
		}
		return nil, Errorf(CodeMuteSystem, "system error, retry: %v", err)
	}
	s.rel.drop(user)
	return nil, nil
}

type getMuteRequest struct{ user string }

func (r *getMuteRequest) decode(s *Service, c *Caller, f fields) error {
	user, present, ok := f.str("Get_Account")
	if !ok {
		return Errorf(CodeMuteBadAccount, "Get_Account is not a String")
	}
	if !present || user == "" {
		if c.Transport == REST {
			return Errorf(CodeMuteNoAccount, "Get_Account is missing")
		}
		user = c.UserID
	}
	// A user may read their own mute; anyone else's is the admin's.
	if user != c.UserID && !c.Admin {
		return Errorf(CodeNeedsAdmin, "reading another user's mute needs an App admin")
	}
	if e := s.mustExist(user, CodeMuteBadAccount, "Get_Account"); e != nil {
		return e
	}
	r.user = user
	return nil
}

func (s *Service) getNoSpeaking(ctx context.Context, c *Caller, r *getMuteRequest) (any, error) {
	user := r.user
	m, err := s.store.GetMute(user)
	if err != nil {
		return nil, Errorf(CodeMuteSystem, "system error, retry: %v", err)
	}
	now := s.store.Now().Unix()
	left := func(until int64) int64 {
		switch {
		case until >= store.MuteForever:
			return muteForeverSecs
		case until > now:
			return until - now
		}
		return 0
	}
	return struct {
		C2C   int64 `json:"C2CmsgNospeakingTime"`
		Group int64 `json:"GroupmsgNospeakingTime"`
	}{left(m.C2CUntil), left(m.GroupUntil)}, nil
}
