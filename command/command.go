// Package command executes Duet's commands — `openim/sendmsg`,
// `sns/friend_add`, … — for every transport. MQTT requests
// (`im/{me}/req/{service}/{command}`) and REST calls (`/v4/{service}/{command}`)
// both arrive here as a Caller, a command name and a JSON body, and leave as
// a Reply that the transport wraps in its envelope.
//
// Errors are *Error values carrying a Tencent error code and an ErrorInfo;
// every handler validates its whole input before it writes anything, so a
// refused request leaves no trace.
package command

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/duet-im/duet/internal/usercache"
	"github.com/duet-im/duet/store"
)

// Transport says where a request came from; a few rules differ (REST sends
// skip the permission checks, as Tencent's do).
type Transport int

const (
	MQTT Transport = iota
	REST
)

// Caller is the authenticated identity behind a request.
type Caller struct {
	UserID    string
	Admin     bool
	Device    string // MQTT client id; empty for REST
	Transport Transport
	// Respond sends a reply later, for a handler that returned errDeferred
	// (openim/sync answers after its replay). Nil where replies cannot wait.
	Respond func(Reply)
}

// errDeferred is returned by a handler that will answer through
// Caller.Respond.
var errDeferred = errors.New("command: reply deferred")

// Error is a failed command: a Tencent error code and its ErrorInfo.
type Error struct {
	Code int
	Info string
}

func (e *Error) Error() string { return fmt.Sprintf("%d: %s", e.Code, e.Info) }

// Errorf makes an *Error.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Info: fmt.Sprintf(format, args...)}
}

// Deliverer is the broker as the commands see it. Live sends ephemeral
// events (never stored) to a user's online devices on im/{user}/live; stored
// events reach devices through the store's commit notification instead.
// Resync replays a device's timeline from a Seq and calls done before the
// closing sync_complete.
type Deliverer interface {
	Live(user string, payload []byte)
	Resync(user, device string, fromSeq uint64, done func(lastSeq uint64)) error
}

// Config holds the deployment's settings that commands follow.
type Config struct {
	SDKAppID     uint64
	Admins       []string
	AutoAccounts bool
	// MaxMsgBytes bounds MsgBody plus CloudCustomData (93000 above it).
	MaxMsgBytes int
	// MaxLifeTime is the longest a message is kept (and the default MsgLifeTime).
	MaxLifeTime time.Duration
	// FriendCheck: only friends may chat (reference §7.1; 20009–20011).
	FriendCheck bool
	// BlacklistError: a blocked sender gets 20007 instead of "show as sent".
	BlacklistError bool
	// MaxContacts is how many conversations a user's list keeps.
	MaxContacts int
	// RecallWindow is how long a user may recall their own message.
	RecallWindow time.Duration
	// Callbacks sends the app back-end's callbacks (callback.go,
	// internal/callback); nil: no callback URL, none are sent.
	Callbacks Callbacks
	// CallbackRefuse: when the before-send callback fails or times out,
	// refuse the send with 80003 instead of delivering it unchanged.
	CallbackRefuse bool
}

// DefaultConfig is the product's defaults.
func DefaultConfig() Config {
	return Config{
		SDKAppID:     1400000000,
		Admins:       []string{"administrator"},
		MaxMsgBytes:  12 << 10,
		MaxLifeTime:  7 * 24 * time.Hour,
		MaxContacts:  100,
		RecallWindow: 2 * time.Minute,
	}
}

// Executor runs commands for the transports: the Service itself, or, on a
// cluster node, a router that runs each command where its data is written
// (internal/cluster). The transports know only this.
type Executor interface {
	Exec(ctx context.Context, c *Caller, name string, body []byte) Reply
}

// Handler executes one command from its raw body (Register; commands of
// other packages). It returns the result fields of the reply (a struct or
// map marshalled into the envelope) or an error, an *Error for anything
// the caller did wrong.
type Handler func(ctx context.Context, c *Caller, body []byte) (any, error)

// request is a command's typed request. Exec decodes a body once, into
// fields; decode reads and checks those the command takes, refusing with
// the command's own Tencent codes, so the handler gets a valid request and
// keeps only its business logic. Parts several commands share (the user an
// sns request acts for, its To_Account list, …) are request types of their
// own, embedded.
type request interface {
	decode(s *Service, c *Caller, f fields) error
}

// route is a registered command.
type route struct {
	// code refuses a body that is not a JSON object (90001 for openim,
	// 40001 for profile, …); 0 for a raw Handler, which reads its body
	// itself.
	code int
	// gate, when set, refuses a caller before the body is looked at (the
	// admin-only commands).
	gate func(c *Caller) *Error
	// run runs the command; reqID is the body's ReqId (Reply.ReqID).
	run func(ctx context.Context, c *Caller, f fields, body []byte, reqID string) (any, error)
	// home is the command's home user for c and its body (home.go): f is
	// the body decoded for a typed request, body the raw one.
	home func(c *Caller, f fields, body []byte) string
	// write: the command calls Store.Update… (home.go's reads lists the
	// commands that do not).
	write bool
}

// deferredReply is embedded in the request of a command that answers
// later, through Caller.Respond (openim/sync): the reply it sends then
// carries the request's ReqId as Exec's replies do.
type deferredReply struct{ reqID string }

func (d *deferredReply) setReqID(id string) { d.reqID = id }

// handle registers command name: Exec decodes its body into an R (through
// *R's decode) and hands that to h. parseCode is the command's code for a
// body that is not a JSON object; gate (nil: none) refuses callers before
// the body counts.
func handle[R any, P interface {
	*R
	request
}](s *Service, name string, parseCode int, gate func(*Caller) *Error, h func(ctx context.Context, c *Caller, r P) (any, error)) {
	s.routes[name] = route{code: parseCode, gate: gate, run: func(ctx context.Context, c *Caller, f fields, _ []byte, reqID string) (any, error) {
		r := P(new(R))
		if err := r.decode(s, c, f); err != nil {
			return nil, err
		}
		if d, ok := any(r).(interface{ setReqID(string) }); ok {
			d.setReqID(reqID)
		}
		return h(ctx, c, r)
	}, home: func(c *Caller, f fields, _ []byte) string {
		return requestHome(s, c, f, P(new(R)))
	}, write: !reads[name]}
}

// adminOnly is a gate that lets App admins only, refusing others with code.
func adminOnly(code int, info string) func(*Caller) *Error {
	return func(c *Caller) *Error {
		if c.Admin {
			return nil
		}
		return &Error{Code: code, Info: info}
	}
}

// Service runs commands against the store.
type Service struct {
	cfg    Config
	store  *store.Store
	live   Deliverer
	log    *slog.Logger
	admins map[string]bool
	routes map[string]route

	media MediaChecker
	// withdrawn runs after each recall (see OnWithdraw).
	withdrawn []func(store.Message)

	rel *relCache // policy.go: relationships, profile bits and mutes for checkSend

	// profiles: UserID → encoded SenderProfile ("" when none), bounded.
	profiles *usercache.Cache[json.RawMessage]

	kicker   Kicker    // account.go
	presence Presence  // account.go
	hooks    Callbacks // Config.Callbacks (callback.go); nil when no callback URL
}

// New makes a Service; Connect ties it to the broker's devices.
func New(cfg Config, st *store.Store, log *slog.Logger) *Service {
	if log == nil {
		log = slog.Default()
	}
	s := &Service{
		cfg:      cfg,
		store:    st,
		log:      log,
		admins:   make(map[string]bool),
		routes:   make(map[string]route),
		profiles: usercache.New[json.RawMessage](maxProfilesCached),
	}
	for _, a := range cfg.Admins {
		s.admins[a] = true
	}
	// Each feature file registers its own commands.
	s.registerMessaging()
	s.registerHistory()
	s.registerConversations()
	s.registerWithdraw()
	s.registerSync()
	s.registerAccounts()
	s.registerImport()
	s.registerRelations() // profile.go, sns.go, mute.go, batch.go
	if cfg.Callbacks != nil {
		s.hooks = cfg.Callbacks
		s.OnWithdraw(func(m store.Message) { s.afterWithdraw(m.From, m.To, m.MsgKey) })
	}
	return s
}

// MediaChecker validates the media elements of a message (image, sound,
// file, video) against committed uploads. Nil means no media store: such
// elements are accepted as the reference describes them.
type MediaChecker interface {
	CheckElements(c *Caller, els []Element) *Error
}

// SetMediaChecker connects the media store.
func (s *Service) SetMediaChecker(m MediaChecker) { s.media = m }

// Devices is what the command layer needs of the broker's connected
// devices. The broker serves the command layer's requests, so one of the
// two is built first and the cycle is tied by Connect, in one place
// (internal/server), before any request comes in.
type Devices struct {
	Live     Deliverer // live events and resyncs
	Kicker   Kicker    // `kick` (account.go)
	Presence Presence  // the online state queries (account.go)
}

// Connect ties the service to the broker's devices. Call it once, before
// the transports let a request in; until then the service delivers nothing
// live, kicks no one and sees no one online.
func (s *Service) Connect(d Devices) { s.live, s.kicker, s.presence = d.Live, d.Kicker, d.Presence }

// Config returns the service's configuration.
func (s *Service) Config() Config { return s.cfg }

// IsAdmin reports whether user is one of the configured admin identities.
func (s *Service) IsAdmin(user string) bool { return s.admins[user] }

// Store is the service's store.
func (s *Service) Store() *store.Store { return s.store }

// Register adds a command whose handler reads the raw body itself. It is
// meant for start-up, before requests flow. Its home is its caller and it
// counts as a write (RegisterHome names another rule).
func (s *Service) Register(name string, h Handler) { s.RegisterHome(name, h, true, nil) }

// Reply is the outcome of a command.
type Reply struct {
	// ReqID is the request's top-level ReqId over MQTT, found by Exec's one
	// decode of the body: a String's value, any other value's JSON text (a
	// number keeps its digits as sent), "" when absent or when the body is
	// not a JSON object. Every reply carries it, refusals too; a client
	// matches replies by it.
	ReqID    string
	Err      *Error
	Result   any
	Deferred bool // the handler answers later through Caller.Respond
}

// Exec runs command name for c with the JSON body. The body is decoded
// once, here: into the command's typed request and for the ReqId. Whatever
// the handler does, the caller gets a reply: a closed store is 20005
// (retry), any other failure or panic 91000, and the process keeps
// serving.
func (s *Service) Exec(ctx context.Context, c *Caller, name string, body []byte) (reply Reply) {
	var id string // the ReqId, in every reply
	defer func() {
		if v := recover(); v != nil {
			reply = Reply{Err: s.Recovered(v, name, c.UserID)}
		}
		reply.ReqID = id
	}()
	rt, known := s.routes[name]
	var (
		f    fields
		ferr error
	)
	if rt.code != 0 || c.Transport == MQTT {
		// A raw handler decodes its own body; over MQTT the ReqId is still
		// read for the reply.
		var raw json.RawMessage
		f, raw, ferr = decodeObject(body)
		if c.Transport == MQTT {
			id = reqIDText(raw)
		}
	}
	if !known {
		return Reply{Err: Errorf(CodeUnknownCommand, "unknown command %q", name)}
	}
	if !utf8.Valid(body) {
		return Reply{Err: Errorf(CodeJSON, "request body is not valid UTF-8")}
	}
	if rt.gate != nil {
		if e := rt.gate(c); e != nil {
			return Reply{Err: e}
		}
	}
	if rt.code != 0 && ferr != nil {
		return Reply{Err: bodyError(rt.code, ferr)}
	}
	res, err := rt.run(ctx, c, f, body, id)
	if errors.Is(err, errDeferred) {
		return Reply{Deferred: true}
	}
	if err != nil {
		var ce *Error
		if errors.As(err, &ce) {
			return Reply{Err: ce}
		}
		if store.IsClosed(err) {
			return Reply{Err: errShuttingDown()}
		}
		if errors.Is(err, store.ErrNotOwner) {
			// Cluster mode: this node stopped being the writer while the
			// command ran; nothing of it was written.
			return Reply{Err: Errorf(CodeRetry, "the server is handing this user's data to another node, retry")}
		}
		s.log.Error("command failed", "command", name, "user", c.UserID, "error", err)
		return Reply{Err: Errorf(CodeInternal, "internal error, retry: %v", err)}
	}
	return Reply{Result: res}
}

// Recovered turns a value recovered from a panic while serving command
// name for user into the caller's error. A closed store panics on reads
// (Pebble's way), which is a shutdown, not a bug: 20005. Anything else is a
// bug: it is logged with its stack and answered 91000.
func (s *Service) Recovered(v any, name, user string) *Error {
	if store.IsClosed(v) {
		return errShuttingDown()
	}
	s.log.Error("command panicked", "command", name, "user", user, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	return Errorf(CodeInternal, "internal error, retry")
}

func errShuttingDown() *Error { return Errorf(CodeRetry, "server is shutting down, retry") }

// Encode writes the reply as one JSON object: the given leading fields (for
// MQTT, ReqId and Command), the Tencent envelope, then the result's fields.
func (r Reply) Encode(lead ...string) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i := 0; i+1 < len(lead); i += 2 {
		b.WriteString(strconv.Quote(lead[i]))
		b.WriteByte(':')
		v, _ := json.Marshal(lead[i+1])
		b.Write(v)
		b.WriteByte(',')
	}
	if r.Err != nil {
		b.WriteString(`"ActionStatus":"FAIL","ErrorCode":`)
		b.WriteString(strconv.Itoa(r.Err.Code))
		b.WriteString(`,"ErrorInfo":`)
		v, _ := json.Marshal(r.Err.Info)
		b.Write(v)
		b.WriteByte('}')
		return b.Bytes()
	}
	status := "OK"
	if st, ok := r.Result.(interface{ ActionStatus() string }); ok {
		status = st.ActionStatus() // batchsendmsg's "SomeError" (reference §5.2)
	}
	b.WriteString(`"ActionStatus":"` + status + `","ErrorCode":0,"ErrorInfo":""`)
	if r.Result != nil {
		v, err := marshal(r.Result)
		if err == nil && len(v) > 2 && v[0] == '{' {
			b.WriteByte(',')
			b.Write(v[1:])
			return b.Bytes()
		}
	}
	b.WriteByte('}')
	return b.Bytes()
}

// MarshalResult encodes a Reply's Result as Encode does (a cluster node
// sends the owner's result on as these bytes).
func MarshalResult(v any) ([]byte, error) { return marshal(v) }

// marshal is json.Marshal without HTML escaping: message text travels as
// the sender wrote it.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}
