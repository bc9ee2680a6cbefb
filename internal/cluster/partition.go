package cluster

import (
	"fmt"

	"github.com/duet-im/duet/internal/fnv1a"
)

// MaxPartitions bounds P: the store prefixes a partition's keys with its
// number in one byte (docs/cluster.md §10.1).
const MaxPartitions = 256

// Partition is the partition of user among p: fnv1a32 of the UserID's bytes
// mod p (§5). UserIDs are case-sensitive, so no folding.
// Every store call that names a user asks it: fnv1a does not allocate.
func Partition(user string, p int) int {
	return int(fnv1a.Sum32(user) % uint32(p))
}

// StreamName is partition p's log: DUET_P07.
func StreamName(p int) string { return fmt.Sprintf("DUET_P%02d", p) }

// Subject is the one subject of partition p's log: duet.p.07.
func Subject(p int) string { return fmt.Sprintf("duet.p.%02d", p) }

// CommandSubject is the prefix of partition p's forwarded commands:
// duet.cmd.07, then the node that holds the lease (forward.go).
func CommandSubject(p int) string { return fmt.Sprintf("duet.cmd.%02d", p) }

// LeaseKey is partition p's key in KV duet-leases: p07.
func LeaseKey(p int) string { return fmt.Sprintf("p%02d", p) }
