package sdk

import (
	"context"
	"encoding/json"
)

// Typed calls for the relationship, profile and push commands (PROTOCOL §3:
// the REST bodies, acting on myself). Lookups are resent after a timeout;
// changes are sent once, as Request is. A refusal of the whole call, or of
// the first user it names, is an *Error.

// resultItems turns a ResultItem list into the first failure.
type resultItems struct {
	ResultItem []struct {
		To         string `json:"To_Account"`
		ResultCode int
		ResultInfo string
	}
}

func (r *resultItems) err() error {
	for _, it := range r.ResultItem {
		if it.ResultCode != 0 {
			return &Error{Code: it.ResultCode, Info: it.To + ": " + it.ResultInfo}
		}
	}
	return nil
}

// GetProfiles returns the profile fields tags (Tag_Profile_IM_Nick, …; all
// when none) of users, by user.
func (c *Client) GetProfiles(ctx context.Context, users []string, tags ...string) (map[string]map[string]any, error) {
	if len(tags) == 0 {
		tags = []string{"Tag_Profile_IM_Nick", "Tag_Profile_IM_Image", "Tag_Profile_IM_Gender", "Tag_Profile_IM_SelfSignature",
			"Tag_Profile_IM_AllowType", "Tag_Profile_IM_Location", "Tag_Profile_IM_BirthDay", "Tag_Profile_IM_Language"}
	}
	var r struct {
		UserProfileItem []struct {
			To          string `json:"To_Account"`
			ProfileItem []struct {
				Tag   string
				Value any
			}
		}
	}
	if err := c.call(ctx, "profile/portrait_get", map[string]any{"To_Account": users, "TagList": tags}, &r, callOpts{retry: true}); err != nil {
		return nil, err
	}
	out := make(map[string]map[string]any, len(r.UserProfileItem))
	for _, u := range r.UserProfileItem {
		p := map[string]any{}
		for _, it := range u.ProfileItem {
			p[it.Tag] = it.Value
		}
		out[u.To] = p
	}
	return out, nil
}

// SetProfile sets my profile fields (tag → value).
func (c *Client) SetProfile(ctx context.Context, fields map[string]any) error {
	items := make([]map[string]any, 0, len(fields))
	for k, v := range fields {
		items = append(items, map[string]any{"Tag": k, "Value": v})
	}
	return c.call(ctx, "profile/portrait_set", map[string]any{"ProfileItem": items}, nil, callOpts{retry: true})
}

// FriendAdd are the optional fields of AddFriend.
type FriendAdd struct {
	Remark    string
	GroupName string
	// AddSource is AddSource_Type_{letters} (default AddSource_Type_SDK).
	AddSource string
	Wording   string
	// Single adds to my list only (Add_Type_Single).
	Single bool
}

// AddFriend adds user to my friends. pending reports that user must accept
// first (30539: the request is waiting; it comes back as a friend_add
// OnSystemEvent once answered).
func (c *Client) AddFriend(ctx context.Context, user string, o FriendAdd) (pending bool, err error) {
	if o.AddSource == "" {
		o.AddSource = "AddSource_Type_SDK"
	}
	item := map[string]any{"To_Account": user, "AddSource": o.AddSource}
	if o.Remark != "" {
		item["Remark"] = o.Remark
	}
	if o.GroupName != "" {
		item["GroupName"] = o.GroupName
	}
	if o.Wording != "" {
		item["AddWording"] = o.Wording
	}
	body := map[string]any{"AddFriendItem": []any{item}}
	if o.Single {
		body["AddType"] = "Add_Type_Single"
	}
	var r resultItems
	if err := c.call(ctx, "sns/friend_add", body, &r, callOpts{}); err != nil {
		return false, err
	}
	if len(r.ResultItem) > 0 && r.ResultItem[0].ResultCode == 30539 {
		return true, nil
	}
	return false, r.err()
}

// FriendResponse answers a friend request.
type FriendResponse string

const (
	Agree       FriendResponse = "Response_Action_Agree"
	AgreeAndAdd FriendResponse = "Response_Action_AgreeAndAdd"
	Reject      FriendResponse = "Response_Action_Reject"
)

// RespondFriend answers from's friend request.
func (c *Client) RespondFriend(ctx context.Context, from string, action FriendResponse, remark string) error {
	item := map[string]any{"To_Account": from, "ResponseAction": string(action)}
	if remark != "" {
		item["Remark"] = remark
	}
	var r resultItems
	if err := c.call(ctx, "sns/friend_response", map[string]any{"ResponseFriendItem": []any{item}}, &r, callOpts{}); err != nil {
		return err
	}
	return r.err()
}

// DeleteFriends removes users from my friends (both: from theirs too).
func (c *Client) DeleteFriends(ctx context.Context, both bool, users ...string) error {
	t := "Delete_Type_Single"
	if both {
		t = "Delete_Type_Both"
	}
	var r resultItems
	if err := c.call(ctx, "sns/friend_delete", map[string]any{"To_Account": users, "DeleteType": t}, &r, callOpts{}); err != nil {
		return err
	}
	return r.err()
}

// Friend is one entry of my friend list: its tags (Tag_SNS_IM_Remark, …).
type Friend struct {
	UserID string
	Tags   map[string]json.RawMessage
}

// GetFriends returns my whole friend list.
func (c *Client) GetFriends(ctx context.Context) ([]Friend, error) {
	var out []Friend
	start := 0
	for {
		var r struct {
			UserDataItem []struct {
				To        string `json:"To_Account"`
				ValueItem []struct {
					Tag   string
					Value json.RawMessage
				}
			}
			CompleteFlag   int
			NextStartIndex int
		}
		if err := c.call(ctx, "sns/friend_get", map[string]any{"StartIndex": start}, &r, callOpts{retry: true}); err != nil {
			return nil, err
		}
		for _, u := range r.UserDataItem {
			f := Friend{UserID: u.To, Tags: map[string]json.RawMessage{}}
			for _, v := range u.ValueItem {
				f.Tags[v.Tag] = v.Value
			}
			out = append(out, f)
		}
		if r.CompleteFlag != 0 || r.NextStartIndex <= start {
			return out, nil
		}
		start = r.NextStartIndex
	}
}

// CheckFriends returns the relation with each user, checked both ways:
// CheckResult_Type_BothWay, _AWithB (they are in my list only), _BWithA,
// _NoRelation.
func (c *Client) CheckFriends(ctx context.Context, users ...string) (map[string]string, error) {
	var r struct {
		InfoItem []struct {
			To       string `json:"To_Account"`
			Relation string
		}
	}
	if err := c.call(ctx, "sns/friend_check", map[string]any{"To_Account": users, "CheckType": "CheckResult_Type_Both"}, &r, callOpts{retry: true}); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(r.InfoItem))
	for _, it := range r.InfoItem {
		out[it.To] = it.Relation
	}
	return out, nil
}

// AddToBlacklist blocks users (it also ends any friendship with them).
func (c *Client) AddToBlacklist(ctx context.Context, users ...string) error {
	var r resultItems
	if err := c.call(ctx, "sns/black_list_add", map[string]any{"To_Account": users}, &r, callOpts{}); err != nil {
		return err
	}
	return r.err()
}

// RemoveFromBlacklist unblocks users.
func (c *Client) RemoveFromBlacklist(ctx context.Context, users ...string) error {
	var r resultItems
	if err := c.call(ctx, "sns/black_list_delete", map[string]any{"To_Account": users}, &r, callOpts{}); err != nil {
		return err
	}
	return r.err()
}

// GetBlacklist returns the users I blocked.
func (c *Client) GetBlacklist(ctx context.Context) ([]string, error) {
	var out []string
	start, seq := 0, 0
	for {
		var r struct {
			BlackListItem []struct {
				To string `json:"To_Account"`
			}
			StartIndex       int
			CurruentSequence int // sic: Tencent's key
		}
		body := map[string]any{"StartIndex": start, "MaxLimited": 100, "LastSequence": seq}
		if err := c.call(ctx, "sns/black_list_get", body, &r, callOpts{retry: true}); err != nil {
			return nil, err
		}
		for _, it := range r.BlackListItem {
			out = append(out, it.To)
		}
		if r.StartIndex == 0 || r.StartIndex <= start {
			return out, nil
		}
		start, seq = r.StartIndex, r.CurruentSequence
	}
}

// SetPushToken registers this device's offline-push token (docs/push.md):
// vendor apns, fcm, huawei, xiaomi, oppo, vivo or meizu; bundleID for APNs.
func (c *Client) SetPushToken(ctx context.Context, vendor, token, bundleID string) error {
	body := map[string]any{"Vendor": vendor, "Token": token}
	if bundleID != "" {
		body["BundleID"] = bundleID
	}
	return c.call(ctx, "push/set_token", body, nil, callOpts{retry: true})
}

// DeletePushToken removes this device's push token (an app's logout).
func (c *Client) DeletePushToken(ctx context.Context) error {
	return c.call(ctx, "push/delete_token", map[string]any{}, nil, callOpts{retry: true})
}

// ModifyMessage edits a stored message of the conversation from → to
// (openim/modify_c2c_msg; App admins only, e.g. a moderation bot logged in
// as the administrator identity): a non-nil body and/or cloudCustomData
// replace the stored ones, and both users get a modify event (OnModify).
func (c *Client) ModifyMessage(ctx context.Context, from, to, msgKey string, body []Elem, cloudCustomData *string) error {
	req := map[string]any{"From_Account": from, "To_Account": to, "MsgKey": msgKey}
	if body != nil {
		req["MsgBody"] = body
	}
	if cloudCustomData != nil {
		req["CloudCustomData"] = *cloudCustomData
	}
	return c.call(ctx, "openim/modify_c2c_msg", req, nil, callOpts{retry: true})
}
