package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// TLSFiles are the PEM files of route TLS (--cluster-tls-cert, -key, -ca;
// docs/cluster.md §15.2). Zero: the routes run without TLS.
type TLSFiles struct {
	Cert string // this node's certificate (chain), PEM
	Key  string // its private key, PEM
	CA   string // the cluster's CA certificate(s), PEM: every node's certificate is checked against it
}

// On reports whether any of the three is set.
func (f TLSFiles) On() bool { return f.Cert != "" || f.Key != "" || f.CA != "" }

// Check refuses a partial setting, naming what is missing: all three or
// none, so a node never runs its routes half-protected.
func (f TLSFiles) Check() error {
	if !f.On() {
		return nil
	}
	for _, m := range []struct{ name, v string }{{"cluster-tls-cert", f.Cert}, {"cluster-tls-key", f.Key}, {"cluster-tls-ca", f.CA}} {
		if m.v == "" {
			return fmt.Errorf("route TLS needs cluster-tls-cert, cluster-tls-key and cluster-tls-ca; %s is missing", m.name)
		}
	}
	return nil
}

// Config loads the files into the embedded server's route TLS: the same
// config serves the routes this node accepts (a client certificate is
// required and checked against the CA: mutual TLS) and the routes it
// solicits (the peer's certificate is checked against the CA and the host
// name of its route URL). Nil, nil when route TLS is off.
func (f TLSFiles) Config() (*tls.Config, error) {
	if err := f.Check(); err != nil || !f.On() {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("cluster-tls-cert %s / cluster-tls-key %s: %v", f.Cert, f.Key, err)
	}
	pem, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("cluster-tls-ca: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("cluster-tls-ca %s: no PEM certificate in it", f.CA)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("cluster-tls-cert %s: %v", f.Cert, err)
	}
	// A certificate the CA did not sign would be refused by every peer;
	// saying so at start beats a node that never joins.
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("cluster-tls-cert %s is not signed by cluster-tls-ca %s: %v", f.Cert, f.CA, err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}, nil
}
