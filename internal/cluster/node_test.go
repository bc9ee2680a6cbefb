package cluster

import (
	"net"
	"strings"
	"testing"
)

// A route port another process holds is refused at once, naming the
// setting: nats-server without a logger would only never become ready.
func TestStartRouteListenerBusy(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = Start(NodeOptions{
		Name: "n1", ClusterName: "busy", RouteListen: l.Addr().String(),
		Routes: []string{"nats://" + l.Addr().String()}, StoreDir: t.TempDir(), Secret: "s",
	})
	if err == nil || !strings.Contains(err.Error(), "cluster listen "+l.Addr().String()) {
		t.Fatalf("Start on a busy route port: %v; want a cluster listen error", err)
	}
}
