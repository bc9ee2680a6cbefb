// Package fnv1a is the 32-bit FNV-1a hash of a string without hash/fnv's
// interface and its allocation. It places users in partitions
// (internal/cluster), in relation-cache stripes (command) and names Xiaomi
// notifications (push): the first two on every call that names a user.
package fnv1a

const (
	offset32 = 2166136261 // FNV-32 offset basis
	prime32  = 16777619   // FNV-32 prime
)

// Sum32 is FNV-1a (32 bits) of s's bytes, as hash/fnv's New32a computes it.
func Sum32(s string) uint32 {
	h := uint32(offset32)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= prime32
	}
	return h
}
