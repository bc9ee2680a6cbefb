package sdk

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"
)

// Issue 18 §4: typed calls for profile, friends, blacklist and push token.
func TestTypedCalls(t *testing.T) {
	s := startServer(t)
	s.users("alice", "bob", "carol")
	ctx := ctxT(t)
	a := s.login(t, "alice", "phone", "", MQTT5)

	if err := a.SetProfile(ctx, map[string]any{"Tag_Profile_IM_Nick": "Alice"}); err != nil {
		t.Fatal(err)
	}
	p, err := a.GetProfiles(ctx, []string{"alice"}, "Tag_Profile_IM_Nick")
	if err != nil || p["alice"]["Tag_Profile_IM_Nick"] != "Alice" {
		t.Fatalf("GetProfiles: %v %v", p, err)
	}

	// Bob's profile asks to confirm (the default AllowType): the request
	// waits for his answer.
	if pending, err := a.AddFriend(ctx, "bob", FriendAdd{Remark: "Bobby"}); err != nil || !pending {
		t.Fatalf("AddFriend: pending %v, %v", pending, err)
	}
	b := s.login(t, "bob", "phone", "", MQTT5)
	if err := b.RespondFriend(ctx, "alice", AgreeAndAdd, ""); err != nil {
		t.Fatal(err)
	}
	rel, err := a.CheckFriends(ctx, "bob", "carol")
	if err != nil || rel["bob"] != "CheckResult_Type_BothWay" || rel["carol"] != "CheckResult_Type_NoRelation" {
		t.Fatalf("CheckFriends: %v %v", rel, err)
	}
	fs, err := a.GetFriends(ctx)
	if err != nil || len(fs) != 1 || fs[0].UserID != "bob" || string(fs[0].Tags["Tag_SNS_IM_Remark"]) != `"Bobby"` {
		t.Fatalf("GetFriends: %+v %v", fs, err)
	}
	if err := a.DeleteFriends(ctx, true, "bob"); err != nil {
		t.Fatal(err)
	}
	var e *Error
	if err := a.DeleteFriends(ctx, true, "bob"); !errors.As(err, &e) {
		t.Fatalf("deleting a friend twice: %v, want the server's code", err)
	}

	if err := a.AddToBlacklist(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	if bl, err := a.GetBlacklist(ctx); err != nil || !reflect.DeepEqual(bl, []string{"carol"}) {
		t.Fatalf("GetBlacklist: %v %v", bl, err)
	}
	if err := a.RemoveFromBlacklist(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	if bl, err := a.GetBlacklist(ctx); err != nil || len(bl) != 0 {
		t.Fatalf("GetBlacklist after removal: %v %v", bl, err)
	}

	if err := a.SetPushToken(ctx, "fcm", "token-of-alice-phone", ""); err != nil {
		t.Fatal(err)
	}
	if err := a.DeletePushToken(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.SetPushToken(ctx, "nokia", "x", ""); !errors.As(err, &e) || e.Code != 90001 {
		t.Fatalf("unknown vendor: %v, want 90001", err)
	}
}

// Issue 18 §4: an admin identity edits a message with a typed call; both
// users hear of it, a user may not.
func TestModifyMessage(t *testing.T) {
	s := startServer(t)
	s.users("alice", "bob", "administrator")
	ctx := ctxT(t)
	a := s.login(t, "alice", "phone", "", MQTT5)
	b := s.login(t, "bob", "phone", "", MQTT5)
	admin := s.login(t, "administrator", "moderator", "", MQTT5)
	b.rec.waitRefreshes(1)
	key, err := a.SendText(ctx, "bob", "rude")
	if err != nil {
		t.Fatal(err)
	}
	b.rec.waitMsgs(1)
	var e *Error
	if err := b.ModifyMessage(ctx, "alice", "bob", key, []Elem{Text("x")}, nil); !errors.As(err, &e) || e.Code != 90009 {
		t.Fatalf("a user's edit: %v, want 90009", err)
	}
	if err := admin.ModifyMessage(ctx, "alice", "bob", key, []Elem{Text("[removed]")}, nil); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, func() error {
		b.rec.mu.Lock()
		defer b.rec.mu.Unlock()
		if len(b.rec.modified) != 1 || b.rec.modified[0].Text() != "[removed]" {
			return fmt.Errorf("bob's OnModify: %v", b.rec.modified)
		}
		return nil
	})
}
