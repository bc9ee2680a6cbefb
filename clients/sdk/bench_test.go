package sdk

import (
	"testing"
	"time"
)

// BenchmarkSendText measures one SendText round trip: request, durable
// store on the server, reply, local store.
func BenchmarkSendText(b *testing.B) {
	s := startServer(b)
	s.users("alice", "bob")
	a := s.login(b, "alice", "phone", "", MQTT5)
	a.rec.waitRefreshes(1)
	ctx := ctxT(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := a.SendText(ctx, "bob", "bench"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDelivery measures messages through to the peer's OnNewMessage
// (applied to its local store and acknowledged), senders pipelining.
func BenchmarkDelivery(b *testing.B) {
	s := startServer(b)
	s.users("alice", "bob")
	a := s.login(b, "alice", "phone", "", MQTT5)
	bob := s.login(b, "bob", "phone", "", MQTT5)
	bob.rec.waitRefreshes(1)
	ctx := ctxT(b)
	b.ResetTimer()
	errs := make(chan error, 4)
	per := (b.N + 3) / 4
	for w := 0; w < 4; w++ {
		go func() {
			for i := 0; i < per; i++ {
				if _, err := a.SendText(ctx, "bob", "bench"); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for w := 0; w < 4; w++ {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if _, msgs, _ := bob.rec.snapshot(); len(msgs) >= 4*per {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("not all messages delivered")
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkGetMessageLocal measures a 20-message history page served from
// the local store (the range is known complete).
func BenchmarkGetMessageLocal(b *testing.B) {
	s := startServer(b)
	s.users("alice", "bob")
	a := s.login(b, "alice", "phone", "", MQTT5)
	ctx := ctxT(b)
	for i := 0; i < 100; i++ {
		if _, err := a.SendText(ctx, "bob", "history"); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := a.GetMessage(ctx, "bob", 100, time.Time{}); err != nil {
		b.Fatal(err)
	}
	fetches := a.fetches.Load()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if ms, err := a.GetMessage(ctx, "bob", 20, time.Time{}); err != nil || len(ms) != 20 {
			b.Fatal(len(ms), err)
		}
	}
	b.StopTimer()
	if a.fetches.Load() != fetches {
		b.Fatal("a local page went to the server")
	}
}
