package command_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/command/commandtest"
	"github.com/duet-im/duet/store"
)

// TestHome: the home and write flag of every command the service
// registers, and the homes its handlers pass to UpdateFor.
func TestHome(t *testing.T) {
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, u := range []string{"alice", "bob", "carol", "dave", "erin"} {
		if _, err := st.ImportAccount(store.Account{UserID: u}); err != nil {
			t.Fatal(err)
		}
	}
	svc := command.New(command.DefaultConfig(), st, nil)
	user := func(u string) *command.Caller {
		return &command.Caller{UserID: u, Device: u + ":phone", Transport: command.MQTT}
	}
	adm := &command.Caller{UserID: "administrator", Admin: true, Transport: command.REST}
	alice, bob, carol := user("alice"), user("bob"), user("carol")
	const text = `"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]`
	rnd := 100
	// send stores a message and returns its MsgKey (for recall and edit).
	send := func(t *testing.T, from, to string) string {
		t.Helper()
		rnd++
		body := fmt.Sprintf(`{"From_Account":%q,"To_Account":%q,"MsgRandom":%d,%s}`, from, to, rnd, text)
		r := svc.Exec(context.Background(), adm, "openim/sendmsg", []byte(body))
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		return r.Result.(command.SendResult).MsgKey
	}
	item := `"AddSource":"AddSource_Type_Test"`
	commandtest.CheckHomes(t, svc, st, svc.Commands(), []commandtest.HomeCase{
		// Accounts: the first account named (and valid) is home.
		{Name: "account_import", Caller: adm, Command: "im_open_login_svc/account_import", Body: `{"UserID":"frank"}`, Home: "frank", Write: true},
		{Name: "multiaccount_import: first valid", Caller: adm, Command: "im_open_login_svc/multiaccount_import", Body: `{"Accounts":["bad user!","gina","hank"]}`, Home: "gina", Write: true},
		{Name: "account_check", Caller: adm, Command: "im_open_login_svc/account_check", Body: `{"CheckItem":[{"UserID":"gina"}]}`, Home: "administrator"},
		{Name: "kick", Caller: adm, Command: "im_open_login_svc/kick", Body: `{"UserID":"hank"}`, Home: "hank", Write: true},
		{Name: "querystate", Caller: adm, Command: "openim/querystate", Body: `{"To_Account":["alice"]}`, Home: "administrator"},
		{Name: "query_online_status", Caller: adm, Command: "openim/query_online_status", Body: `{"To_Account":["alice"]}`, Home: "administrator"},

		// Sends: the sender's partition.
		{Name: "sendmsg", Caller: alice, Command: "openim/sendmsg", Body: `{"To_Account":"bob","MsgRandom":1,` + text + `}`, Home: "alice", Write: true},
		{Name: "sendmsg as From_Account", Caller: adm, Command: "openim/sendmsg", Body: `{"From_Account":"carol","To_Account":"bob","MsgRandom":2,` + text + `}`, Home: "carol", Write: true},
		{Name: "sendmsg system", Caller: adm, Command: "openim/sendmsg", Body: `{"To_Account":"bob","MsgRandom":3,` + text + `}`, Home: "administrator", Write: true},
		{Name: "sendmsg as another, not admin", Caller: alice, Command: "openim/sendmsg", Body: `{"From_Account":"bob","To_Account":"carol","MsgRandom":4,` + text + `}`, Home: "alice", Write: true, Code: command.CodeOpenIMNeedsAdmin},
		{Name: "sendmsg undecodable", Caller: adm, Command: "openim/sendmsg", Body: `{"From_Account":"carol","To_Account":"bob","MsgRandom":"x",` + text + `}`, Home: "administrator", Write: true, Code: command.CodeMsgRandom},
		{Name: "sendmsg not an object", Caller: alice, Command: "openim/sendmsg", Body: `[1]`, Home: "alice", Write: true, Code: command.CodeJSON},
		{Name: "batchsendmsg", Caller: adm, Command: "openim/batchsendmsg", Body: `{"From_Account":"alice","To_Account":["bob","carol"],"MsgRandom":5,` + text + `}`, Home: "alice", Write: true},
		{Name: "batchsendmsg system", Caller: adm, Command: "openim/batchsendmsg", Body: `{"To_Account":["bob","carol"],"MsgRandom":6,` + text + `}`, Home: "administrator", Write: true},
		{Name: "batchsendmsg gated", Caller: alice, Command: "openim/batchsendmsg", Body: `{"From_Account":"bob","To_Account":["carol"],"MsgRandom":7,` + text + `}`, Home: "alice", Write: true, Code: command.CodeOpenIMNeedsAdmin},
		{Name: "importmsg", Caller: adm, Command: "openim/importmsg", Body: `{"SyncFromOldSystem":1,"From_Account":"dave","To_Account":"alice","MsgRandom":8,"MsgTimeStamp":1700000000,` + text + `}`, Home: "dave", Write: true},
		{Name: "typing", Caller: alice, Command: "openim/typing", Body: `{"To_Account":"bob"}`, Home: "alice"},
		{Name: "sync", Caller: alice, Command: "openim/sync", Body: `{"FromSeq":0}`, Home: "alice", Code: command.CodeBadPacket},

		// History and recall: the user who names the conversation.
		{Name: "getmsg", Caller: alice, Command: "openim/getmsg", Body: `{"Peer_Account":"bob"}`, Home: "alice"},
		{Name: "admin_getroammsg", Caller: adm, Command: "openim/admin_getroammsg", Body: `{"Operator_Account":"bob","Peer_Account":"alice","MaxCnt":10}`, Home: "bob"},
		{Name: "msgwithdraw", Caller: alice, Command: "openim/msgwithdraw", Prep: func(t *testing.T) string {
			return fmt.Sprintf(`{"To_Account":"bob","MsgKey":%q}`, send(t, "alice", "bob"))
		}, Home: "alice", Write: true},
		{Name: "admin_msgwithdraw by the recipient's side", Caller: adm, Command: "openim/admin_msgwithdraw", Prep: func(t *testing.T) string {
			return fmt.Sprintf(`{"From_Account":"bob","To_Account":"alice","MsgKey":%q}`, send(t, "alice", "bob"))
		}, Home: "bob", Write: true},
		{Name: "modify_c2c_msg", Caller: adm, Command: "openim/modify_c2c_msg", Prep: func(t *testing.T) string {
			return fmt.Sprintf(`{"From_Account":"alice","To_Account":"bob","MsgKey":%q,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"edited"}}]}`, send(t, "alice", "bob"))
		}, Home: "alice", Write: true},

		// Read reports, unread counts and the conversation list: the reader.
		{Name: "set_msg_read", Caller: bob, Command: "openim/set_msg_read", Body: `{"Peer_Account":"alice"}`, Home: "bob", Write: true},
		{Name: "admin_set_msg_read", Caller: adm, Command: "openim/admin_set_msg_read", Body: `{"Report_Account":"carol","Peer_Account":"alice"}`, Home: "carol", Write: true},
		{Name: "get_c2c_unread_msg_num", Caller: adm, Command: "openim/get_c2c_unread_msg_num", Body: `{"To_Account":"bob"}`, Home: "bob"},
		{Name: "get_list", Caller: alice, Command: "recentcontact/get_list", Body: `{}`, Home: "alice"},
		{Name: "top as admin", Caller: adm, Command: "recentcontact/top", Body: `{"From_Account":"alice","OperationType":1,"RecentContactItem":[{"Type":1,"To_Account":"bob"}]}`, Home: "alice", Write: true},
		{Name: "delete", Caller: alice, Command: "recentcontact/delete", Body: `{"Type":1,"To_Account":"bob"}`, Home: "alice", Write: true},

		// Profiles and mutes: the user they are about.
		{Name: "portrait_set", Caller: alice, Command: "profile/portrait_set", Body: `{"ProfileItem":[{"Tag":"Tag_Profile_IM_Nick","Value":"A"}]}`, Home: "alice", Write: true},
		{Name: "portrait_set as admin", Caller: adm, Command: "profile/portrait_set", Body: `{"From_Account":"bob","ProfileItem":[{"Tag":"Tag_Profile_IM_Nick","Value":"B"}]}`, Home: "bob", Write: true},
		{Name: "portrait_get", Caller: alice, Command: "profile/portrait_get", Body: `{"To_Account":["bob"],"TagList":["Tag_Profile_IM_Nick"]}`, Home: "alice"},
		{Name: "setnospeaking", Caller: adm, Command: "openconfigsvr/setnospeaking", Body: `{"Set_Account":"erin","C2CmsgNospeakingTime":60}`, Home: "erin", Write: true},
		{Name: "getnospeaking", Caller: adm, Command: "openconfigsvr/getnospeaking", Body: `{"Get_Account":"erin"}`, Home: "erin"},

		// Relationships: the user an sns request acts for, both directions.
		{Name: "friend_add (pending)", Caller: alice, Command: "sns/friend_add", Body: `{"AddFriendItem":[{"To_Account":"carol",` + item + `}]}`, Home: "alice", Write: true},
		{Name: "friend_add forced as admin", Caller: adm, Command: "sns/friend_add", Body: `{"From_Account":"dave","ForceAddFlags":1,"AddFriendItem":[{"To_Account":"erin",` + item + `}]}`, Home: "dave", Write: true},
		{Name: "friend_add sns REST needs From_Account", Caller: adm, Command: "sns/friend_add", Body: `{"AddFriendItem":[{"To_Account":"erin",` + item + `}]}`, Home: "administrator", Write: true, Code: command.CodeSNSParam},
		{Name: "friend_request_get", Caller: carol, Command: "sns/friend_request_get", Body: `{}`, Home: "carol"},
		{Name: "friend_response", Caller: carol, Command: "sns/friend_response", Body: `{"ResponseFriendItem":[{"To_Account":"alice","ResponseAction":"Response_Action_AgreeAndAdd"}]}`, Home: "carol", Write: true},
		{Name: "friend_import", Caller: adm, Command: "sns/friend_import", Body: `{"From_Account":"bob","AddFriendItem":[{"To_Account":"dave",` + item + `}]}`, Home: "bob", Write: true},
		{Name: "friend_update", Caller: alice, Command: "sns/friend_update", Body: `{"UpdateItem":[{"To_Account":"carol","SnsItem":[{"Tag":"Tag_SNS_IM_Remark","Value":"c"}]}]}`, Home: "alice", Write: true},
		{Name: "friend_check", Caller: alice, Command: "sns/friend_check", Body: `{"To_Account":["carol"],"CheckType":"CheckResult_Type_Both"}`, Home: "alice"},
		{Name: "friend_get", Caller: alice, Command: "sns/friend_get", Body: `{"StartIndex":0}`, Home: "alice"},
		{Name: "friend_get_list", Caller: alice, Command: "sns/friend_get_list", Body: `{"To_Account":["carol"],"TagList":["Tag_SNS_IM_Remark"]}`, Home: "alice"},
		{Name: "group_add", Caller: alice, Command: "sns/group_add", Body: `{"GroupName":["g1"],"To_Account":["carol"]}`, Home: "alice", Write: true},
		{Name: "group_get", Caller: alice, Command: "sns/group_get", Body: `{}`, Home: "alice"},
		{Name: "group_delete", Caller: alice, Command: "sns/group_delete", Body: `{"GroupName":["g1"]}`, Home: "alice", Write: true},
		{Name: "friend_delete", Caller: alice, Command: "sns/friend_delete", Body: `{"To_Account":["carol"]}`, Home: "alice", Write: true},
		{Name: "friend_delete_all as admin", Caller: adm, Command: "sns/friend_delete_all", Body: `{"From_Account":"bob"}`, Home: "bob", Write: true},
		{Name: "black_list_add", Caller: alice, Command: "sns/black_list_add", Body: `{"To_Account":["erin"]}`, Home: "alice", Write: true},
		{Name: "black_list_get", Caller: alice, Command: "sns/black_list_get", Body: `{"StartIndex":0,"MaxLimited":10,"LastSequence":0}`, Home: "alice"},
		{Name: "black_list_check", Caller: alice, Command: "sns/black_list_check", Body: `{"To_Account":["erin"],"CheckType":"BlackCheckResult_Type_Both"}`, Home: "alice"},
		{Name: "black_list_delete", Caller: alice, Command: "sns/black_list_delete", Body: `{"To_Account":["erin"]}`, Home: "alice", Write: true},

		// Last: deleting accounts (the first valid one is home).
		{Name: "account_delete: first valid", Caller: adm, Command: "im_open_login_svc/account_delete", Body: `{"DeleteItem":[{"UserID":"bad user!"},{"UserID":"gina"},{"UserID":"frank"}]}`, Home: "gina", Write: true},
		{Name: "unknown command", Caller: alice, Command: "openim/nosuch", Body: `{}`, Home: "alice", Code: command.CodeUnknownCommand},
	})
}
