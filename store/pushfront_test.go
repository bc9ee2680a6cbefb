package store

import (
	"bytes"
	"fmt"
	"testing"
)

// A push token that moves between users of different partitions (another
// user logs in on the same phone; docs/cluster.md §10.1, §11.2 item 7):
// the index px/{vendor}{token} is in the holder's partition, so the new
// holder's partition cannot find the old holder in its own keys. The
// front looks the token up in every partition; the old holder loses the
// token by an intent run in its partition, which also removes its px/
// record. At every step exactly one device holds the token, and px/
// names it in its partition only.
func TestPushTokenMovesAcrossPartitions(t *testing.T) {
	place := map[string]int{"bob": 0, "carol": 1, "dave": 0, "erin": 1}
	front, err := OpenPartitions(t.TempDir(), 2, func(u string) int { return place[u] }, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer front.Close()
	for i := range front.Partitions() {
		newMemLog().takeOver(t, front.Partition(i), fmt.Sprint("owner of ", i))
	}
	receive := func() {
		for i := range front.Partitions() {
			for j := range front.Partitions() {
				if _, err := front.Partition(i).Receive(front.Partition(j)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for _, holder := range []string{"bob", "carol", "dave", "erin", "bob"} {
		t.Run("to "+holder, func(t *testing.T) {
			dev := holder + ":phone"
			if err := front.SetPushToken(PushToken{User: holder, Device: dev, Vendor: "apns", Token: "T1"}); err != nil {
				t.Fatal(err)
			}
			receive()
			for u := range place {
				toks, err := front.PushTokens(u)
				if err != nil {
					t.Fatal(err)
				}
				want := 0
				if u == holder {
					want = 1
				}
				if len(toks) != want {
					t.Fatalf("%s holds %+v; only %s should hold the token", u, toks, holder)
				}
			}
			for i := range front.Partitions() {
				v, err := get(front.Partition(i).db, pushTokenIndex("apns", "T1"))
				if err != nil {
					t.Fatal(err)
				}
				switch want := key([]byte(holder), []byte{sep}, []byte(dev)); {
				case i == place[holder] && !bytes.Equal(v, want):
					t.Fatalf("partition %d's px/ names %q; want %q", i, v, want)
				case i != place[holder] && v != nil:
					t.Fatalf("partition %d's px/ still names %q; the holder %s is in partition %d", i, v, holder, place[holder])
				}
			}
		})
	}
}
