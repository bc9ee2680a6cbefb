package sdk

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Error is a command the server refused: a Tencent error code (reference
// §7.2, e.g. 20003 unknown recipient, 20016 too late to recall, 93000 too
// large) and the server's ErrorInfo. In the rare case that only the MQTT 5
// PUBACK said no (its reply lost), Code is the PUBACK's reason code
// (0x80–0xFF).
type Error struct {
	Code int
	Info string
}

func (e *Error) Error() string { return fmt.Sprintf("duet: %d: %s", e.Code, e.Info) }

// ErrClosed is returned by calls on a client after Logout.
var ErrClosed = errors.New("duet: client closed")

// ErrNotConnected is returned by calls that are not retried (Typing) while
// the client is reconnecting.
var ErrNotConnected = errors.New("duet: not connected")

// RefusedError is a CONNECT the server refused (bad or expired UserSig,
// unknown user, kicked). Reconnecting with the same UserSig cannot help.
type RefusedError struct {
	Code   byte   // MQTT 5 reason code (0x86, 0x87) or MQTT 3.1.1 return code (4, 5)
	Reason string // the server's reason string (MQTT 5 only)
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("duet: login refused (0x%02x) %s", e.Code, e.Reason)
}

// Elem is one element of a message body: {MsgType, MsgContent} as in
// Tencent's message formats (TIMTextElem, TIMCustomElem, …).
type Elem struct {
	MsgType    string          `json:"MsgType"`
	MsgContent json.RawMessage `json:"MsgContent"`
}

func elem(typ string, content any) Elem {
	b, _ := json.Marshal(content)
	return Elem{MsgType: typ, MsgContent: b}
}

// Text is a TIMTextElem.
func Text(s string) Elem { return elem("TIMTextElem", map[string]string{"Text": s}) }

// Custom is a TIMCustomElem carrying app-defined data.
func Custom(data, desc, ext string) Elem {
	return elem("TIMCustomElem", map[string]string{"Data": data, "Desc": desc, "Ext": ext})
}

// Face is a TIMFaceElem.
func Face(index int, data string) Elem {
	return elem("TIMFaceElem", map[string]any{"Index": index, "Data": data})
}

// Location is a TIMLocationElem.
func Location(desc string, latitude, longitude float64) Elem {
	return elem("TIMLocationElem", map[string]any{"Desc": desc, "Latitude": latitude, "Longitude": longitude})
}

// FlagRecalled is the MsgFlagBits bit of a recalled message.
const FlagRecalled = 8

// Message is one C2C message, with the wire names of PROTOCOL §4 and of
// openim/getmsg's MsgList.
type Message struct {
	// Seq is the message's Seq in my timeline; 0 for messages that came from
	// roaming (GetMessage) or were online-only.
	Seq             uint64 `json:"Seq,omitempty"`
	From            string `json:"From_Account"`
	To              string `json:"To_Account"`
	MsgKey          string `json:"MsgKey"`
	MsgSeq          uint32 `json:"MsgSeq"`
	MsgRandom       uint32 `json:"MsgRandom"`
	MsgTimeStamp    int64  `json:"MsgTimeStamp"`
	MsgBody         []Elem `json:"MsgBody"`
	CloudCustomData string `json:"CloudCustomData,omitempty"`
	MsgFlagBits     int    `json:"MsgFlagBits,omitempty"`
	// IsPeerRead is 1 when the recipient had read the message when it was
	// fetched from roaming (openim/getmsg); read receipts (OnRead) are the
	// live source.
	IsPeerRead    int             `json:"IsPeerRead,omitempty"`
	System        int             `json:"System,omitempty"`
	SenderProfile json.RawMessage `json:"SenderProfile,omitempty"`
	// OnlineOnly marks a message that came on the live topic (MsgLifeTime
	// 0): it is not stored anywhere.
	OnlineOnly bool `json:"OnlineOnly,omitempty"`
}

// Time is MsgTimeStamp as a time.
func (m *Message) Time() time.Time { return time.Unix(m.MsgTimeStamp, 0) }

// Recalled reports whether the message was withdrawn.
func (m *Message) Recalled() bool { return m.MsgFlagBits&FlagRecalled != 0 }

// Peer is the other party of the conversation as seen by me.
func (m *Message) Peer(me string) string {
	if m.From == me {
		return m.To
	}
	if m.From == "" {
		return SystemPeer
	}
	return m.From
}

// SystemPeer names the conversation of system messages that have no
// From_Account.
const SystemPeer = "@TIM#SYSTEM"

// Text joins the text of the message's TIMTextElem elements.
func (m *Message) Text() string {
	if m == nil {
		return ""
	}
	var b strings.Builder
	for _, e := range m.MsgBody {
		if e.MsgType != "TIMTextElem" {
			continue
		}
		var c struct{ Text string }
		if json.Unmarshal(e.MsgContent, &c) == nil {
			b.WriteString(c.Text)
		}
	}
	return b.String()
}

// Contact is one entry of the recent-contacts (conversation) list.
type Contact struct {
	Type    int    `json:"Type"` // 1: C2C
	Peer    string `json:"To_Account"`
	MsgTime int64  `json:"MsgTime"`
	// TopFlag is 1 when I pinned the conversation (PinConversation).
	TopFlag int      `json:"TopFlag"`
	Unread  int      `json:"UnreadMsgNum"`
	LastMsg *Message `json:"LastMsg,omitempty"`
	// PeerReadTime is when the peer last read my messages (read receipts).
	PeerReadTime int64 `json:"PeerReadTime,omitempty"`
}

// Pinned reports whether I pinned the conversation (TopFlag 1).
func (c *Contact) Pinned() bool { return c.TopFlag == 1 }

// ReadReceipt says the peer read my messages up to Time.
type ReadReceipt struct {
	Peer string
	Time time.Time
}

// Withdrawal is a recalled message of the conversation with Peer.
type Withdrawal struct {
	Peer   string
	From   string
	To     string
	MsgKey string
}

// SystemEvent is a timeline or live event the SDK has no typed listener for
// (friend_add, profile changes, …). Seq is 0 for live events.
type SystemEvent struct {
	Seq   uint64
	Event string
	Data  json.RawMessage // the whole event object
}

// Outgoing is a message to send, with the optional fields of
// openim/sendmsg.
type Outgoing struct {
	// ID names the send in the outbox (SendStatus, OnSendStatus); empty:
	// one is made. A Send with the ID of an earlier send does not send
	// again: it waits for that send, or returns its outcome. An app that
	// answers events uses it to answer once, e.g. "re:"+in.MsgKey.
	ID              string
	To              string
	Body            []Elem
	CloudCustomData string
	OfflinePushInfo json.RawMessage
	// OnlineOnly sends with MsgLifeTime 0: delivered only to the peer's
	// connected devices, never stored.
	OnlineOnly bool
}
