package cluster

import "sort"

// Read-only views of a node's part in the cluster, for /metrics, /cluster
// and /healthz (internal/server, docs/cluster.md §18).

// Nodes lists the live nodes as this node last saw them in duet-nodes
// (itself included), sorted by name.
func (c *Cluster) Nodes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	ns := make([]string, 0, len(c.live))
	for n := range c.live {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

// Partitions is P, the number of partitions.
func (c *Cluster) Partitions() int { return c.o.Partitions }
