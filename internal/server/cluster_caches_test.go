package server_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/duet-im/duet/clients/sdk"
	"github.com/duet-im/duet/internal/clustertest"
	"github.com/duet-im/duet/internal/wait"
)

// A node that owns the data again after another node's tenure must not
// act on what its command layer remembered from before: here a mute set
// while another node owned the data. The send policy's cache (and the
// sender profiles) are kept exact by the commands that change them, on
// the node that runs them; a muted user's sends went through on the old
// owner, which still had "not muted" in memory.
func TestClusterOwnerForgetsStaleCommandCaches(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	srvs := clustertest.Start(t, 3)
	a := clustertest.Owner(t, srvs)
	clustertest.WaitServing(t, srvs)
	b, c := (a+1)%3, (a+2)%3
	restImport(t, srvs[a].HTTPAddr(), "alice", "bob")
	clustertest.Settle(t, srvs)

	// bob's device is on a node that stays up and undrained throughout.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	bob, err := sdk.Login(ctx, sdk.Options{
		Addrs: []string{srvs[b].Addr("tcp"), srvs[c].Addr("tcp"), srvs[a].Addr("tcp")}, UserID: "bob",
		UserSig: userSig(t, "bob"), DeviceID: "phone", Dir: t.TempDir(), RequestTimeout: 5 * time.Second,
	})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bob.Logout() })
	send := func(text string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := bob.SendText(ctx, "alice", text)
		return err
	}
	// On a's first tenure bob's send policy is read and kept: not muted.
	if err := send("first"); err != nil {
		t.Fatalf("bob's first send: %v", err)
	}

	// Another node takes the data; bob is muted through it.
	drain(t, srvs[a].HTTPAddr(), "/cluster/drain")
	wait.For(t, 30*time.Second, 20*time.Millisecond, func() error {
		if srvs[b].Store().Owns() || srvs[c].Store().Owns() {
			return nil
		}
		return errors.New("no other node owns the data yet")
	})
	restAdmin(t, srvs[b].HTTPAddr(), "openconfigsvr/setnospeaking", map[string]any{"Set_Account": "bob", "C2CmsgNospeakingTime": 3600})

	// a takes the data back: the others drain, a does not.
	drain(t, srvs[a].HTTPAddr(), "/cluster/undrain")
	drain(t, srvs[b].HTTPAddr(), "/cluster/drain")
	drain(t, srvs[c].HTTPAddr(), "/cluster/drain")
	wait.For(t, 30*time.Second, 20*time.Millisecond, func() error {
		if srvs[a].Store().Owns() {
			return nil
		}
		return fmt.Errorf("node %d does not own the data again", a)
	})
	drain(t, srvs[b].HTTPAddr(), "/cluster/undrain")
	drain(t, srvs[c].HTTPAddr(), "/cluster/undrain")

	// bob is muted: 20012, whichever node his device is on.
	err = send("while muted")
	var se *sdk.Error
	if !errors.As(err, &se) || se.Code != 20012 {
		t.Fatalf("muted bob's send through the owner's second tenure: %v; want error 20012", err)
	}
}
