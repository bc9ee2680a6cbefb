package command

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Callbacks (webhooks) to the app's back-end, reference §8. This file
// decides what is sent and what an answer means; internal/callback sends
// them (the HTTP request, its signature, and the notification workers).

// Callbacks sends callbacks to the app's back-end (internal/callback.Pool).
type Callbacks interface {
	// Call sends one callback and waits, at most the callback timeout, for
	// its answer: the before-send callback.
	Call(ctx context.Context, j CallbackJob) (*CallbackReply, error)
	// Notify queues a notification and never blocks (it may drop it).
	Notify(j CallbackJob)
}

// CallbackJob is one callback: its CallbackCommand, JSON body, and the
// ClientIP and OptPlatform parameters (§8.1).
type CallbackJob struct {
	Command  string
	Body     []byte
	IP       string
	Platform string
}

// CallbackReply is the app's answer (§8.2).
type CallbackReply struct {
	ActionStatus    string          `json:"ActionStatus"`
	ErrorCode       *int64          `json:"ErrorCode"`
	ErrorInfo       string          `json:"ErrorInfo"`
	MsgBody         json.RawMessage `json:"MsgBody"`
	CloudCustomData json.RawMessage `json:"CloudCustomData"`
}

// ---- where the request came from ----

type clientIPKey struct{}

// WithClientIP records the caller's IP address for the callbacks'
// ClientIP parameter.
func WithClientIP(ctx context.Context, ip string) context.Context {
	return context.WithValue(ctx, clientIPKey{}, ip)
}

func clientIP(ctx context.Context) string {
	ip, _ := ctx.Value(clientIPKey{}).(string)
	return ip
}

// optPlatform is the OptPlatform parameter (§8.1). MQTT devices do not say
// which platform they run on.
func optPlatform(c *Caller) string {
	if c.Transport == REST {
		return "RESTAPI"
	}
	return "Unknown"
}

// ---- C2C send ----

// sendHook carries what the before-send callback decided to the
// after-send callback of the same send.
type sendHook struct {
	on          bool // callbacks configured and not forbidden for this send
	forbidAfter bool
	drop        bool // answer OK, store and deliver nothing
	from        string
	msgTime     int64
	msgKey      string
	ip          string
}

// c2cCallback is the body of C2C.CallbackBeforeSendMsg and
// C2C.CallbackAfterSendMsg (§8.2, §8.3).
type c2cCallback struct {
	CallbackCommand string          `json:"CallbackCommand"`
	From            string          `json:"From_Account"`
	To              string          `json:"To_Account"`
	MsgSeq          uint32          `json:"MsgSeq"`
	MsgRandom       uint32          `json:"MsgRandom"`
	MsgTime         int64           `json:"MsgTime"`
	MsgKey          string          `json:"MsgKey"`
	OnlineOnlyFlag  int             `json:"OnlineOnlyFlag"`
	MsgBody         json.RawMessage `json:"MsgBody"`
	CloudCustomData string          `json:"CloudCustomData"`
	SendMsgResult   *int            `json:"SendMsgResult,omitempty"`
	ErrorInfo       *string         `json:"ErrorInfo,omitempty"`
	UnreadMsgNum    *int            `json:"UnreadMsgNum,omitempty"`
}

func (r *sendRequest) callbackBody(command, from string, msgTime int64, msgKey string) c2cCallback {
	b := c2cCallback{
		CallbackCommand: command, From: from, To: r.To, MsgSeq: r.MsgSeq, MsgRandom: r.MsgRandom,
		MsgTime: msgTime, MsgKey: msgKey, MsgBody: r.MsgBody, CloudCustomData: r.CloudCustomData,
	}
	if r.LifeTime == 0 {
		b.OnlineOnlyFlag = 1
	}
	return b
}

// beforeSend runs C2C.CallbackBeforeSendMsg for a validated send (§8.2).
// It may rewrite r.MsgBody and r.CloudCustomData, refuse the send (20006,
// or the app's own 120001–130000 code), or ask for it to be dropped
// silently (hook.drop). It is skipped when no callback URL is configured
// and when ForbidCallbackControl holds ForbidBeforeSendMsgCallback.
func (s *Service) beforeSend(ctx context.Context, c *Caller, r *sendRequest, from string, msgTime int64, msgKey string) (sendHook, error) {
	cb := s.hooks
	if cb == nil {
		return sendHook{}, nil
	}
	h := sendHook{on: true, from: from, msgTime: msgTime, msgKey: msgKey, ip: clientIP(ctx)}
	if r.forbidBad {
		return h, Errorf(CodeJSON, "ForbidCallbackControl is not an Array of String")
	}
	h.forbidAfter = r.forbidAfter
	if r.forbidBefore {
		return h, nil
	}
	payload, err := marshal(r.callbackBody("C2C.CallbackBeforeSendMsg", from, msgTime, msgKey))
	if err != nil {
		return h, err
	}
	rep, err := cb.Call(ctx, CallbackJob{Command: "C2C.CallbackBeforeSendMsg", Body: payload, IP: h.ip, Platform: optPlatform(c)})
	if err != nil {
		return h, s.beforeSendFailed(err)
	}
	switch code := *rep.ErrorCode; {
	case code == 0:
		return h, s.applyRewrite(c, r, rep)
	case code == 1:
		info := "message refused by the app's before-send callback"
		if rep.ErrorInfo != "" {
			info += ": " + rep.ErrorInfo
		}
		return h, Errorf(CodeCallbackRefused, "%s", info)
	case code == 2:
		h.drop = true
		return h, nil
	case code >= CodeCallbackCustomFirst && code <= CodeCallbackCustomLast:
		return h, Errorf(int(code), "%s", rep.ErrorInfo)
	default:
		return h, s.beforeSendFailed(fmt.Errorf("callback answered ErrorCode %d, which means nothing here", code))
	}
}

// beforeSendFailed applies the failure policy: deliver unchanged (nil) or
// refuse with 80003.
func (s *Service) beforeSendFailed(err error) error {
	s.log.Warn("before-send callback failed", "error", err, "refuse", s.cfg.CallbackRefuse)
	if s.cfg.CallbackRefuse {
		return Errorf(CodeCallbackFailed, "the before-send callback failed, so the message was not sent: %v", err)
	}
	return nil
}

// applyRewrite takes the replacement MsgBody and CloudCustomData of an
// allowing answer. A replacement is validated like a sent body; an invalid
// one counts as a failed callback.
func (s *Service) applyRewrite(c *Caller, r *sendRequest, rep *CallbackReply) error {
	body, ccd := r.MsgBody, r.CloudCustomData
	if len(rep.MsgBody) > 0 && !bytes.Equal(rep.MsgBody, []byte("null")) {
		els, e := parseMsgBody(rep.MsgBody)
		if e != nil {
			return s.beforeSendFailed(fmt.Errorf("callback rewrote MsgBody into an invalid one: %s", e.Info))
		}
		if s.media != nil {
			if e := s.media.CheckElements(c, els); e != nil {
				return s.beforeSendFailed(fmt.Errorf("callback rewrote MsgBody with refused media: %s", e.Info))
			}
		}
		body = compact(rep.MsgBody)
	}
	if len(rep.CloudCustomData) > 0 && !bytes.Equal(rep.CloudCustomData, []byte("null")) {
		if err := json.Unmarshal(rep.CloudCustomData, &ccd); err != nil {
			return s.beforeSendFailed(fmt.Errorf("callback's CloudCustomData is not a String"))
		}
	}
	if n := len(body) + len(ccd); n > s.cfg.MaxMsgBytes {
		return s.beforeSendFailed(fmt.Errorf("callback's rewritten message is %d bytes; the limit is %d", n, s.cfg.MaxMsgBytes))
	}
	r.MsgBody, r.CloudCustomData = body, ccd
	return nil
}

func listHas(list []string, want string) bool {
	for _, v := range list {
		if v == want {
			return true
		}
	}
	return false
}

func compact(raw json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}

// afterSend queues C2C.CallbackAfterSendMsg for a send that was stored (or
// delivered online-only) (§8.3). It is not called for a resend answered
// from its resend record: the message was stored, and notified, once.
func (s *Service) afterSend(c *Caller, h sendHook, r *sendRequest) {
	if !h.on || h.forbidAfter || h.drop {
		return
	}
	b := r.callbackBody("C2C.CallbackAfterSendMsg", h.from, h.msgTime, h.msgKey)
	ok, info, unread := 0, "send msg succeed", s.unreadTotal(r.To)
	b.SendMsgResult, b.ErrorInfo, b.UnreadMsgNum = &ok, &info, &unread
	payload, err := marshal(b)
	if err != nil {
		return
	}
	s.hooks.Notify(CallbackJob{Command: "C2C.CallbackAfterSendMsg", Body: payload, IP: h.ip, Platform: optPlatform(c)})
}

// unreadTotal is UnreadMsgNum: the recipient's total C2C unread count over
// its conversation list, or -1 when it cannot be read (§8.3 uses -1 when a
// count cannot be given). It runs on a notification worker, never on the
// send path.
func (s *Service) unreadTotal(user string) int {
	convs, err := s.store.Conversations(user)
	if err != nil {
		return -1
	}
	n := 0
	for _, c := range convs {
		n += c.Unread
	}
	return n
}

// afterWithdraw queues C2C.CallbackAfterMsgWithDraw for a recalled message
// (§8.4); New registers it with OnWithdraw when callbacks are on, which runs it after
// each recall's commit.
func (s *Service) afterWithdraw(from, to, msgKey string) {
	if s.hooks == nil {
		return
	}
	payload, err := marshal(struct {
		CallbackCommand string `json:"CallbackCommand"`
		From            string `json:"From_Account"`
		To              string `json:"To_Account"`
		MsgKey          string `json:"MsgKey"`
		UnreadMsgNum    int    `json:"UnreadMsgNum"`
	}{"C2C.CallbackAfterMsgWithDraw", from, to, msgKey, s.unreadTotal(to)})
	if err != nil {
		return
	}
	s.hooks.Notify(CallbackJob{Command: "C2C.CallbackAfterMsgWithDraw", Body: payload, Platform: "Unknown"})
}

// StateChanged queues State.StateChange for a device that logged in
// (online) or went away. The broker calls it from its session hook, so it
// never blocks.
func (s *Service) StateChanged(user, clientID string, online bool) {
	if s.hooks == nil {
		return
	}
	action, reason := "Logout", "Unregister"
	if online {
		action, reason = "Login", "Register"
	}
	type info struct {
		Action string `json:"Action"`
		To     string `json:"To_Account"`
		Reason string `json:"Reason"`
	}
	payload, err := marshal(struct {
		CallbackCommand string `json:"CallbackCommand"`
		EventTime       int64  `json:"EventTime"` // milliseconds
		Info            info   `json:"Info"`
	}{"State.StateChange", time.Now().UnixMilli(), info{action, user, reason}})
	if err != nil {
		return
	}
	s.hooks.Notify(CallbackJob{Command: "State.StateChange", Body: payload, Platform: "Unknown"})
}
