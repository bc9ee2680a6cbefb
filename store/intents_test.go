package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/duet-im/duet/internal/wait"
)

// partitions is a two-node, several-partition store cluster in one test:
// per partition a log, the owner's store and another node's view of it,
// each a real Pebble directory.
type partitions struct {
	logs   []*memLog
	owners []*Store
	views  []*Store
	of     func(string) int
}

// newPartitions opens n partitions; users are placed by place (a user not
// in it is in partition 0).
func newPartitions(t *testing.T, n int, place map[string]int) *partitions {
	t.Helper()
	p := &partitions{of: func(u string) int { return place[u] }}
	for i := range n {
		opts := func() Options {
			return Options{Replicated: true, Partition: i, PartitionOf: p.of}
		}
		l := newMemLog()
		owner := open(t, t.TempDir(), opts())
		view := open(t, t.TempDir(), opts())
		t.Cleanup(func() { owner.Close(); view.Close() })
		l.takeOver(t, owner, fmt.Sprint("owner of ", i))
		l.follow(t, view)
		p.logs, p.owners, p.views = append(p.logs, l), append(p.owners, owner), append(p.views, view)
	}
	return p
}

// send stores a message from → to as command/sendmsg.go does.
func send(t *testing.T, s *Store, from, to string, random uint32, body string) (*Message, uint64) {
	t.Helper()
	now := s.Now().Unix()
	m := &Message{From: from, To: to, MsgSeq: 1, MsgRandom: random, MsgTime: now,
		MsgKey:  "1_" + strconv.FormatUint(uint64(random), 10) + "_" + strconv.FormatInt(now, 10),
		MsgBody: json.RawMessage(`[{"MsgType":"TIMTextElem","MsgContent":{"Text":` + strconv.Quote(body) + `}}]`),
		Expire:  now + 3600}
	tail := []byte(`"Event":"msg","MsgKey":"` + m.MsgKey + `"}`)
	err := s.UpdateFor(from, func(tx *Tx) error {
		var err error
		if m.ReceiverSeq, err = tx.Append(to, tail); err != nil {
			return err
		}
		if err := tx.Touch(to, from, m, true, false, 100, now); err != nil {
			return err
		}
		if m.SenderSeq, err = tx.AppendCopy(from, "dev", tail, to, m.ReceiverSeq); err != nil {
			return err
		}
		if err := tx.Touch(from, to, m, false, false, 100, now); err != nil {
			return err
		}
		return tx.PutMessage(m)
	})
	if err != nil {
		t.Fatal(err)
	}
	return m, m.SenderSeq
}

// receive runs every intent of every partition for every other one, as
// the owners do when their views apply entries with intents.
func (p *partitions) receive(t *testing.T) int {
	t.Helper()
	n := 0
	for _, dst := range p.owners {
		for _, src := range p.owners {
			k, err := dst.Receive(src)
			if err != nil {
				t.Fatal(err)
			}
			n += k
		}
	}
	return n
}

func timeline(t *testing.T, s *Store, user string) []Event {
	t.Helper()
	evs, err := s.ReadTimeline(user, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// A message between users of two partitions: the sender's partition
// commits its side at once and the recipient's side as an intent, which
// the recipient's partition executes once, with its own Seqs, however
// often it is asked to and on every node (docs/cluster.md I4c, I7, §11.2).
func TestIntentsSendAcrossPartitions(t *testing.T) {
	p := newPartitions(t, 2, map[string]int{"alice": 0, "bob": 1})
	a, b := p.owners[0], p.owners[1]
	// bob's timeline already has an event of its own: his Seqs are not alice's.
	if err := b.UpdateFor("bob", func(tx *Tx) error { _, err := tx.Append("bob", []byte(`"Event":"hello"}`)); return err }); err != nil {
		t.Fatal(err)
	}

	m, seq := send(t, a, "alice", "bob", 7, "hi")
	if seq != 1 {
		t.Fatalf("alice's Seq %d, want 1", seq)
	}
	// Before the intent runs: bob's partition has nothing of it.
	if evs := timeline(t, b, "bob"); len(evs) != 1 {
		t.Fatalf("bob's timeline before the intent ran: %d events", len(evs))
	}
	// alice's copy is whole (not a reference to a key her partition lacks)
	// and her history record has no Seq of bob's.
	evs := timeline(t, a, "alice")
	if len(evs) != 1 || !bytes.HasPrefix(evs[0].Data, []byte(`{"Seq":1,"Event":"msg"`)) {
		t.Fatalf("alice's timeline: %s", fmt.Sprint(evs))
	}
	hm, err := a.GetMessage("alice", "bob", m.MsgKey)
	if err != nil || hm.SenderSeq != 1 || hm.ReceiverSeq != 0 {
		t.Fatalf("alice's copy: %+v, %v", hm, err)
	}
	noPlaceholders(t, a)

	if n := p.receive(t); n != 1 {
		t.Fatalf("%d entries ran, want 1", n)
	}
	evs = timeline(t, b, "bob")
	if len(evs) != 2 || !bytes.HasPrefix(evs[1].Data, []byte(`{"Seq":2,"Event":"msg","MsgKey":"`+m.MsgKey)) {
		t.Fatalf("bob's timeline: %s", fmt.Sprint(evs))
	}
	hm, err = b.GetMessage("bob", "alice", m.MsgKey)
	if err != nil || hm.SenderSeq != 1 || hm.ReceiverSeq != 2 {
		t.Fatalf("bob's copy: %+v, %v", hm, err)
	}
	cv, err := b.GetConversation("bob", "alice")
	if err != nil || cv.Unread != 1 || cv.LastMsgKey != m.MsgKey || cv.MsgTime != m.MsgTime {
		t.Fatalf("bob's conversation: %+v, %v", cv, err)
	}
	if cv, err := a.GetConversation("alice", "bob"); err != nil || cv.Unread != 0 || cv.LastMsgKey != m.MsgKey {
		t.Fatalf("alice's conversation: %+v, %v", cv, err)
	}

	// Asked again, by the owner or after the log was replayed elsewhere:
	// nothing runs twice.
	if n := p.receive(t); n != 0 {
		t.Fatalf("%d entries ran again", n)
	}
	if evs := timeline(t, b, "bob"); len(evs) != 2 {
		t.Fatalf("bob's timeline after a second receive: %d events", len(evs))
	}
	// The other node's views have the same, from the logs alone.
	waitTimeline(t, p.views[1], "bob", 2)
	if evs := timeline(t, p.views[1], "bob"); !bytes.Equal(evs[1].Data, timeline(t, b, "bob")[1].Data) {
		t.Fatalf("the other node's view of bob: %v", evs)
	}
	noPlaceholders(t, b)
}

func waitApplied(t *testing.T, v *Store, l *memLog) {
	t.Helper()
	wait.For(t, 5*time.Second, time.Millisecond, func() error {
		if v.Applied() != l.last() {
			return fmt.Errorf("view at %d of %d", v.Applied(), l.last())
		}
		return nil
	})
}

func waitTimeline(t *testing.T, s *Store, user string, n int) {
	t.Helper()
	wait.For(t, 5*time.Second, time.Millisecond, func() error {
		if got := len(timeline(t, s, user)); got != n {
			return fmt.Errorf("%s has %d events, want %d", user, got, n)
		}
		return nil
	})
}

// noPlaceholders fails if a placeholder Seq reached a key: a timeline key,
// or a history record's Seqs.
func noPlaceholders(t *testing.T, s *Store) {
	t.Helper()
	it, err := s.db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if _, isTL := timelineUser(k); isTL && isPlaceholder(u64At(k[len(k)-8:])) {
			t.Fatalf("placeholder in key %q", k)
		}
		if bytes.HasPrefix(k, []byte("h/")) {
			var m Message
			if err := json.Unmarshal(it.Value(), &m); err != nil || isPlaceholder(m.SenderSeq) || isPlaceholder(m.ReceiverSeq) {
				t.Fatalf("history record %s: %+v, %v", it.Value(), m, err)
			}
		}
	}
}

// Many sends both ways between users of three partitions, committed in
// groups (several transactions, each with its own placeholders, in one
// entry): every timeline is gap-free, every history copy names the Seq
// its own partition gave, in every order the owners happen to receive.
func TestIntentsConcurrentSends(t *testing.T) {
	place := map[string]int{"a": 0, "b": 1, "c": 2, "a2": 0}
	p := newPartitions(t, 3, place)
	users := []string{"a", "b", "c", "a2"}
	const each = 40
	var wg sync.WaitGroup
	var mu sync.Mutex
	var sent []*Message
	for i, from := range users {
		for j, to := range users {
			if i == j {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range each {
					m, _ := send(t, p.owners[place[from]], from, to, uint32(i*10000+j*100+k), "x")
					mu.Lock()
					sent = append(sent, m)
					mu.Unlock()
				}
			}()
		}
	}
	// Receive while sending: intents run in source order, whenever asked.
	stop := make(chan struct{})
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			select {
			case <-stop:
				return
			default:
				p.receive(t)
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-recvDone
	p.receive(t)

	want := map[string]int{}
	for _, m := range sent {
		want[m.From]++
		want[m.To]++
	}
	for _, u := range users {
		s := p.owners[place[u]]
		evs := timeline(t, s, u)
		if len(evs) != want[u] {
			t.Fatalf("%s: %d events, want %d", u, len(evs), want[u])
		}
		for i, ev := range evs {
			if ev.Seq != uint64(i+1) {
				t.Fatalf("%s: event %d has Seq %d", u, i, ev.Seq)
			}
		}
		noPlaceholders(t, s)
	}
	// Each side's copy names the event its own timeline has.
	for _, m := range sent {
		for _, side := range []struct {
			user string
			seq  func(*Message) uint64
		}{{m.From, func(h *Message) uint64 { return h.SenderSeq }}, {m.To, func(h *Message) uint64 { return h.ReceiverSeq }}} {
			s := p.owners[place[side.user]]
			h, err := s.GetMessage(m.From, m.To, m.MsgKey)
			if err != nil {
				t.Fatalf("%s's copy of %s: %v", side.user, m.MsgKey, err)
			}
			seq := side.seq(h)
			if seq == 0 && place[m.From] == place[m.To] {
				t.Fatalf("%s's copy of %s has no Seq", side.user, m.MsgKey)
			}
			if seq == 0 {
				if side.user == m.To {
					t.Fatalf("the recipient %s's copy of %s has no Seq", side.user, m.MsgKey)
				}
				continue
			}
			evs, err := s.ReadTimeline(side.user, seq-1, 1)
			if err != nil || len(evs) != 1 || !bytes.Contains(evs[0].Data, []byte(m.MsgKey)) {
				t.Fatalf("%s's Seq %d for %s: %v, %v", side.user, seq, m.MsgKey, evs, err)
			}
		}
	}
	// Every node's views agree with their owners.
	for i, v := range p.views {
		waitApplied(t, v, p.logs[i])
	}
	for _, u := range users {
		if a, b := timeline(t, p.owners[place[u]], u), timeline(t, p.views[place[u]], u); fmt.Sprint(a) != fmt.Sprint(b) {
			t.Fatalf("%s: the views differ", u)
		}
	}
}

// A new owner of the recipient's partition (a takeover) finds in its view
// what the last one had executed, and runs only the rest; the source trims
// what ran, on every node.
func TestIntentsAfterTakeoverAndTrim(t *testing.T) {
	p := newPartitions(t, 2, map[string]int{"alice": 0, "bob": 1})
	send(t, p.owners[0], "alice", "bob", 1, "one")
	p.receive(t)
	send(t, p.owners[0], "alice", "bob", 2, "two")

	// The other node takes partition 1 over; its view has run entry 1's
	// intents through the log, not entry 2's.
	next := p.views[1]
	p.owners[1].Disown()
	p.logs[1].takeOver(t, next, "takeover")
	waitApplied(t, p.views[0], p.logs[0])
	if n, err := next.Receive(p.views[0]); err != nil || n != 1 {
		t.Fatalf("the new owner ran %d entries (%v), want 1", n, err)
	}
	waitTimeline(t, next, "bob", 2)

	// Partition 0's owner trims what partition 1 ran; both nodes' views of
	// partition 0 lose the records, and a later receive runs nothing.
	if err := p.owners[0].TrimOutbox(next); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*Store{p.owners[0], p.views[0]} {
		wait.For(t, 5*time.Second, time.Millisecond, func() error {
			if out, err := s.outbox(1, 0, 10); err != nil || len(out) != 0 {
				return fmt.Errorf("outbox %v, %v", out, err)
			}
			return nil
		})
	}
	if n, err := next.Receive(p.views[0]); err != nil || n != 0 {
		t.Fatalf("ran %d after the trim (%v)", n, err)
	}
	if evs := timeline(t, next, "bob"); len(evs) != 2 {
		t.Fatalf("bob: %d events", len(evs))
	}
}

// Only the owner of the target runs intents: another node's view refuses,
// writing nothing, and the intents stay for the owner.
func TestIntentsReceiveNeedsOwner(t *testing.T) {
	p := newPartitions(t, 2, map[string]int{"alice": 0, "bob": 1})
	send(t, p.owners[0], "alice", "bob", 1, "one")
	if _, err := p.views[1].Receive(p.owners[0]); err == nil {
		t.Fatal("a view that does not own partition 1 ran its intents")
	}
	if n := p.receive(t); n != 1 {
		t.Fatalf("the owner ran %d entries, want 1", n)
	}
}

// Without partitions, entries are version 1, byte for byte as before.
func TestEntryWithoutIntentsIsVersion1(t *testing.T) {
	if e := encodeEntry([]byte("r"), nil, nil); e[0] != 1 {
		t.Fatalf("version %d", e[0])
	}
	e := encodeEntry([]byte("r"), nil, []intent{{part: 1, user: "bob", op: opAppend, args: []byte{0}}})
	d, err := decodeEntry(e)
	if err != nil || e[0] != 2 || len(d.intents) != 1 || d.intents[0].user != "bob" || d.intents[0].part != 1 {
		t.Fatalf("%x → %+v, %v", e, d, err)
	}
}
