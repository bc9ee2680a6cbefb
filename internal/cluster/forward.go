package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/duet-im/duet/command"
)

// Commands on any node (docs/cluster.md §12).
//
// Every node answers every command. A command that writes must run where
// the store is the log's owner, so the Router runs a command locally when
// this node owns the partition, and otherwise sends it to the owner as a
// core NATS request and answers with the owner's reply. The request is
// addressed to the node that holds the partition's lease, as this node last
// saw it: duet.cmd.{pp}.{node}, which only that node serves, and only while
// it owns. So a request never goes to a deposed owner that cannot answer (a
// paused process keeps its subscriptions until its routes time out), and
// never to two nodes; a node that finds it no longer owns answers "not the
// owner" without running the command, and while no node is known or
// serving the requester tries again.
//
// Read-your-writes (§12.3): the owner's reply carries the log sequence its
// view had applied after the command, at or after the command's own
// commit; the requester answers its client only once its own view has
// applied that far, so the client's next read on this node, and its
// devices here, see the write.
//
// openim/sync is the one command that concerns this connection rather
// than the user's data: it always runs locally (it answers through the
// device's connection, and reads the local view).

// Executor runs commands: the command layer, or a Router in front of it.
type Executor interface {
	Exec(ctx context.Context, c *command.Caller, name string, body []byte) command.Reply
}

// ForwardView is what the Router needs of this node's store.
type ForwardView interface {
	Owns() bool
	Applied() uint64
	WaitApplied(ctx context.Context, seq uint64) error
}

// Forwarding limits (§12.2).
const (
	// noOwnerRetry is how long a request is retried while no node serves
	// the partition (a takeover in progress): the request reached nobody,
	// so trying again cannot run it twice.
	noOwnerRetry = 8 * time.Second
	// forwardTimeout is how long the owner has to answer once it has the
	// request; after it the command may or may not have run.
	forwardTimeout = 5 * time.Second
	// readYourWrites bounds the wait for the local view to catch up.
	readYourWrites = 2 * time.Second
)

// Headers of a forwarded command and of its reply; the message data is the
// request body, and the reply's data the result's JSON.
const (
	hUser      = "Duet-User"
	hAdmin     = "Duet-Admin"
	hDevice    = "Duet-Device"
	hTransport = "Duet-Transport"
	hCommand   = "Duet-Command"

	hFailed   = "Duet-Failed" // the data is failure's JSON
	hStatus   = "Duet-Status"
	hSeq      = "Duet-Seq"
	hReqID    = "Duet-Req-Id"
	hNotOwner = "Duet-Not-Owner"
)

// Router is the Executor of a cluster node's transports.
type Router struct {
	nc      *nats.Conn
	local   Executor
	view    ForwardView
	subject string // duet.cmd.{pp}; a node's own is subject + "." + its name
	self    string
	log     *slog.Logger
	// Owner names the node that holds the partition's lease ("" while
	// none is known); Refresh, when set, looks the holder up again after
	// the one Owner named did not answer. Set before the first Exec.
	Owner   func() string
	Refresh func()

	mu  sync.Mutex
	sub *nats.Subscription // while this node owns the partition

	Forwarded   atomic.Int64 // commands this node sent to the owner
	Served      atomic.Int64 // forwarded commands this node ran as the owner
	StaleReads  atomic.Int64 // replies given before the local view caught up (§12.3)
	NoOwnerWait atomic.Int64 // forwards that found no owner at first
}

// NewRouter makes node self's router of partition p's commands.
func NewRouter(nc *nats.Conn, self string, local Executor, view ForwardView, p int, log *slog.Logger) *Router {
	if log == nil {
		log = slog.Default()
	}
	return &Router{nc: nc, self: self, local: local, view: view, subject: CommandSubject(p), log: log}
}

// Exec runs the command here or on the owner.
func (r *Router) Exec(ctx context.Context, c *command.Caller, name string, body []byte) command.Reply {
	if name == "openim/sync" || r.view.Owns() {
		return r.local.Exec(ctx, c, name, body)
	}
	rep := r.forward(ctx, c, name, body)
	if rep.ReqID == "" {
		// A refusal made here (no owner yet, no answer in time) answers
		// the request as the owner would have: with its ReqId, which an
		// MQTT 3.1.1 client matches its answer by.
		rep.ReqID = command.RequestID(body)
	}
	return rep
}

// Serve starts answering forwarded commands; call it once this node owns
// the partition. Stop undoes it.
func (r *Router) Serve() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sub != nil {
		return nil
	}
	sub, err := r.nc.Subscribe(r.subject+"."+r.self, r.serve)
	if err != nil {
		return err
	}
	r.sub = sub
	return r.nc.Flush() // the subscription is known to the server before anyone is told
}

// Stop stops answering forwarded commands.
func (r *Router) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sub != nil {
		r.sub.Unsubscribe()
		r.sub = nil
	}
}

func (r *Router) serve(m *nats.Msg) {
	out := nats.NewMsg(m.Reply)
	if !r.view.Owns() {
		out.Header.Set(hNotOwner, "1")
		m.RespondMsg(out)
		return
	}
	r.Served.Add(1)
	c := &command.Caller{
		UserID: m.Header.Get(hUser),
		Admin:  m.Header.Get(hAdmin) == "1",
		Device: m.Header.Get(hDevice),
	}
	if m.Header.Get(hTransport) == "rest" {
		c.Transport = command.REST
	}
	ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
	reply := r.local.Exec(ctx, c, m.Header.Get(hCommand), m.Data)
	cancel()
	if reply.Deferred {
		// Only openim/sync defers, and it is never forwarded.
		reply.Err = command.Errorf(command.CodeInternal, "command cannot be forwarded")
	}
	if reply.Err == nil && reply.Result != nil {
		data, err := command.MarshalResult(reply.Result)
		if err != nil {
			r.log.Error("cluster: encoding a forwarded reply", "error", err)
			reply.Err = command.Errorf(command.CodeInternal, "internal error, retry")
		}
		out.Data = data
		if st, ok := reply.Result.(interface{ ActionStatus() string }); ok {
			out.Header.Set(hStatus, st.ActionStatus())
		}
	}
	if reply.Err != nil {
		out.Header.Set(hFailed, "1")
		out.Data, _ = json.Marshal(reply.Err)
	}
	out.Header.Set(hSeq, strconv.FormatUint(r.view.Applied(), 10))
	if reply.ReqID != "" {
		out.Header.Set(hReqID, reply.ReqID)
	}
	if err := m.RespondMsg(out); err != nil {
		r.log.Warn("cluster: answering a forwarded command", "error", err)
	}
}

// forwarded is a result received from the owner, re-encoded as it came.
type forwarded struct {
	data   json.RawMessage
	status string
}

func (f forwarded) MarshalJSON() ([]byte, error) { return f.data, nil }

// ActionStatus keeps batchsendmsg's "SomeError" (command.Reply.Encode).
func (f forwarded) ActionStatus() string {
	if f.status == "" {
		return "OK"
	}
	return f.status
}

func retryLater(info string) command.Reply {
	return command.Reply{Err: command.Errorf(command.CodeRetry, "%s", info)}
}

func (r *Router) forward(ctx context.Context, c *command.Caller, name string, body []byte) command.Reply {
	r.Forwarded.Add(1)
	msg := nats.NewMsg("")
	msg.Header.Set(hUser, c.UserID)
	if c.Admin {
		msg.Header.Set(hAdmin, "1")
	}
	if c.Device != "" {
		msg.Header.Set(hDevice, c.Device)
	}
	if c.Transport == command.REST {
		msg.Header.Set(hTransport, "rest")
	}
	msg.Header.Set(hCommand, name)
	msg.Data = body

	giveUp := time.Now().Add(noOwnerRetry)
	waited := false
	for {
		var resp *nats.Msg
		err := nats.ErrNoResponders // no owner known: as if it did not answer
		if owner := r.owner(); owner != "" {
			msg.Subject = r.subject + "." + owner
			rctx, cancel := context.WithTimeout(ctx, forwardTimeout)
			resp, err = r.nc.RequestMsgWithContext(rctx, msg)
			cancel()
		}
		switch {
		case errors.Is(err, nats.ErrNoResponders) || (err == nil && resp.Header.Get(hNotOwner) != ""):
			// Nobody ran it: a takeover is under way. Try again.
			if !waited {
				waited = true
				r.NoOwnerWait.Add(1)
			}
			if r.Refresh != nil {
				r.Refresh()
			}
			if time.Now().After(giveUp) {
				return retryLater("no node serves this user's data yet (a node is taking over), retry")
			}
			select {
			case <-ctx.Done():
				return retryLater("no node serves this user's data yet (a node is taking over), retry")
			case <-time.After(100 * time.Millisecond):
			}
			continue
		case err != nil:
			// It may or may not have run, exactly as when a single node
			// dies mid-request: sendmsg's resends are recognised by
			// MsgRandom, and other writes report their current state.
			r.log.Warn("cluster: forwarded command unanswered", "command", name, "error", err)
			return retryLater("the node that serves this user did not answer in time, retry")
		}
		return r.reply(ctx, resp)
	}
}

// owner is the lease holder's name, or "" when unknown.
func (r *Router) owner() string {
	if r.Owner == nil {
		return ""
	}
	if o := r.Owner(); o != "?" {
		return o
	}
	return ""
}

func (r *Router) reply(ctx context.Context, resp *nats.Msg) command.Reply {
	if seq, err := strconv.ParseUint(resp.Header.Get(hSeq), 10, 64); err == nil && seq > 0 {
		wctx, cancel := context.WithTimeout(ctx, readYourWrites)
		if r.view.WaitApplied(wctx, seq) != nil {
			r.StaleReads.Add(1)
		}
		cancel()
	}
	rep := command.Reply{ReqID: resp.Header.Get(hReqID)}
	if resp.Header.Get(hFailed) != "" {
		var e command.Error
		if err := json.Unmarshal(resp.Data, &e); err != nil || e.Code == 0 {
			e = command.Error{Code: command.CodeInternal, Info: "internal error, retry"}
		}
		rep.Err = &e
		return rep
	}
	if len(resp.Data) > 0 {
		rep.Result = forwarded{data: bytes.Clone(resp.Data), status: resp.Header.Get(hStatus)}
	}
	return rep
}

// Routers is the Executor of a node of a cluster with several partitions
// (docs/cluster.md §12.1): each command goes to the Router of its home
// user's partition, which runs it here when this node owns that partition
// and forwards it to the owner otherwise. openim/sync concerns the
// connection, not a partition: it runs here.
type Routers struct {
	Parts []*Router
	// Home names a command's home user (command.Service.Home).
	Home func(c *command.Caller, name string, body []byte) string
	// Of is the partition of a user.
	Of func(user string) int
}

// Exec runs the command on the owner of its home's partition.
func (rs *Routers) Exec(ctx context.Context, c *command.Caller, name string, body []byte) command.Reply {
	if name == "openim/sync" {
		return rs.Parts[0].local.Exec(ctx, c, name, body)
	}
	return rs.Parts[rs.Of(rs.Home(c, name, body))].Exec(ctx, c, name, body)
}
