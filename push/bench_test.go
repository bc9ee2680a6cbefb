package push

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/store"
)

func quietStore(b *testing.B) *store.Store {
	st, err := store.Open(b.TempDir(), store.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

// tokens gives user n offline devices with Xiaomi tokens (concurrently, so
// the store's group commit carries them).
func tokens(b *testing.B, st *store.Store, user string, n int) {
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				if err := st.SetPushToken(store.PushToken{User: user, Device: fmt.Sprintf("%s:%d", user, i), Vendor: "xiaomi", Token: fmt.Sprintf("rid-%d", i)}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkNotify10kDevices: one message to a user whose 10,000 devices are
// all offline, sent to one local vendor server. Reports notifications/s.
func BenchmarkNotify10kDevices(b *testing.B) {
	const devices = 10000
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		served.Add(1)
		io.WriteString(w, `{"result":"ok","code":0,"data":{"id":"m"}}`)
	}))
	defer srv.Close()
	st := quietStore(b)
	tokens(b, st, "bob", devices)
	p, err := New(Options{Store: st, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Config: Config{Grace: time.Millisecond, Xiaomi: &XiaomiConfig{AppSecret: "s", PackageName: "p", Endpoint: srv.URL, Concurrency: 64}}})
	if err != nil {
		b.Fatal(err)
	}
	p.Start()
	defer p.Close()
	r := &rig{st: st, p: p}
	m := p.Metrics().Vendor("xiaomi")
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		want := m.Sent() + devices
		r.message(b, "bob", fmt.Sprintf("k%d", i), "hello")
		for m.Sent() < want {
			time.Sleep(time.Millisecond)
		}
	}
	b.ReportMetric(float64(b.N*devices)/time.Since(start).Seconds(), "notifications/s")
	if m.Failed() != 0 {
		b.Errorf("%d failed", m.Failed())
	}
}

// BenchmarkMessagePath: openim/sendmsg throughput (parallel senders, the
// store's group commit) to a recipient whose phone is offline with a token,
// without a pusher, with one whose vendor answers at once, and with one
// whose vendor server never answers.
func BenchmarkMessagePath(b *testing.B) {
	for _, mode := range []string{"no-push", "vendor-ok", "vendor-hangs"} {
		b.Run(mode, func(b *testing.B) {
			st := quietStore(b)
			var p *Pusher
			if mode != "no-push" {
				hang := make(chan struct{})
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if mode == "vendor-ok" {
						io.WriteString(w, `{"result":"ok","code":0,"data":{"id":"m"}}`)
						return
					}
					select {
					case <-hang:
					case <-r.Context().Done():
					}
				}))
				defer srv.Close()
				defer close(hang)
				st.Close()
				var err error
				st, err = store.Open(b.TempDir(), store.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
					OnCommit: func(evs []store.Appended) {
						if p != nil {
							p.Committed(evs)
						}
					}})
				if err != nil {
					b.Fatal(err)
				}
				defer st.Close()
				p, err = New(Options{Store: st, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
					Config: Config{Grace: time.Millisecond, Xiaomi: &XiaomiConfig{AppSecret: "s", PackageName: "p", Endpoint: srv.URL, Concurrency: 4}}})
				if err != nil {
					b.Fatal(err)
				}
				p.Start()
				defer p.Close()
			}
			for _, u := range []string{"alice", "bob"} {
				st.ImportAccount(store.Account{UserID: u})
			}
			st.SetPushToken(store.PushToken{User: "bob", Device: "bob:phone", Vendor: "xiaomi", Token: "rid"})
			svc := command.New(command.DefaultConfig(), st, slog.New(slog.NewTextHandler(io.Discard, nil)))
			caller := &command.Caller{UserID: "alice", Device: "alice:d", Transport: command.MQTT}
			var rnd atomic.Int64
			b.SetParallelism(16)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					body := fmt.Sprintf(`{"To_Account":"bob","MsgRandom":%d,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]}`, rnd.Add(1))
					if rep := svc.Exec(context.Background(), caller, "openim/sendmsg", []byte(body)); rep.Err != nil {
						b.Error(rep.Err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
			if p != nil {
				b.ReportMetric(float64(p.Pending()), "pushes-pending")
			}
		})
	}
}
