package hooks

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/duet-im/duet/command"
)

// RequestsConfig configures the Requests hook.
type RequestsConfig struct {
	Service *command.Service
	// Exec runs the commands; nil: Service (a cluster node's router
	// otherwise, internal/cluster).
	Exec command.Executor
	// MaxRequest bounds a request's payload; larger ones get 93000 and the
	// connection stays up. (mochi's MaximumPacketSize is the hard cap
	// above which the connection is closed.)
	MaxRequest int
	Log        *slog.Logger
}

// Requests executes requests published on im/{me}/req/{service}/{command}
// through the command layer and answers on im/{me}/rsp (or the MQTT 5
// Response Topic). A request is consumed here: it is never forwarded to
// subscribers. The client's read loop waits for the command, so a QoS 1
// sendmsg is PUBACKed only after the message is durable.
type Requests struct {
	mqtt.HookBase
	cfg RequestsConfig

	// running is held for reading by every request being executed; Drain
	// takes it for writing, so it returns once none runs, and marks the
	// hook closed so no new one starts (the store may be closing next).
	running sync.RWMutex
	closed  bool
}

// Drain waits for the requests being executed and refuses new ones. The
// broker calls it when it stops, before the store is closed.
func (h *Requests) Drain() {
	h.running.Lock()
	h.closed = true
	h.running.Unlock()
}

func NewRequests(cfg RequestsConfig) *Requests {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.MaxRequest <= 0 {
		cfg.MaxRequest = 64 << 10
	}
	if cfg.Exec == nil {
		cfg.Exec = cfg.Service
	}
	return &Requests{cfg: cfg}
}

func (h *Requests) ID() string { return "duet-requests" }

func (h *Requests) Provides(b byte) bool { return b == mqtt.OnPublish }

// OnPublish runs the request and writes the reply.
func (h *Requests) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	user, _ := Device(cl)
	prefix := "im/" + user + "/req/"
	if !strings.HasPrefix(pk.TopicName, prefix) {
		// The ACL already refused anything else; never forward it.
		return pk, packets.CodeSuccessIgnore
	}
	name := pk.TopicName[len(prefix):]
	caller := &command.Caller{UserID: user, Admin: h.cfg.Service.IsAdmin(user), Device: cl.ID, Transport: command.MQTT}

	// A refusal carries the ReqId too: a client matches replies by it (on
	// MQTT 3.1.1 there is no Correlation Data), and without it waits for a
	// reply that never comes. Exec finds it in its one decode of the body
	// (Reply.ReqID); a request refused here, before Exec, is decoded for it
	// alone.
	var reply command.Reply
	h.running.RLock()
	defer h.running.RUnlock()
	if h.closed {
		reply.ReqID = command.RequestID(pk.Payload)
		reply.Err = command.Errorf(command.CodeRetry, "server is shutting down, retry")
	} else if len(pk.Payload) > h.cfg.MaxRequest {
		reply.ReqID = command.RequestID(pk.Payload)
		reply.Err = command.Errorf(command.CodeTooLong, "request is %d bytes; the limit is %d", len(pk.Payload), h.cfg.MaxRequest)
	} else {
		caller.Respond = func(r command.Reply) {
			if r.Err != nil {
				command.LogRefusal(h.cfg.Log, caller, name, r.Err)
			}
			h.respond(cl, pk, r.Encode("ReqId", r.ReqID, "Command", name))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		reply = h.cfg.Exec.Exec(ctx, caller, name, pk.Payload)
		cancel()
	}
	if reply.Err != nil {
		command.LogRefusal(h.cfg.Log, caller, name, reply.Err)
	}
	// The reply and the PUBACK go out together, in one write; mochi is told
	// to drop the packet, so it neither acknowledges it again nor looks for
	// subscribers of a request topic.
	out := make([]packets.Packet, 0, 2)
	if !reply.Deferred {
		if rp, ok := h.replyPacket(cl, pk, reply.Encode("ReqId", reply.ReqID, "Command", name)); ok {
			out = append(out, rp)
		}
	}
	if pk.FixedHeader.Qos > 0 {
		ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID} // [MQTT-4.3.2-4]
		if reply.Err != nil && cl.Properties.ProtocolVersion == 5 && isSend(name) {
			// PROTOCOL §3: a failed sendmsg's PUBACK carries a matching
			// reason, the error table's (docs/mqtt.md).
			ack.ReasonCode = command.MQTTReason(reply.Err.Code)
			ack.Properties.ReasonString = reply.Err.Info
		}
		out = append(out, ack)
	}
	if err := Write(cl, out...); err != nil {
		h.cfg.Log.Debug("reply not written", "client", cl.ID, "error", err)
	}
	return pk, packets.ErrRejectPacket
}

func isSend(name string) bool { return name == "openim/sendmsg" || name == "openim/batchsendmsg" }

// respond writes a deferred reply (openim/sync) on its own.
func (h *Requests) respond(cl *mqtt.Client, req packets.Packet, payload []byte) {
	if rp, ok := h.replyPacket(cl, req, payload); ok {
		if err := Write(cl, rp); err != nil {
			h.cfg.Log.Debug("reply not written", "client", cl.ID, "error", err)
		}
	}
}

// replyPacket addresses a reply to the requesting device only (another
// device of the same user must not see it), at QoS 0: if the connection
// drops, the device resends the request and the resend is idempotent. It
// reports false when the device listens on no topic the reply could take.
func (h *Requests) replyPacket(cl *mqtt.Client, req packets.Packet, payload []byte) (packets.Packet, bool) {
	user, _ := Device(cl)
	out := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   "im/" + user + "/rsp",
		Payload:     payload,
	}
	if cl.Properties.ProtocolVersion == 5 {
		rt := req.Properties.ResponseTopic
		// PROTOCOL §3: a Response Topic must be under im/{me}/.
		if rt != "" && strings.HasPrefix(rt, "im/"+user+"/") && !strings.ContainsAny(rt, "+#") {
			out.TopicName = rt
		}
		out.Properties.CorrelationData = req.Properties.CorrelationData
		out.Properties.PayloadFormat, out.Properties.PayloadFormatFlag = 1, true
		out.Properties.ContentType = "application/json"
	}
	// MQTT sends only what a filter asked for.
	return out, Subscribed(cl, out.TopicName)
}

// Subscribed reports whether one of cl's subscriptions covers topic.
func Subscribed(cl *mqtt.Client, topic string) bool {
	// The filters a device normally holds, looked up without copying its
	// subscription set (this runs for every reply).
	if i := strings.LastIndexByte(topic, '/'); i > 0 {
		for _, f := range [...]string{topic, topic[:i] + "/#", topic[:i] + "/+"} {
			if _, ok := cl.State.Subscriptions.Get(f); ok {
				return true
			}
		}
	}
	for f := range cl.State.Subscriptions.GetAll() {
		if Covers(f, topic) {
			return true
		}
	}
	return false
}

// Covers reports whether the subscription filter f matches topic (MQTT
// wildcard rules; Duet has no $-topics).
func Covers(f, topic string) bool {
	fp, tp := strings.Split(f, "/"), strings.Split(topic, "/")
	for i, p := range fp {
		if p == "#" {
			return true // [MQTT-4.7.1-2]
		}
		if i >= len(tp) || (p != "+" && p != tp[i]) {
			return false
		}
	}
	return len(fp) == len(tp)
}
