package media

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/versity/versitygw/backend/meta"
	"github.com/versity/versitygw/backend/posix"
	"github.com/versity/versitygw/embedgw"
)

// S3 names the object store: MinIO, any S3, or the embedded gateway.
type S3 struct {
	Endpoint  string // host:port
	AccessKey string
	SecretKey string
	Bucket    string
	Secure    bool
	// PublicEndpoint is the host:port that devices reach the store at, when
	// it differs from Endpoint (MinIO inside a compose network). Presigned
	// URLs are signed for this host, so they stay valid as devices send them.
	PublicEndpoint string
	PublicSecure   bool
	// Region is reported to clients and signed into URLs; empty: us-east-1.
	Region string
}

// clients are the two minio clients: one for the server's own requests and
// one that only signs URLs for devices (no network use: Region is set, so
// minio-go never asks the store for the bucket location).
type clients struct {
	api     *minio.Client
	presign *minio.Client
}

func newClients(c S3) (*clients, error) {
	if c.Region == "" {
		c.Region = "us-east-1"
	}
	mk := func(endpoint string, secure bool) (*minio.Client, error) {
		return minio.New(endpoint, &minio.Options{
			Creds:        credentials.NewStaticV4(c.AccessKey, c.SecretKey, ""),
			Secure:       secure,
			Region:       c.Region,
			BucketLookup: minio.BucketLookupPath,
		})
	}
	api, err := mk(c.Endpoint, c.Secure)
	if err != nil {
		return nil, fmt.Errorf("media: s3 endpoint %q: %w", c.Endpoint, err)
	}
	pub := api
	if c.PublicEndpoint != "" && c.PublicEndpoint != c.Endpoint {
		if pub, err = mk(c.PublicEndpoint, c.PublicSecure); err != nil {
			return nil, fmt.Errorf("media: s3 public endpoint %q: %w", c.PublicEndpoint, err)
		}
	}
	return &clients{api: api, presign: pub}, nil
}

// Gateway is the embedded S3 server (versitygw over its posix backend) that
// stands in when no S3 endpoint is configured.
type Gateway struct {
	S3     S3
	cancel context.CancelFunc
	done   chan error
	cwd    string // the working directory before the backend changed it
}

type gatewayKeys struct {
	AccessKey string `json:"AccessKey"`
	SecretKey string `json:"SecretKey"`
	// Addr is the port of the last run, taken again when free so that
	// upload URLs handed out before a restart keep working.
	Addr string `json:"Addr,omitempty"`
}

// StartGateway runs the embedded gateway on a loopback port, keeping objects
// under dir/objects and its root credentials in dir/s3.key (generated on
// first start, mode 0600).
//
// The posix backend resolves buckets against the working directory and so
// changes it to dir/objects (os.Chdir) for the whole process: every other
// path the process uses must be absolute. Only one gateway may run per
// process (a versitygw limit).
func StartGateway(dir, bucket string, log *slog.Logger) (*Gateway, error) {
	if log == nil {
		log = slog.Default()
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	root := filepath.Join(dir, "objects")
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("media: gateway dir: %w", err)
	}
	keyFile := filepath.Join(dir, "s3.key")
	keys, err := gatewayCredentials(keyFile)
	if err != nil {
		return nil, err
	}
	// Everything that may fail comes before the backend changes the
	// working directory, so a failed start leaves the process as it was.
	addr, err := freeLoopbackPort(keys.Addr)
	if err != nil {
		return nil, err
	}
	if addr != keys.Addr {
		keys.Addr = addr
		raw, _ := json.Marshal(keys)
		if err := os.WriteFile(keyFile, raw, 0o600); err != nil {
			return nil, err
		}
	}
	var ms meta.MetadataStorer = meta.XattrMeta{}
	opts := posix.PosixOpts{}
	if err := (meta.XattrMeta{}).Test(root); err != nil {
		// Filesystems without user xattrs keep metadata in a side directory,
		// which must lie outside the object root.
		side := filepath.Join(dir, "meta")
		if err := os.MkdirAll(side, 0o700); err != nil {
			return nil, err
		}
		sc, err := meta.NewSideCar(side)
		if err != nil {
			return nil, fmt.Errorf("media: gateway metadata: %w", err)
		}
		ms, opts.SideCarDir = sc, side
	}
	cwd, _ := os.Getwd()
	be, err := posix.New(root, ms, opts)
	if err != nil {
		os.Chdir(cwd) // posix.New may fail after its chdir
		return nil, fmt.Errorf("media: gateway backend: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &Gateway{
		S3:     S3{Endpoint: addr, AccessKey: keys.AccessKey, SecretKey: keys.SecretKey, Bucket: bucket},
		cancel: cancel,
		done:   make(chan error, 1),
		cwd:    cwd,
	}
	go func() {
		err := embedgw.RunVersityGW(ctx, be, &embedgw.Config{
			RootUserAccess:    keys.AccessKey,
			RootUserSecret:    keys.SecretKey,
			Ports:             []string{addr},
			MaxConnections:    1024,
			MaxRequests:       512,
			MultipartMaxParts: 10000,
			Quiet:             true,
			KeepAlive:         true,
			// Browsers upload with the presigned PUT from another origin
			// (the web chat, docs/web.md). The URL is the credential, so
			// any origin may use it, as with MinIO's default.
			CORSAllowOrigin: "*",
		})
		be.Shutdown()
		g.done <- err
	}()
	// Ready once it accepts connections; an early return is a start failure.
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case err := <-g.done:
			cancel()
			os.Chdir(cwd)
			return nil, fmt.Errorf("media: embedded S3 gateway: %v", err)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			cancel()
			<-g.done
			os.Chdir(cwd)
			return nil, fmt.Errorf("media: embedded S3 gateway did not listen on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	log.Info("embedded S3 gateway started", "endpoint", addr, "dir", root)
	return g, nil
}

// Close stops the gateway, waits for it, and restores the working directory.
func (g *Gateway) Close() error {
	g.cancel()
	select {
	case err := <-g.done:
		if g.cwd != "" {
			os.Chdir(g.cwd)
		}
		if errors.Is(err, context.Canceled) || err == nil {
			return nil
		}
		return err
	case <-time.After(10 * time.Second):
		return errors.New("media: embedded S3 gateway did not stop")
	}
}

func gatewayCredentials(path string) (gatewayKeys, error) {
	var k gatewayKeys
	raw, err := os.ReadFile(path)
	if err == nil {
		if err := json.Unmarshal(raw, &k); err != nil || k.AccessKey == "" || k.SecretKey == "" {
			return k, fmt.Errorf("media: %s is not a valid key file", path)
		}
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	a, s := make([]byte, 10), make([]byte, 30)
	if _, err := rand.Read(a); err != nil {
		return k, err
	}
	if _, err := rand.Read(s); err != nil {
		return k, err
	}
	k = gatewayKeys{AccessKey: "DUET" + hex.EncodeToString(a), SecretKey: hex.EncodeToString(s)}
	raw, _ = json.Marshal(k)
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		return k, err
	}
	return k, nil
}

// freeLoopbackPort returns prefer when it can be listened on, else a free
// loopback port.
func freeLoopbackPort(prefer string) (string, error) {
	if prefer != "" {
		if ln, err := net.Listen("tcp", prefer); err == nil {
			ln.Close()
			return prefer, nil
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr, nil
}

// CountObjects counts the objects under prefix in c's bucket (diagnostics
// and tests: "no orphaned objects").
func CountObjects(ctx context.Context, c S3, prefix string) (int, error) {
	cl, err := newClients(c)
	if err != nil {
		return 0, err
	}
	n := 0
	for obj := range cl.api.ListObjects(ctx, c.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return n, obj.Err
		}
		n++
	}
	return n, nil
}
