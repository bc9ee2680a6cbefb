package command

import (
	"context"
	"sort"
	"unicode/utf8"
)

// A command's home (docs/cluster.md §11.1, §12.1): the user whose partition
// its transaction commits in, and whether it writes at all. With
// partitions, the cluster's router runs a write on the owner of its home's
// partition and a read where it arrives (§12.1; with one partition it does
// not ask yet); every handler passes the same home to Store.UpdateFor. This
// file is the one place that says, per command, which user that is;
// TestHome holds every registered command to it, and to the homes its
// handler really passes (store.TraceHomes).

// reads are the commands that never call Store.Update… (directly or through
// a store method that does, such as ImportAccounts or Kick). Every other
// command counts as a write, so one added without a thought is routed to
// its home's owner: correct, if not the fastest.
var reads = map[string]bool{
	"recentcontact/get_list":          true,
	"openim/get_c2c_unread_msg_num":   true,
	"openim/getmsg":                   true,
	"openim/admin_getroammsg":         true,
	"openim/sync":                     true, // device-bound: replays this connection's timeline
	"openim/typing":                   true, // live only, never stored
	"openim/querystate":               true,
	"openim/query_online_status":      true,
	"im_open_login_svc/account_check": true,
	"profile/portrait_get":            true,
	"sns/friend_check":                true,
	"sns/friend_get":                  true,
	"sns/friend_get_list":             true,
	"sns/group_get":                   true,
	"sns/friend_request_get":          true,
	"sns/black_list_get":              true,
	"sns/black_list_check":            true,
	"openconfigsvr/getnospeaking":     true,
}

// homer is a typed request that names its home. A request without a home
// method acts for its caller: its home is c.UserID.
type homer interface {
	home(c *Caller) string
}

// requestHome decodes f into r, as the command's handler would, and
// returns r's home; c.UserID when the request does not decode (the handler
// refuses it then, writing nothing).
func requestHome(s *Service, c *Caller, f fields, r request) string {
	if r.decode(s, c, f) != nil {
		return c.UserID
	}
	if h, ok := r.(homer); ok {
		if u := h.home(c); u != "" {
			return u
		}
	}
	return c.UserID
}

// RegisterHome is Register with the command's home rule: home (nil: the
// caller) names the user whose partition its transaction commits in, for
// caller c and the request body; write says whether it calls
// Store.Update….
func (s *Service) RegisterHome(name string, h Handler, write bool, home func(c *Caller, body []byte) string) {
	rt := route{run: func(ctx context.Context, c *Caller, _ fields, body []byte, _ string) (any, error) {
		return h(ctx, c, body)
	}, write: write}
	if home != nil {
		rt.home = func(c *Caller, _ fields, body []byte) string { return home(c, body) }
	}
	s.routes[name] = rt
}

// Home returns the user whose partition command name's transaction commits
// in, for caller c and the request body, and whether the command writes
// (calls Store.Update…). It is a function of the request: the caller for a
// user's own command; From_Account for an admin's send as another user
// (batchsendmsg: its one From_Account, or the admin itself for a system
// message); the first account an admin account command names; the user an
// admin's sns, profile, conversation or mute command acts for. The handler
// passes the same user to Store.UpdateFor.
//
// It decodes the body as Exec does, so it reads the store where a decoder
// does (whether the named accounts exist, media elements' uploads): a
// request that does not decode here gets the caller, and its handler
// refuses it. An unknown command is a read of the caller (Exec answers it
// at once).
func (s *Service) Home(c *Caller, name string, body []byte) (user string, write bool) {
	rt, known := s.routes[name]
	if !known {
		return c.UserID, false
	}
	if rt.home == nil || !utf8.Valid(body) || (rt.gate != nil && rt.gate(c) != nil) {
		return c.UserID, rt.write
	}
	var f fields
	if rt.code != 0 {
		var err error
		if f, _, err = decodeObject(body); err != nil {
			return c.UserID, rt.write
		}
	}
	if u := rt.home(c, f, body); u != "" {
		return u, rt.write
	}
	return c.UserID, rt.write
}

// Commands lists the registered command names, sorted.
func (s *Service) Commands() []string {
	names := make([]string, 0, len(s.routes))
	for n := range s.routes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ---- the typed requests' homes ----

// A user's own send, or an admin's as From_Account; an admin's system
// message (no From_Account) commits in the admin's partition: the sender's
// side of a message is always its home (sendMsg's from).
func (r *sendRequest) home(c *Caller) string {
	if c.Admin && r.From != "" {
		return r.From
	}
	return c.UserID
}

// Every copy of a batch is the one sendmsg request, to another recipient:
// all commit in the sender's partition.
func (r *batchRequest) home(c *Caller) string { return r.msg.home(c) }

func (r *importRequest) home(*Caller) string        { return r.from }
func (r *withdrawRequest) home(*Caller) string      { return r.me }
func (r *modifyRequest) home(*Caller) string        { return r.from }
func (r *msgReadRequest) home(*Caller) string       { return r.reader }
func (r *contactOwner) home(*Caller) string         { return r.owner }
func (r *unreadRequest) home(*Caller) string        { return r.user }
func (r *historyQuery) home(*Caller) string         { return r.reader }
func (r *snsRequest) home(*Caller) string           { return r.from }
func (r *portraitSetRequest) home(*Caller) string   { return r.user }
func (r *setMuteRequest) home(*Caller) string       { return r.user }
func (r *getMuteRequest) home(*Caller) string       { return r.user }
func (r *accountUser) home(*Caller) string          { return r.id }
func (r *accountImportRequest) home(*Caller) string { return r.u.UserID }

// The first account imported (invalid UserIDs are only reported).
func (r *multiImportRequest) home(c *Caller) string {
	if len(r.items) == 0 {
		return c.UserID
	}
	return r.items[0].UserID
}

// The first account deleted: invalid UserIDs are only reported.
func (r *deleteItems) home(c *Caller) string {
	for _, id := range r.ids {
		if ValidUserID(id) {
			return id
		}
	}
	return c.UserID
}
