package server_test

import (
	"testing"

	"github.com/duet-im/duet/internal/clustertest"
	"github.com/duet-im/duet/internal/server"
)

// Media in cluster mode needs a shared S3 and one media URL for every node
// (docs/cluster.md §14.3): without them a node stops before it starts
// anything, with a message naming the setting; with them, or with media
// off, it is built.
func TestClusterMediaSettings(t *testing.T) {
	for _, c := range []struct {
		name   string
		adjust func(*server.Config)
		want   string // "": built
	}{
		{"embedded S3 gateway", func(c *server.Config) { c.MediaURL = "http://im.example.com:8080" },
			"cluster mode needs a shared S3 (--s3-endpoint): the embedded S3 gateway keeps media on one node's disk"},
		{"no media URL", func(c *server.Config) { c.S3Endpoint = "s3.example.com:9000" },
			"cluster mode needs --media-url, the same on every node: download links in messages must not name one node (e.g. a load balancer in front of the nodes' HTTP listeners)"},
		{"media off", func(c *server.Config) { c.NoMedia = true }, ""},
		{"shared S3 and media URL", func(c *server.Config) {
			c.S3Endpoint, c.MediaURL = "s3.example.com:9000", "http://im.example.com:8080"
		}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := clustertest.Configs(t, 1)[0]
			cfg.NoMedia, cfg.Cluster.Replicas = false, 1
			c.adjust(&cfg)
			srv, err := server.New(cfg)
			if srv != nil {
				srv.Close()
			}
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("New: %v, want a node built", err)
			case c.want != "" && (err == nil || err.Error() != c.want):
				t.Fatalf("New: %v, want exactly %q", err, c.want)
			}
		})
	}
}
