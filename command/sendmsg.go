package command

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/duet-im/duet/push/pushinfo"
	"github.com/duet-im/duet/store"
	"github.com/duet-im/duet/store/jsonenc"
)

// sendRequest is a validated openim/sendmsg body (reference §5.1).
type sendRequest struct {
	From             string
	To               string
	MsgRandom        uint32
	MsgSeq           uint32
	HasMsgSeq        bool
	MsgTimeStamp     int64
	MsgBody          json.RawMessage
	CloudCustomData  string
	LifeTime         time.Duration
	SyncOtherMachine int64
	OfflinePushInfo  json.RawMessage
	SendMsgControl   []string

	// ForbidCallbackControl: no before-send, no after-send callback.
	// forbidBad: it is not an Array of String, which is refused only when
	// callbacks are on (callback.go).
	forbidBefore, forbidAfter, forbidBad bool

	// seqChosen: MsgSeq was chosen for a request without one (a batch's
	// copies share it); the resend rule still treats it as without.
	seqChosen bool
}

func (s *Service) registerMessaging() {
	handle(s, "openim/sendmsg", CodeJSON, nil, s.sendMsg)
}

func (r *sendRequest) decode(s *Service, c *Caller, f fields) (err error) {
	var present, ok bool
	if r.To, present, ok = f.str("To_Account"); !present || !ok || r.To == "" {
		return Errorf(CodeToAccount, "To_Account is missing or is not a String")
	}
	if r.From, _, ok = f.str("From_Account"); !ok {
		return Errorf(CodeFromAccount, "From_Account is not a String")
	}
	if r.MsgRandom, err = msgRandom(f); err != nil {
		return err
	}
	seq, present, ok := f.integer("MsgSeq", 0, 1<<32-1)
	if !ok {
		return Errorf(CodeJSON, "MsgSeq is not a 32-bit unsigned Integer")
	}
	r.MsgSeq, r.HasMsgSeq = uint32(seq), present
	if r.MsgTimeStamp, _, ok = f.integer("MsgTimeStamp", 0, 1<<32-1); !ok {
		return Errorf(CodeMsgTimeStamp, "MsgTimeStamp is not an Integer")
	}
	if r.SyncOtherMachine, _, ok = f.integer("SyncOtherMachine", 0, 2); !ok {
		return Errorf(CodeSyncOtherMachine, "SyncOtherMachine must be the Integer 1 or 2")
	}
	life, present, ok := f.integer("MsgLifeTime", -1<<62, 1<<62)
	switch {
	case !ok:
		return Errorf(CodeMsgLifeTime, "MsgLifeTime is not an Integer")
	case life < 0:
		return Errorf(CodeLifeTime, "MsgLifeTime must be between 0 and %d seconds", int64(s.cfg.MaxLifeTime/time.Second))
	case !present:
		r.LifeTime = s.cfg.MaxLifeTime
	default:
		// Larger values are clamped to the maximum, as Tencent's newer docs say.
		r.LifeTime = min(time.Duration(life)*time.Second, s.cfg.MaxLifeTime)
	}
	if r.CloudCustomData, _, ok = f.str("CloudCustomData"); !ok {
		return Errorf(CodeJSON, "CloudCustomData is not a String")
	}
	if r.SendMsgControl, _, ok = f.strings("SendMsgControl"); !ok {
		return Errorf(CodeJSON, "SendMsgControl is not an Array of String")
	}
	if forbid, _, ok := f.strings("ForbidCallbackControl"); !ok {
		r.forbidBad = true
	} else {
		r.forbidBefore = listHas(forbid, "ForbidBeforeSendMsgCallback")
		r.forbidAfter = listHas(forbid, "ForbidAfterSendMsgCallback")
	}
	if f.has("OfflinePushInfo") {
		if _, err := pushinfo.Parse(f["OfflinePushInfo"]); err != nil {
			return Errorf(CodeOfflinePushInfo, "%v", err)
		}
		r.OfflinePushInfo = f["OfflinePushInfo"]
	}
	if r.MsgBody, err = s.checkedBody(c, f); err != nil {
		return err
	}
	if n := len(r.MsgBody) + len(r.CloudCustomData); n > s.cfg.MaxMsgBytes {
		return Errorf(CodeTooLong, "message is %d bytes; the limit is %d", n, s.cfg.MaxMsgBytes)
	}
	return nil
}

// msgRandom reads a message's required MsgRandom (sendmsg, importmsg).
func msgRandom(f fields) (uint32, error) {
	rnd, present, ok := f.integer("MsgRandom", 0, 1<<32-1)
	if !present || !ok {
		return 0, Errorf(CodeMsgRandom, "MsgRandom is missing or is not a 32-bit unsigned Integer")
	}
	return uint32(rnd), nil
}

// checkedBody validates a request's MsgBody (90007 missing or not an array,
// 90002/90010 malformed) and, when media is on, its media elements.
func (s *Service) checkedBody(c *Caller, f fields) (json.RawMessage, error) {
	if !f.has("MsgBody") {
		return nil, Errorf(CodeMsgBodyNotArray, "MsgBody is missing")
	}
	els, e := parseMsgBody(f["MsgBody"])
	if e != nil {
		return nil, e
	}
	if s.media != nil {
		if e := s.media.CheckElements(c, els); e != nil {
			return nil, e
		}
	}
	return f["MsgBody"], nil
}

// SendResult is the reply to openim/sendmsg.
type SendResult struct {
	MsgTime int64  `json:"MsgTime"`
	MsgKey  string `json:"MsgKey"`
	Seq     uint64 `json:"Seq,omitempty"`
}

// msgEvent is a `msg` timeline event (PROTOCOL §4) without its Seq.
type msgEvent struct {
	Event           string          `json:"Event"`
	From            string          `json:"From_Account"`
	To              string          `json:"To_Account"`
	MsgKey          string          `json:"MsgKey"`
	MsgSeq          uint32          `json:"MsgSeq"`
	MsgRandom       uint32          `json:"MsgRandom"`
	MsgTimeStamp    int64           `json:"MsgTimeStamp"`
	MsgBody         json.RawMessage `json:"MsgBody"`
	CloudCustomData string          `json:"CloudCustomData"`
	System          int             `json:"System,omitempty"`
	MsgFlagBits     int             `json:"MsgFlagBits,omitempty"`
	SenderProfile   json.RawMessage `json:"SenderProfile,omitempty"`
	OfflinePushInfo json.RawMessage `json:"OfflinePushInfo,omitempty"` // read by push/ from the committed event
}

// MarshalJSON encodes the event by hand (jsonenc), as the command layer's
// marshal would (no HTML escaping): it is built for every message.
// TestMsgEventJSON holds it to encoding/json's reading.
func (ev msgEvent) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 256+len(ev.MsgBody)+len(ev.SenderProfile)+len(ev.OfflinePushInfo))
	b = append(b, `{"Event":`...)
	b = jsonenc.String(b, ev.Event, false)
	b = append(b, `,"From_Account":`...)
	b = jsonenc.String(b, ev.From, false)
	b = append(b, `,"To_Account":`...)
	b = jsonenc.String(b, ev.To, false)
	b = append(b, `,"MsgKey":`...)
	b = jsonenc.String(b, ev.MsgKey, false)
	b = append(b, `,"MsgSeq":`...)
	b = strconv.AppendUint(b, uint64(ev.MsgSeq), 10)
	b = append(b, `,"MsgRandom":`...)
	b = strconv.AppendUint(b, uint64(ev.MsgRandom), 10)
	b = append(b, `,"MsgTimeStamp":`...)
	b = strconv.AppendInt(b, ev.MsgTimeStamp, 10)
	b = append(b, `,"MsgBody":`...)
	b, err := jsonenc.Raw(b, ev.MsgBody)
	if err != nil {
		return nil, err
	}
	b = append(b, `,"CloudCustomData":`...)
	b = jsonenc.String(b, ev.CloudCustomData, false)
	if ev.System != 0 {
		b = append(b, `,"System":`...)
		b = strconv.AppendInt(b, int64(ev.System), 10)
	}
	if ev.MsgFlagBits != 0 {
		b = append(b, `,"MsgFlagBits":`...)
		b = strconv.AppendInt(b, int64(ev.MsgFlagBits), 10)
	}
	for _, f := range [...]struct {
		name string
		raw  json.RawMessage
	}{{`,"SenderProfile":`, ev.SenderProfile}, {`,"OfflinePushInfo":`, ev.OfflinePushInfo}} {
		if len(f.raw) > 0 {
			b = append(b, f.name...)
			if b, err = jsonenc.Raw(b, f.raw); err != nil {
				return nil, err
			}
		}
	}
	return append(b, '}'), nil
}

// newMsgEvent is the `msg` event of a stored message.
func (s *Service) newMsgEvent(m *store.Message) msgEvent {
	ev := msgEvent{
		Event: "msg", From: m.From, To: m.To, MsgKey: m.MsgKey, MsgSeq: m.MsgSeq, MsgRandom: m.MsgRandom,
		MsgTimeStamp: m.MsgTime, MsgBody: m.MsgBody, CloudCustomData: m.CloudCustomData,
		MsgFlagBits: m.MsgFlagBits, SenderProfile: s.senderProfile(m.From),
	}
	if m.System {
		ev.System = 1
	}
	return ev
}

// tail encodes an event for tx.Append: its JSON without the opening brace.
func tail(ev any) ([]byte, error) {
	b, err := marshal(ev)
	if err != nil {
		return nil, err
	}
	return b[1:], nil
}

func hasControl(ctl []string, want string) bool {
	for _, c := range ctl {
		if c == want {
			return true
		}
	}
	return false
}

// send stores and delivers a decoded sendmsg request.
func (s *Service) sendMsg(ctx context.Context, c *Caller, r *sendRequest) (any, error) {
	from, system := c.UserID, false
	switch {
	case r.From != "" && r.From != c.UserID:
		if !c.Admin {
			return nil, Errorf(CodeOpenIMNeedsAdmin, "only an App admin may send as another user (From_Account %q)", r.From)
		}
		if exists, err := s.store.AccountExists(r.From); err != nil {
			return nil, err
		} else if !exists {
			return nil, Errorf(CodeFromAccount, "From_Account %q does not exist", r.From)
		}
		from = r.From
	case c.Admin && r.From == "":
		system = true
	}
	if !ValidUserID(r.To) {
		return nil, s.unknownRecipient(c, r.To)
	}
	if exists, err := s.store.AccountExists(r.To); err != nil {
		return nil, err
	} else if !exists {
		return nil, s.unknownRecipient(c, r.To)
	}

	// The send policy (friends, blacklist, mute) binds users' own sends;
	// admin and REST sends skip it, as Tencent's REST sends do.
	deliver := true
	if !c.Admin && c.Transport == MQTT {
		var e *Error
		if deliver, e = s.checkSend(from, r.To); e != nil {
			return nil, e
		}
	}

	now := s.store.Now()
	msgTime := now.Unix()
	if c.Admin && r.MsgTimeStamp > 0 {
		msgTime = r.MsgTimeStamp
	}
	// Resends (PROTOCOL §3) are recognised by what the sender sent: its
	// MsgSeq if it gave one, else its MsgBody (as sent, before a callback's
	// rewrite) and the second — not by the MsgSeq the message gets here.
	id := store.SendID{From: from, To: r.To, Random: r.MsgRandom, MsgSeq: r.MsgSeq, HasMsgSeq: r.HasMsgSeq}
	if !r.HasMsgSeq {
		id.Body = store.BodyHash(r.MsgBody)
		if !r.seqChosen {
			r.MsgSeq = secondOrder(now)
		}
	}
	if s.hooks != nil && r.LifeTime != 0 {
		// A resend fires no callback again: answer it before the
		// before-send callback. (Two copies racing past this both call
		// it; the store still keeps one and the after-send fires once.)
		if prev, err := s.store.Resent(id); err != nil {
			return nil, err
		} else if prev != nil {
			return SendResult{MsgTime: prev.MsgTime, MsgKey: prev.MsgKey, Seq: prev.Seq}, nil
		}
	}
	// A new message's MsgKey is its own: another with the same MsgRandom,
	// MsgSeq and time within DedupWindow is a resend; a MsgSeq chosen here
	// is random, so two messages without one differ by it even when an
	// admin gives both the same MsgTimeStamp (one chance in 2^32 not).
	msgKey := strconv.FormatUint(uint64(r.MsgSeq), 10) + "_" + strconv.FormatUint(uint64(r.MsgRandom), 10) + "_" + strconv.FormatInt(msgTime, 10)
	// C2C.CallbackBeforeSendMsg (callback.go) may refuse, drop or rewrite.
	hook, err := s.beforeSend(ctx, c, r, from, msgTime, msgKey)
	if err != nil {
		return nil, err
	} else if hook.drop {
		return SendResult{MsgTime: msgTime, MsgKey: msgKey}, nil
	}
	expire := now.Add(r.LifeTime)
	m := &store.Message{
		From: from, To: r.To, MsgSeq: r.MsgSeq, MsgRandom: r.MsgRandom, MsgTime: msgTime, MsgKey: msgKey,
		MsgBody: r.MsgBody, CloudCustomData: r.CloudCustomData, Expire: expire.Unix(), System: system,
	}
	ev := s.newMsgEvent(m)
	ev.OfflinePushInfo = r.OfflinePushInfo
	data, err := ev.MarshalJSON()
	if err != nil {
		return nil, err
	}
	evTail := data[1:]

	if r.LifeTime == 0 {
		// Online only: never stored, delivered on the recipient's live topic.
		if s.live != nil {
			s.live.Live(r.To, data)
		}
		s.afterSend(c, hook, r)
		return SendResult{MsgTime: msgTime, MsgKey: msgKey}, nil
	}

	// Ordinary users always see their own sends on their other devices
	// (multi-device sync); REST and admin sends follow SyncOtherMachine.
	// A message kept from its recipient stays in the sender's timeline.
	// SyncOtherMachine 2 also keeps it out of the sender's roaming.
	toSender := !c.Admin || r.SyncOtherMachine == 1 || !deliver
	origin := "" // the device that sent it, when it is the sender's own
	if c.Transport == MQTT && from == c.UserID {
		origin = c.Device
	}
	senderRoams := !c.Admin || r.SyncOtherMachine != 2 || !deliver
	noUnread, noLastMsg := hasControl(r.SendMsgControl, "NoUnread"), hasControl(r.SendMsgControl, "NoLastMsg")
	var (
		res SendResult
		dup bool
	)
	err = s.store.UpdateFor(from, func(tx *store.Tx) error {
		if prev, err := tx.Resent(id); err != nil || prev != nil {
			if prev != nil {
				res, dup = SendResult{MsgTime: prev.MsgTime, MsgKey: prev.MsgKey, Seq: prev.Seq}, true
			}
			return err
		}
		m.SenderOnly, m.ReceiverOnly = !deliver, !senderRoams
		var err error
		if deliver {
			if m.ReceiverSeq, err = tx.Append(r.To, evTail); err != nil {
				return err
			}
			if err := tx.Touch(r.To, from, m, !noUnread && from != r.To, noLastMsg, s.cfg.MaxContacts, now.Unix()); err != nil {
				return err
			}
		}
		switch {
		case from == r.To && deliver:
			m.SenderSeq = m.ReceiverSeq
		case toSender && deliver:
			// The sending device has the reply (with this Seq): PROTOCOL §4
			// sends the copy to the sender's other devices only. It is the
			// recipient's event: stored as a reference to it.
			if m.SenderSeq, err = tx.AppendCopy(from, origin, evTail, r.To, m.ReceiverSeq); err != nil {
				return err
			}
		case toSender:
			if m.SenderSeq, err = tx.AppendFrom(from, origin, evTail); err != nil {
				return err
			}
		}
		if senderRoams && from != r.To {
			if err := tx.Touch(from, r.To, m, false, noLastMsg, s.cfg.MaxContacts, now.Unix()); err != nil {
				return err
			}
		}
		if err := tx.PutMessage(m); err != nil {
			return err
		}
		res = SendResult{MsgTime: msgTime, MsgKey: msgKey, Seq: m.SenderSeq}
		return tx.RememberSent(id, store.Sent{MsgKey: msgKey, MsgTime: msgTime, Seq: m.SenderSeq})
	})
	if errors.Is(err, store.ErrClosed) {
		return nil, errShuttingDown()
	}
	if err != nil {
		return nil, err
	}
	if !dup {
		s.afterSend(c, hook, r)
	}
	return res, nil
}

// unknownRecipient is 90012 for REST and admin sends (the REST table) and
// 20003 for a user's own send (the client SDK's code).
func (s *Service) unknownRecipient(c *Caller, to string) *Error {
	if c.Admin || c.Transport == REST {
		return Errorf(CodeToNotRegistered, "To_Account %q is not registered", to)
	}
	return Errorf(CodeUnknownUser, "recipient %q does not exist", to)
}

// maxProfilesCached bounds the SenderProfile cache: one entry per sender,
// at most a few hundred bytes each.
const maxProfilesCached = 1 << 17

// senderProfile is the SenderProfile carried by user's messages, from memory
// after the first look-up.
func (s *Service) senderProfile(user string) json.RawMessage {
	if p, ok := s.profiles.Get(user); ok {
		return p
	}
	gen := s.profiles.Begin()
	p, err := s.loadSenderProfile(user) // profile.go
	if err != nil {
		return nil
	}
	// A profile or account change that committed meanwhile forgot the
	// entry after its commit: then what we read may be old; use it this
	// once, keep it not.
	return s.profiles.Fill(user, p, gen, nil)
}

// ForgetCaches drops what the command layer remembers of the store's data
// (relationships, profile bits and mutes for the send policy; sender
// profiles). Each cache is kept exact by the commands that change its data,
// which works as long as every change runs through this Service. A cluster
// node calls it when it becomes the owner: while another node owned the
// data, changes ran through that node's command layer, and this one's
// memory of them is stale (a blacklist added there would not stop a send
// here).
func (s *Service) ForgetCaches() {
	s.rel.clear()
	s.profiles.Clear()
}

// Forget drops what the command layer remembers of users (their send
// policy state and SenderProfile) after a change it did not make itself:
// with partitions, one another partition's owner made, or an intent ran
// (docs/cluster.md §11.2 item 8).
func (s *Service) Forget(users ...string) {
	s.rel.drop(users...)
	for _, u := range users {
		s.profiles.Forget(u)
	}
}

// ForgetProfile drops the cached SenderProfile of user after it changed:
// the next message reads it again.
func (s *Service) ForgetProfile(user string) {
	s.profiles.Forget(user)
}

// secondOrder is the MsgSeq of a message whose sender gave none: where in
// its second it arrived, scaled to 32 bits. History orders the messages of
// one second by MsgSeq (Tencent: "MsgSeq … is used for de-duplication and to
// order messages within the same second"); a random one, as Tencent fills
// in, showed a burst of messages shuffled. MsgRandom still tells apart two
// messages of the same instant.
func secondOrder(t time.Time) uint32 {
	return uint32(uint64(t.Nanosecond()) << 32 / uint64(time.Second))
}
