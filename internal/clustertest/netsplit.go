package clustertest

import (
	"io"
	"net"
	"sync"
	"testing"

	"github.com/duet-im/duet/internal/server"
)

// Split puts every route between two nodes through a loopback TCP proxy of
// its own, one per direction (node i's route to node j goes to the proxy
// i→j, which forwards to j's route listener), so that a test can cut a
// node off from the others and restore it, as a network split would. A
// cut closes the connections through the proxies and refuses new ones
// (as a firewall that rejects): the nodes lose their routes at once. A
// silent split (packets dropped) is noticed by the routes' pings, after a
// minute or more with nats-server's defaults: too slow for a test.
// Restored, the proxies forward new connections again: the routes
// reconnect.
type Split struct {
	mu    sync.Mutex
	links map[[2]int]*link // by (from, to)
	sink  net.Listener
}

type link struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]bool // open connections, both ends
}

// Netsplit rewrites cfgs (from Configs, before New) so that each node's
// routes to the others go through proxies, and returns the Split that cuts
// and restores them. Each node advertises, in route gossip, an address
// that takes no route (the proxies would be bypassed otherwise: a node
// that hears of another through gossip connects to the address it hears).
func Netsplit(t testing.TB, cfgs []server.Config) *Split {
	t.Helper()
	s := &Split{links: map[[2]int]*link{}}
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.sink = sink
	go func() {
		for {
			c, err := sink.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(s.close)
	listen := make([]string, len(cfgs))
	for i := range cfgs {
		listen[i] = cfgs[i].Cluster.Listen
	}
	for i := range cfgs {
		routes := make([]string, len(cfgs))
		for j := range cfgs {
			if i == j {
				routes[j] = "nats://" + listen[j]
				continue
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			l := &link{ln: ln, target: listen[j], conns: map[net.Conn]bool{}}
			s.links[[2]int{i, j}] = l
			go l.serve()
			routes[j] = "nats://" + ln.Addr().String()
		}
		cfgs[i].Cluster.Routes = routes
		cfgs[i].Cluster.Advertise = sink.Addr().String()
	}
	return s
}

// Isolate cuts node k off from every other node, both ways.
func (s *Split) Isolate(k int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ft, l := range s.links {
		if ft[0] == k || ft[1] == k {
			l.setCut(true)
		}
	}
}

// Heal restores every link.
func (s *Split) Heal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.links {
		l.setCut(false)
	}
}

func (s *Split) close() {
	s.sink.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.links {
		l.ln.Close()
		l.mu.Lock()
		for c := range l.conns {
			c.Close()
		}
		l.mu.Unlock()
	}
}

// setCut cuts the link (what is open is closed, and so is what opens
// while it is cut) or restores it.
func (l *link) setCut(on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = on
	if on {
		for c := range l.conns {
			c.Close()
			delete(l.conns, c)
		}
	}
}

func (l *link) serve() {
	for {
		in, err := l.ln.Accept()
		if err != nil {
			return
		}
		go l.pipe(in)
	}
}

// pipe forwards one connection to the target, or closes it while the link
// is cut.
func (l *link) pipe(in net.Conn) {
	out, err := net.Dial("tcp", l.target)
	if err != nil {
		in.Close()
		return
	}
	l.mu.Lock()
	if l.cut {
		l.mu.Unlock()
		in.Close()
		out.Close()
		return
	}
	l.conns[in], l.conns[out] = true, true
	l.mu.Unlock()
	go l.copy(out, in)
	l.copy(in, out)
}

// copy forwards src to dst until either closes.
func (l *link) copy(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	src.Close()
	dst.Close()
	l.mu.Lock()
	delete(l.conns, src)
	delete(l.conns, dst)
	l.mu.Unlock()
}
