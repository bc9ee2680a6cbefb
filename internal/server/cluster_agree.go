package server

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/duet-im/duet/internal/cluster"
	"github.com/duet-im/duet/media"
)

// agreeSettings are this node's settings that every node of the cluster
// must give alike (docs/cluster.md §15.3), as the cluster records and
// compares them: the values in effect (defaults filled in, and as the
// command layer has them after a test's Command hook), in a form that
// does not depend on how they were written (a sorted admin list, a
// duration in Go's notation, media limits in bytes).
//
// Each changes what a command answers or what is stored depending on the
// node that runs it — writes run on the owner, logins and REST checks on
// the node a client reaches — so nodes that differ answer differently for
// the same user as ownership moves. Per-node settings (listeners, window,
// max-request, rest-rate, timeouts, callback-url, media-link-ttl) are not
// among them: each node may have its own.
func (s *Server) agreeSettings() []cluster.Setting {
	cc := s.svc.Config()
	cfg := s.cfg
	admins := slices.Clone(cc.Admins)
	slices.Sort(admins)
	out := []cluster.Setting{
		{Name: "--sdkappid", Value: strconv.FormatUint(cc.SDKAppID, 10)},
		{Name: "--secret", Value: cluster.SecretHash("--secret", s.key), Hidden: true},
		{Name: "--admins", Value: strings.Join(admins, ",")},
		{Name: "--auto-accounts", Value: strconv.FormatBool(cc.AutoAccounts)},
		{Name: "--friends-only", Value: strconv.FormatBool(cc.FriendCheck)},
		{Name: "--blacklist-check-error", Value: strconv.FormatBool(cc.BlacklistError)},
		{Name: "--max-lifetime", Value: cc.MaxLifeTime.String()},
		{Name: "--recall-window", Value: cc.RecallWindow.String()},
		{Name: "--max-contacts", Value: strconv.Itoa(cc.MaxContacts)},
		{Name: "--callback-failure", Value: map[bool]string{false: "deliver", true: "refuse"}[cc.CallbackRefuse]},
		{Name: "--media", Value: strconv.FormatBool(!cfg.NoMedia)},
		{Name: "push vendors", Value: strings.Join(cfg.Push.Configured(), ",")},
	}
	if !cfg.NoMedia {
		out = append(out,
			cluster.Setting{Name: "--media-url", Value: cfg.MediaURL},
			cluster.Setting{Name: "--media-limits", Value: mediaLimits(cfg.MediaLimits)},
			cluster.Setting{Name: "--media-local-only", Value: strconv.FormatBool(cfg.MediaLocalOnly)},
			cluster.Setting{Name: "--s3-bucket", Value: cfg.S3Bucket},
		)
	}
	if len(cfg.Cluster.NATS) == 0 {
		on := "off"
		if cfg.Cluster.TLS.On() {
			on = "on"
		}
		out = append(out, cluster.Setting{Name: "route TLS (--cluster-tls-*)", Value: on, Follow: true})
	}
	return out
}

// mediaLimits is --media-limits in bytes per type, sorted ("" for the
// defaults): "image=28MB" and "image=28672KB" are one setting.
func mediaLimits(s string) string {
	lim, err := media.ParseLimits(s)
	if err != nil {
		return s // refused by media's own start before this is read
	}
	var parts []string
	for typ, n := range lim {
		parts = append(parts, fmt.Sprintf("%s=%d", typ, n))
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}
