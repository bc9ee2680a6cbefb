package command

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/duet-im/duet/store"
)

// Callbacks (webhooks) to the app's back-end, reference §8.
//
// The before-send callback runs inside the send it judges: that one send
// waits for it (at most Timeout, 2 s as Tencent's), nothing else does. Every
// other callback is a notification: it is queued to a fixed pool of workers
// and the queue is bounded, so a slow or dead callback server costs memory
// for Queue jobs at most and never delays a send. When the queue is full
// the notification is dropped and counted (Dropped).

// CallbackConfig configures the callbacks.
type CallbackConfig struct {
	URL   string // the app's callback URL; empty = no callbacks
	Token string // optional signing token (§8.1 "鉴权 token")
	// RefuseOnFailure: when the before-send callback fails or times out,
	// refuse the send with 80003 instead of delivering it unchanged.
	RefuseOnFailure bool
	Timeout         time.Duration // per callback; default 2 s (§8.1)
	Workers         int           // notification workers; default 4
	Queue           int           // notifications waiting; default 4096
	Client          *http.Client  // default: keep-alive client with Timeout
}

type callbacks struct {
	cfg      CallbackConfig
	sdkappid uint64
	client   *http.Client
	jobs     chan callbackJob
	stop     chan struct{}
	ctx      context.Context // cancelled by CloseCallbacks: in-flight notifications end
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	once     sync.Once
	dropped  atomic.Int64
}

type callbackJob struct {
	command  string
	body     []byte
	ip       string
	platform string
}

// SetCallbacks enables the callbacks (when cfg.URL is set) and starts the
// notification workers. It is meant for start-up; CloseCallbacks stops them.
func (s *Service) SetCallbacks(cfg CallbackConfig) {
	if cfg.URL == "" {
		return
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 4096
	}
	cb := &callbacks{cfg: cfg, sdkappid: s.cfg.SDKAppID, client: cfg.Client,
		jobs: make(chan callbackJob, cfg.Queue), stop: make(chan struct{})}
	cb.ctx, cb.cancel = context.WithCancel(context.Background())
	if cb.client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 64 // §8.1: long connections by default
		cb.client = &http.Client{Transport: tr, Timeout: cfg.Timeout}
	}
	for range cfg.Workers {
		cb.wg.Add(1)
		go cb.worker(s)
	}
	s.hooks = cb
	s.OnWithdraw(func(m store.Message) { s.afterWithdraw(m.From, m.To, m.MsgKey) })
}

// CloseCallbacks stops the notification workers; queued notifications are
// abandoned.
func (s *Service) CloseCallbacks() {
	if s.hooks == nil {
		return
	}
	s.hooks.once.Do(func() { close(s.hooks.stop); s.hooks.cancel() })
	s.hooks.wg.Wait()
}

// CallbacksDropped counts notifications dropped because the queue was full.
func (s *Service) CallbacksDropped() int64 {
	if s.hooks == nil {
		return 0
	}
	return s.hooks.dropped.Load()
}

func (cb *callbacks) worker(s *Service) {
	defer cb.wg.Done()
	for {
		select {
		case <-cb.stop:
			return
		case j := <-cb.jobs:
			ctx, cancel := context.WithTimeout(cb.ctx, cb.cfg.Timeout)
			// After-callbacks' answers are ignored (§8.1); only failures are logged.
			if _, err := cb.call(ctx, j); err != nil {
				s.log.Warn("callback failed", "command", j.command, "error", err)
			}
			cancel()
		}
	}
}

// notify queues a notification without ever blocking.
func (cb *callbacks) notify(j callbackJob) {
	select {
	case cb.jobs <- j:
	default:
		cb.dropped.Add(1)
	}
}

// callbackReply is the app's answer (§8.2).
type callbackReply struct {
	ActionStatus    string          `json:"ActionStatus"`
	ErrorCode       *int64          `json:"ErrorCode"`
	ErrorInfo       string          `json:"ErrorInfo"`
	MsgBody         json.RawMessage `json:"MsgBody"`
	CloudCustomData json.RawMessage `json:"CloudCustomData"`
}

// Sign is the callback signature of §8.1: hex(sha256(token + RequestTime)).
func Sign(token string, requestTime int64) string {
	sum := sha256.Sum256([]byte(token + strconv.FormatInt(requestTime, 10)))
	return hex.EncodeToString(sum[:])
}

// call POSTs one callback and decodes the answer.
func (cb *callbacks) call(ctx context.Context, j callbackJob) (*callbackReply, error) {
	u, err := url.Parse(cb.cfg.URL)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	q.Set("SdkAppid", strconv.FormatUint(cb.sdkappid, 10))
	q.Set("CallbackCommand", j.command)
	q.Set("contenttype", "json")
	q.Set("ClientIP", j.ip)
	q.Set("OptPlatform", j.platform)
	if cb.cfg.Token != "" {
		now := time.Now().Unix()
		q.Set("RequestTime", strconv.FormatInt(now, 10))
		q.Set("Sign", Sign(cb.cfg.Token, now))
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(j.body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := cb.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("callback answered HTTP %d", resp.StatusCode)
	}
	var r callbackReply
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("callback answer is not JSON: %v", err)
	}
	if r.ErrorCode == nil {
		return nil, fmt.Errorf("callback answer has no ErrorCode")
	}
	return &r, nil
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
func (s *Service) beforeSend(ctx context.Context, c *Caller, body []byte, r *sendRequest, from string, msgTime int64, msgKey string) (sendHook, error) {
	cb := s.hooks
	if cb == nil {
		return sendHook{}, nil
	}
	h := sendHook{on: true, from: from, msgTime: msgTime, msgKey: msgKey, ip: clientIP(ctx)}
	forbidBefore := false
	if f, err := parseObject(body, CodeJSON); err == nil {
		forbid, _, ok := f.strings("ForbidCallbackControl")
		if !ok {
			return h, Errorf(CodeJSON, "ForbidCallbackControl is not an Array of String")
		}
		forbidBefore = listHas(forbid, "ForbidBeforeSendMsgCallback")
		h.forbidAfter = listHas(forbid, "ForbidAfterSendMsgCallback")
	}
	if forbidBefore {
		return h, nil
	}
	payload, err := marshal(r.callbackBody("C2C.CallbackBeforeSendMsg", from, msgTime, msgKey))
	if err != nil {
		return h, err
	}
	cctx, cancel := context.WithTimeout(ctx, cb.cfg.Timeout)
	defer cancel()
	rep, err := cb.call(cctx, callbackJob{command: "C2C.CallbackBeforeSendMsg", body: payload, ip: h.ip, platform: optPlatform(c)})
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
	s.log.Warn("before-send callback failed", "error", err, "refuse", s.hooks.cfg.RefuseOnFailure)
	if s.hooks.cfg.RefuseOnFailure {
		return Errorf(CodeCallbackFailed, "the before-send callback failed, so the message was not sent: %v", err)
	}
	return nil
}

// applyRewrite takes the replacement MsgBody and CloudCustomData of an
// allowing answer. A replacement is validated like a sent body; an invalid
// one counts as a failed callback.
func (s *Service) applyRewrite(c *Caller, r *sendRequest, rep *callbackReply) error {
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
	s.hooks.notify(callbackJob{command: "C2C.CallbackAfterSendMsg", body: payload, ip: h.ip, platform: optPlatform(c)})
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
// (§8.4); SetCallbacks registers it with OnWithdraw, which runs it after
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
	s.hooks.notify(callbackJob{command: "C2C.CallbackAfterMsgWithDraw", body: payload, platform: "Unknown"})
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
	s.hooks.notify(callbackJob{command: "State.StateChange", body: payload, platform: "Unknown"})
}
