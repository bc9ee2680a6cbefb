package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/wait"
)

// The recorded config (§15.3) through its cases: the first node records
// its settings; a node that differs is refused while another runs, naming
// each setting and both values but never the secret; a Follow setting
// updates the record; with no node running and an old record, the node
// starting records its own values; a record written a moment ago by a node
// starting at the same time is not overwritten; an old-style record is
// completed; partitions never change.
func TestConfigRecord(t *testing.T) {
	nodes := startNodes(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	base := testConfig(1)
	base.NodeTTL = 2 * time.Second
	settings := func(node, friends, secret, routeTLS string) Config {
		c := base
		c.Node = node
		c.Settings = []Setting{
			{Name: "--friends-only", Value: friends},
			{Name: "--secret", Value: SecretHash("--secret", secret), Hidden: true},
			{Name: "route TLS", Value: routeTLS, Follow: true},
		}
		return c
	}
	record := func() (clusterConfig, time.Time) {
		t.Helper()
		kv, err := nodes[0].js.KeyValue(ctx, BucketCluster)
		if err != nil {
			t.Fatal(err)
		}
		e, err := kv.Get(ctx, "config")
		if err != nil {
			t.Fatal(err)
		}
		var cc clusterConfig
		if err := json.Unmarshal(e.Value(), &cc); err != nil {
			t.Fatal(err)
		}
		return cc, e.Created()
	}
	heartbeat := func(node string) {
		t.Helper()
		kv, err := nodes[0].js.KeyValue(ctx, BucketNodes)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, node, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}

	n1 := settings("n1", "false", "key-one", "off")
	if err := Setup(ctx, nodes[0].js, n1); err != nil {
		t.Fatal(err)
	}
	rec, _ := record()
	if rec.Partitions != 1 || rec.Replicas != 3 || rec.By != "n1" || rec.Settings["--friends-only"] != "false" ||
		rec.Settings["--secret"] != SecretHash("--secret", "key-one") || rec.Settings["route TLS"] != "off" {
		t.Fatalf("first record: %+v", rec)
	}

	// n1 runs; n2 differs in two settings and route TLS.
	heartbeat("n1")
	err := Setup(ctx, nodes[1].js, settings("n2", "true", "key-two", "on"))
	want := "the cluster runs with --friends-only false; this node has --friends-only true; --secret differs from the cluster's (running: n1;"
	if !errors.Is(err, ErrConfigMismatch) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Setup of a node that differs: %v\nwant %q", err, want)
	}
	if strings.Contains(err.Error(), "key-") || strings.Contains(err.Error(), "route TLS") {
		t.Fatalf("the refusal shows the secret, or names route TLS (which follows): %v", err)
	}
	// Route TLS alone: the record follows.
	heartbeat("n1")
	if err := Setup(ctx, nodes[1].js, settings("n2", "false", "key-one", "on")); err != nil {
		t.Fatalf("Setup of a node that differs in route TLS only: %v", err)
	}
	if rec, _ := record(); rec.Settings["route TLS"] != "on" || rec.By != "n2" {
		t.Fatalf("record after route TLS changed: %+v", rec)
	}

	// No node runs (n1's heartbeat expires): once the record is older than
	// a heartbeat's TTL, the node starting records its own values.
	began := time.Now()
	wait.For(t, 20*time.Second, 50*time.Millisecond, func() error {
		return Setup(ctx, nodes[2].js, settings("n3", "true", "key-three", "on"))
	})
	rec, at := record()
	if rec.By != "n3" || rec.Settings["--friends-only"] != "true" || rec.Settings["--secret"] != SecretHash("--secret", "key-three") {
		t.Fatalf("record after every node stopped: %+v", rec)
	}
	t.Logf("the record changed %v after the last node stopped", at.Sub(began).Round(time.Millisecond))

	// A node starting at the same moment with other values is refused:
	// the record is younger than a heartbeat's TTL.
	err = Setup(ctx, nodes[0].js, settings("n1", "false", "key-three", "on"))
	if !errors.Is(err, ErrConfigMismatch) || !strings.Contains(err.Error(), "ago by a node starting now") {
		t.Fatalf("Setup against a record just written: %v", err)
	}

	// A record of an older build: completed with this node's values.
	kv, err := nodes[0].js.KeyValue(ctx, BucketCluster)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "config", []byte(`{"partitions":1,"replicas":3}`)); err != nil {
		t.Fatal(err)
	}
	heartbeat("n3")
	if err := Setup(ctx, nodes[0].js, n1); err != nil {
		t.Fatalf("Setup over an old-style record: %v", err)
	}
	if rec, _ := record(); rec.By != "n1" || len(rec.Settings) != 3 || rec.Settings["--friends-only"] != "false" {
		t.Fatalf("completed record: %+v", rec)
	}

	// Partitions never change, whoever runs.
	p2 := n1
	p2.Partitions = 2
	err = Setup(ctx, nodes[0].js, p2)
	if !errors.Is(err, ErrConfigMismatch) || !strings.Contains(err.Error(), "the cluster was created with --partitions 1; this node has --partitions 2") {
		t.Fatalf("Setup with another partition count: %v", err)
	}
}

// ProbeRouteTLS tells a route listener that speaks TLS from one that
// sends its INFO in clear text, names the nodes whose TLS differs from
// this node's, and says nothing of a node it cannot reach.
func TestProbeRouteTLS(t *testing.T) {
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	go func() {
		for {
			c, err := plain.Accept()
			if err != nil {
				return
			}
			// A route listener without TLS: INFO first, in clear text.
			fmt.Fprintf(c, "INFO {\"server_id\":\"x\"}\r\n")
			go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	secure, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{selfSigned(t)}, ClientAuth: tls.RequireAnyClientCert,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer secure.Close()
	go func() {
		for {
			c, err := secure.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	gone := freeAddrs(t, 1)[0]
	routes := []string{"nats://" + plain.Addr().String(), "nats://" + secure.Addr().String(), "nats://" + gone}

	got := ProbeRouteTLS(routes, "", true, 2*time.Second)
	if !strings.Contains(got, "this node has route TLS on") || !strings.Contains(got, plain.Addr().String()) ||
		strings.Contains(got, secure.Addr().String()) || strings.Contains(got, gone) {
		t.Errorf("TLS on: %q, want the plain listener named, only", got)
	}
	got = ProbeRouteTLS(routes, "", false, 2*time.Second)
	if !strings.Contains(got, "this node has route TLS off") || !strings.Contains(got, secure.Addr().String()) ||
		strings.Contains(got, plain.Addr().String()) || strings.Contains(got, gone) {
		t.Errorf("TLS off: %q, want the TLS listener named, only", got)
	}
	// This node's own listener is not probed; agreeing nodes give "".
	if got := ProbeRouteTLS(routes[:2], plain.Addr().String(), true, 2*time.Second); got != "" {
		t.Errorf("TLS on, own plain listener left out: %q", got)
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
