package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/duet-im/duet/internal/cluster"
)

// ClusterNode is this node's NATS part, nil on a single node.
func (s *Server) ClusterNode() *cluster.Node {
	if s.cluster == nil {
		return nil
	}
	return s.cluster.node
}

// clusterRemove is POST /cluster/remove?node=NAME (loopback only, as
// /debug/pprof: an operator runs `duet cluster remove` on a node's own
// machine): it removes a node that was stopped for good from JetStream
// (cluster.Node.RemovePeer) and answers what was done as JSON. A node
// whose heartbeat is still live is refused: stop it first.
func (s *Server) clusterRemove(w http.ResponseWriter, r *http.Request) {
	cp := s.cluster
	node := r.URL.Query().Get("node")
	if node == "" {
		http.Error(w, "node is required: POST /cluster/remove?node=NAME", http.StatusBadRequest)
		return
	}
	if cp.state.Load() < stateCatchingUp {
		http.Error(w, "this node has not joined the cluster yet", http.StatusServiceUnavailable)
		return
	}
	if slices.Contains(cp.join.Nodes(), node) {
		http.Error(w, fmt.Sprintf("node %s is running (its heartbeat is live): stop it first, then remove it", node), http.StatusConflict)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), removeTimeout)
	defer cancel()
	out, err := cp.node.RemovePeer(ctx, node)
	if err != nil {
		http.Error(w, err.Error(), http.StatusUnprocessableEntity)
		return
	}
	s.log.Info("cluster: node removed from JetStream", "node", node, "streams", out.Streams)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// removeTimeout bounds one removal (a meta proposal and a request per stream).
const removeTimeout = 30 * time.Second
