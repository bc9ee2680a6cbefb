package broker

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// TestMochiLogRewrites feeds the wrapper the records mochi v2.7.9 writes
// (listeners/tcp.go logs a connection's end as Warn("", "error", err);
// server.go dumps the packet that failed) and reads Duet's text log.
func TestMochiLogRewrites(t *testing.T) {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "im/a/req/x", PacketID: 7,
		Payload: []byte("secret-body"), Connect: packets.ConnectParams{Password: []byte("secret-sig")}}
	cases := []struct {
		name   string
		log    func(l *slog.Logger)
		want   string // in the line; "" for no line at INFO
		absent []string
	}{
		{"empty message", func(l *slog.Logger) { l.Warn("", "error", errors.New("EOF")) }, "", nil},
		{"added hook", func(l *slog.Logger) { l.Info("added hook", "hook", "x") }, "", nil},
		{"client disconnected", func(l *slog.Logger) { l.Debug("client disconnected", "client", "a:b") }, "", nil},
		{"refused packet", func(l *slog.Logger) {
			l.Warn("error processing packet", "error", packets.ErrNotAuthorized, "client", "a:b", "pk", pk)
		}, `level=INFO msg="connection closed on a refused packet" component=mqtt error="not authorized" client=a:b pk.type=Publish pk.topic=im/a/req/x pk.id=7`,
			[]string{"secret"}},
		{"other lines pass", func(l *slog.Logger) { l.Warn("client store quota reached", "client", "a:b") },
			`level=WARN msg="client store quota reached" component=mqtt client=a:b`, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			c.log(newMochiLogger(slog.New(slog.NewTextHandler(&buf, nil))))
			got := buf.String()
			if c.want == "" && got != "" || !strings.Contains(got, c.want) {
				t.Errorf("logged %q, want %q", got, c.want)
			}
			for _, a := range c.absent {
				if strings.Contains(got, a) {
					t.Errorf("logged %q, must not contain %q", got, a)
				}
			}
			// At debug, the lowered lines are there, each with a message.
			buf.Reset()
			c.log(newMochiLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))))
			if got := buf.String(); got == "" || strings.Contains(got, `msg=""`) {
				t.Errorf("at debug: %q", got)
			}
		})
	}
}
