package command

import (
	"context"
)

// openim/sync (PROTOCOL §3, §5) and openim/typing.

func (s *Service) registerSync() {
	s.handlers["openim/sync"] = s.sync
	s.handlers["openim/typing"] = s.typing
}

type syncReply struct {
	LastSeq uint64 `json:"LastSeq"`
}

// sync replays the requesting device's timeline after FromSeq. The reply
// comes after the replayed events and before the closing sync_complete, so
// it is sent by the broker's delivery pump, not here.
func (s *Service) sync(ctx context.Context, c *Caller, body []byte) (any, error) {
	if c.Device == "" || c.Respond == nil || s.live == nil {
		return nil, Errorf(CodeBadPacket, "openim/sync replays a connected device's timeline; use it over MQTT")
	}
	f, err := parseObject(body, CodeJSON)
	if err != nil {
		return nil, err
	}
	from, _, ok := f.integer("FromSeq", 0, 1<<62)
	if !ok {
		return nil, Errorf(CodeJSON, "FromSeq must be a non-negative Integer")
	}
	last, err := s.store.LastSeq(c.UserID)
	if err != nil {
		return nil, err
	}
	if uint64(from) > last {
		return nil, Errorf(CodeBadPacket, "FromSeq %d is beyond the end of the timeline (LastSeq %d)", from, last)
	}
	respond := c.Respond
	err = s.live.Resync(c.UserID, c.Device, uint64(from), func(lastSeq uint64) {
		respond(Reply{Result: syncReply{LastSeq: lastSeq}})
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
func (s *Service) typing(ctx context.Context, c *Caller, body []byte) (any, error) {
	f, err := parseObject(body, CodeJSON)
	if err != nil {
		return nil, err
	}
	to, err := s.existing(f, []string{"To_Account"}, CodeToAccount)
	if err != nil {
		return nil, err
	}
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
