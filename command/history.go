package command

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/duet-im/duet/store"
)

// Roaming history: openim/getmsg (a user's own conversations, PROTOCOL §3)
// and openim/admin_getroammsg (reference §5.4). Both page backwards from
// MaxTime; messages inside a page are ascending, and LastMsgTime/LastMsgKey
// name the page's oldest message, where the next page starts.

func (s *Service) registerHistory() {
	handle(s, "openim/getmsg", CodeJSON, nil, s.getMsg)
	handle(s, "openim/admin_getroammsg", CodeJSON, adminOnly(CodeOpenIMNeedsAdmin, "openim/admin_getroammsg needs an App admin"), s.adminGetRoamMsg)
}

// maxPageBytes is Tencent's ~13 KB cut of an admin_getroammsg page.
const maxPageBytes = 13 << 10

// HistoryItem is one message of a history page (reference §5.4, §12).
type HistoryItem struct {
	From            string          `json:"From_Account"`
	To              string          `json:"To_Account"`
	MsgSeq          uint32          `json:"MsgSeq"`
	MsgRandom       uint32          `json:"MsgRandom"`
	MsgTimeStamp    int64           `json:"MsgTimeStamp"`
	MsgFlagBits     int             `json:"MsgFlagBits"`
	IsPeerRead      int             `json:"IsPeerRead"`
	MsgKey          string          `json:"MsgKey"`
	MsgBody         json.RawMessage `json:"MsgBody"`
	CloudCustomData string          `json:"CloudCustomData"`
}

// HistoryPage is the reply of getmsg and admin_getroammsg.
type HistoryPage struct {
	Complete    int           `json:"Complete"`
	MsgCnt      int           `json:"MsgCnt"`
	LastMsgTime int64         `json:"LastMsgTime"`
	LastMsgKey  string        `json:"LastMsgKey"`
	MsgList     []HistoryItem `json:"MsgList"`
}

// account resolves an account field of a request: an admin names it (and
// must: code when missing), an ordinary user is it (and may only name
// themself: needsAdmin otherwise). The account must exist (unknown when
// not).
func (s *Service) account(c *Caller, f fields, names []string, code, needsAdmin, unknown int) (string, error) {
	user, err := s.accountField(c, f, names, code, needsAdmin)
	if err != nil {
		return "", err
	}
	if err := s.requireAccount(user, unknown); err != nil {
		return "", err
	}
	return user, nil
}

func (s *Service) accountField(c *Caller, f fields, names []string, code, needsAdmin int) (string, error) {
	for _, name := range names {
		v, present, ok := f.str(name)
		if !present {
			continue
		}
		if !ok {
			return "", Errorf(code, "%s must be a String", name)
		}
		if !c.Admin && v != c.UserID {
			return "", Errorf(needsAdmin, "%s %q is not you; only an App admin may act for another user", name, v)
		}
		return v, nil
	}
	if c.Admin {
		return "", Errorf(code, "%s is required", names[0])
	}
	return c.UserID, nil
}

// peer resolves a required account that must exist.
func (s *Service) existing(f fields, names []string, code int) (string, error) {
	for _, name := range names {
		v, present, ok := f.str(name)
		if !present {
			continue
		}
		if !ok || !ValidUserID(v) {
			return "", Errorf(code, "%s must be a valid UserID", name)
		}
		exists, err := s.store.AccountExists(v)
		if err != nil {
			return "", err
		}
		if !exists {
			return "", Errorf(code, "%s %q does not exist", name, v)
		}
		return v, nil
	}
	return "", Errorf(code, "%s is required", names[0])
}

// visibleTo filters a conversation's history for one of its users.
func (s *Service) visibleTo(reader string, conv *store.Conversation) func(*store.Message) bool {
	now := s.store.Now().Unix()
	var cleared int64
	if conv != nil {
		cleared = conv.ClearedAt
	}
	return func(m *store.Message) bool {
		switch {
		case m.Expire > 0 && m.Expire < now:
			return false
		case m.SenderOnly && reader != m.From:
			return false
		case m.ReceiverOnly && reader == m.From:
			return false
		case m.MsgTime <= cleared:
			return false
		}
		return true
	}
}

// historyQuery is a history page's request: reader's conversation with
// peer, times inclusive, before the message LastMsgKey.
type historyQuery struct {
	reader, peer     string
	minTime, maxTime int64
	lastKey          string
	max, maxBytes    int
}

func (s *Service) history(q *historyQuery) (any, error) {
	return s.historyPage(q.reader, q.peer, q.minTime, q.maxTime, q.lastKey, q.max, q.maxBytes)
}

type getMsgRequest struct{ historyQuery }

func (r *getMsgRequest) decode(s *Service, c *Caller, f fields) error {
	me, err := s.account(c, f, []string{"From_Account", "Operator_Account"}, CodeFromAccount, CodeOpenIMNeedsAdmin, CodeFromAccount)
	if err != nil {
		return err
	}
	peer, err := s.existing(f, []string{"Peer_Account", "To_Account"}, CodeToAccount)
	if err != nil {
		return err
	}
	now := s.store.Now().Unix()
	maxTime, present, ok := f.integer("MaxTime", 0, 1<<40)
	if !ok {
		return Errorf(CodeJSON, "MaxTime must be a non-negative Integer (Unix seconds)")
	}
	if !present || maxTime == 0 {
		maxTime = now + 1
	}
	minTime, _, ok := f.integer("MinTime", 0, 1<<40)
	if !ok {
		return Errorf(CodeJSON, "MinTime must be a non-negative Integer (Unix seconds)")
	}
	maxCnt, present, ok := f.integer("MaxCnt", 1, 100)
	if !ok {
		return Errorf(CodeJSON, "MaxCnt must be an Integer from 1 to 100")
	}
	if !present {
		maxCnt = 20
	}
	lastKey, _, ok := f.str("LastMsgKey")
	if !ok {
		return Errorf(CodeMsgKey, "LastMsgKey must be a String")
	}
	// PROTOCOL §3: MaxTime is exclusive for getmsg.
	r.historyQuery = historyQuery{reader: me, peer: peer, minTime: minTime, maxTime: maxTime - 1, lastKey: lastKey, max: int(maxCnt)}
	return nil
}

func (s *Service) getMsg(ctx context.Context, c *Caller, r *getMsgRequest) (any, error) {
	return s.history(&r.historyQuery)
}

type roamMsgRequest struct{ historyQuery }

func (r *roamMsgRequest) decode(s *Service, c *Caller, f fields) error {
	// Current docs say Operator_Account/Peer_Account, older clients
	// From_Account/To_Account: accept both.
	op, err := s.existing(f, []string{"Operator_Account", "From_Account"}, CodeFromAccount)
	if err != nil {
		return err
	}
	peer, err := s.existing(f, []string{"Peer_Account", "To_Account"}, CodeToAccount)
	if err != nil {
		return err
	}
	maxCnt, present, ok := f.integer("MaxCnt", 1, 1<<31)
	if !ok || !present {
		return Errorf(CodeJSON, "MaxCnt must be a positive Integer")
	}
	minTime, _, ok := f.integer("MinTime", 0, 1<<40)
	if !ok {
		return Errorf(CodeJSON, "MinTime must be a non-negative Integer")
	}
	maxTime, present, ok := f.integer("MaxTime", 0, 1<<40)
	if !ok {
		return Errorf(CodeJSON, "MaxTime must be a non-negative Integer")
	}
	if !present {
		maxTime = s.store.Now().Unix()
	}
	lastKey, _, ok := f.str("LastMsgKey")
	if !ok {
		return Errorf(CodeJSON, "LastMsgKey must be a String")
	}
	// An admin sees the conversation whichever way round it is asked
	// (reference §5.4: implement symmetric lookup), cut at ~13 KB a page.
	r.historyQuery = historyQuery{reader: op, peer: peer, minTime: minTime, maxTime: maxTime, lastKey: lastKey, max: int(min(maxCnt, 100)), maxBytes: maxPageBytes}
	return nil
}

func (s *Service) adminGetRoamMsg(ctx context.Context, c *Caller, r *roamMsgRequest) (any, error) {
	return s.history(&r.historyQuery)
}

// historyPage reads one page of reader's conversation with peer, times
// inclusive.
func (s *Service) historyPage(reader, peer string, minTime, maxTime int64, before string, max, maxBytes int) (*HistoryPage, error) {
	conv, err := s.store.GetConversation(reader, peer)
	if err != nil {
		return nil, err
	}
	peerConv, err := s.store.GetConversation(peer, reader)
	if err != nil {
		return nil, err
	}
	msgs, complete, err := s.store.History(store.HistoryQuery{
		A: reader, B: peer, MinTime: minTime, MaxTime: maxTime, Before: before,
		Max: max, MaxBytes: maxBytes, Visible: s.visibleTo(reader, conv),
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, Errorf(CodeMsgKey, "LastMsgKey %q is not a message of this conversation", before)
	}
	if err != nil {
		return nil, err
	}
	page := &HistoryPage{MsgList: make([]HistoryItem, 0, len(msgs))}
	if complete {
		page.Complete = 1
	}
	for _, m := range msgs {
		page.MsgList = append(page.MsgList, s.historyItem(m, reader, conv, peerConv))
	}
	page.MsgCnt = len(msgs)
	if len(msgs) > 0 {
		page.LastMsgTime, page.LastMsgKey = msgs[0].MsgTime, msgs[0].MsgKey
	}
	return page, nil
}

// historyItem renders m; IsPeerRead says whether its recipient has read it.
func (s *Service) historyItem(m *store.Message, reader string, readerConv, peerConv *store.Conversation) HistoryItem {
	it := HistoryItem{
		From: m.From, To: m.To, MsgSeq: m.MsgSeq, MsgRandom: m.MsgRandom, MsgTimeStamp: m.MsgTime,
		MsgFlagBits: m.MsgFlagBits, MsgKey: m.MsgKey, MsgBody: m.MsgBody, CloudCustomData: m.CloudCustomData,
	}
	recipientConv := peerConv
	if m.To == reader {
		recipientConv = readerConv
	}
	if recipientConv != nil && recipientConv.ReadTime >= m.MsgTime {
		it.IsPeerRead = 1
	}
	return it
}
