package server

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Draining a node (docs/cluster.md §19): `duet cluster drain` on the
// node's machine moves the work off it without stopping it — before
// maintenance, or to try a failover. The node releases every lease (the
// others take over at once) and takes none, closes its devices'
// connections and refuses new ones with CONNACK "server unavailable" (the
// devices move to other nodes), and its /healthz answers 503 "draining"
// so that load balancers move away; REST calls it is sent still work
// (they are forwarded to the owner). `duet cluster undrain` reverses it.
// The state is in memory: a restarted node is not draining.

// drainingReason is the reason string of the CONNACK a draining node
// refuses devices with (MQTT 5), and of the DISCONNECT it closes them with.
const drainingReason = "draining: connect to another node"

// drainTimeout bounds a drain's wait for the leases to be released.
const drainTimeout = 30 * time.Second

// DrainStatus is the answer of POST /cluster/drain and /cluster/undrain.
type DrainStatus struct {
	Node     string `json:"node"`
	Draining bool   `json:"draining"`
	Owned    []int  `json:"owned"`        // partitions the node owns after the call
	Devices  int    `json:"disconnected"` // device connections closed by this call
}

// clusterDrain is POST /cluster/drain (loopback only, as /cluster/remove).
func (s *Server) clusterDrain(w http.ResponseWriter, r *http.Request) { s.setDraining(w, r, true) }

// clusterUndrain is POST /cluster/undrain (loopback only).
func (s *Server) clusterUndrain(w http.ResponseWriter, r *http.Request) { s.setDraining(w, r, false) }

func (s *Server) setDraining(w http.ResponseWriter, r *http.Request, on bool) {
	cp := s.cluster
	if cp.state.Load() < stateServing {
		http.Error(w, "this node has not joined the cluster yet", http.StatusServiceUnavailable)
		return
	}
	// From here, logins are refused (clusterAccounts): a device closed
	// below does not come back to this node.
	cp.draining.Store(on)
	ctx, cancel := context.WithTimeout(r.Context(), drainTimeout)
	defer cancel()
	if err := cp.join.Drain(ctx, on); err != nil {
		http.Error(w, "releasing the leases: "+err.Error(), http.StatusGatewayTimeout)
		return
	}
	out := DrainStatus{Node: cp.node.Name(), Draining: on}
	if on {
		out.Devices = s.disconnectDevices(drainingReason)
	}
	out.Owned = cp.join.Owned()
	s.log.Info("cluster: draining", "on", on, "devices disconnected", out.Devices, "owned", out.Owned)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// unavailable is why this node refuses devices (the reason of its CONNACK
// "server unavailable"), "" when it takes them: it drains, or it is cut
// off from the cluster's quorum (cluster_quorum.go). The two are
// independent: a drained node that loses the quorum and regains it is
// still drained.
func (cp *clusterParts) unavailable() string {
	if cp.draining.Load() {
		return drainingReason
	}
	if cp.quorum.lost.Load() {
		return noQuorumReason
	}
	return ""
}

// disconnectDevices closes every device connection of this node: MQTT 5
// devices get DISCONNECT 0x9C "use another server" with reason; 3.1.1
// devices a bare DISCONNECT, as when the server stops. Either way the
// connection is closed.
func (s *Server) disconnectDevices(reason string) int {
	code := packets.ErrUseAnotherServer
	code.Reason = reason
	n := 0
	for _, cl := range s.broker.Server.Clients.GetAll() {
		if cl.Net.Inline || cl.Closed() {
			continue
		}
		_ = s.broker.Server.DisconnectClient(cl, code)
		n++
	}
	return n
}
