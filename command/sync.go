package command

import (
	"context"
)

// openim/sync (PROTOCOL §3, §5) and openim/typing.

func (s *Service) registerSync() {
	handle(s, "openim/sync", CodeJSON, func(c *Caller) *Error {
		if c.Device == "" || c.Respond == nil || s.live == nil {
			return Errorf(CodeBadPacket, "openim/sync replays a connected device's timeline; use it over MQTT")
		}
		return nil
	}, s.sync)
	handle(s, "openim/typing", CodeJSON, nil, s.typing)
}

type syncReply struct {
	LastSeq uint64 `json:"LastSeq"`
}

// sync replays the requesting device's timeline after FromSeq. The reply
// comes after the replayed events and before the closing sync_complete, so
// it is sent by the broker's delivery pump, not here.
type syncRequest struct {
	deferredReply
	from int64
}

func (r *syncRequest) decode(s *Service, c *Caller, f fields) error {
	from, _, ok := f.integer("FromSeq", 0, 1<<62)
	if !ok {
		return Errorf(CodeJSON, "FromSeq must be a non-negative Integer")
	}
	r.from = from
	return nil
}

func (s *Service) sync(ctx context.Context, c *Caller, r *syncRequest) (any, error) {
	from := r.from
	last, err := s.store.LastSeq(c.UserID)
	if err != nil {
		return nil, err
	}
	if uint64(from) > last {
		return nil, Errorf(CodeBadPacket, "FromSeq %d is beyond the end of the timeline (LastSeq %d)", from, last)
	}
	respond := c.Respond
	err = s.live.Resync(c.UserID, c.Device, uint64(from), func(lastSeq uint64) {
		respond(Reply{ReqID: r.reqID, Result: syncReply{LastSeq: lastSeq}})
	})
	if err != nil {
		return nil, Errorf(CodeBadPacket, "%v", err)
	}
	return nil, errDeferred
}

type typingEvent struct {
	Event string `json:"Event"`
	From  string `json:"From_Account"`
	To    string `json:"To_Account"`
}

// typing forwards an ephemeral typing state to the peer's live topic.
// Someone the peer does not accept messages from types unseen.
type typingRequest struct{ to string }

func (r *typingRequest) decode(s *Service, c *Caller, f fields) (err error) {
	r.to, err = s.existing(f, []string{"To_Account"}, CodeToAccount)
	return err
}

func (s *Service) typing(ctx context.Context, c *Caller, r *typingRequest) (any, error) {
	to := r.to
	if !c.Admin {
		deliver, e := s.checkSend(c.UserID, to)
		if e != nil {
			return nil, e
		}
		if !deliver {
			return struct{}{}, nil
		}
	}
	if s.live != nil {
		p, err := marshal(typingEvent{Event: "typing", From: c.UserID, To: to})
		if err != nil {
			return nil, err
		}
		s.live.Live(to, p)
	}
	return struct{}{}, nil
}
