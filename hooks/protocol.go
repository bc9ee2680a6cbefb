package hooks

import (
	"bytes"
	"strings"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Protocol closes the places where mochi v2.7.9 departs from MQTT, or from
// what Duet's capabilities promise, on the client's side of the wire
// (issue 11 §5). It sits before mochi's processing: a PUBLISH is looked at
// as it is read, a packet as it is encoded.
//
//   - mochi's CONNACK leaves out most of the server's capabilities, so an
//     MQTT 5 client is told Retain Available 0, the Maximum Packet Size and
//     the Topic Alias Maximum here.
//   - A PUBLISH with RETAIN=1 is refused with DISCONNECT 0x9A before it
//     runs (mochi would run it and only skip storing it).
//   - A topic alias is resolved before mochi's ACL, which otherwise sees an
//     aliased PUBLISH's empty topic and refuses it.
//   - A QoS>0 PUBLISH to $SYS/…, which mochi drops with no PUBACK, is
//     refused like any other forbidden topic.
//   - MQTT 3.1.1 defines no DISCONNECT from the server: mochi's are not
//     sent to 3.1.1 clients, which see the connection close.
//   - A CONNECT whose Will mochi refuses before Duet's login (a retained
//     Will, a QoS 2 Will) gets the same answer as any Will.
type Protocol struct {
	mqtt.HookBase
	caps *mqtt.Capabilities
}

// NewProtocol makes the hook for server, whose capabilities it advertises.
func NewProtocol(server *mqtt.Server) *Protocol {
	return &Protocol{caps: server.Options.Capabilities}
}

func (h *Protocol) ID() string { return "duet-protocol" }

func (h *Protocol) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnPacketRead, mqtt.OnPacketEncode, mqtt.OnSessionEstablished}, []byte{b})
}

// Established is implemented by a connection that wants to know its
// client once the CONNACK has accepted it (the broker's frameConn, which
// may then send it a DISCONNECT).
type Established interface{ Established(*mqtt.Client) }

// OnSessionEstablished runs after the CONNACK, on the client's read
// goroutine, before its read loop.
func (h *Protocol) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	if e, ok := cl.Net.Conn.(Established); ok {
		e.Established(cl)
	}
}

// OnPacketRead vets a PUBLISH before mochi processes it. ErrRejectPacket
// ends the connection without processing the packet.
func (h *Protocol) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Publish || cl.Net.Inline {
		return pk, nil
	}
	v5 := cl.Properties.ProtocolVersion == 5
	if pk.FixedHeader.Retain {
		// Retain Available is 0 (CONNACK, below): "If the Server included
		// Retain Available in its CONNACK response to a Client with its
		// value set to 0 and it receives a PUBLISH packet with the RETAIN
		// flag is set to 1, then it uses the DISCONNECT Reason Code of 0x9A"
		// (MQTT 5 §3.3.1.3). MQTT 3.1.1 has no such code: the connection
		// is closed. Either way the packet is not executed.
		if v5 {
			Disconnect(cl, packets.ErrRetainNotSupported, "retained messages are not supported (Retain Available is 0)")
		}
		return pk, packets.ErrRejectPacket
	}
	if v5 && pk.TopicName == "" && pk.Properties.TopicAliasFlag && pk.Properties.TopicAlias > 0 &&
		pk.Properties.TopicAlias <= h.caps.TopicAliasMaximum { // above it, mochi disconnects with 0x94
		// mochi runs the ACL on the topic as sent and resolves the alias
		// after it: resolve it first, so the ACL judges the real topic.
		// (Set with an empty topic returns the alias's mapping.)
		topic := cl.State.TopicAliases.Inbound.Set(pk.Properties.TopicAlias, "")
		if topic == "" {
			// "If the receiver does not already have a mapping for this
			// Topic Alias […] it is a Protocol Error" (MQTT 5 §3.3.2.3.4).
			Disconnect(cl, packets.ErrProtocolViolation, "unknown topic alias")
			return pk, packets.ErrRejectPacket
		}
		pk.TopicName = topic
	}
	if pk.FixedHeader.Qos > 0 && isSys(pk.TopicName) && !strings.ContainsAny(pk.TopicName, "+#") {
		// mochi drops a PUBLISH to $SYS/… before its ACL, with no PUBACK:
		// the client waits for ever. Refuse it as the ACL refuses any
		// topic a user may not publish to (PROTOCOL §2): MQTT 5 PUBACK
		// 0x87, MQTT 3.1.1 (no negative PUBACK) the connection closed.
		// mochi then drops the packet as before. (A topic with wildcards
		// is a protocol error mochi answers with a DISCONNECT.)
		if !v5 {
			return pk, packets.ErrRejectPacket
		}
		ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID,
			ReasonCode: packets.ErrNotAuthorized.Code, Properties: packets.Properties{ReasonString: "not authorized: $SYS topics are the server's"}}
		_ = Write(cl, ack)
	}
	return pk, nil
}

// isSys reports whether topic is under $SYS, compared as mochi does.
func isSys(topic string) bool {
	return len(topic) >= len(mqtt.SysPrefix) && strings.EqualFold(topic[:len(mqtt.SysPrefix)], mqtt.SysPrefix)
}

// OnPacketEncode adjusts mochi's packets as they are written.
func (h *Protocol) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	v5 := cl.Properties.ProtocolVersion == 5
	switch pk.FixedHeader.Type {
	case packets.Connack:
		if pk.ReasonCode >= packets.ErrUnspecifiedError.Code {
			// A client that asked for no problem information (Request
			// Problem Information 0) may still be told why its CONNECT is
			// refused [MQTT-3.1.2-29]; mochi leaves the reason string out.
			pk.Mods.DisallowProblemInfo = false
		}
		switch {
		case pk.ReasonCode == packets.ErrRetainNotSupported.Code || pk.ReasonCode == packets.ErrQosNotSupported.Code:
			// mochi refuses a retained or QoS 2 Will before the Auth hook
			// sees the CONNECT, with codes MQTT 3.1.1 does not have: answer
			// as Auth answers every Will.
			if atomic.LoadUint32(&cl.Properties.Will.Flag) == 1 {
				pk.ReasonCode = packets.ErrNotAuthorized.Code
				pk.Properties.ReasonString = WillRefused
				if !v5 {
					pk.ReasonCode = packets.Err3NotAuthorized.Code
				}
			}
		case pk.ReasonCode == packets.CodeSuccess.Code && v5:
			// MQTT 5 §3.2.2.3: absent, Retain Available means 1 and Maximum
			// Packet Size means none; Topic Alias Maximum absent means 0.
			pk.Properties.RetainAvailable, pk.Properties.RetainAvailableFlag = h.caps.RetainAvailable, true
			pk.Properties.MaximumPacketSize = h.caps.MaximumPacketSize
			pk.Properties.TopicAliasMaximum = h.caps.TopicAliasMaximum
		}
	case packets.Disconnect:
		if !v5 {
			// MQTT 3.1.1 defines DISCONNECT only from client to server
			// (§3.14): a packet type mochi cannot encode makes it write
			// nothing; it closes the connection as it would have after.
			pk.FixedHeader.Type = packets.Reserved
		}
	}
	return pk
}

// Disconnect tells an MQTT 5 client why its connection ends (MQTT 5
// §3.14); the caller then ends it. MQTT 3.1.1 clients are told nothing.
func Disconnect(cl *mqtt.Client, code packets.Code, reason string) {
	if cl.Properties.ProtocolVersion != 5 {
		return
	}
	_ = Write(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect},
		ReasonCode: code.Code, Properties: packets.Properties{ReasonString: reason}})
}
