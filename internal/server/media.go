package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/media"
	"github.com/duet-im/duet/store"
)

// mediaParts is the media service and, when no S3 endpoint is configured,
// the embedded S3 gateway it uses.
type mediaParts struct {
	svc *media.Service
	gw  *media.Gateway
}

// startMedia connects the media commands to the configured S3 store, or
// starts the embedded gateway under {data}/s3 (a child process: see
// media.StartGateway).
//
// In a cluster exec is the router in front of the command layer (one per
// partition behind cluster.Routers when P > 1).
func startMedia(cfg Config, key string, svc *command.Service, st *store.Store, cp *clusterParts, exec command.Executor, log *slog.Logger) (*mediaParts, error) {
	limits, err := media.ParseLimits(cfg.MediaLimits)
	if err != nil {
		return nil, err
	}
	public, err := MediaURL(cfg.MediaURL, cfg.HTTP)
	if err != nil {
		return nil, err
	}
	p := &mediaParts{}
	s3 := media.S3{
		Endpoint: cfg.S3Endpoint, AccessKey: cfg.S3AccessKey, SecretKey: cfg.S3SecretKey,
		Bucket: cfg.S3Bucket, Secure: cfg.S3Secure, PublicEndpoint: cfg.S3PublicEndpoint, PublicSecure: cfg.S3Secure,
	}
	if s3.Endpoint == "" {
		if p.gw, err = media.StartGateway(filepath.Join(cfg.Data, "s3"), cfg.S3Bucket, log); err != nil {
			return nil, err
		}
		s3 = p.gw.S3
		// A reverse proxy may make the loopback gateway reachable.
		s3.Bucket, s3.PublicEndpoint = cfg.S3Bucket, cfg.S3PublicEndpoint
	}
	if public == "" {
		log.Warn("media links need the HTTP listener: set --http or --media-url")
	}
	mcfg := media.Config{
		S3: s3, PublicURL: public, SDKAppID: cfg.SDKAppID, Key: key, Limits: limits,
		CleanAfter: cfg.MediaCleanAfter, DownloadTTL: cfg.MediaLinkTTL, LocalOnly: cfg.MediaLocalOnly, Log: log,
		CleanEvery: cfg.MediaCleanEvery, ArchiveEvery: cfg.MediaArchiveEvery,
		// The store's clock (tests move it): upload deadlines and archive
		// hours follow the time the store keeps.
		Clock: cfg.Clock,
	}
	if cp != nil {
		// docs/cluster.md §14.3, §14.4: a download's grant is written by
		// the downloader's owner (through the router, like any command's
		// write); the cleaner runs for each partition on its owner, the
		// archiver on partition 0's; a download refused by this node's
		// view looks again once the view of every partition is at its
		// log's end (the upload may be in any, the grant and the history
		// in the downloader's).
		mcfg.Exec = exec
		mcfg.Owns = func(p int) bool { return st.Partition(p).Owns() }
		mcfg.CatchUp = func(ctx context.Context) error {
			ends, err := cp.logEnds(ctx)
			if err != nil {
				return err
			}
			return waitViews(ctx, st, ends)
		}
	}
	p.svc, err = media.New(mcfg, st, svc)
	if err != nil {
		if p.gw != nil {
			p.gw.Close()
		}
		return nil, fmt.Errorf("media: %w", err)
	}
	return p, nil
}

// MediaURL is the base of download links: --media-url, or the HTTP
// listener's address. A listener on a wildcard address (0.0.0.0, ::, or no
// host) names no host a device can reach, and there is no way to tell which
// of the machine's names or addresses devices use, so that needs --media-url.
func MediaURL(mediaURL, httpAddr string) (string, error) {
	if mediaURL != "" {
		u, err := url.Parse(mediaURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return "", fmt.Errorf("media-url %q must be an absolute http or https URL, e.g. http://im.example.com:8080", mediaURL)
		}
		return mediaURL, nil
	}
	if httpAddr == "" {
		return "", nil
	}
	host, _, err := net.SplitHostPort(httpAddr)
	if err != nil {
		return "", fmt.Errorf("http %q: %w", httpAddr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return "", fmt.Errorf("http %s listens on every address, so media links cannot name it: set --media-url (DUET_MEDIA_URL) to the URL devices reach the HTTP listener at, e.g. http://im.example.com:8080", httpAddr)
	}
	return "http://" + httpAddr, nil
}

// Handler serves /media/ downloads (404 when media is off).
func (p *mediaParts) Handler() http.Handler {
	if p == nil {
		return http.NotFoundHandler()
	}
	return p.svc.Handler()
}

// Close stops the media background work, then the embedded gateway.
func (p *mediaParts) Close() error {
	if p == nil {
		return nil
	}
	err := p.svc.Close()
	if p.gw != nil {
		err = errors.Join(err, p.gw.Close())
	}
	return err
}
