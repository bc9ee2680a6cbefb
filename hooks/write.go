package hooks

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Duet writes its own packets (timeline events, replies, the PUBACK of a
// request) straight to the connection instead of through mochi's
// Client.WritePacket, for two reasons:
//
//   - several packets go out in one write: a request's reply and its
//     PUBACK, a replay's window of events. Each write is a system call, and
//     on a busy server those were the largest single cost.
//   - mochi's outbound queue (and its inflight store) is never involved, so
//     nothing Duet sends can be dropped by its caps.
//
// Writing under the client's lock is what WritePacket does too, so these
// writes and mochi's own (CONNACK, SUBACK, PINGRESP, …) never interleave.
// mochi only queues in its outbound channel for its own fan-out, which Duet
// does not use, so its write buffer is always empty when we write.

// WriteTimeout bounds one write to a device. A device that stops reading
// fills its TCP window; without a deadline the writer (a delivery pump, a
// request, the server's shutdown notice) would wait on it forever.
var WriteTimeout = 30 * time.Second

// TooLarge reports the packets (by index) that were above the client's
// Maximum Packet Size and so were not written; the server must behave as if
// it had sent them ([MQTT-3.1.2-25]).
type TooLarge struct{ Skipped []int }

func (e *TooLarge) Error() string {
	return fmt.Sprintf("%d packet(s) above the client's maximum packet size were not sent", len(e.Skipped))
}

func (e *TooLarge) Unwrap() error { return packets.ErrPacketTooLarge }

var bufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// Write sends pks to cl, in order and in one write, within WriteTimeout.
// The deadline stays on the connection, so mochi's own writes to a stuck
// device give up too. A packet too large for the client is left out (the
// others are written) and reported in a *TooLarge.
func Write(cl *mqtt.Client, pks ...packets.Packet) error {
	if cl.Closed() {
		return mqtt.ErrConnectionClosed
	}
	if cl.Net.Conn == nil {
		return nil // an inline client
	}
	buf := bufs.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 64<<10 {
			buf.Reset()
			bufs.Put(buf)
		}
	}()
	buf.Reset()
	var skipped *TooLarge
	for i := range pks {
		mark := buf.Len()
		if err := encode(cl, &pks[i], buf); err != nil {
			buf.Truncate(mark)
			if !errors.Is(err, packets.ErrPacketTooLarge) {
				return err
			}
			if skipped == nil {
				skipped = &TooLarge{}
			}
			skipped.Skipped = append(skipped.Skipped, i)
		}
	}
	if buf.Len() == 0 {
		return tooLarge(skipped)
	}
	cl.Lock()
	defer cl.Unlock()
	_ = cl.Net.Conn.SetWriteDeadline(time.Now().Add(WriteTimeout))
	if _, err := cl.Net.Conn.Write(buf.Bytes()); err != nil {
		return err
	}
	return tooLarge(skipped)
}

// tooLarge keeps a nil *TooLarge from becoming a non-nil error.
func tooLarge(t *TooLarge) error {
	if t == nil {
		return nil
	}
	return t
}

// encode appends pk as cl's protocol version encodes it, with the limits
// and problem-information rules mochi's WritePacket applies.
func encode(cl *mqtt.Client, pk *packets.Packet, buf *bytes.Buffer) error {
	pk.ProtocolVersion = cl.Properties.ProtocolVersion
	if pk.Mods.MaxSize == 0 {
		pk.Mods.MaxSize = cl.Properties.Props.MaximumPacketSize
	}
	if cl.Properties.Props.RequestProblemInfoFlag && cl.Properties.Props.RequestProblemInfo == 0 {
		pk.Mods.DisallowProblemInfo = true // [MQTT-3.1.2-29]
	}
	pk.Mods.AllowResponseInfo = true // only CONNACK is restricted, and we never send one
	start := buf.Len()
	var err error
	switch pk.FixedHeader.Type {
	case packets.Publish:
		err = pk.PublishEncode(buf)
	case packets.Puback:
		err = pk.PubackEncode(buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(buf)
	default:
		err = fmt.Errorf("hooks: cannot write packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		return err
	}
	if pk.Mods.MaxSize > 0 && uint32(buf.Len()-start) > pk.Mods.MaxSize {
		return packets.ErrPacketTooLarge // [MQTT-3.1.2-24] [MQTT-3.1.2-25]
	}
	return nil
}
