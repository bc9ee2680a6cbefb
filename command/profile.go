package command

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/duet-im/duet/store"
)

// Profiles (reference §6.2): profile/portrait_set and profile/portrait_get.
// A profile is a set of tags; standard ones have fixed types and values,
// custom ones (Tag_Profile_Custom_<1–8 letters>) are strings. An account's
// Nick and FaceUrl from account import are its Tag_Profile_IM_Nick and
// Tag_Profile_IM_Image until portrait_set sets them.

const (
	tagNick            = "Tag_Profile_IM_Nick"
	tagImage           = "Tag_Profile_IM_Image"
	tagAllowType       = "Tag_Profile_IM_AllowType"
	tagMsgSettings     = "Tag_Profile_IM_MsgSettings"
	tagAdminForbidType = "Tag_Profile_IM_AdminForbidType"
	customTagPrefix    = "Tag_Profile_Custom_"

	allowNeedConfirm = "AllowType_Type_NeedConfirm"
	allowAny         = "AllowType_Type_AllowAny"
	allowDenyAny     = "AllowType_Type_DenyAny"

	forbidSendOut = "AdminForbid_Type_SendOut"

	maxProfileValue = 500 // bytes; 40601 above (§6.2)
	maxCustomTags   = 20  // per user, as the console allows 20 custom fields
	maxPortraitGet  = 100 // To_Account per portrait_get
)

// tagSpec describes a standard tag: a string (with a byte limit or a set of
// values) or an unsigned 32-bit integer.
type tagSpec struct {
	integer   bool
	max       int
	values    []string
	adminOnly bool // set by the app's back-end, never by the user (40008)
	def       any  // what portrait_get returns when unset
}

var standardTags = map[string]tagSpec{
	tagNick:                        {max: maxProfileValue, def: ""},
	tagImage:                       {max: maxProfileValue, def: ""},
	"Tag_Profile_IM_Gender":        {values: []string{"Gender_Type_Unknown", "Gender_Type_Female", "Gender_Type_Male"}, def: "Gender_Type_Unknown"},
	"Tag_Profile_IM_BirthDay":      {integer: true, def: 0},
	"Tag_Profile_IM_Location":      {max: 16, def: ""},
	"Tag_Profile_IM_SelfSignature": {max: maxProfileValue, def: ""},
	tagAllowType:                   {values: []string{allowNeedConfirm, allowAny, allowDenyAny}, def: allowNeedConfirm},
	"Tag_Profile_IM_Language":      {integer: true, def: 0},
	tagMsgSettings:                 {integer: true, def: 0},
	tagAdminForbidType:             {values: []string{"AdminForbid_Type_None", forbidSendOut}, adminOnly: true, def: "AdminForbid_Type_None"},
	"Tag_Profile_IM_Level":         {integer: true, adminOnly: true, def: 0},
	"Tag_Profile_IM_Role":          {integer: true, adminOnly: true, def: 0},
}

// customTag reports whether tag is a well-formed custom profile tag.
func customTag(tag string) bool { return prefixedLetters(tag, customTagPrefix) }

// prefixedLetters reports whether s is prefix followed by 1–8 ASCII
// letters (custom profile tags, AddSource).
func prefixedLetters(s, prefix string) bool {
	name, ok := cutPrefix(s, prefix)
	if !ok || len(name) == 0 || len(name) > 8 {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):], true
	}
	return s, false
}

// checkProfileValue validates one tag's value; it returns the value to store.
func checkProfileValue(c *Caller, tag string, raw json.RawMessage) (json.RawMessage, *Error) {
	spec, std := standardTags[tag]
	if !std {
		if !customTag(tag) {
			return nil, Errorf(CodeProfileUnknownTag, "unknown profile tag %q (standard Tag_Profile_IM_* or Tag_Profile_Custom_<1-8 letters>)", tag)
		}
		spec = tagSpec{max: maxProfileValue}
	}
	if spec.adminOnly && !c.Admin {
		return nil, Errorf(CodeProfileNoWrite, "%s is set by the App admin only", tag)
	}
	if spec.integer {
		var n json.Number
		if len(raw) == 0 || raw[0] == '"' || json.Unmarshal(raw, &n) != nil {
			return nil, Errorf(CodeProfileTypeMismatch, "%s takes an unsigned Integer", tag)
		}
		v, err := strconv.ParseUint(n.String(), 10, 32)
		if err != nil {
			return nil, Errorf(CodeProfileBadValue, "%s must be an Integer from 0 to 4294967295, not %s", tag, n)
		}
		return json.RawMessage(strconv.FormatUint(v, 10)), nil
	}
	var v string
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, Errorf(CodeProfileTypeMismatch, "%s takes a String", tag)
	}
	if spec.values != nil {
		for _, ok := range spec.values {
			if v == ok {
				b, _ := marshal(v)
				return b, nil
			}
		}
		return nil, Errorf(CodeProfileBadValue, "%s must be one of %v, not %q", tag, spec.values, v)
	}
	if len(v) > spec.max {
		if spec.max == maxProfileValue {
			return nil, Errorf(CodeProfileTooLong, "%s is %d bytes; the limit is %d", tag, len(v), spec.max)
		}
		return nil, Errorf(CodeProfileBadValue, "%s is %d bytes; the limit is %d", tag, len(v), spec.max)
	}
	b, _ := marshal(v)
	return b, nil
}

// profileItem is one {Tag, Value} pair.
type profileItem struct {
	Tag   string          `json:"Tag"`
	Value json.RawMessage `json:"Value"`
}

// snsReply carries ErrorDisplay, which profile/sns replies always have.
type snsReply struct {
	ErrorDisplay string `json:"ErrorDisplay"`
}

// actor resolves whom a profile or sns request acts for: From_Account,
// implied by the login when absent (PROTOCOL §3). Only admins act for
// others; the code is the service's "needs admin" (§1.4).
func (s *Service) actor(c *Caller, f fields, badCode, adminCode, noUserCode int) (string, error) {
	from, present, ok := f.str("From_Account")
	if !ok {
		return "", Errorf(badCode, "From_Account is not a String")
	}
	if !present || from == "" {
		if c.Transport == REST {
			return "", Errorf(badCode, "From_Account is missing")
		}
		from = c.UserID
	}
	if from != c.UserID && !c.Admin {
		return "", Errorf(adminCode, "only an App admin may act for another user (From_Account %q, login %q)", from, c.UserID)
	}
	if err := s.mustExist(from, noUserCode, "From_Account"); err != nil {
		return "", err
	}
	return from, nil
}

// mustExist refuses an ill-formed or unknown UserID with code.
func (s *Service) mustExist(user string, code int, field string) error {
	if !ValidUserID(user) {
		return Errorf(code, "%s %q is not a valid UserID", field, user)
	}
	ok, err := s.store.AccountExists(user)
	if err != nil {
		return err
	}
	if !ok {
		return Errorf(code, "%s %q does not exist", field, user)
	}
	return nil
}

// profileChangeEvent tells a user and everyone who has them as a friend
// that their profile changed (docs/events.md).
type profileChangeEvent struct {
	Event       string        `json:"Event"`
	From        string        `json:"From_Account"`
	ProfileItem []profileItem `json:"ProfileItem"`
	Time        int64         `json:"Time"`
}

// portraitSetRequest is portrait_set's: the user and their new tags, each
// once (the last value of a repeated tag, in first-seen order).
type portraitSetRequest struct {
	user  string
	items []profileItem
	set   map[string]json.RawMessage
}

func (r *portraitSetRequest) decode(s *Service, c *Caller, f fields) (err error) {
	if r.user, err = s.actor(c, f, CodeProfileParam, CodeProfileNeedsAdmin, CodeProfileNoUser); err != nil {
		return err
	}
	var raw []struct {
		Tag   *string         `json:"Tag"`
		Value json.RawMessage `json:"Value"`
	}
	if !f.has("ProfileItem") || json.Unmarshal(f["ProfileItem"], &raw) != nil || len(raw) == 0 {
		return Errorf(CodeProfileParam, "ProfileItem must be a non-empty Array of {Tag, Value}")
	}
	r.set = make(map[string]json.RawMessage, len(raw))
	for i, it := range raw {
		if it.Tag == nil || len(it.Value) == 0 || string(it.Value) == "null" {
			return Errorf(CodeProfileParam, "ProfileItem[%d] needs a Tag and a Value", i)
		}
		v, e := checkProfileValue(c, *it.Tag, it.Value)
		if e != nil {
			return e
		}
		if _, dup := r.set[*it.Tag]; !dup {
			r.items = append(r.items, profileItem{Tag: *it.Tag})
		}
		r.set[*it.Tag] = v
	}
	for i := range r.items {
		r.items[i].Value = r.set[r.items[i].Tag]
	}
	return nil
}

func (s *Service) portraitSet(ctx context.Context, c *Caller, r *portraitSetRequest) (any, error) {
	user, items, set := r.user, r.items, r.set
	touchesPolicy := set[tagMsgSettings] != nil

	var noChange bool
	err := s.store.UpdateFor(user, func(tx *store.Tx) error {
		p, err := tx.GetProfile(user)
		if err != nil {
			return err
		}
		if p == nil {
			p = &store.Profile{Tags: map[string]json.RawMessage{}}
		}
		custom := 0
		for tag := range p.Tags {
			if !isStandard(tag) {
				custom++
			}
		}
		changed := false
		for _, it := range items {
			old, had := p.Tags[it.Tag]
			if !had && !isStandard(it.Tag) {
				if custom++; custom > maxCustomTags {
					return Errorf(CodeProfileParam, "a user has at most %d custom profile tags", maxCustomTags)
				}
			}
			if !had || string(old) != string(it.Value) {
				p.Tags[it.Tag] = it.Value
				changed = true
			}
		}
		if !changed {
			noChange = true
			return nil
		}
		p.V++
		if err := tx.PutProfile(user, p); err != nil {
			return err
		}
		fans, err := tx.FriendedBy(user)
		if err != nil {
			return err
		}
		ev := profileChangeEvent{Event: "profile_change", From: user, ProfileItem: items, Time: tx.Now().Unix()}
		return s.notify(tx, ev, append([]string{user}, fans...)...)
	})
	if err != nil {
		return nil, storeErr(err)
	}
	if !noChange {
		// The next message reads the committed profile again.
		s.ForgetProfile(user)
		if touchesPolicy {
			s.rel.drop(user)
		}
	}
	return snsReply{}, nil
}

func isStandard(tag string) bool { _, ok := standardTags[tag]; return ok }

// storeErr turns a failed Update into the reply's error: a command's own
// *Error passes through; a shutting-down store asks for a retry.
func storeErr(err error) error {
	var ce *Error
	if errors.As(err, &ce) {
		return ce
	}
	if errors.Is(err, store.ErrClosed) {
		return errShuttingDown()
	}
	return err
}

// userProfileItem is one user's answer in portrait_get.
type userProfileItem struct {
	To          string        `json:"To_Account"`
	ProfileItem []profileItem `json:"ProfileItem"`
	ResultCode  int           `json:"ResultCode"`
	ResultInfo  string        `json:"ResultInfo"`
}

type portraitGetResult struct {
	UserProfileItem []userProfileItem `json:"UserProfileItem"`
	FailAccount     []string          `json:"Fail_Account,omitempty"`
	ErrorDisplay    string            `json:"ErrorDisplay"`
}

type portraitGetRequest struct {
	users, tags []string
}

func (r *portraitGetRequest) decode(s *Service, c *Caller, f fields) error {
	users, _, ok := f.strings("To_Account")
	if !ok {
		return Errorf(CodeProfileParam, "To_Account must be an Array of String")
	}
	if len(users) == 0 {
		return Errorf(CodeProfileNoTarget, "To_Account is missing or empty")
	}
	if len(users) > maxPortraitGet {
		return Errorf(CodeProfileParam, "To_Account has %d entries; the limit is %d", len(users), maxPortraitGet)
	}
	tags, present, ok := f.strings("TagList")
	if !ok || !present || len(tags) == 0 {
		return Errorf(CodeProfileParam, "TagList must be a non-empty Array of String")
	}
	for _, t := range tags {
		if !isStandard(t) && !customTag(t) {
			return Errorf(CodeProfileUnknownTag, "unknown profile tag %q in TagList", t)
		}
	}
	r.users, r.tags = users, tags
	return nil
}

func (s *Service) portraitGet(ctx context.Context, c *Caller, r *portraitGetRequest) (any, error) {
	users, tags := r.users, r.tags
	res := portraitGetResult{UserProfileItem: []userProfileItem{}}
	for _, u := range users {
		item := userProfileItem{To: u, ProfileItem: []profileItem{}}
		if e := s.mustExist(u, CodeProfileNoUser, "To_Account"); e != nil {
			var ce *Error
			if !errors.As(e, &ce) {
				return nil, e
			}
			item.ResultCode, item.ResultInfo = ce.Code, ce.Info
			res.FailAccount = append(res.FailAccount, u)
			res.UserProfileItem = append(res.UserProfileItem, item)
			continue
		}
		all, err := s.profileTags(u)
		if err != nil {
			return nil, err
		}
		for _, t := range tags {
			v, ok := all[t]
			if !ok {
				spec, std := standardTags[t]
				if !std {
					continue // unset custom tags are left out
				}
				v, _ = marshal(spec.def)
			}
			item.ProfileItem = append(item.ProfileItem, profileItem{Tag: t, Value: v})
		}
		res.UserProfileItem = append(res.UserProfileItem, item)
	}
	return res, nil
}

// profileTags is user's stored profile with the account's Nick and FaceUrl
// standing in for unset Nick and Image.
func (s *Service) profileTags(user string) (map[string]json.RawMessage, error) {
	p, err := s.store.GetProfile(user)
	if err != nil {
		return nil, err
	}
	out := map[string]json.RawMessage{}
	if p != nil {
		for k, v := range p.Tags {
			out[k] = v
		}
	}
	if out[tagNick] == nil || out[tagImage] == nil {
		a, err := s.store.GetAccount(user)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		if a != nil {
			if out[tagNick] == nil && a.Nick != "" {
				out[tagNick], _ = marshal(a.Nick)
			}
			if out[tagImage] == nil && a.FaceURL != "" {
				out[tagImage], _ = marshal(a.FaceURL)
			}
		}
	}
	return out, nil
}

// loadSenderProfile is the SenderProfile of user's messages (nick and
// avatar, PROTOCOL §4), read from the store; senderProfile caches it.
func (s *Service) loadSenderProfile(user string) (json.RawMessage, error) {
	p, err := s.store.GetProfile(user)
	if err != nil {
		return nil, err
	}
	return s.senderProfileOf(user, p)
}

func (s *Service) senderProfileOf(user string, p *store.Profile) (json.RawMessage, error) {
	tags := map[string]json.RawMessage{}
	set := map[string]bool{}
	if p != nil {
		for _, t := range []string{tagNick, tagImage} {
			if v, ok := p.Tags[t]; ok {
				set[t] = true // an empty value hides the account's
				if string(v) != `""` {
					tags[t] = v
				}
			}
		}
	}
	if !set[tagNick] || !set[tagImage] {
		a, err := s.store.GetAccount(user)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		if a != nil {
			if !set[tagNick] && a.Nick != "" {
				tags[tagNick], _ = marshal(a.Nick)
			}
			if !set[tagImage] && a.FaceURL != "" {
				tags[tagImage], _ = marshal(a.FaceURL)
			}
		}
	}
	// Every msg carries both, empty when unset, so clients need no
	// look-up to tell "no nick" from "not sent".
	for _, t := range []string{tagNick, tagImage} {
		if tags[t] == nil {
			tags[t] = json.RawMessage(`""`)
		}
	}
	return marshal(tags)
}
