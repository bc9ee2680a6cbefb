package command

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
)

// BenchmarkExecSendMsg is openim/sendmsg through Exec on a real store, as
// an MQTT device sends it (with a ReqId): "stored" is the ordinary send
// (many senders share each fsync), "online" an online-only message
// (MsgLifeTime 0), which is never stored, so what it measures is the
// command layer's own work — the body's decode among it.
func BenchmarkExecSendMsg(b *testing.B) {
	const pairs = 64
	for _, mode := range []struct {
		name  string
		extra string
	}{{"stored", ""}, {"online", `,"MsgLifeTime":0`}} {
		b.Run(mode.name, func(b *testing.B) {
			f := newFixture(b, nil)
			var users []string
			for i := 0; i < 2*pairs; i++ {
				users = append(users, fmt.Sprintf("u%d", i))
			}
			f.users(users...)
			body := `{"ReqId":"r%d","To_Account":%q,"MsgRandom":%d,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hello"}}]` + mode.extra + `}`
			var next, random atomic.Int64
			b.SetParallelism(16) // many senders per core: the store's group commit needs them
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(1)) % pairs
				from, to := users[2*i], users[2*i+1]
				c := &Caller{UserID: from, Transport: MQTT, Device: from + ":phone"}
				for pb.Next() {
					n := random.Add(1)
					r := f.svc.Exec(context.Background(), c, "openim/sendmsg", []byte(fmt.Sprintf(body, n, to, n)))
					if r.Err != nil {
						b.Fatal(r.Err)
					}
				}
			})
		})
	}
}
