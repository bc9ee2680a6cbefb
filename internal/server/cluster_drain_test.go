package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/duet-im/duet/clients/sdk"
	"github.com/duet-im/duet/internal/clustertest"
	"github.com/duet-im/duet/internal/server"
	"github.com/duet-im/duet/internal/wait"
	"github.com/duet-im/duet/usersig"
)

func userSig(t *testing.T, user string) string {
	t.Helper()
	sig, err := usersig.Gen(clustertest.SDKAppID, clustertest.Secret, user, 3600, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// connect5 logs user in over MQTT 5 (paho.golang) at addr: the client and
// a channel that hears the server's DISCONNECT, or the CONNACK refusing it.
func connect5(t *testing.T, addr, user string) (*paho.Client, <-chan *paho.Disconnect, *paho.Connack, error) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	gone := make(chan *paho.Disconnect, 1)
	c := paho.NewClient(paho.ClientConfig{
		ClientID: user + ":phone", Conn: conn,
		OnServerDisconnect: func(d *paho.Disconnect) { gone <- d },
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := c.Connect(ctx, &paho.Connect{
		ClientID: user + ":phone", Username: user, UsernameFlag: true,
		Password: []byte(userSig(t, user)), PasswordFlag: true, KeepAlive: 30, CleanStart: true,
	})
	if err == nil {
		t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	}
	return c, gone, ack, err
}

// connect311 logs user in over MQTT 3.1.1 (paho.mqtt.golang) at addr: the
// client, a channel closed when the connection is lost, and the CONNACK
// return code.
func connect311(t *testing.T, addr, user string) (pahov3.Client, <-chan struct{}, byte) {
	t.Helper()
	lost := make(chan struct{})
	var once sync.Once
	opts := pahov3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(user + ":laptop").
		SetUsername(user).SetPassword(userSig(t, user)).SetCleanSession(true).SetAutoReconnect(false).
		SetConnectRetry(false).SetProtocolVersion(4).
		SetConnectionLostHandler(func(pahov3.Client, error) { once.Do(func() { close(lost) }) })
	c := pahov3.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(5 * time.Second) {
		t.Fatal("MQTT 3.1.1 connect: no CONNACK")
	}
	if tok.Error() == nil {
		t.Cleanup(func() { c.Disconnect(0) })
	}
	return c, lost, tok.(*pahov3.ConnectToken).ReturnCode()
}

// drain POSTs /cluster/drain or /cluster/undrain (path) to a node's HTTP
// listener and decodes the answer.
func drain(t *testing.T, httpAddr, path string) server.DrainStatus {
	t.Helper()
	resp, err := http.Post("http://"+httpAddr+path, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ds server.DrainStatus
	if err := json.NewDecoder(resp.Body).Decode(&ds); resp.StatusCode != 200 || err != nil {
		t.Fatalf("POST %s: %s %v", path, resp.Status, err)
	}
	return ds
}

// nodeState is node's state in the /cluster page of the node at httpAddr.
func nodeState(t *testing.T, httpAddr, node string) server.NodeStatus {
	t.Helper()
	_, body := get(t, httpAddr, "/cluster")
	var cs server.ClusterStatus
	if err := json.Unmarshal([]byte(body), &cs); err != nil {
		t.Fatalf("/cluster: %v", err)
	}
	for _, n := range cs.Nodes {
		if n.Node == node {
			return n
		}
	}
	t.Fatalf("/cluster on %s does not list %s: %s", httpAddr, node, body)
	return server.NodeStatus{}
}

// Draining the owner (POST /cluster/drain, loopback only): another node
// owns the data within a couple of seconds while a client on a third node
// sends throughout (the SDK, retrying as docs/mqtt.md says) and no send
// fails; the drained node's MQTT 5 and 3.1.1 devices are disconnected and
// new ones refused with "server unavailable" (0x88, return code 3); its
// /healthz is 503 draining and /cluster lists it draining; REST through it
// still works. Undrained, it accepts devices and takes the data again
// when it is the only node not draining.
func TestClusterDrain(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	srvs := clustertest.Start(t, 3)
	o := clustertest.Owner(t, srvs)
	clustertest.WaitServing(t, srvs)
	x, y := (o+1)%3, (o+2)%3
	name := func(i int) string { return fmt.Sprint("n", i) }
	restImport(t, srvs[x].HTTPAddr(), "alice", "bob", "carol", "dave", "erin")
	clustertest.Settle(t, srvs)

	// Devices on the owner, the node to drain.
	_, gone5, _, err := connect5(t, srvs[o].Addr("tcp"), "carol")
	if err != nil {
		t.Fatalf("MQTT 5 login on node %d: %v", o, err)
	}
	_, lost311, code := connect311(t, srvs[o].Addr("tcp"), "dave")
	if code != 0 {
		t.Fatalf("MQTT 3.1.1 login on node %d: return code %d", o, code)
	}

	// alice sends to bob through node x all along.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	alice, err := sdk.Login(ctx, sdk.Options{
		Addr: srvs[x].Addr("tcp"), UserID: "alice", UserSig: userSig(t, "alice"), DeviceID: "phone",
		Dir: t.TempDir(), RequestTimeout: 3 * time.Second,
	})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { alice.Logout() })
	var (
		mu      sync.Mutex
		sent    int
		failed  []error
		stopped = make(chan struct{})
		done    = make(chan struct{})
	)
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stopped:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			_, err := alice.SendText(ctx, "bob", fmt.Sprint("m", i))
			cancel()
			mu.Lock()
			if err != nil {
				failed = append(failed, err)
			} else {
				sent++
			}
			mu.Unlock()
		}
	}()
	sentNow := func() int {
		mu.Lock()
		defer mu.Unlock()
		return sent
	}
	wait.For(t, 10*time.Second, 5*time.Millisecond, func() error {
		if n := sentNow(); n < 5 {
			return fmt.Errorf("%d sends before the drain", n)
		}
		return nil
	})

	// Non-loopback clients are refused (404, as /debug/pprof/), and the
	// node does not drain.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/cluster/drain", nil)
	req.RemoteAddr = "192.0.2.7:40000"
	srvs[o].Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusNotFound || !srvs[o].Store().Owns() {
		t.Fatalf("POST /cluster/drain from 192.0.2.7: %d, owner still: %v", rec.Code, srvs[o].Store().Owns())
	}

	began := time.Now()
	if ds := drain(t, srvs[o].HTTPAddr(), "/cluster/drain"); !ds.Draining || len(ds.Owned) != 0 || ds.Devices != 2 || ds.Node != name(o) {
		t.Fatalf("POST /cluster/drain: %+v, want %s draining, owning nothing, 2 devices disconnected", ds, name(o))
	}
	newOwner := -1
	wait.For(t, 10*time.Second, time.Millisecond, func() error {
		for _, i := range []int{x, y} {
			if srvs[i].Store().Owns() {
				newOwner = i
				return nil
			}
		}
		return fmt.Errorf("no other node owns the data")
	})
	took := time.Since(began)
	t.Logf("node %d drained: node %d owns the data %v after the drain began", o, newOwner, took.Round(time.Millisecond))
	if took > 3*time.Second {
		t.Errorf("takeover after a drain took %v, want a couple of seconds", took)
	}
	if srvs[o].Store().Owns() {
		t.Error("the drained node still owns the data")
	}
	before := sentNow()
	wait.For(t, 20*time.Second, 5*time.Millisecond, func() error {
		if n := sentNow(); n < before+5 {
			return fmt.Errorf("%d sends after the drain, want 5", n-before)
		}
		return nil
	})
	close(stopped)
	<-done
	if len(failed) > 0 {
		t.Errorf("%d of %d sends failed across the drain: %v", len(failed), sent+len(failed), failed)
	}

	// The drained node's devices are gone, and new ones are refused.
	select {
	case d := <-gone5:
		if d.ReasonCode != 0x9C {
			t.Errorf("MQTT 5 device's DISCONNECT: 0x%02x, want 0x9C use another server", d.ReasonCode)
		}
	case <-time.After(5 * time.Second):
		t.Error("the MQTT 5 device on the drained node was not disconnected")
	}
	select {
	case <-lost311:
	case <-time.After(5 * time.Second):
		t.Error("the MQTT 3.1.1 device on the drained node was not disconnected")
	}
	if _, _, ack, err := connect5(t, srvs[o].Addr("tcp"), "erin"); err == nil || ack == nil || ack.ReasonCode != 0x88 {
		t.Errorf("MQTT 5 login on the drained node: %v %+v, want CONNACK 0x88 server unavailable", err, ack)
	} else if ack.Properties == nil || !strings.Contains(ack.Properties.ReasonString, "draining") {
		t.Errorf("MQTT 5 CONNACK reason %+v, want it to say draining", ack.Properties)
	}
	if _, _, code := connect311(t, srvs[o].Addr("tcp"), "erin"); code != 3 {
		t.Errorf("MQTT 3.1.1 login on the drained node: return code %d, want 3 server unavailable", code)
	}
	// Other nodes take devices as before.
	if _, _, _, err := connect5(t, srvs[y].Addr("tcp"), "erin"); err != nil {
		t.Errorf("MQTT 5 login on node %d: %v", y, err)
	}

	// Load balancers see it go; operators see it draining.
	if code, body := get(t, srvs[o].HTTPAddr(), "/healthz"); code != 503 || !strings.Contains(body, `"reason":"draining"`) {
		t.Errorf("/healthz on the drained node: %d %s, want 503 draining", code, body)
	}
	wait.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := nodeState(t, srvs[x].HTTPAddr(), name(o)); n.State != "draining" || len(n.Owned) != 0 {
			return fmt.Errorf("/cluster on node %d: %+v, want %s draining, owning nothing", x, n, name(o))
		}
		return nil
	})
	// REST through the drained node is forwarded to the owner.
	chat(t, []*server.Server{srvs[o]}, []string{"bob", "alice"}, 100, 2)

	// Undrained: devices are let in again, and /healthz is ok.
	if ds := drain(t, srvs[o].HTTPAddr(), "/cluster/undrain"); ds.Draining {
		t.Fatalf("POST /cluster/undrain: %+v", ds)
	}
	if code, body := get(t, srvs[o].HTTPAddr(), "/healthz"); code != 200 {
		t.Errorf("/healthz after undrain: %d %s", code, body)
	}
	if _, _, _, err := connect5(t, srvs[o].Addr("tcp"), "carol"); err != nil {
		t.Errorf("MQTT 5 login on the undrained node: %v", err)
	}
	if n := nodeState(t, srvs[x].HTTPAddr(), name(o)); n.State != "serving" {
		t.Errorf("/cluster after undrain: %+v, want serving", n)
	}
	// It takes leases again: drained, the other two leave it the data.
	for _, i := range []int{x, y} {
		drain(t, srvs[i].HTTPAddr(), "/cluster/drain")
	}
	wait.For(t, 10*time.Second, time.Millisecond, func() error {
		if !srvs[o].Store().Owns() {
			return fmt.Errorf("the undrained node does not own the data")
		}
		return nil
	})
	chat(t, srvs, []string{"alice", "bob"}, 200, 3)
}
