package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/duet-im/duet/usersig"
)

// mode is the wire contract a run speaks: who logs in as whom, what is
// subscribed, what a message looks like and how received PUBLISHes are read.
type mode interface {
	name() string
	senderID(i int) string
	receiverID(i int) string
	// login returns the CONNECT client id, username and password for a user.
	login(user string) (clientID, username, password string, err error)
	senderTopics(i int) []string
	receiverTopics(i int) []string
	// request builds sender i's n-th message stamped with sentNanos.
	request(i int, n int64, sentNanos int64) (topic string, payload []byte)
	// onSender and onReceiver classify a PUBLISH that pair i's sender or
	// receiver got.
	onSender(i int, topic string, payload []byte) event
	onReceiver(i int, topic string, payload []byte) event
	// waitsForSync reports whether a receiver is ready only after an evReady
	// event (rather than right after its SUBACK).
	waitsForSync() bool
}

type eventKind int

const (
	evIgnore    eventKind = iota
	evDelivered           // a benchmark message reached its receiver; sentNanos is set
	evReady               // the receiver's subscription is live (Duet: sync_complete)
	evReplyOK             // Duet: sendmsg accepted
	evReplyErr            // Duet: sendmsg refused; info is set
)

type event struct {
	kind      eventKind
	sentNanos int64
	info      string
}

// stamp is the decimal send time followed, if pad > 0, by a space and pad
// filler bytes.
func stamp(sentNanos int64, pad int) []byte {
	b := make([]byte, 0, 20+1+pad)
	b = strconv.AppendInt(b, sentNanos, 10)
	if pad > 0 {
		b = append(b, ' ')
		for range pad {
			b = append(b, 'x')
		}
	}
	return b
}

// parseStamp reads the leading decimal send time of a stamp.
func parseStamp(s string) (int64, bool) {
	end := strings.IndexByte(s, ' ')
	if end < 0 {
		end = len(s)
	}
	v, err := strconv.ParseInt(s[:end], 10, 64)
	if err != nil || v <= 0 {
		return 0, false
	}
	return v, true
}

// rawMode is plain MQTT without auth: sender i publishes to {prefix}/{i},
// receiver i subscribes to it. It works against any MQTT broker.
type rawMode struct {
	prefix string
	pad    int
}

func (m *rawMode) name() string              { return "raw" }
func (m *rawMode) senderID(i int) string     { return fmt.Sprintf("%s-s-%d", m.prefix, i) }
func (m *rawMode) receiverID(i int) string   { return fmt.Sprintf("%s-r-%d", m.prefix, i) }
func (m *rawMode) topic(i int) string        { return fmt.Sprintf("%s/%d", m.prefix, i) }
func (m *rawMode) senderTopics(int) []string { return nil }
func (m *rawMode) receiverTopics(i int) []string {
	return []string{m.topic(i)}
}
func (m *rawMode) waitsForSync() bool { return false }

func (m *rawMode) login(user string) (string, string, string, error) { return user, "", "", nil }

func (m *rawMode) request(i int, _ int64, sentNanos int64) (string, []byte) {
	return m.topic(i), stamp(sentNanos, m.pad)
}

func (m *rawMode) onSender(int, string, []byte) event { return event{} }

func (m *rawMode) onReceiver(_ int, _ string, payload []byte) event {
	if t, ok := parseStamp(string(payload)); ok {
		return event{kind: evDelivered, sentNanos: t}
	}
	return event{}
}

// duetMode speaks Duet's MQTT contract: UserSig logins, sendmsg requests on
// im/{me}/req/openim/sendmsg, replies on im/{me}/rsp, timeline events on
// im/{me}/in.
type duetMode struct {
	prefix    string
	pad       int
	device    string
	secret    string
	sdkappid  uint64
	sigExpire time.Duration
	now       func() time.Time
	// replyOnly: senders subscribe to their replies only, like a back-end
	// bot, not to their timeline like a phone.
	replyOnly bool
}

type textElem struct {
	MsgType    string `json:"MsgType"`
	MsgContent struct {
		Text string `json:"Text"`
	} `json:"MsgContent"`
}

type sendMsgReq struct {
	ReqID     string     `json:"ReqId"`
	To        string     `json:"To_Account"`
	MsgRandom uint32     `json:"MsgRandom"`
	MsgBody   []textElem `json:"MsgBody"`
}

type duetReply struct {
	ReqID        string `json:"ReqId"`
	Command      string `json:"Command"`
	ActionStatus string `json:"ActionStatus"`
	ErrorCode    int    `json:"ErrorCode"`
	ErrorInfo    string `json:"ErrorInfo"`
}

type duetEvent struct {
	Event   string     `json:"Event"`
	From    string     `json:"From_Account"`
	To      string     `json:"To_Account"`
	MsgBody []textElem `json:"MsgBody"`
}

func (m *duetMode) name() string            { return "duet" }
func (m *duetMode) senderID(i int) string   { return fmt.Sprintf("%s-s-%d", m.prefix, i) }
func (m *duetMode) receiverID(i int) string { return fmt.Sprintf("%s-r-%d", m.prefix, i) }
func (m *duetMode) senderTopics(i int) []string {
	if m.replyOnly {
		return []string{"im/" + m.senderID(i) + "/rsp"}
	}
	return []string{"im/" + m.senderID(i) + "/#"}
}
func (m *duetMode) receiverTopics(i int) []string {
	return []string{"im/" + m.receiverID(i) + "/#"}
}
func (m *duetMode) waitsForSync() bool { return true }

func (m *duetMode) login(user string) (string, string, string, error) {
	sig, err := usersig.Gen(m.sdkappid, m.secret, user, int64(m.sigExpire/time.Second), m.now())
	if err != nil {
		return "", "", "", fmt.Errorf("usersig for %s: %w", user, err)
	}
	return user + ":" + m.device, user, sig, nil
}

func (m *duetMode) request(i int, n int64, sentNanos int64) (string, []byte) {
	e := textElem{MsgType: "TIMTextElem"}
	e.MsgContent.Text = string(stamp(sentNanos, m.pad))
	req := sendMsgReq{
		ReqID:     fmt.Sprintf("b%d-%d", i, n),
		To:        m.receiverID(i),
		MsgRandom: rand.Uint32(),
		MsgBody:   []textElem{e},
	}
	b, err := json.Marshal(req)
	if err != nil { // cannot happen for this struct
		panic(err)
	}
	return "im/" + m.senderID(i) + "/req/openim/sendmsg", b
}

func (m *duetMode) onSender(i int, topic string, payload []byte) event {
	if topic != "im/"+m.senderID(i)+"/rsp" {
		return event{} // timeline events, live notices
	}
	var r duetReply
	if err := json.Unmarshal(payload, &r); err != nil {
		return event{kind: evReplyErr, info: "unparsable reply: " + err.Error()}
	}
	if r.Command != "" && r.Command != "openim/sendmsg" {
		return event{}
	}
	if r.ErrorCode != 0 {
		return event{kind: evReplyErr, info: fmt.Sprintf("%d %s", r.ErrorCode, r.ErrorInfo)}
	}
	return event{kind: evReplyOK}
}

func (m *duetMode) onReceiver(i int, topic string, payload []byte) event {
	if topic != "im/"+m.receiverID(i)+"/in" {
		return event{}
	}
	var e duetEvent
	if err := json.Unmarshal(payload, &e); err != nil {
		return event{}
	}
	switch e.Event {
	case "sync_complete":
		return event{kind: evReady}
	case "msg":
		if e.From != m.senderID(i) || len(e.MsgBody) == 0 {
			return event{}
		}
		if t, ok := parseStamp(e.MsgBody[0].MsgContent.Text); ok {
			return event{kind: evDelivered, sentNanos: t}
		}
	}
	return event{}
}
