package broker

import (
	"log/slog"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/duet-im/duet/command"
	"github.com/duet-im/duet/store"
)

// A device's own sends are passed, not sent; the cursor moves over them only
// once every event sent before them is acknowledged, so a connection lost
// meanwhile never leaves an unacknowledged event behind the cursor.
func TestSkipOwnCursor(t *testing.T) {
	newDev := func() *Device {
		return &Device{d: &Devices{}, ephemeral: true, pending: map[uint16]uint64{}, window: 8}
	}
	cases := []struct {
		name      string
		pending   map[uint16]uint64 // in flight when the own event is reached
		acked     uint64
		own       []uint64
		seq       uint64 // the event the pump reaches
		skip      bool
		ackedThen uint64 // cursor right after
		ackPID    uint16 // then this PUBACK arrives (0: none)
		ackedLast uint64
	}{
		{name: "nothing in flight", acked: 4, own: []uint64{5}, seq: 5, skip: true, ackedThen: 5, ackedLast: 5},
		{name: "waits for the event before", pending: map[uint16]uint64{1: 5}, acked: 4, own: []uint64{6}, seq: 6, skip: true, ackedThen: 4, ackPID: 1, ackedLast: 6},
		{name: "not own", acked: 4, own: []uint64{7}, seq: 5, skip: false, ackedThen: 4, ackedLast: 4},
		{name: "passed entries are dropped", acked: 4, own: []uint64{2, 3, 5}, seq: 5, skip: true, ackedThen: 5, ackedLast: 5},
		{name: "sync_complete in flight", pending: map[uint16]uint64{9: 0}, acked: 4, own: []uint64{5}, seq: 5, skip: true, ackedThen: 4, ackPID: 9, ackedLast: 5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dev := newDev()
			for pid, seq := range tc.pending {
				dev.track(pid, seq)
			}
			dev.acked, dev.next = tc.acked, tc.seq
			for _, s := range tc.own {
				dev.markOwn(s)
			}
			dev.mu.Lock()
			skip := dev.skipOwn(tc.seq)
			acked, next := dev.acked, dev.next
			dev.mu.Unlock()
			if skip != tc.skip || acked != tc.ackedThen {
				t.Fatalf("skipOwn(%d) = %v with cursor %d, want %v with %d", tc.seq, skip, acked, tc.skip, tc.ackedThen)
			}
			if skip && next != tc.seq+1 {
				t.Fatalf("next %d after skipping %d", next, tc.seq)
			}
			if tc.ackPID != 0 && !dev.puback(tc.ackPID) {
				t.Fatalf("PUBACK %d not recognised", tc.ackPID)
			}
			if dev.acked != tc.ackedLast {
				t.Fatalf("cursor %d at the end, want %d", dev.acked, tc.ackedLast)
			}
		})
	}
}

// A device that sends without reading its timeline keeps at most maxOwn
// entries; the oldest go (and those events are sent after all).
func TestOwnBounded(t *testing.T) {
	dev := &Device{}
	for s := uint64(1); s <= maxOwn+10; s++ {
		dev.markOwn(s)
	}
	if len(dev.own) != maxOwn || dev.own[0] != 11 {
		t.Fatalf("own holds %d entries from %d", len(dev.own), dev.own[0])
	}
}

// A pump learns of a new event from the ring before the store publishes its
// Seq (Committed runs first), so its idea of the last Seq takes the ring's.
func TestLastSeqSeesRing(t *testing.T) {
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ds := newDevices(st, slog.Default(), 8)
	if last, err := ds.lastSeq("alice"); err != nil || last != 0 {
		t.Fatalf("empty: %d, %v", last, err)
	}
	ds.recent["alice"] = &recentEvents{}
	ds.recent["alice"].add(1, []byte(`{"Seq":1}`))
	ds.recent["alice"].add(2, []byte(`{"Seq":2}`))
	if last, err := ds.lastSeq("alice"); err != nil || last != 2 {
		t.Fatalf("with events 1–2 in the ring only: %d, %v", last, err)
	}
}

// mochi cleans a connection up (and reports its subscriptions removed)
// after it ended, when the same client id may already be connected again:
// that report must not unsubscribe the new connection's device, or it would
// never be sent its timeline (a device logging out and straight back in).
func TestLateCleanupOfOldConnection(t *testing.T) {
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	svc := command.New(command.DefaultConfig(), st, slog.Default())
	b, err := New(Config{Key: "k"}, svc, st)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Devices.closeAll()
	h := &sessionHook{b: b}
	conn := func() *mqtt.Client {
		cl := b.Server.NewClient(nil, "tcp", "bob:phone", false)
		cl.Properties.Username = []byte("bob")
		return cl
	}
	old, cur := conn(), conn()
	cur.State.Subscriptions.Add("im/bob/#", packets.Subscription{Filter: "im/bob/#", Qos: 1})
	h.OnSessionEstablished(cur, packets.Packet{})
	dev := b.Devices.get("bob", "bob:phone")
	subscribed := func() bool { dev.mu.Lock(); defer dev.mu.Unlock(); return dev.subscribed && dev.liveSub }
	if dev == nil || !subscribed() {
		t.Fatal("the device did not take its subscription")
	}
	// The old connection's cleanup: no subscriptions left.
	h.OnUnsubscribed(old, packets.Packet{Filters: packets.Subscriptions{{Filter: "im/bob/#"}}})
	h.OnSubscribed(old, packets.Packet{}, nil)
	h.OnDisconnect(old, nil, false)
	if b.Devices.get("bob", "bob:phone") != dev || !subscribed() {
		t.Fatal("the old connection's cleanup unsubscribed or detached the new connection's device")
	}
}
