package command

import (
	"context"
	"strconv"

	"github.com/duet-im/duet/store"
)

// The conversation list (recent contacts), unread counts and read receipts
// (reference §5.6, §5.7, §9; PROTOCOL §3).

func (s *Service) registerConversations() {
	s.handlers["recentcontact/get_list"] = s.getContactList
	s.handlers["recentcontact/delete"] = s.deleteContact
	s.handlers["openim/set_msg_read"] = s.setMsgRead
	s.handlers["openim/admin_set_msg_read"] = s.setMsgRead
	s.handlers["openim/get_c2c_unread_msg_num"] = s.unreadNum
}

// SessionItem is one conversation of recentcontact/get_list.
type SessionItem struct {
	Type         int          `json:"Type"`
	To_Account   string       `json:"To_Account"`
	MsgTime      int64        `json:"MsgTime"`
	TopFlag      int          `json:"TopFlag"`
	UnreadMsgNum int          `json:"UnreadMsgNum"`
	LastMsg      *HistoryItem `json:"LastMsg,omitempty"`
}

// ContactList is the reply of recentcontact/get_list. The list is capped
// (MaxContacts), so it always fits one page.
type ContactList struct {
	SessionItem   []SessionItem `json:"SessionItem"`
	CompleteFlag  int           `json:"CompleteFlag"`
	TimeStamp     int64         `json:"TimeStamp"`
	StartIndex    int           `json:"StartIndex"`
	TopTimeStamp  int64         `json:"TopTimeStamp"`
	TopStartIndex int           `json:"TopStartIndex"`
	ErrorDisplay  string        `json:"ErrorDisplay"`
}

func (s *Service) getContactList(ctx context.Context, c *Caller, body []byte) (any, error) {
	f, err := parseObject(body, CodeContactParam)
	if err != nil {
		return nil, err
	}
	owner, err := s.account(c, f, []string{"From_Account"}, CodeContactParam, CodeContactNeedsAdmin, CodeContactNoUser)
	if err != nil {
		return nil, err
	}
	convs, err := s.store.Conversations(owner)
	if err != nil {
		return nil, err
	}
	out := &ContactList{SessionItem: make([]SessionItem, 0, len(convs)), CompleteFlag: 1}
	for i := range convs {
		cv := &convs[i]
		item := SessionItem{Type: 1, To_Account: cv.Peer, MsgTime: cv.MsgTime, UnreadMsgNum: cv.Unread}
		if cv.LastMsgKey != "" {
			if m, err := s.store.GetMessage(owner, cv.Peer, cv.LastMsgKey); err == nil {
				peerConv, _ := s.store.GetConversation(cv.Peer, owner)
				it := s.historyItem(m, owner, cv, peerConv)
				item.LastMsg = &it
			}
		}
		out.SessionItem = append(out.SessionItem, item)
	}
	return out, nil
}

func (s *Service) requireAccount(user string, code int) error {
	ok, err := s.store.AccountExists(user)
	if err != nil {
		return err
	}
	if !ok {
		return Errorf(code, "user %q is not imported", user)
	}
	return nil
}

type envelopeOnly struct {
	ErrorDisplay string `json:"ErrorDisplay"`
}

func (s *Service) deleteContact(ctx context.Context, c *Caller, body []byte) (any, error) {
	f, err := parseObject(body, CodeContactParam)
	if err != nil {
		return nil, err
	}
	owner, err := s.account(c, f, []string{"From_Account"}, CodeContactParam, CodeContactNeedsAdmin, CodeContactNoUser)
	if err != nil {
		return nil, err
	}
	if typ, present, ok := f.integer("Type", 1, 2); !present || !ok {
		return nil, Errorf(CodeContactParam, "Type is required: 1 (C2C) or 2 (group)")
	} else if typ != 1 {
		return nil, Errorf(CodeContactParam, "only C2C conversations (Type 1) exist here")
	}
	peer, _, ok := f.str("To_Account")
	if !ok || !ValidUserID(peer) {
		return nil, Errorf(CodeContactParam, "To_Account must be a valid UserID")
	}
	clear, _, ok := f.integer("ClearRamble", 0, 1)
	if !ok {
		return nil, Errorf(CodeContactParam, "ClearRamble must be 0 or 1")
	}
	now := s.store.Now().Unix()
	err = s.store.Update(func(tx *store.Tx) error {
		cv, err := tx.Conversation(owner, peer)
		if err != nil || cv == nil {
			return err
		}
		cv.Deleted = true
		if clear == 1 {
			// Roaming is shared by both users: hide it from this one only.
			cv.ClearedAt, cv.Unread = now, 0
		}
		return tx.PutConversation(owner, cv)
	})
	if err != nil {
		return nil, err
	}
	return envelopeOnly{}, nil
}

// readEvent is a `read` timeline event: Report_Account read Peer_Account's
// messages up to MsgReadTime. Both users' timelines get it: the peer's as a
// read receipt, the reader's own so its other devices clear the unread count.
type readEvent struct {
	Event          string `json:"Event"`
	Report_Account string `json:"Report_Account"`
	Peer_Account   string `json:"Peer_Account"`
	MsgReadTime    int64  `json:"MsgReadTime"`
}

func (s *Service) setMsgRead(ctx context.Context, c *Caller, body []byte) (any, error) {
	f, err := parseObject(body, CodeJSON)
	if err != nil {
		return nil, err
	}
	reader, err := s.account(c, f, []string{"Report_Account"}, CodeToAccount, CodeOpenIMNeedsAdmin, CodeToAccount)
	if err != nil {
		return nil, err
	}
	peer, err := s.existing(f, []string{"Peer_Account", "To_Account"}, CodeFromAccount)
	if err != nil {
		return nil, err
	}
	now := s.store.Now()
	readTime := now.Unix()
	// Documented as a String holding a Unix time; numbers are accepted too.
	if v, present, ok := f.str("MsgReadTime"); present && ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, Errorf(CodeJSON, "MsgReadTime must be a Unix time")
		}
		readTime = min(n, readTime)
	} else if present {
		n, _, ok := f.integer("MsgReadTime", 0, 1<<40)
		if !ok {
			return nil, Errorf(CodeJSON, "MsgReadTime must be a Unix time")
		}
		readTime = min(n, readTime)
	}
	unread, err := s.store.CountAfter(peer, reader, readTime, store.MaxUnread)
	if err != nil {
		return nil, err
	}
	ev, err := tail(readEvent{Event: "read", Report_Account: reader, Peer_Account: peer, MsgReadTime: readTime})
	if err != nil {
		return nil, err
	}
	expire := now.Add(s.cfg.MaxLifeTime)
	err = s.store.Update(func(tx *store.Tx) error {
		cv, err := tx.Conversation(reader, peer)
		if err != nil {
			return err
		}
		if cv == nil {
			cv = &store.Conversation{Peer: peer}
		}
		if readTime > cv.ReadTime {
			cv.ReadTime = readTime
		}
		cv.Unread = unread
		if err := tx.PutConversation(reader, cv); err != nil {
			return err
		}
		if _, err := tx.AppendUntil(reader, ev, expire); err != nil {
			return err
		}
		if peer != reader {
			_, err = tx.AppendUntil(peer, ev, expire)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

type unreadItem struct {
	Peer_Account    string `json:"Peer_Account"`
	C2CUnreadMsgNum int    `json:"C2CUnreadMsgNum"`
}

type unreadError struct {
	Peer_Account string `json:"Peer_Account"`
	ErrorCode    int    `json:"ErrorCode"`
}

type unreadReply struct {
	AllC2CUnreadMsgNum  *int          `json:"AllC2CUnreadMsgNum,omitempty"`
	C2CUnreadMsgNumList []unreadItem  `json:"C2CUnreadMsgNumList,omitempty"`
	ErrorList           []unreadError `json:"ErrorList,omitempty"`
}

func (s *Service) unreadNum(ctx context.Context, c *Caller, body []byte) (any, error) {
	f, err := parseObject(body, CodeJSON)
	if err != nil {
		return nil, err
	}
	user, err := s.account(c, f, []string{"To_Account"}, CodeToAccount, CodeOpenIMNeedsAdmin, CodeToAccount)
	if err != nil {
		return nil, err
	}
	peers, present, ok := f.strings("Peer_Account")
	if !ok {
		return nil, Errorf(CodeJSON, "Peer_Account must be an Array of String")
	}
	if len(peers) > 10 {
		return nil, Errorf(CodeJSON, "Peer_Account holds at most 10 accounts")
	}
	if !present {
		total, err := s.UnreadTotal(user)
		if err != nil {
			return nil, err
		}
		return unreadReply{AllC2CUnreadMsgNum: &total}, nil
	}
	var r unreadReply
	r.C2CUnreadMsgNumList = []unreadItem{}
	for _, p := range peers {
		if ok, _ := s.store.AccountExists(p); !ok {
			r.ErrorList = append(r.ErrorList, unreadError{Peer_Account: p, ErrorCode: CodeAccountNotExist})
			continue
		}
		cv, err := s.store.GetConversation(user, p)
		if err != nil {
			return nil, err
		}
		n := 0
		if cv != nil && !cv.Deleted {
			n = cv.Unread
		}
		r.C2CUnreadMsgNumList = append(r.C2CUnreadMsgNumList, unreadItem{Peer_Account: p, C2CUnreadMsgNum: n})
	}
	return r, nil
}

// UnreadTotal is user's unread count over every conversation (the badge).
func (s *Service) UnreadTotal(user string) (int, error) {
	convs, err := s.store.Conversations(user)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, cv := range convs {
		n += cv.Unread
	}
	return n, nil
}
