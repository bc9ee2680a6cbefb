package sdk

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestGapPastRetention drives the processor with the events a server sends
// when events after this device's Seq have expired: the sync cannot bring
// them back, so the device must move past the gap (and stop trusting its
// complete history ranges) instead of waiting for them for ever.
func TestGapPastRetention(t *testing.T) {
	cases := []struct {
		name string
		// answer plays the server's side after the SDK asked for
		// openim/sync {FromSeq:1}.
		answer func(c *Client, in func(string), msg func(int, string) string)
	}{
		{"sync replays what is left", func(c *Client, in func(string), msg func(int, string) string) {
			in(msg(4, "d"))
			c.inbox.push(item{kind: itSyncReply, gen: 1, payload: []byte(`{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","LastSeq":4}`)})
			in(`{"Event":"sync_complete","LastSeq":4}`)
		}},
		{"sync refused three times", func(c *Client, in func(string), msg func(int, string) string) {
			for i := 0; i < 3; i++ {
				c.inbox.push(item{kind: itSyncReply, gen: 1, payload: []byte(`{"ActionStatus":"FAIL","ErrorCode":20001,"ErrorInfo":"no"}`)})
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder(t)
			c, err := open(Options{UserID: "bob", Dir: t.TempDir(), RequestTimeout: time.Second,
				MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, Listeners: rec.listeners(), Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			defer c.shutdown()
			c.startListeners() // Login would
			if err := c.db.db.Update(func(tx *bolt.Tx) error { return addRange(tx, "alice", keyMin, keyMax) }); err != nil {
				t.Fatal(err)
			}
			in := func(payload string) {
				c.inbox.push(item{kind: itDelivery, gen: 1, d: delivery{topic: "im/bob/in", payload: []byte(payload), ack: func() {}}})
			}
			msg := func(seq int, text string) string {
				return fmt.Sprintf(`{"Seq":%d,"Event":"msg","From_Account":"alice","To_Account":"bob","MsgKey":"%d_%d_100","MsgSeq":%d,"MsgRandom":%d,"MsgTimeStamp":100,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":%q}}]}`,
					seq, seq, seq, seq, seq, text)
			}
			c.inbox.push(item{kind: itConnUp, gen: 1})
			in(msg(1, "a"))
			in(`{"Event":"sync_complete","LastSeq":1}`)
			rec.waitRefreshes(1) // the list comes from the local store: no server here

			in(msg(4, "d")) // 2 and 3 expired on the server
			checkFor(t, 15*time.Second, func() error {
				if c.syncs.Load() == 0 {
					return fmt.Errorf("no openim/sync asked for")
				}
				return nil
			})
			if _, msgs, _ := rec.snapshot(); len(msgs) != 1 {
				t.Fatalf("an unanswered sync skipped the gap: %v", texts(msgs))
			}
			tc.answer(c, in, msg)
			checkFor(t, 15*time.Second, func() error {
				if _, msgs, _ := rec.snapshot(); !reflect.DeepEqual(texts(msgs), []string{"a", "d"}) {
					return fmt.Errorf("messages %v", texts(msgs))
				}
				if last, _ := c.LastSeq(); last != 4 {
					return fmt.Errorf("last Seq %d", last)
				}
				return nil
			})
			var rs []span
			_ = c.db.db.View(func(tx *bolt.Tx) error { rs = ranges(tx, "alice"); return nil })
			if len(rs) != 0 {
				t.Fatalf("complete ranges survived a lost gap: %v", rs)
			}
			// Events after the gap flow normally.
			in(msg(5, "e"))
			rec.waitMsgs(3)
		})
	}
}

// TestRanges checks the bookkeeping of complete history ranges.
func TestRanges(t *testing.T) {
	l, err := openLocal(t.TempDir() + "/r.db")
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	k := func(t int64) okey { return orderKey(t, 0, 0) }
	cases := []struct {
		add  [][2]int64
		want [][2]int64
	}{
		{[][2]int64{{10, 20}}, [][2]int64{{10, 20}}},
		{[][2]int64{{10, 20}, {30, 40}}, [][2]int64{{10, 20}, {30, 40}}},
		{[][2]int64{{10, 20}, {20, 30}}, [][2]int64{{10, 30}}}, // touching ranges merge
		{[][2]int64{{10, 20}, {15, 40}, {5, 12}}, [][2]int64{{5, 40}}},
		{[][2]int64{{10, 20}, {30, 40}, {0, 100}}, [][2]int64{{0, 100}}},
		{[][2]int64{{20, 10}}, nil}, // empty
	}
	for i, tc := range cases {
		peer := fmt.Sprint("p", i)
		err := l.db.Update(func(tx *bolt.Tx) error {
			for _, a := range tc.add {
				if err := addRange(tx, peer, k(a[0]), k(a[1])); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var got [][2]int64
		_ = l.db.View(func(tx *bolt.Tx) error {
			for _, s := range ranges(tx, peer) {
				got = append(got, [2]int64{s.lo.time(), s.hi.time()})
			}
			return nil
		})
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("case %d: ranges %v, want %v", i, got, tc.want)
		}
	}
	// coverBelow: the range must reach up to the cursor and start below it.
	_ = l.db.View(func(tx *bolt.Tx) error {
		for _, tc := range []struct {
			cursor int64
			lo     int64
			ok     bool
		}{{20, 10, true}, {15, 10, true}, {10, 0, false}, {25, 0, false}, {40, 30, true}} {
			lo, ok := coverBelow(tx, "p1", k(tc.cursor))
			if ok != tc.ok || (ok && lo.time() != tc.lo) {
				t.Errorf("coverBelow(%d) = %d %v, want %d %v", tc.cursor, lo.time(), ok, tc.lo, tc.ok)
			}
		}
		return nil
	})
}
