package command

import (
	"context"
	"encoding/json"
	"math"
	"sort"
	"strconv"

	"github.com/duet-im/duet/store"
)

// The conversation list (recent contacts), unread counts and read receipts
// (reference §5.6, §5.7, §9; PROTOCOL §3).

func (s *Service) registerConversations() {
	handle(s, "recentcontact/get_list", CodeContactParam, nil, s.getContactList)
	handle(s, "recentcontact/delete", CodeContactParam, nil, s.deleteContact)
	handle(s, "recentcontact/top", CodeContactParam, nil, s.topContact)
	handle(s, "openim/set_msg_read", CodeJSON, nil, s.setMsgRead)
	handle(s, "openim/admin_set_msg_read", CodeJSON, nil, s.setMsgRead)
	handle(s, "openim/get_c2c_unread_msg_num", CodeJSON, nil, s.unreadNum)
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

// ContactList is the reply of recentcontact/get_list.
type ContactList struct {
	SessionItem   []SessionItem `json:"SessionItem"`
	CompleteFlag  int           `json:"CompleteFlag"`
	TimeStamp     int64         `json:"TimeStamp"`
	StartIndex    int           `json:"StartIndex"`
	TopTimeStamp  int64         `json:"TopTimeStamp"`
	TopStartIndex int           `json:"TopStartIndex"`
	ErrorDisplay  string        `json:"ErrorDisplay"`
}

// contactPage is how many conversations of each kind (pinned, other) one
// get_list reply holds. The list keeps 100 (MaxContacts) by default, so
// then one page holds it all.
const contactPage = 100

// get_list's AssistFlags bits (reference §9).
const (
	assistTop      = 1 << 0 // pinned conversations first
	assistEmpty    = 1 << 1 // empty conversations: Duet keeps none
	assistTopPages = 1 << 2 // pinned conversations paged with TopTimeStamp/TopStartIndex
)

// contactCursor is where a page of one section (pinned or other) starts:
// after the conversations newer than Time, and after the first Index of
// those whose last message is at Time. {0, 0} is the first page. A
// conversation that gets a new message while a client pages moves to the
// top, past the cursor, as with any time cursor.
type contactCursor struct {
	Time  int64
	Index int
}

// contactPageOf returns up to contactPage of list (ordered newest first,
// ties by peer) from cur on, the cursor after them, and whether that is the
// end.
func contactPageOf(list []store.Conversation, cur contactCursor) ([]store.Conversation, contactCursor, bool) {
	i := 0
	if cur.Time != 0 {
		for i < len(list) && list[i].MsgTime > cur.Time {
			i++
		}
		for n := 0; n < cur.Index && i < len(list) && list[i].MsgTime == cur.Time; n++ {
			i++
		}
	}
	page := list[i:min(i+contactPage, len(list))]
	next := cur
	for _, c := range page {
		if c.MsgTime == next.Time {
			next.Index++
		} else {
			next = contactCursor{Time: c.MsgTime, Index: 1}
		}
	}
	return page, next, i+len(page) == len(list)
}

// contactOwner is what every recentcontact request has: whose list it is
// about (From_Account; the caller itself over MQTT).
type contactOwner struct{ owner string }

func (r *contactOwner) decode(s *Service, c *Caller, f fields) (err error) {
	r.owner, err = s.account(c, f, []string{"From_Account"}, CodeContactParam, CodeContactNeedsAdmin, CodeContactNoUser)
	return err
}

// contactListRequest is get_list's: the owner and the page's cursors.
type contactListRequest struct {
	contactOwner
	cur, topCur contactCursor
	flags       int64
}

func (r *contactListRequest) decode(s *Service, c *Caller, f fields) error {
	if err := r.contactOwner.decode(s, c, f); err != nil {
		return err
	}
	// Tencent marks these fields required (0 for the first page); Duet
	// lets them be left out, as clients of the capped list always did.
	var v [5]int64
	for i, name := range []string{"TimeStamp", "StartIndex", "TopTimeStamp", "TopStartIndex", "AssistFlags"} {
		n, _, ok := f.integer(name, 0, 1<<40)
		if !ok {
			return Errorf(CodeContactParam, "%s must be a non-negative Integer", name)
		}
		v[i] = n
	}
	r.cur = contactCursor{Time: v[0], Index: int(v[1])}
	r.topCur = contactCursor{Time: v[2], Index: int(v[3])}
	r.flags = v[4]
	return nil
}

func (s *Service) getContactList(ctx context.Context, c *Caller, r *contactListRequest) (any, error) {
	owner, cur, topCur, flags := r.owner, r.cur, r.topCur, r.flags
	convs, err := s.store.Conversations(owner)
	if err != nil {
		return nil, err
	}
	// Newest first; one second's conversations by peer, so that a cursor
	// inside a second finds the same order again.
	sort.SliceStable(convs, func(i, j int) bool {
		if convs[i].MsgTime != convs[j].MsgTime {
			return convs[i].MsgTime > convs[j].MsgTime
		}
		return convs[i].Peer < convs[j].Peer
	})
	out := &ContactList{SessionItem: []SessionItem{}}
	if flags&assistTop == 0 {
		// A client that does not know pins gets one list by time (TopFlag
		// still says which are pinned).
		page, next, end := contactPageOf(convs, cur)
		out.TimeStamp, out.StartIndex = next.Time, next.Index
		return s.contactItems(owner, out, page, end)
	}
	var pinned, other []store.Conversation
	for _, cv := range convs {
		if cv.Top {
			pinned = append(pinned, cv)
		} else {
			other = append(other, cv)
		}
	}
	var page []store.Conversation
	complete := true
	switch {
	case flags&assistTopPages != 0:
		p, next, end := contactPageOf(pinned, topCur)
		page, complete = append(page, p...), end
		out.TopTimeStamp, out.TopStartIndex = next.Time, next.Index
	case cur == contactCursor{}:
		page = append(page, pinned...) // all of them, on the first page only
	}
	p, next, end := contactPageOf(other, cur)
	page = append(page, p...)
	out.TimeStamp, out.StartIndex = next.Time, next.Index
	return s.contactItems(owner, out, page, complete && end)
}

// contactItems fills out's SessionItem from page.
func (s *Service) contactItems(owner string, out *ContactList, page []store.Conversation, complete bool) (any, error) {
	if complete {
		out.CompleteFlag = 1
	}
	for i := range page {
		cv := &page[i]
		item := SessionItem{Type: 1, To_Account: cv.Peer, MsgTime: cv.MsgTime, UnreadMsgNum: cv.Unread}
		if cv.Top {
			item.TopFlag = 1
		}
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

type deleteContactRequest struct {
	contactOwner
	peer  string
	clear bool
}

func (r *deleteContactRequest) decode(s *Service, c *Caller, f fields) error {
	if err := r.contactOwner.decode(s, c, f); err != nil {
		return err
	}
	if typ, present, ok := f.integer("Type", 1, 2); !present || !ok {
		return Errorf(CodeContactParam, "Type is required: 1 (C2C) or 2 (group)")
	} else if typ != 1 {
		return Errorf(CodeContactParam, "only C2C conversations (Type 1) exist here")
	}
	peer, _, ok := f.str("To_Account")
	if !ok || !ValidUserID(peer) {
		return Errorf(CodeContactParam, "To_Account must be a valid UserID")
	}
	clear, _, ok := f.integer("ClearRamble", 0, 1)
	if !ok {
		return Errorf(CodeContactParam, "ClearRamble must be 0 or 1")
	}
	r.peer, r.clear = peer, clear == 1
	return nil
}

func (s *Service) deleteContact(ctx context.Context, c *Caller, r *deleteContactRequest) (any, error) {
	owner, peer := r.owner, r.peer
	now := s.store.Now().Unix()
	err := s.store.UpdateFor(owner, func(tx *store.Tx) error {
		cv, err := tx.Conversation(owner, peer)
		if err != nil || cv == nil {
			return err
		}
		cv.Deleted, cv.Top = true, false // the pin leaves the list with the entry
		if r.clear {
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

// maxTopItems bounds RecentContactItem in one recentcontact/top.
const maxTopItems = 100

// topEvent is a `recentcontact_top` timeline event: From_Account pinned
// (TopFlag 1) or unpinned (0) their conversation with To_Account. Only the
// owner's timeline gets it, so that their other devices follow.
type topEvent struct {
	Event        string `json:"Event"`
	From_Account string `json:"From_Account"`
	To_Account   string `json:"To_Account"`
	Type         int    `json:"Type"`
	TopFlag      int    `json:"TopFlag"`
	Time         int64  `json:"Time"`
}

// topContact pins or unpins conversations (recentcontact/top). Items of
// Type 2 (group conversations) are accepted and ignored: Duet has no
// groups, and a client written for Tencent sends them alongside C2C ones.
// Pinning needs the conversation to be in the list; the request changes
// all its items or none.
type topContactRequest struct {
	contactOwner
	pin   bool
	peers []string // the C2C items' To_Account, without repeats
}

func (r *topContactRequest) decode(s *Service, c *Caller, f fields) error {
	if err := r.contactOwner.decode(s, c, f); err != nil {
		return err
	}
	op, present, ok := f.integer("OperationType", 1, 2)
	if !present || !ok {
		return Errorf(CodeContactParam, "OperationType is required: 1 (pin) or 2 (unpin)")
	}
	var items []fields
	if !f.has("RecentContactItem") || json.Unmarshal(f.raw("RecentContactItem"), &items) != nil || len(items) == 0 {
		return Errorf(CodeContactParam, "RecentContactItem must be a non-empty Array of {\"Type\":1,\"To_Account\":String}")
	}
	if len(items) > maxTopItems {
		return Errorf(CodeContactParam, "RecentContactItem holds at most %d conversations", maxTopItems)
	}
	seen := map[string]bool{}
	for i, it := range items {
		typ, present, ok := it.integer("Type", 1, 2)
		if it == nil || !present || !ok {
			return Errorf(CodeContactParam, "RecentContactItem[%d].Type is required: 1 (C2C) or 2 (group)", i)
		}
		if typ == 2 {
			continue
		}
		peer, _, ok := it.str("To_Account")
		if !ok || !ValidUserID(peer) {
			return Errorf(CodeContactParam, "RecentContactItem[%d].To_Account must be a valid UserID", i)
		}
		if !seen[peer] {
			seen[peer] = true
			r.peers = append(r.peers, peer)
		}
	}
	r.pin = op == 1
	return nil
}

func (s *Service) topContact(ctx context.Context, c *Caller, r *topContactRequest) (any, error) {
	owner, pin, peers := r.owner, r.pin, r.peers
	now := s.store.Now()
	expire := now.Add(s.cfg.MaxLifeTime)
	err := s.store.UpdateFor(owner, func(tx *store.Tx) error {
		for _, peer := range peers {
			cv, err := tx.Conversation(owner, peer)
			if err != nil {
				return err
			}
			listed := cv != nil && cv.Listed(now.Unix())
			if pin && !listed {
				return Errorf(CodeContactParam, "%s has no conversation with %s to pin (a conversation is listed from its first message until its last one expires)", owner, peer)
			}
			if !listed || cv.Top == pin {
				continue // nothing changes, nothing to tell
			}
			cv.Top = pin
			if err := tx.PutConversation(owner, cv); err != nil {
				return err
			}
			ev := topEvent{Event: "recentcontact_top", From_Account: owner, To_Account: peer, Type: 1, Time: now.Unix()}
			if pin {
				ev.TopFlag = 1
			}
			raw, err := tail(ev)
			if err != nil {
				return err
			}
			if _, err := tx.AppendUntil(owner, raw, expire); err != nil {
				return err
			}
		}
		return nil
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

// msgReadRequest is set_msg_read's: who read (Report_Account) whose
// messages (Peer_Account) up to when (MsgReadTime; 0: now).
type msgReadRequest struct {
	reader, peer string
	readTime     int64
}

func (r *msgReadRequest) decode(s *Service, c *Caller, f fields) (err error) {
	if r.reader, err = s.account(c, f, []string{"Report_Account"}, CodeToAccount, CodeOpenIMNeedsAdmin, CodeToAccount); err != nil {
		return err
	}
	if r.peer, err = s.existing(f, []string{"Peer_Account", "To_Account"}, CodeFromAccount); err != nil {
		return err
	}
	// Documented as a String holding a Unix time; numbers are accepted too.
	if v, present, ok := f.str("MsgReadTime"); present && ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return Errorf(CodeJSON, "MsgReadTime must be a Unix time")
		}
		r.readTime = n
	} else if present {
		n, _, ok := f.integer("MsgReadTime", 0, 1<<40)
		if !ok {
			return Errorf(CodeJSON, "MsgReadTime must be a Unix time")
		}
		r.readTime = n
	} else {
		r.readTime = math.MaxInt64
	}
	return nil
}

func (s *Service) setMsgRead(ctx context.Context, c *Caller, r *msgReadRequest) (any, error) {
	reader, peer := r.reader, r.peer
	now := s.store.Now()
	readTime := min(r.readTime, now.Unix())
	unread, err := s.store.CountAfter(peer, reader, readTime, store.MaxUnread)
	if err != nil {
		return nil, err
	}
	ev, err := tail(readEvent{Event: "read", Report_Account: reader, Peer_Account: peer, MsgReadTime: readTime})
	if err != nil {
		return nil, err
	}
	expire := now.Add(s.cfg.MaxLifeTime)
	err = s.store.UpdateFor(reader, func(tx *store.Tx) error {
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

type unreadRequest struct {
	user  string
	peers []string
	all   bool // no Peer_Account: the total over every conversation
}

func (r *unreadRequest) decode(s *Service, c *Caller, f fields) (err error) {
	if r.user, err = s.account(c, f, []string{"To_Account"}, CodeToAccount, CodeOpenIMNeedsAdmin, CodeToAccount); err != nil {
		return err
	}
	peers, present, ok := f.strings("Peer_Account")
	if !ok {
		return Errorf(CodeJSON, "Peer_Account must be an Array of String")
	}
	if len(peers) > 10 {
		return Errorf(CodeJSON, "Peer_Account holds at most 10 accounts")
	}
	r.peers, r.all = peers, !present
	return nil
}

func (s *Service) unreadNum(ctx context.Context, c *Caller, req *unreadRequest) (any, error) {
	user, peers, present := req.user, req.peers, !req.all
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
