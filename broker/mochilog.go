package broker

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/mochi-mqtt/server/v2/packets"
)

// mochiHandler sits between mochi's logger and Duet's: mochi writes
// records Duet's log should not carry as they are. A connection's end
// comes as a WARN with an empty message from mochi's listeners; start-up
// chatter ("added hook", "attached listener") comes at INFO though Duet's
// own "duet started" line says what a user needs; and refused packets are
// logged with the whole packet, payload bytes included (privacy). Records
// it does not know pass as they are.
type mochiHandler struct{ h slog.Handler }

// mochiLevels lowers mochi's records to the level they deserve in a
// Duet log: start-up and shut-down steps and a client's disconnect are
// debug; a refused packet closes one connection, and the client's own
// fault is not a server warning.
var mochiLevels = map[string]slog.Level{
	"":                           slog.LevelDebug, // a connection's end (mochi's listeners)
	"added hook":                 slog.LevelDebug,
	"attached listener":          slog.LevelDebug,
	"mochi mqtt starting":        slog.LevelDebug,
	"mochi mqtt server started":  slog.LevelDebug,
	"gracefully stopping server": slog.LevelDebug,
	"mochi mqtt server stopped":  slog.LevelDebug,
	"stopping hook":              slog.LevelDebug,
	"client disconnected":        slog.LevelDebug,
	"error processing packet":    slog.LevelInfo,
}

// mochiRenamed gives mochi's terse messages Duet's wording.
var mochiRenamed = map[string]string{
	// mochi's own listeners log a connection's end with no message.
	"":                        "connection ended",
	"error processing packet": "connection closed on a refused packet",
}

func newMochiLogger(log *slog.Logger) *slog.Logger {
	return slog.New(mochiHandler{log.Handler()}).With("component", "mqtt")
}

func (m mochiHandler) Enabled(ctx context.Context, l slog.Level) bool {
	// A record may only be lowered, never raised: what the inner handler
	// refuses at its own level stays refused.
	return m.h.Enabled(ctx, l)
}

func (m mochiHandler) Handle(ctx context.Context, r slog.Record) error {
	level := r.Level
	if l, ok := mochiLevels[r.Message]; ok && l < level {
		level = l
	}
	msg := r.Message
	if n, ok := mochiRenamed[msg]; ok {
		msg = n
	}
	if level != r.Level && !m.h.Enabled(ctx, level) {
		return nil
	}
	out := slog.NewRecord(r.Time, level, msg, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(scrubPacket(a))
		return true
	})
	return m.h.Handle(ctx, out)
}

func (m mochiHandler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		out[i] = scrubPacket(a)
	}
	return mochiHandler{m.h.WithAttrs(out)}
}

func (m mochiHandler) WithGroup(name string) slog.Handler {
	return mochiHandler{m.h.WithGroup(name)}
}

// scrubPacket replaces a whole packet (mochi logs "pk" and "packet") with
// its type, topic and packet id: never its payload, user name or password.
func scrubPacket(a slog.Attr) slog.Attr {
	if a.Value.Kind() != slog.KindAny {
		return a
	}
	var pk packets.Packet
	switch v := a.Value.Any().(type) {
	case packets.Packet:
		pk = v
	case *packets.Packet:
		if v == nil {
			return a
		}
		pk = *v
	default:
		return a
	}
	name, ok := packets.PacketNames[pk.FixedHeader.Type]
	if !ok {
		name = fmt.Sprintf("type %d", pk.FixedHeader.Type)
	}
	as := []any{"type", name}
	if pk.TopicName != "" {
		as = append(as, "topic", pk.TopicName)
	}
	if pk.PacketID != 0 {
		as = append(as, "id", pk.PacketID)
	}
	return slog.Group(a.Key, as...)
}
