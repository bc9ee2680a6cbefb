package broker

import (
	"net"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/duet-im/duet/hooks"
)

// A packet above the Maximum Packet Size must end an MQTT 5 connection
// with DISCONNECT 0x95 [MQTT-3.2.2-15] (MQTT 5 §4.13). mochi finds such a
// packet in its read loop, from the fixed header, and closes the
// connection before any hook runs. So each connection's incoming bytes
// pass through a frameConn, which follows the packet boundaries (a fixed
// header per packet; the bodies are skipped, not looked at) and stops the
// stream at the header of a packet that is too large. mochi reads, and
// answers, every packet before it; when it asks for more, the client is
// sent the DISCONNECT and mochi gets the error its own check would have
// given.

// framedListener hands mochi each connection of l wrapped in a frameConn.
type framedListener struct {
	listeners.Listener
	max uint32 // the Maximum Packet Size, as mochi's capability
}

func (l framedListener) Serve(establish listeners.EstablishFn) {
	l.Listener.Serve(func(id string, c net.Conn) error {
		return establish(id, &frameConn{Conn: c, max: l.max})
	})
}

// frameConn is read by mochi's read loop only; Established is called on
// that goroutine too, before the loop starts.
type frameConn struct {
	net.Conn
	max uint32
	cl  *mqtt.Client // once the CONNACK accepted the client

	skip   int  // body bytes of the current packet still to pass
	inLen  bool // between a packet's type byte and the end of its length
	length int  // the Remaining Length decoded so far
	shift  uint // of its next 7 bits
	start  int  // where, in the bytes being scanned, the packet started
	off    bool // a malformed length was seen: mochi refuses it, stop following
	large  bool // the stream stopped before a packet too large
}

// NetConn is the connection c wraps (as tls.Conn's), for loginHook.
func (c *frameConn) NetConn() net.Conn { return c.Conn }

// Established implements hooks.Established.
func (c *frameConn) Established(cl *mqtt.Client) { c.cl = cl }

func (c *frameConn) Read(p []byte) (int, error) {
	if c.large {
		return 0, c.tooLarge()
	}
	n, err := c.Conn.Read(p)
	if cut := c.scan(p[:n]); cut >= 0 {
		c.large = true
		if cut == 0 {
			return 0, c.tooLarge()
		}
		return cut, nil // the packets before it, then tooLarge
	}
	return n, err
}

// tooLarge runs when mochi has read every packet before the one too large.
func (c *frameConn) tooLarge() error {
	if c.cl != nil { // no DISCONNECT before the CONNACK [MQTT-3.14.0-1]
		hooks.Disconnect(c.cl, packets.ErrPacketTooLarge, "packet above the Maximum Packet Size")
	}
	return packets.ErrPacketTooLarge
}

// scan follows the packet boundaries through b, the next bytes of the
// stream. It returns where in b a packet above max starts (0 when it
// started in earlier bytes), or -1.
func (c *frameConn) scan(b []byte) int {
	if c.off || c.max == 0 {
		return -1
	}
	c.start = 0
	for i := 0; i < len(b); {
		if c.skip > 0 {
			k := min(c.skip, len(b)-i)
			c.skip -= k
			i += k
			continue
		}
		if !c.inLen { // a packet's type byte
			c.inLen, c.length, c.shift, c.start = true, 0, 0, i
			i++
			continue
		}
		d := b[i]
		i++
		c.length |= int(d&0x7f) << c.shift
		c.shift += 7
		if d&0x80 != 0 {
			if c.shift >= 28 { // more than 4 length bytes [MQTT-1.5.5]
				c.off = true
				return -1
			}
			continue
		}
		c.inLen = false
		if uint32(c.length+1) > c.max { // mochi's own test (ReadFixedHeader)
			return c.start
		}
		c.skip = c.length
	}
	return -1
}
