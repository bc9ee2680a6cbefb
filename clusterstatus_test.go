package main

import (
	"io"
	"log/slog"
	"regexp"
	"strings"
	"testing"

	"github.com/duet-im/duet/internal/clustertest"
	"github.com/duet-im/duet/internal/server"
)

// `duet cluster status` against a running three-node cluster prints every
// node with its state, what it owns and its view's applied sequence, and
// the partition's owner; against a single node it says that is no cluster.
func TestClusterStatusCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	srvs := clustertest.Start(t, 3)
	o := clustertest.Owner(t, srvs)
	clustertest.WaitServing(t, srvs)
	addr := srvs[(o+1)%3].HTTPAddr()
	for _, a := range []string{addr, "http://" + addr} {
		out, errOut, code := duetRun(t, "cluster", "status", "--http", a)
		if code != 0 {
			t.Fatalf("duet cluster status --http %s exited %d: %s", a, code, errOut)
		}
		t.Logf("duet cluster status --http %s:\n%s", a, out)
		if !strings.Contains(out, "cluster test  partitions 1  replicas 3  sync always") {
			t.Errorf("no cluster line:\n%s", out)
		}
		applied := srvs[o].Store().Applied()
		for i := range srvs {
			owns := "-"
			if i == o {
				owns = "0"
			}
			// node, state, owns, applied sequence, lag, version.
			row := regexp.MustCompile(`(?m)^n` + string(rune('0'+i)) + ` +serving +` + owns + ` +(\d+) +0 +clustertest *$`)
			if m := row.FindStringSubmatch(out); m == nil {
				t.Errorf("no row for node n%d (owns %s):\n%s", i, owns, out)
			} else if m[1] == "0" && applied > 0 {
				t.Errorf("node n%d applied 0 of %d:\n%s", i, applied, out)
			}
		}
		if !regexp.MustCompile(`(?m)^partition +owner\n0 +n` + string(rune('0'+o)) + ` *$`).MatchString(out) {
			t.Errorf("partition 0's owner is not n%d:\n%s", o, out)
		}
	}

	// A single node has no /cluster page.
	single, err := server.New(server.Config{
		Data: t.TempDir(), Secret: "cli-test", MQTT: "127.0.0.1:0", HTTP: "127.0.0.1:0", SDKAppID: 1400000000,
		NoMedia: true, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer single.Close()
	if err := single.Start(); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := duetRun(t, "cluster", "status", "--http", single.HTTPAddr())
	if code == 0 || !strings.Contains(errOut, "is it a cluster node") {
		t.Errorf("duet cluster status on a single node: exit %d, stderr %q; want a failure naming cluster mode", code, errOut)
	}
	// A missing or unknown subcommand of cluster is a usage error.
	if _, errOut, code := duetRun(t, "cluster", "statu"); code == 0 || !strings.Contains(errOut, "usage: duet cluster status") {
		t.Errorf("duet cluster statu: exit %d, stderr %q", code, errOut)
	}
}

// `duet cluster remove NODE --http HOST:PORT`, as docs/cluster.md writes
// it, reaches the node with the flag after the name as before it: a
// running node is refused by the node ("stop it first"), not by the
// command line. (Go's flag package stops at the first argument that is
// not a flag: the documented form was a usage error.)
func TestClusterRemoveCommandArgs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	srvs := clustertest.Start(t, 3)
	clustertest.WaitServing(t, srvs)
	addr := srvs[0].HTTPAddr()
	for _, args := range [][]string{
		{"cluster", "remove", "n1", "--http", addr},
		{"cluster", "remove", "--http", addr, "n1"},
	} {
		_, errOut, code := duetRun(t, args...)
		if code == 0 || !strings.Contains(errOut, "stop it first") {
			t.Errorf("duet %s: exit %d, stderr %q; want the node's refusal of a running node", strings.Join(args, " "), code, errOut)
		}
	}
	if _, errOut, code := duetRun(t, "cluster", "remove", "n1", "n2", "--http", addr); code == 0 || !strings.Contains(errOut, "name one node") {
		t.Errorf("duet cluster remove n1 n2: exit %d, stderr %q", code, errOut)
	}
}
