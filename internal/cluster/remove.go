package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Removing a node for good (docs/cluster.md §19, "Remove a node").
//
// A node that is stopped stays a member of JetStream's meta group and a
// replica of every stream it held: the streams run on the others' quorum,
// one failure away from none, and no replica is placed elsewhere. Removing
// it from the meta group lets JetStream re-place its replicas on the
// remaining servers (a fourth node added to take its place gets them); the
// streams it still lists after that are asked to drop it one by one.

// JetStream API subjects and the error codes RemovePeer tells apart.
const (
	apiServerRemove = "$JS.API.SERVER.REMOVE"         // system account
	apiPeerRemove   = "$JS.API.STREAM.PEER.REMOVE.%s" // the streams' account
	errNotMember    = 10044                           // JSClusterServerNotMemberErr
)

// apiResponse is the part of a JetStream API reply RemovePeer reads.
type apiResponse struct {
	Success bool `json:"success"`
	Error   *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

func (r apiResponse) err() error {
	if r.Error == nil {
		return nil
	}
	return fmt.Errorf("%s (JetStream error %d)", r.Error.Description, r.Error.ErrCode)
}

// Removed is what RemovePeer did.
type Removed struct {
	Node    string   `json:"node"`
	Meta    bool     `json:"meta"`    // removed from the meta group now (false: it was not a member)
	Streams []string `json:"streams"` // streams that were still asked to drop it
}

// RemovePeer removes node peer, which must be stopped for good, from
// JetStream: from the meta group, then from every stream that still lists
// it as a replica. A name that is in neither (a typo, or a node removed
// already) is an error. It needs the embedded server (the
// system account is reached in process); with an external NATS cluster
// its operator removes the server with NATS's own tools.
func (n *Node) RemovePeer(ctx context.Context, peer string) (Removed, error) {
	out := Removed{Node: peer, Streams: []string{}}
	if peer == n.name {
		return out, errors.New("a node cannot remove itself")
	}
	if n.srv == nil {
		return out, errors.New("this node uses an external NATS cluster: remove the server there with NATS's own tools")
	}
	sys, err := nats.Connect("", nats.InProcessServer(n.srv), nats.UserInfo(systemUser, n.sysPass), nats.Name("duet-"+n.name+"-system"))
	if err != nil {
		return out, fmt.Errorf("system connection: %w", err)
	}
	defer sys.Close()
	req, _ := json.Marshal(map[string]string{"peer": peer})
	var r apiResponse
	retried, err := request(ctx, sys, apiServerRemove, req, &r)
	if err != nil {
		return out, fmt.Errorf("remove %s from the meta group: %w", peer, err)
	}
	switch {
	case r.Error != nil && r.Error.ErrCode == errNotMember:
		// Removed already, or by an attempt whose answer was lost.
		out.Meta = retried
	case r.Error != nil:
		return out, fmt.Errorf("remove %s from the meta group: %w", peer, r.err())
	default:
		out.Meta = true
	}
	names := n.js.StreamNames(ctx)
	for name := range names.Name() {
		s, err := n.js.Stream(ctx, name)
		if err != nil {
			return out, fmt.Errorf("stream %s: %w", name, err)
		}
		if !listsPeer(s.CachedInfo().Cluster, peer) {
			continue
		}
		var r apiResponse
		if _, err := request(ctx, n.nc, fmt.Sprintf(apiPeerRemove, name), req, &r); err != nil {
			return out, fmt.Errorf("remove %s from stream %s: %w", peer, name, err)
		}
		if err := r.err(); err != nil && !strings.Contains(err.Error(), "not a member") {
			return out, fmt.Errorf("remove %s from stream %s: %w", peer, name, err)
		}
		out.Streams = append(out.Streams, name)
	}
	if err := names.Err(); err != nil {
		return out, fmt.Errorf("listing streams: %w", err)
	}
	if !out.Meta && len(out.Streams) == 0 {
		return out, fmt.Errorf("%s is not a member of this JetStream cluster (never, or removed already)", peer)
	}
	return out, nil
}

func listsPeer(ci *jetstream.ClusterInfo, peer string) bool {
	if ci == nil {
		return false
	}
	if ci.Leader == peer {
		return true
	}
	for _, r := range ci.Replicas {
		if r.Name == peer {
			return true
		}
	}
	return false
}

// request is one JetStream API request and its decoded reply. Only the
// leader answers (the meta leader, a stream's leader), and there is none
// for a few seconds after the node being removed was it: unanswered
// attempts are made again (retry) until ctx ends; retried reports that
// one was. A removal repeated after a lost answer is harmless: it finds
// the node gone (not a member) or the stream without it.
func request(ctx context.Context, nc *nats.Conn, subject string, data []byte, out *apiResponse) (retried bool, err error) {
	attempts := 0
	err = retry(ctx, "no leader answered "+subject, func(c context.Context) error {
		attempts++
		m, err := nc.RequestWithContext(c, subject, data)
		switch {
		case err == nil:
			if err := json.Unmarshal(m.Data, out); err != nil {
				return permanent(err)
			}
			return nil
		case transient(err) || errors.Is(err, context.DeadlineExceeded):
			return err
		}
		return permanent(err)
	})
	return attempts > 1, err
}
