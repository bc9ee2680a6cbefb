package media

import (
	"context"
	"fmt"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
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
