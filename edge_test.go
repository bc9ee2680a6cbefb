package main

// The server's edge under abuse (issue 11 §2–3), from outside: /healthz and
// /metrics while the MQTT listener is out of descriptors, and HTTP clients
// that send their requests too slowly.

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/duet-im/duet/internal/fdlimit"
	"github.com/duet-im/duet/internal/wait"
	"github.com/duet-im/duet/usersig"
)

// keepAlive is one HTTP/1.1 connection reused for every request, so the
// server answers it even when it cannot accept a new one.
type keepAlive struct {
	c net.Conn
	r *bufio.Reader
}

func (k *keepAlive) get(t *testing.T, path string) (int, string) {
	t.Helper()
	k.c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(k.c, "GET %s HTTP/1.1\r\nHost: duet\r\n\r\n", path)
	resp, err := http.ReadResponse(k.r, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

const edgeSecret = "edge-test-secret"

// Issue 11 §2: with the MQTT listener out of descriptors /healthz said ok
// and nothing counted it. The server runs in a child process (this test
// binary) with a low RLIMIT_NOFILE.
func TestHealthzWhileListenerOutOfDescriptors(t *testing.T) {
	if os.Getenv("DUET_EDGE_CHILD") != "" {
		edgeChild(t)
		return
	}
	child := fdlimit.Start(t, "TestHealthzWhileListenerOutOfDescriptors", "DUET_EDGE_CHILD="+t.TempDir())
	mqttAddr, httpAddr := child.Fields[0], child.Fields[1]
	limit, _ := strconv.Atoi(child.Fields[2])
	hc, err := net.Dial("tcp", httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	k := &keepAlive{c: hc, r: bufio.NewReader(hc)}
	if code, body := k.get(t, "/healthz"); code != http.StatusOK {
		t.Fatalf("healthz before: %d %s", code, body)
	}

	idle := child.Exhaust(t, mqttAddr, limit)
	wait.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if code, body := k.get(t, "/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "tcp") {
			return fmt.Errorf("healthz %d %s while the MQTT listener is out of descriptors", code, body)
		}
		return nil
	})
	for _, c := range idle {
		c.Close()
	}
	wait.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if code, body := k.get(t, "/healthz"); code != http.StatusOK {
			return fmt.Errorf("healthz %d %s after the descriptors came back", code, body)
		}
		return nil
	})
	_, metrics := k.get(t, "/metrics")
	m := regexp.MustCompile(`(?m)^duet_listener_accept_errors_total (\S+)$`).FindStringSubmatch(metrics)
	if m == nil {
		t.Fatal("/metrics has no duet_listener_accept_errors_total")
	}
	if n, _ := strconv.ParseFloat(m[1], 64); n < 1 {
		t.Errorf("duet_listener_accept_errors_total %s, want > 0", m[1])
	}
	t.Logf("accept errors counted: %s", m[1])

	// And a device gets in.
	sig, err := usersig.Gen(1400000000, edgeSecret, "alice", 3600, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := pahov3.NewClient(pahov3.NewClientOptions().AddBroker("tcp://" + mqttAddr).SetClientID("alice:phone").
		SetUsername("alice").SetPassword(sig).SetAutoReconnect(false).SetProtocolVersion(4))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("login after recovery: %v", tok.Error())
	}
	c.Disconnect(0)
}

// edgeChild runs the server for TestHealthzWhileListenerOutOfDescriptors with
// a descriptor limit a little above what it uses, until stdin closes.
func edgeChild(t *testing.T) {
	cfg := defaultConfig()
	cfg.Data, cfg.MQTT, cfg.WS, cfg.HTTP = filepath.Join(os.Getenv("DUET_EDGE_CHILD"), "data"), "127.0.0.1:0", "", "127.0.0.1:0"
	cfg.Secret, cfg.AutoAccounts = edgeSecret, true
	srv, err := start(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	limit, err := fdlimit.Lower(32)
	if err != nil {
		t.Fatal(err)
	}
	fdlimit.Ready(srv.Broker().Addr("tcp"), srv.HTTPAddr(), limit)
}

// Slowloris on HTTP: headers or a body dribbled a byte at a time are cut off
// at connect-timeout and http-read-timeout; oversized headers get 431.
func TestHTTPSlowloris(t *testing.T) {
	cfg := defaultConfig()
	cfg.Data, cfg.MQTT, cfg.WS, cfg.HTTP = filepath.Join(t.TempDir(), "data"), "127.0.0.1:0", "", "127.0.0.1:0"
	cfg.Secret = edgeSecret
	cfg.ConnectTimeout, cfg.HTTPReadTimeout = time.Second, 2*time.Second
	srv, err := start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	addr := srv.HTTPAddr()
	sig, err := usersig.Gen(1400000000, edgeSecret, "administrator", 3600, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	post := fmt.Sprintf("POST /v4/im_open_login_svc/account_import?sdkappid=1400000000&identifier=administrator&usersig=%s&random=1&contenttype=json HTTP/1.1\r\nHost: duet\r\nContent-Length: 1000\r\n\r\n", sig)
	for _, tc := range []struct {
		name     string
		head     string // sent at once
		dribble  string // then a byte every 50 ms
		deadline time.Duration
	}{
		{"slow headers", "", "GET /healthz HTTP/1.1\r\nHost: duet\r\nX-Slow: " + strings.Repeat("a", 200), cfg.ConnectTimeout},
		{"slow body", post, `{"UserID":"` + strings.Repeat("a", 200), cfg.HTTPReadTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			c.Write([]byte(tc.head))
			closed := make(chan time.Duration, 1)
			go func() {
				c.SetReadDeadline(time.Now().Add(tc.deadline + 5*time.Second))
				_, err := io.Copy(io.Discard, c)
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					closed <- 0
					return
				}
				closed <- time.Since(start)
			}()
			tick := time.NewTicker(50 * time.Millisecond) // the dribble's pace
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case took := <-closed:
					if took == 0 {
						t.Fatalf("still open 5 s after the %v deadline", tc.deadline)
					}
					t.Logf("closed after %v (deadline %v)", took.Round(time.Millisecond), tc.deadline)
					if took < tc.deadline-100*time.Millisecond || took > tc.deadline+time.Second {
						t.Errorf("closed after %v, want the %v deadline", took, tc.deadline)
					}
					return
				case <-tick.C:
					if i < len(tc.dribble) {
						c.Write([]byte{tc.dribble[i]})
					}
				}
			}
		})
	}
	t.Run("huge headers", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/healthz", nil)
		req.Header.Set("X-Big", strings.Repeat("a", 64<<10))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("64 KB of headers: %d, want 431", resp.StatusCode)
		}
	})
}
