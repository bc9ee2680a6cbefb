package server

import (
	"fmt"
	"testing"
)

// TestClaimedOwners: /cluster's owners table takes what the nodes say they
// own over a lagging lease watcher (TestClusterStateIsVisible saw the new
// owner's own page list partition 0 as free for 20 s).
func TestClaimedOwners(t *testing.T) {
	for _, tc := range []struct {
		name    string
		watcher []string // per partition, as the watcher saw it
		owned   [][]int  // per node n0, n1, n2: the partitions it says it owns
		want    string
	}{
		{"watcher saw the old owner's release last", []string{""}, [][]int{{0}, {}, {}}, "[n0]"},
		{"watcher still names the node that left", []string{"n1"}, [][]int{{}, {}, {0}}, "[n2]"},
		{"nobody claims it", []string{"n1", ""}, [][]int{{}, {}, {}}, "[n1 ]"},
		{"two claim it, the watcher names one", []string{"n2"}, [][]int{{0}, {}, {0}}, "[n2]"},
		{"watcher agrees", []string{"n0", "n1"}, [][]int{{0}, {1}, {}}, "[n0 n1]"},
	} {
		owners := make([]PartitionStatus, len(tc.watcher))
		for p, h := range tc.watcher {
			owners[p] = PartitionStatus{Partition: p, Owner: h}
		}
		var nodes []NodeStatus
		for i, ps := range tc.owned {
			nodes = append(nodes, NodeStatus{Node: fmt.Sprint("n", i), Owned: ps})
		}
		claimedOwners(owners, nodes)
		var got []string
		for _, o := range owners {
			got = append(got, o.Owner)
		}
		if fmt.Sprint(got) != tc.want {
			t.Errorf("%s: owners %v, want %s", tc.name, got, tc.want)
		}
	}
}
