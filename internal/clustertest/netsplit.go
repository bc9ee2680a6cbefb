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
// node off from the others and restore it, as a network split would.
// A cut is silent, as most real splits are: the proxies keep the
// connections open and drop what goes through them, and hold new ones
// without answering, so the nodes find out only from their routes'
// pings. Restored, the proxies close what they held (the streams have
// lost bytes) and forward new connections again: the routes reconnect.
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
	conns map[net.Conn]bool // open connections, both ends; true: held during a cut
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

// setCut cuts the link (what is open from now on is held) or restores it
// (what was held is closed).
func (l *link) setCut(on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = on
	for c, held := range l.conns {
		switch {
		case on:
			l.conns[c] = true
		case held:
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

// pipe forwards one connection to the target, or holds it while the link
// is cut.
func (l *link) pipe(in net.Conn) {
	l.mu.Lock()
	cut := l.cut
	l.conns[in] = cut
	l.mu.Unlock()
	if cut {
		drop(l, in)
		return
	}
	out, err := net.Dial("tcp", l.target)
	if err != nil {
		l.forget(in)
		in.Close()
		return
	}
	l.mu.Lock()
	l.conns[out] = l.cut
	l.mu.Unlock()
	go l.copy(out, in)
	l.copy(in, out)
}

// copy forwards src to dst until either closes; bytes read while the link
// is cut are dropped, and so is the connection once the link is restored
// (setCut closes it).
func (l *link) copy(dst, src net.Conn) {
	defer func() {
		l.forget(src)
		l.forget(dst)
		src.Close()
		dst.Close()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			l.mu.Lock()
			held := l.conns[src] || l.conns[dst]
			l.mu.Unlock()
			if !held {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// drop reads and discards c until it is closed.
func drop(l *link, c net.Conn) {
	_, _ = io.Copy(io.Discard, c)
	c.Close()
	l.forget(c)
}

func (l *link) forget(c net.Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}
