package store

import "bytes"

// The push state of a store with several partitions (docs/cluster.md
// §10.1, §14.2): a recipient's push queue (pq/, ps) and the notifications
// shown (pw/) are in the recipient's partition, worked by its owner
// through Partition(UserPartition(user)); a token's index px/ is in the
// holder's partition, found by token through every partition.

// UserPartition is the number of the partition that holds user's data: 0
// on a store of one partition (a single node, a cluster with P = 1).
func (s *Store) UserPartition(user string) int {
	if s.opts.PartitionOf == nil {
		return 0
	}
	return s.opts.PartitionOf(user)
}

// tokenHolder is a device px/ names as holding a token.
type tokenHolder struct{ user, device string }

// tokenHolderOf decodes a px/ value ({user}00{device}); ok is false for
// none.
func tokenHolderOf(v []byte) (h tokenHolder, ok bool) {
	u, d, ok := bytes.Cut(v, []byte{sep})
	return tokenHolder{string(u), string(d)}, ok
}

// pushTokenHolders returns the devices that the partitions other than
// home name in their px/ as holding vendor's token: one bloom-filtered
// point read per partition, of this node's views of them (ms stale,
// §12.4). A store of one partition has none.
func (s *Store) pushTokenHolders(vendor, token string, home int) ([]tokenHolder, error) {
	var out []tokenHolder
	ik := pushTokenIndex(vendor, token)
	for i, ps := range s.parts {
		if i == home {
			continue // read in the home's transaction
		}
		v, err := get(ps.db, ik)
		if err != nil {
			return nil, err
		}
		if h, ok := tokenHolderOf(v); ok {
			out = append(out, h)
		}
	}
	return out, nil
}
