package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/duet-im/duet/internal/clustertest"
)

// `duet cluster drain` on the owner's machine moves the data to another
// node, and `duet cluster status` shows the node draining, owning
// nothing; `duet cluster undrain` makes it serving again.
func TestClusterDrainCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	srvs := clustertest.Start(t, 3)
	o := clustertest.Owner(t, srvs)
	clustertest.WaitServing(t, srvs)
	node := "n" + string(rune('0'+o))

	out, errOut, code := duetRun(t, "cluster", "drain", "--http", srvs[o].HTTPAddr())
	if code != 0 || !strings.Contains(out, "node "+node+" is draining: it owns no partition") {
		t.Fatalf("duet cluster drain: exit %d\n%s%s", code, out, errOut)
	}
	if srvs[o].Store().Owns() {
		t.Error("the drained node still owns the data")
	}
	out, errOut, code = duetRun(t, "cluster", "status", "--http", srvs[(o+1)%3].HTTPAddr())
	if code != 0 || !regexp.MustCompile(`(?m)^`+node+` +draining +- +\d+ .*draining$`).MatchString(out) {
		t.Errorf("duet cluster status: exit %d, want %s draining, owning nothing\n%s%s", code, node, out, errOut)
	}
	out, errOut, code = duetRun(t, "cluster", "undrain", "--http", srvs[o].HTTPAddr())
	if code != 0 || !strings.Contains(out, "node "+node+" is not draining") {
		t.Fatalf("duet cluster undrain: exit %d\n%s%s", code, out, errOut)
	}
	clustertest.WaitServing(t, srvs)
	if _, errOut, code := duetRun(t, "cluster", "drain", "extra"); code == 0 || !strings.Contains(errOut, "takes no arguments") {
		t.Errorf("duet cluster drain extra: exit %d, stderr %q", code, errOut)
	}
}
