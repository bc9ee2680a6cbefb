package broker_test

import (
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/wait"
)

// A recall cancels the recipient's notification still waiting, whichever
// side it is made from: the retraction follows the withdraw event that
// reaches the recipient's timeline, on the node that commits it (in a
// cluster, the owner of the recipient's data, which holds the queue;
// docs/cluster.md §11.2), not the node that ran the command.
func TestPushRecallCancelsWaiting(t *testing.T) {
	for _, tc := range []struct {
		name   string
		recall func(t *testing.T, rig *pushRig, alice *device, key string)
	}{
		{"the sender's msgwithdraw", func(t *testing.T, rig *pushRig, alice *device, key string) {
			if r, _ := alice.request("openim/msgwithdraw", map[string]any{"To_Account": "bob", "MsgKey": key}); r.str("ActionStatus") != "OK" {
				t.Fatal(r)
			}
		}},
		{"admin_msgwithdraw from the recipient's side", func(t *testing.T, rig *pushRig, alice *device, key string) {
			rest := &restServer{testServer: rig.s, rest: httptest.NewServer(rig.s.srv.Handler())}
			defer rest.rest.Close()
			if r := rest.call("openim/admin_msgwithdraw", fmt.Sprintf(`{"From_Account":"bob","To_Account":"alice","MsgKey":%q}`, key)); r["ActionStatus"] != "OK" {
				t.Fatal(r)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rig := startPushServer(t, time.Hour, time.Second)
			rig.offlineWithToken(t, "bob", bobToken)
			alice := rig.s.connect("alice", connectOpts{})
			alice.drainToSync()
			m := alice.send("bob", 1)
			wait.For(t, 10*time.Second, 5*time.Millisecond, func() error {
				if p := rig.p().Pending(); p != 1 {
					return fmt.Errorf("%d pushes waiting, want 1", p)
				}
				return nil
			})
			tc.recall(t, rig, alice, m.str("MsgKey"))
			wait.For(t, 10*time.Second, 5*time.Millisecond, func() error {
				if p := rig.p().Pending(); p != 0 {
					return fmt.Errorf("%d pushes waiting after the recall", p)
				}
				return nil
			})
			if got := rig.apns.received(); len(got) != 0 {
				t.Errorf("sent %v for a recalled message", got)
			}
		})
	}
}
