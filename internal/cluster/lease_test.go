package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/wait"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// TestLease checks §8.1 on a three-node cluster: a held lease is refused to
// others, renewals keep it past its ttl, a moved revision ends it at once,
// and the watcher reports releases and expiries as free.
func TestLease(t *testing.T) {
	nodes := startNodes(t, 3)
	cfg := testConfig(2)
	setupAll(t, nodes, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv1, err := nodes[0].js.KeyValue(ctx, BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	kv2, err := nodes[1].js.KeyValue(ctx, BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	watch, err := WatchLeases(ctx, kv2)
	if err != nil {
		t.Fatal(err)
	}
	next := func(what string) LeaseHolder {
		t.Helper()
		select {
		case h := <-watch:
			return h
		case <-time.After(10 * time.Second):
			t.Fatalf("watcher: no %s", what)
		}
		return LeaseHolder{}
	}

	l, err := Acquire(ctx, kv1, 0, "n1", cfg.LeaseTTL)
	if err != nil {
		t.Fatal(err)
	}
	if h := next("acquire"); h.Partition != 0 || h.Node != "n1" || h.Revision != l.Epoch() {
		t.Fatalf("watcher saw %+v, want p00 held by n1 at %d", h, l.Epoch())
	}
	if _, err := Acquire(ctx, kv2, 0, "n2", cfg.LeaseTTL); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("second Acquire: %v, want ErrLeaseHeld", err)
	}
	// Renewed every ttl/5, it outlives two ttls, and stays locally valid.
	deadline := time.Now().Add(2 * cfg.LeaseTTL)
	wait.Quiet(t, time.Until(deadline), 100*time.Millisecond, func() error {
		if !l.Valid() || l.Err() != nil {
			return fmt.Errorf("lease invalid (%v) before %v", l.Err(), deadline)
		}
		return nil
	})
	if until := time.Until(l.ValidUntil()); until > cfg.LeaseTTL-validityMargin {
		t.Errorf("local validity %v ahead: more than ttl - 1s", until)
	}
	// Someone else's write moves the revision: the holder steps down at once.
	for h := next("renewal"); h.Node == "n1"; h = next("the other holder") {
		if h.Node == "n1" && h.Revision > l.Epoch()+2 {
			if _, err := kv2.Put(ctx, LeaseKey(0), []byte(`{"node":"intruder"}`)); err != nil {
				t.Fatal(err)
			}
		}
	}
	select {
	case <-l.Lost():
	case <-time.After(cfg.LeaseTTL):
		t.Fatal("lease not lost after its key was overwritten")
	}
	if !errors.Is(l.Err(), ErrLeaseLost) || l.Valid() {
		t.Fatalf("after overwrite: err %v valid %v", l.Err(), l.Valid())
	}

	// Release: the watcher reports p01 free at once.
	l1, err := Acquire(ctx, kv1, 1, "n1", cfg.LeaseTTL)
	if err != nil {
		t.Fatal(err)
	}
	for h := next("p01 held"); h.Partition != 1 || h.Node != "n1"; h = next("p01 held") {
	}
	if err := l1.Release(ctx); err != nil {
		t.Fatal(err)
	}
	for h := next("p01 free"); h.Partition != 1 || h.Node != ""; h = next("p01 free") {
	}
	if l1.Valid() || !errors.Is(l1.Err(), ErrLeaseReleased) {
		t.Errorf("released lease: valid %v err %v", l1.Valid(), l1.Err())
	}

	// Expiry: a holder that stops renewing; the marker reaches the watcher.
	// KV reads are direct gets, which a replica that has not applied the
	// delete yet may answer: Create can be refused for a moment.
	var l2 *Lease
	wait.For(t, 5*time.Second, 20*time.Millisecond, func() (err error) {
		l2, err = Acquire(ctx, kv2, 1, "n2", cfg.LeaseTTL)
		return err
	})
	l2.stopRenewing()
	stopped := time.Now()
	for h := next("p01 expired"); h.Partition != 1 || h.Node != ""; h = next("p01 expired") {
	}
	took := time.Since(stopped)
	t.Logf("expiry marker seen %v after the last renewal (ttl %v)", took, cfg.LeaseTTL)
	if took < cfg.LeaseTTL-validityMargin {
		t.Errorf("lease seen expired after %v, before its ttl", took)
	}
	wait.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		_, err := Acquire(ctx, kv1, 1, "n1", cfg.LeaseTTL)
		return err
	})
}

// TestConnectExternal: Connect uses an operator's NATS server (one, with
// JetStream, replicas 1 here) and the partition objects are set up on it.
func TestConnectExternal(t *testing.T) {
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("external server not ready")
	}
	n, err := Connect("n1", []string{srv.ClientURL()}, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	if n.Server() != nil {
		t.Error("external node reports an embedded server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if err := Setup(ctx, n.js, Config{Partitions: 2, Replicas: 1, LeaseTTL: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.js.Stream(ctx, "DUET_P01"); err != nil {
		t.Fatal(err)
	}
	if _, err := Connect("bad name", []string{srv.ClientURL()}, ""); err == nil {
		t.Error("node name with a space accepted")
	}
	if _, err := n.js.KeyValue(ctx, BucketLeases); errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Error("no leases bucket")
	}
}
