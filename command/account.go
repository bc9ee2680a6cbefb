package command

import (
	"context"
	"encoding/json"

	"github.com/duet-im/duet/store"
)

// Account administration (`im_open_login_svc`, reference §6.1) and online
// state (`openim/querystate`, `openim/query_online_status`, §5.9).

// Kicker disconnects every device of a user (the broker's Devices).
type Kicker interface {
	Kick(user string)
}

// Presence tells how many devices of a user are connected (the broker's
// Devices).
type Presence interface {
	Online(user string) int
}

const (
	maxAccountBatch = 100 // multiaccount_import, account_delete, account_check
	maxStateQuery   = 500 // querystate, query_online_status
	maxAccountValue = 500 // Nick, FaceUrl (40601 above it)
)

func (s *Service) registerAccounts() {
	// Only an admin may call im_open_login_svc (70403).
	account := adminOnly(CodeAccountNeedsAdmin, "im_open_login_svc needs an App admin identifier")
	handle(s, "im_open_login_svc/account_import", CodeAccountParam, account, s.accountImport)
	handle(s, "im_open_login_svc/multiaccount_import", CodeAccountParam, account, s.multiAccountImport)
	handle(s, "im_open_login_svc/account_delete", CodeAccountParam, account, s.accountDelete)
	handle(s, "im_open_login_svc/account_check", CodeAccountParam, account, s.accountCheck)
	handle(s, "im_open_login_svc/kick", CodeAccountParam, account, s.kick)
	state := adminOnly(CodeOpenIMNeedsAdmin, "online state queries need an App admin identifier")
	handle(s, "openim/querystate", CodeJSON, state, s.queryState)
	handle(s, "openim/query_online_status", CodeJSON, state, s.queryOnlineStatus)
}

// userIDField reads the account named by `UserID` or its older spelling
// `Identifier` (both are in use, §6.1).
func userIDField(f fields) (string, error) {
	for _, name := range []string{"UserID", "Identifier"} {
		v, present, ok := f.str(name)
		if !ok {
			return "", Errorf(CodeAccountParam, "%s must be a String", name)
		}
		if present {
			if !ValidUserID(v) {
				return "", Errorf(CodeAccountParam, "%s %q is not a valid UserID (1-32 bytes of A-Z a-z 0-9 _ - @ .)", name, v)
			}
			return v, nil
		}
	}
	return "", Errorf(CodeAccountParam, "UserID is missing")
}

// profileFields reads the optional Nick and FaceUrl of an account item.
func profileFields(f fields, u *store.AccountUpdate) error {
	for _, p := range []struct {
		name string
		dst  **string
	}{{"Nick", &u.Nick}, {"FaceUrl", &u.FaceURL}} {
		v, present, ok := f.str(p.name)
		if !ok {
			return Errorf(CodeAccountParam, "%s must be a String", p.name)
		}
		if !present {
			continue
		}
		if len(v) > maxAccountValue {
			return Errorf(CodeProfileTooLong, "%s is %d bytes; the limit is %d", p.name, len(v), maxAccountValue)
		}
		*p.dst = &v
	}
	return nil
}

func (s *Service) importAccounts(items []store.AccountUpdate) error {
	if _, err := s.store.ImportAccounts(items); err != nil {
		return err
	}
	for _, it := range items {
		s.ForgetProfile(it.UserID)
	}
	return nil
}

// accountUser is a request on one account, UserID (or Identifier).
type accountUser struct{ id string }

func (r *accountUser) decode(s *Service, c *Caller, f fields) (err error) {
	r.id, err = userIDField(f)
	return err
}

// accountImportRequest is account_import's: the account and its Nick and
// FaceUrl.
type accountImportRequest struct{ u store.AccountUpdate }

func (r *accountImportRequest) decode(s *Service, c *Caller, f fields) error {
	id, err := userIDField(f)
	if err != nil {
		return err
	}
	r.u = store.AccountUpdate{UserID: id}
	return profileFields(f, &r.u)
}

func (s *Service) accountImport(ctx context.Context, c *Caller, r *accountImportRequest) (any, error) {
	return nil, s.importAccounts([]store.AccountUpdate{r.u})
}

// MultiImportResult is the reply to multiaccount_import.
type MultiImportResult struct {
	FailAccounts []string `json:"FailAccounts"`
}

// multiAccountImport takes `{"Accounts":["u1",…]}` (older form) or
// `{"AccountList":[{"UserID","Nick","FaceUrl"},…]}` (newer). Invalid
// UserIDs are reported in FailAccounts; the rest are imported.
type multiImportRequest struct {
	items []store.AccountUpdate
	fail  []string // invalid UserIDs
}

func (r *multiImportRequest) decode(s *Service, c *Caller, f fields) error {
	r.fail = []string{}
	switch {
	case f.has("Accounts"):
		ids, _, ok := f.strings("Accounts")
		if !ok {
			return Errorf(CodeAccountParam, "Accounts must be an Array of String")
		}
		if err := batchSize("Accounts", len(ids)); err != nil {
			return err
		}
		for _, id := range ids {
			if !ValidUserID(id) {
				r.fail = append(r.fail, id)
				continue
			}
			r.items = append(r.items, store.AccountUpdate{UserID: id})
		}
	case f.has("AccountList"):
		var list []fields
		if err := json.Unmarshal(f["AccountList"], &list); err != nil {
			return Errorf(CodeAccountParam, "AccountList must be an Array of objects")
		}
		if err := batchSize("AccountList", len(list)); err != nil {
			return err
		}
		for i, it := range list {
			if it == nil {
				return Errorf(CodeAccountParam, "AccountList[%d] must be an object", i)
			}
			id, err := userIDField(it)
			if err != nil {
				raw, _, _ := it.str("UserID")
				r.fail = append(r.fail, raw)
				continue
			}
			u := store.AccountUpdate{UserID: id}
			if err := profileFields(it, &u); err != nil {
				return err
			}
			r.items = append(r.items, u)
		}
	default:
		return Errorf(CodeAccountParam, "Accounts (or AccountList) is missing")
	}
	return nil
}

func (s *Service) multiAccountImport(ctx context.Context, c *Caller, r *multiImportRequest) (any, error) {
	if len(r.items) > 0 {
		if err := s.importAccounts(r.items); err != nil {
			return nil, err
		}
	}
	return MultiImportResult{FailAccounts: r.fail}, nil
}

func batchSize(name string, n int) error {
	if n == 0 {
		return Errorf(CodeAccountParam, "%s is empty", name)
	}
	if n > maxAccountBatch {
		return Errorf(CodeAccountParam, "%s has %d accounts; at most %d per call", name, n, maxAccountBatch)
	}
	return nil
}

// itemIDs reads `{"<list>":[{"UserID":…},…]}` (account_delete's DeleteItem,
// account_check's CheckItem).
func itemIDs(f fields, list string) ([]string, error) {
	if !f.has(list) {
		return nil, Errorf(CodeAccountParam, "%s is missing", list)
	}
	var items []fields
	if err := json.Unmarshal(f[list], &items); err != nil {
		return nil, Errorf(CodeAccountParam, "%s must be an Array of {\"UserID\":String}", list)
	}
	if err := batchSize(list, len(items)); err != nil {
		return nil, err
	}
	ids := make([]string, len(items))
	for i, it := range items {
		v, present, ok := it.str("UserID")
		if it == nil || !present || !ok {
			return nil, Errorf(CodeAccountParam, "%s[%d].UserID must be a String", list, i)
		}
		ids[i] = v
	}
	return ids, nil
}

// AccountResult is one item of account_delete's and account_check's
// ResultItem.
type AccountResult struct {
	UserID        string `json:"UserID"`
	ResultCode    int    `json:"ResultCode"`
	ResultInfo    string `json:"ResultInfo"`
	AccountStatus string `json:"AccountStatus,omitempty"`
}

// AccountResults is the reply to account_delete and account_check.
type AccountResults struct {
	ResultItem []AccountResult `json:"ResultItem"`
}

const accountNotExist = "Err_TLS_PT_Open_Login_Account_Not_Exist"

// accountDelete removes accounts so their logins fail from then on, and
// disconnects their devices.
// deleteItems is account_delete's DeleteItem list.
type deleteItems struct{ ids []string }

func (r *deleteItems) decode(s *Service, c *Caller, f fields) (err error) {
	r.ids, err = itemIDs(f, "DeleteItem")
	return err
}

func (s *Service) accountDelete(ctx context.Context, c *Caller, r *deleteItems) (any, error) {
	ids := r.ids
	res := AccountResults{ResultItem: make([]AccountResult, len(ids))}
	var valid []string
	for i, id := range ids {
		res.ResultItem[i].UserID = id
		if !ValidUserID(id) {
			res.ResultItem[i].ResultCode, res.ResultItem[i].ResultInfo = CodeAccountParam, "invalid UserID"
			continue
		}
		valid = append(valid, id)
	}
	// Reference §6.1: deleting an account also wipes its relationships and
	// profile, in the same transaction.
	var gone, changed []string
	existed, err := s.store.DeleteAccounts(valid, func(tx *store.Tx, deleted []string) error {
		gone = deleted
		var err error
		changed, err = wipeRelations(tx, deleted)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.relationsForgotten(gone, changed)
	// existed[j] of an account other than the home (valid[0]) is what the
	// home's transaction saw of it: exact at P = 1, with partitions a view
	// of its partition (docs/cluster.md §11.2).
	j := 0
	for i := range res.ResultItem {
		if res.ResultItem[i].ResultCode != 0 {
			continue
		}
		if !existed[j] {
			res.ResultItem[i].ResultCode, res.ResultItem[i].ResultInfo = CodeAccountNotExist, accountNotExist
		} else {
			s.ForgetProfile(valid[j])
			if s.kicker != nil {
				s.kicker.Kick(valid[j])
			}
		}
		j++
	}
	return res, nil
}

// checkItems is account_check's CheckItem list.
type checkItems struct{ ids []string }

func (r *checkItems) decode(s *Service, c *Caller, f fields) (err error) {
	r.ids, err = itemIDs(f, "CheckItem")
	return err
}

func (s *Service) accountCheck(ctx context.Context, c *Caller, r *checkItems) (any, error) {
	res := AccountResults{ResultItem: make([]AccountResult, len(r.ids))}
	for i, id := range r.ids {
		r := &res.ResultItem[i]
		r.UserID, r.AccountStatus = id, "NotImported"
		if !ValidUserID(id) {
			r.ResultCode, r.ResultInfo = CodeAccountParam, "invalid UserID"
			continue
		}
		exists, err := s.store.AccountExists(id)
		if err != nil {
			return nil, err
		}
		if exists {
			r.AccountStatus = "Imported"
		}
	}
	return res, nil
}

// kick invalidates every UserSig of the user issued up to now (a freshly
// generated one works, §6.1) and disconnects the user's devices. The kick
// time is stored before the devices are dropped, so a device reconnecting
// at once with its old sig is refused.
func (s *Service) kick(ctx context.Context, c *Caller, r *accountUser) (any, error) {
	id := r.id
	if exists, err := s.store.AccountExists(id); err != nil {
		return nil, err
	} else if !exists {
		return nil, Errorf(CodeAccountNotExist, "UserID %q does not exist", id)
	}
	if _, err := s.store.Kick(id); err != nil {
		return nil, err
	}
	if s.kicker != nil {
		s.kicker.Kick(id)
	}
	return nil, nil
}

// ---- online state ----

// StateItem is one entry of QueryResult. querystate names the field State,
// query_online_status names it Status (§5.9).
type StateItem struct {
	To     string        `json:"To_Account"`
	State  string        `json:"State,omitempty"`
	Status string        `json:"Status,omitempty"`
	Detail []StateDetail `json:"Detail,omitzero"` // omitzero: an empty list is still sent
}

// StateDetail is one device of a user. MQTT devices do not declare their
// platform, so it is "Unknown".
type StateDetail struct {
	Platform string `json:"Platform"`
	Status   string `json:"Status"`
}

// AccountError is one entry of an openim ErrorList.
type AccountError struct {
	To        string `json:"To_Account"`
	ErrorCode int    `json:"ErrorCode"`
}

// StateResult is the reply to querystate and query_online_status.
type StateResult struct {
	QueryResult []StateItem    `json:"QueryResult"`
	ErrorList   []AccountError `json:"ErrorList,omitempty"`
}

// stateRequest is querystate's and query_online_status's body.
type stateRequest struct {
	ids    []string
	detail bool
}

func (r *stateRequest) decode(s *Service, c *Caller, f fields) error {
	ids, present, ok := f.strings("To_Account")
	switch {
	case !present:
		return Errorf(CodeToAccount, "To_Account is missing")
	case !ok:
		return Errorf(CodeToAccount, "To_Account must be an Array of String")
	case len(ids) == 0:
		return Errorf(CodeJSON, "To_Account is empty")
	case len(ids) > maxStateQuery:
		return Errorf(CodeTooManyRecipients, "To_Account has %d accounts; at most %d per call", len(ids), maxStateQuery)
	}
	detail, _, ok := f.integer("IsNeedDetail", 0, 1)
	if !ok {
		return Errorf(CodeJSON, "IsNeedDetail must be 0 or 1")
	}
	r.ids, r.detail = ids, detail == 1
	return nil
}

func (s *Service) queryState(ctx context.Context, c *Caller, r *stateRequest) (any, error) {
	return s.onlineState(r, false)
}

func (s *Service) queryOnlineStatus(ctx context.Context, c *Caller, r *stateRequest) (any, error) {
	return s.onlineState(r, true)
}

// onlineState answers both spellings of the query. A user is Online while
// any device is connected; PushOnline is not reported because Duet keeps no
// push-online state of its own.
func (s *Service) onlineState(r *stateRequest, current bool) (any, error) {
	ids, detail := r.ids, r.detail
	res := StateResult{QueryResult: []StateItem{}}
	for _, id := range ids {
		exists := false
		if ValidUserID(id) {
			var err error
			if exists, err = s.store.AccountExists(id); err != nil {
				return nil, err
			}
		}
		if !exists {
			res.ErrorList = append(res.ErrorList, AccountError{To: id, ErrorCode: CodeAccountNotExist})
			continue
		}
		n := 0
		if s.presence != nil {
			n = s.presence.Online(id)
		}
		state := "Offline"
		if n > 0 {
			state = "Online"
		}
		it := StateItem{To: id}
		if !current {
			it.State = state
		} else {
			it.Status = state
			if detail {
				it.Detail = []StateDetail{}
				for range n {
					it.Detail = append(it.Detail, StateDetail{Platform: "Unknown", Status: "Online"})
				}
			}
		}
		res.QueryResult = append(res.QueryResult, it)
	}
	return res, nil
}
