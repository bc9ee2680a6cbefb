package rest_test

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/duet-im/duet/store"
)

// BenchmarkRESTSendmsg measures openim/sendmsg over loopback HTTP with
// keep-alive from 50 concurrent callers: requests/s and p99 latency. Every
// send is a durable (fsynced, group-committed) store write.
//
//	go test -run ^$ -bench RESTSendmsg -benchtime 20000x ./rest/
func BenchmarkRESTSendmsg(b *testing.B) {
	const callers = 50
	e := newEnv(b, envOpts{})
	for i := range callers {
		for _, u := range []string{fmt.Sprintf("from%d", i), fmt.Sprintf("to%d", i)} {
			if _, err := e.st.ImportAccount(store.Account{UserID: u}); err != nil {
				b.Fatal(err)
			}
		}
	}
	url := e.srv.URL + "/v4/openim/sendmsg?" + e.query(admin)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: callers, MaxConnsPerHost: callers}}
	var next atomic.Int64
	lat := make([][]time.Duration, callers)
	var failed atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				body := fmt.Sprintf(`{"SyncOtherMachine":2,"From_Account":"from%d","To_Account":"to%d","MsgRandom":%d,"MsgSeq":%d,`+
					`"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"benchmark message %d"}}]}`, c, c, i, i, i)
				t0 := time.Now()
				resp, err := client.Post(url, "application/json", strings.NewReader(body))
				if err != nil {
					failed.Add(1)
					continue
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				lat[c] = append(lat[c], time.Since(t0))
				if !strings.Contains(string(raw), `"ErrorCode":0`) {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d requests failed", f)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(b.N)/el.Seconds(), "req/s")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
}
