package push

import (
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/command/commandtest"
	"github.com/duet-im/duet/store"
)

// The push commands' homes (docs/cluster.md §12.1): the user whose device
// registers, the caller's own or the one an admin names in From_Account.
func TestHome(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(t.TempDir(), store.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	svc := command.New(command.DefaultConfig(), st, log)
	before := svc.Commands()
	p, err := New(Options{Store: st, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	p.Register(svc)
	var names []string
	for _, n := range svc.Commands() {
		if !slices.Contains(before, n) {
			names = append(names, n)
		}
	}
	alice := &command.Caller{UserID: "alice", Device: "alice:phone", Transport: command.MQTT}
	adm := &command.Caller{UserID: "administrator", Admin: true, Transport: command.REST}
	commandtest.CheckHomes(t, svc, st, names, []commandtest.HomeCase{
		{Name: "set_token", Caller: alice, Command: "push/set_token", Body: `{"Vendor":"fcm","Token":"t1"}`, Home: "alice", Write: true, Internal: true},
		{Name: "set_token as admin", Caller: adm, Command: "push/set_token", Body: `{"From_Account":"bob","Device":"bob:phone","Vendor":"fcm","Token":"t2"}`, Home: "bob", Write: true, Internal: true},
		{Name: "set_token for another, not admin", Caller: alice, Command: "push/set_token", Body: `{"From_Account":"bob","Device":"bob:phone","Vendor":"fcm","Token":"t3"}`, Home: "alice", Write: true, Code: command.CodeOpenIMNeedsAdmin},
		{Name: "delete_token", Caller: alice, Command: "push/delete_token", Body: `{}`, Home: "alice", Write: true, Internal: true},
		{Name: "delete_token as admin", Caller: adm, Command: "push/delete_token", Body: `{"From_Account":"bob","Device":"bob:phone"}`, Home: "bob", Write: true, Internal: true},
	})
}
