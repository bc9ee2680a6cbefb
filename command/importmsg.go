package command

import (
	"context"
	"encoding/json"
	"errors"
	"hash/fnv"
	"strconv"
	"time"

	"github.com/duet-im/duet/store"
)

// openim/importmsg (reference §5.3): bring C2C history over from another
// system. No callbacks, no delivery to online devices; the real-time modes
// also put the message in the recipient's timeline so it counts as new.

func (s *Service) registerImport() {
	handle(s, "openim/importmsg", CodeJSON, adminOnly(CodeOpenIMNeedsAdmin, "openim/importmsg needs an App admin identifier"), s.importMsg)
}

// ImportResult is the reply to importmsg: the bare envelope for a new
// message. Duplicate (a Duet addition that Tencent clients ignore) is 1 when
// the conversation already held the message and nothing was written, which
// lets the import tool count replays.
type ImportResult struct {
	Duplicate int `json:"Duplicate,omitempty"`
}

type importRequest struct {
	mode            int64
	from, to        string
	msgSeq          uint32
	msgRandom       uint32
	msgTime         int64
	msgBody         json.RawMessage
	cloudCustomData string
}

func (r *importRequest) decode(s *Service, c *Caller, f fields) (err error) {
	var present, ok bool
	r.mode, present, ok = f.integer("SyncFromOldSystem", -1<<62, 1<<62)
	if !present || !ok {
		return Errorf(CodeSyncFromOldSystem, "SyncFromOldSystem is missing or is not an Integer")
	}
	if r.mode != 1 && r.mode != 2 && r.mode != 5 {
		return Errorf(CodeSyncFromOldSystem, "SyncFromOldSystem must be 1 or 5 (real-time) or 2 (history), not %d", r.mode)
	}
	if r.from, present, ok = f.str("From_Account"); !present || !ok || r.from == "" {
		return Errorf(CodeFromAccount, "From_Account is missing or is not a String")
	}
	if r.to, present, ok = f.str("To_Account"); !present || !ok || r.to == "" {
		return Errorf(CodeToAccount, "To_Account is missing or is not a String")
	}
	if r.msgRandom, err = msgRandom(f); err != nil {
		return err
	}
	ts, present, ok := f.integer("MsgTimeStamp", 0, 1<<32-1)
	if !present || !ok {
		return Errorf(CodeMsgTimeStamp, "MsgTimeStamp is missing or is not an Integer")
	}
	r.msgTime = ts
	seq, hasSeq, ok := f.integer("MsgSeq", 0, 1<<32-1)
	if !ok {
		return Errorf(CodeJSON, "MsgSeq is not a 32-bit unsigned Integer")
	}
	if r.cloudCustomData, _, ok = f.str("CloudCustomData"); !ok {
		return Errorf(CodeJSON, "CloudCustomData is not a String")
	}
	msgBody, err := s.checkedBody(c, f)
	if err != nil {
		return err
	}
	r.msgBody = compact(msgBody)
	if n := len(r.msgBody) + len(r.cloudCustomData); n > s.cfg.MaxMsgBytes {
		return Errorf(CodeTooLong, "message is %d bytes; the limit is %d", n, s.cfg.MaxMsgBytes)
	}
	r.msgSeq = uint32(seq)
	if !hasSeq {
		// "Random if omitted" (§5.3) — but derived from the message itself,
		// so importing the same export twice (a resumed migration) finds
		// the first copy instead of storing a second one.
		h := fnv.New32a()
		h.Write([]byte(r.from + "\x00" + r.to + "\x00" + strconv.FormatUint(uint64(r.msgRandom), 10) + "\x00" + strconv.FormatInt(r.msgTime, 10) + "\x00"))
		h.Write(r.msgBody)
		r.msgSeq = h.Sum32()
	}
	for _, acc := range []struct {
		id   string
		code int
		name string
	}{{r.from, CodeFromAccount, "From_Account"}, {r.to, CodeToNotRegistered, "To_Account"}} {
		exists := false
		if ValidUserID(acc.id) {
			if exists, err = s.store.AccountExists(acc.id); err != nil {
				return err
			}
		}
		if !exists {
			return Errorf(acc.code, "%s %q is not registered", acc.name, acc.id)
		}
	}
	return nil
}

func (s *Service) importMsg(ctx context.Context, c *Caller, r *importRequest) (any, error) {
	msgKey := strconv.FormatUint(uint64(r.msgSeq), 10) + "_" + strconv.FormatUint(uint64(r.msgRandom), 10) + "_" + strconv.FormatInt(r.msgTime, 10)
	// History is kept for the maximum lifetime counted from the message's
	// own time: a message older than that is accepted and expires at once.
	expire := time.Unix(r.msgTime, 0).Add(s.cfg.MaxLifeTime)
	m := &store.Message{
		From: r.from, To: r.to, MsgSeq: r.msgSeq, MsgRandom: r.msgRandom, MsgTime: r.msgTime, MsgKey: msgKey,
		MsgBody: r.msgBody, CloudCustomData: r.cloudCustomData, Expire: expire.Unix(),
	}
	realtime := r.mode == 1 || r.mode == 5
	var ev []byte
	if realtime {
		var err error
		if ev, err = tail(s.newMsgEvent(m)); err != nil {
			return nil, err
		}
	}
	var res ImportResult
	err := s.store.UpdateFor(r.from, func(tx *store.Tx) error {
		// Same conversation and the same (MsgSeq, MsgRandom, MsgTimeStamp),
		// whichever way round From and To are: a duplicate, whatever its
		// content. The first import wins.
		dup, err := tx.HasMessage(r.from, r.to, r.msgTime, r.msgSeq, r.msgRandom)
		if err != nil || dup {
			if dup {
				res.Duplicate = 1
			}
			return err
		}
		if realtime {
			// PutMessage schedules the copy's expiry with the message's.
			if m.ReceiverSeq, err = tx.Append(r.to, ev); err != nil {
				return err
			}
		}
		if err := tx.PutMessage(m); err != nil {
			return err
		}
		// Both conversation lists learn of it (§5.3 "updates conversations");
		// only a real-time import counts as unread (§5.3, mode 1/5).
		now := tx.Now().Unix()
		if err := tx.Touch(r.to, r.from, m, realtime && r.from != r.to, false, s.cfg.MaxContacts, now); err != nil {
			return err
		}
		if r.from == r.to {
			return nil
		}
		return tx.Touch(r.from, r.to, m, false, false, s.cfg.MaxContacts, now)
	})
	if errors.Is(err, store.ErrClosed) {
		return nil, Errorf(CodeCallbackTimeout, "server is shutting down, retry")
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}
