package cluster

import "fmt"

// MaxPartitions bounds P: the store prefixes a partition's keys with its
// number in one byte (docs/cluster.md §10.1).
const MaxPartitions = 256

// Partition is the partition of user among p: fnv1a32 of the UserID's bytes
// mod p (§5). UserIDs are case-sensitive, so no folding.
// It is computed by hand, not with hash/fnv, because every store call
// that names a user asks it: no allocation.
func Partition(user string, p int) int {
	h := uint32(2166136261) // FNV-32 offset basis
	for i := 0; i < len(user); i++ {
		h ^= uint32(user[i])
		h *= 16777619 // FNV-32 prime
	}
	return int(h % uint32(p))
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
