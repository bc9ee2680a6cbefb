package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/store"
)

// BenchmarkReplay10k measures, per op, the time from SUBSCRIBE to
// sync_complete for a device with a 10,000-event backlog (issue target:
// ≤ 1 s).
func BenchmarkReplay10k(b *testing.B) {
	s := startServer(b, serverOpts{})
	var total time.Duration
	for i := 0; i < b.N; i++ {
		user := fmt.Sprintf("replay%d", i)
		s.users(user)
		appendBacklog(b, s.store, user, 10000)
		d := s.connect(user, connectOpts{v5: true, noSub: true})
		start := time.Now()
		if code := d.subscribeCode("im/" + user + "/in"); code >= 0x80 {
			b.Fatalf("subscribe refused 0x%02x", code)
		}
		if last := d.drainToSync(); last != 10000 {
			b.Fatalf("LastSeq %d", last)
		}
		total += time.Since(start)
		d.close()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/replay")
}

// BenchmarkHistoryPage measures openim/getmsg pages of 20 messages with
// 1,000,000 messages stored (1,000 conversations of 1,000), at random
// points of random conversations, and reports p50/p99 (issue target:
// p99 ≤ 5 ms).
func BenchmarkHistoryPage(b *testing.B) {
	st, err := store.Open(b.TempDir(), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	const convs, per = 1000, 1000
	base := time.Now().Add(-time.Hour).Unix() - per
	body := json.RawMessage(`[{"MsgType":"TIMTextElem","MsgContent":{"Text":"a message of ordinary length, about sixty bytes"}}]`)
	for c := 0; c < convs; c++ {
		a, peer := fmt.Sprintf("u%d", c), fmt.Sprintf("p%d", c)
		for _, u := range []string{a, peer} {
			if _, err := st.ImportAccount(store.Account{UserID: u}); err != nil {
				b.Fatal(err)
			}
		}
		err := st.Update(func(tx *store.Tx) error {
			for i := 0; i < per; i++ {
				t := base + int64(i)
				m := &store.Message{From: a, To: peer, MsgSeq: uint32(i), MsgRandom: uint32(c), MsgTime: t,
					MsgKey: fmt.Sprintf("%d_%d_%d", i, c, t), MsgBody: body, Expire: t + 7*86400}
				if i%2 == 1 {
					m.From, m.To = peer, a
				}
				if err := tx.PutMessage(m); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	svc := command.New(command.DefaultConfig(), st, nil)
	rnd := rand.New(rand.NewPCG(7, 7))
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := rnd.IntN(convs)
		req := map[string]any{"Peer_Account": fmt.Sprintf("p%d", c), "MaxCnt": 20}
		if i%2 == 1 { // half the pages from somewhere in the past
			req["MaxTime"] = base + int64(rnd.IntN(per))
		}
		raw, _ := json.Marshal(req)
		start := time.Now()
		r := svc.Exec(context.Background(), &command.Caller{UserID: fmt.Sprintf("u%d", c)}, "openim/getmsg", raw)
		lat = append(lat, time.Since(start))
		if r.Err != nil {
			b.Fatal(r.Err)
		}
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
