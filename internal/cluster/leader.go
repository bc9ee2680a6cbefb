package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// The owner of a partition leads its log (docs/cluster.md §8.4, Q1).
//
// A partition's writes stop while its log has no Raft leader, and
// nats-server elects one 4-9 s after the last one died (raft.go,
// minElectionTimeout, maxElectionTimeout; not configurable). Left where
// elections put it, the leader of a log was often on a node that owned
// nothing, and the kill of that node stopped every send of the partition
// for 4.3-8.5 s (TestClusterCrash, -cluster.lease-ttl 5s: "to any
// sender's" in the rounds that kill a node owning nothing). With the
// leader on the owner, the kill of any other node costs the log nothing,
// and the kill of the owner costs the election and the lease's expiry at
// the same time instead of one after the other.
//
// The move is made once per takeover, before the fence: a leadership
// transfer drops the old leader's queued proposals (raft.go StepDown), so
// it is never made under a writer's appends. A leader that moves away
// later (an election after a stall) stays where it is until the next
// takeover.

// leadWait bounds how long a takeover waits for the transfer to show.
const leadWait = 2 * time.Second

// leadLog asks the leader of the stream described by info to hand its
// leadership to this node's server, and waits until it has. It reports
// whether the leadership moved, so that the caller reads the stream's
// state again. Nothing is asked when this node runs no server (--nats),
// already leads, holds no replica, or its replica is not current: a
// transfer to a replica that lacks entries loses its vote, and the group
// would then wait for an election.
func (n *Node) leadLog(ctx context.Context, info *jetstream.StreamInfo) (bool, error) {
	began := time.Now()
	if n.srv == nil || info == nil || info.Cluster == nil || info.Cluster.Leader == "" || info.Cluster.Leader == n.name {
		return false, nil
	}
	// Whether this node's replica is current is asked of its own server:
	// the replica list of a stream info answered just after a leader
	// change can come from a server that does not know (nats-server
	// jetstream_cluster.go clusterInfo: a follower reports the other
	// followers as not current; a server that has not heard of a peer's
	// name lists it unnamed).
	stream := info.Config.Name
	if !n.srv.JetStreamIsStreamAssigned(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
		return false, nil // no replica here (more nodes than replicas)
	}
	if n.srv.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
		return false, nil // the answer named a leader from before this node's election
	}
	// Just after the last owner's appends it may be a few entries short:
	// a short wait, not a transfer that could fail.
	for !n.srv.JetStreamIsStreamCurrent(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
		if !sleepCtx(ctx, 10*time.Millisecond) || time.Since(began) > leadWait/4 {
			return false, nil
		}
	}
	req, err := json.Marshal(server.JSApiLeaderStepdownRequest{Placement: &server.Placement{Preferred: n.name}})
	if err != nil {
		return false, err
	}
	rctx, cancel := context.WithTimeout(ctx, leadWait)
	defer cancel()
	msg, err := n.nc.RequestWithContext(rctx, fmt.Sprintf(server.JSApiStreamLeaderStepDownT, stream), req)
	if err != nil {
		return false, fmt.Errorf("leadership of %s: %w", stream, err)
	}
	var resp server.JSApiStreamLeaderStepDownResponse
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return false, fmt.Errorf("leadership of %s: %w", stream, err)
	}
	if resp.Error != nil {
		return false, fmt.Errorf("leadership of %s: %w", stream, resp.Error)
	}
	if !resp.Success {
		return false, fmt.Errorf("leadership of %s: the leader did not step down", stream)
	}
	for !n.srv.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
		if !sleepCtx(rctx, 10*time.Millisecond) {
			return true, fmt.Errorf("leadership of %s: asked for, not taken within %v", stream, leadWait)
		}
	}
	return true, nil
}
