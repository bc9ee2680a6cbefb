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

// drain runs intents until none is left: an intent may itself defer
// writes (a reverse index back to the caller's partition).
func (p *partitions) drain(t *testing.T) {
	t.Helper()
	for range 10 {
		if p.receive(t) == 0 {
			return
		}
	}
	t.Fatal("intents still running after 10 rounds")
}

func has(t *testing.T, s *Store, k []byte) bool {
	t.Helper()
	v, err := get(s.db, k)
	if err != nil {
		t.Fatal(err)
	}
	return v != nil
}

// Relationship operations on a user of another partition run there, with
// that user's counters; the reverse indexes end in the partition of the
// user they are filed under, both ways, and go again with the records.
func TestIntentsRelations(t *testing.T) {
	p := newPartitions(t, 2, map[string]int{"alice": 0, "bob": 1})
	a, b := p.owners[0], p.owners[1]
	update := func(fn func(tx *Tx) error) {
		t.Helper()
		if err := a.UpdateFor("alice", fn); err != nil {
			t.Fatal(err)
		}
		p.drain(t)
	}
	update(func(tx *Tx) error {
		if _, err := tx.PutFriend("alice", "bob", &Friend{AddTime: 1}); err != nil {
			return err
		}
		if created, err := tx.PutFriend("bob", "alice", &Friend{AddTime: 1, Groups: []string{"g"}}); err != nil || created {
			return fmt.Errorf("deferred PutFriend: %v, %v", created, err)
		}
		if _, err := tx.PutBlocked("alice", "carol", 5); err != nil {
			return err
		}
		return tx.PutRequest("bob", &FriendRequest{From: "alice", AddType: "Add_Type_Both", AddTime: 2})
	})
	for _, c := range []struct {
		s    *Store
		k    []byte
		want bool
	}{
		{a, friendKey("alice", "bob"), true}, {b, friendedKey("bob", "alice"), true},
		{b, friendKey("bob", "alice"), true}, {a, friendedKey("alice", "bob"), true},
		{a, friendKey("bob", "alice"), false}, {b, friendedKey("alice", "bob"), false},
		{b, requestKey("bob", "alice"), true}, {a, requestedKey("alice", "bob"), true},
		{a, blockedKey("alice", "carol"), true}, {a, blockedByKey("carol", "alice"), true},
	} {
		if got := has(t, c.s, c.k); got != c.want {
			t.Errorf("partition %d: %q present %v, want %v", c.s.opts.Partition, c.k, got, c.want)
		}
	}
	if rc, err := b.RelCounts("bob"); err != nil || rc.Friends != 1 || rc.Pending != 1 {
		t.Fatalf("bob's counters %+v, %v", rc, err)
	}
	if g, err := b.FriendGroups("bob"); err != nil || len(g.Names) != 1 {
		t.Fatalf("bob's groups %+v, %v", g, err)
	}
	update(func(tx *Tx) error {
		for _, f := range [][2]string{{"alice", "bob"}, {"bob", "alice"}} {
			if _, err := tx.DeleteFriend(f[0], f[1]); err != nil {
				return err
			}
		}
		_, err := tx.DeleteRequest("bob", "alice")
		return err
	})
	for _, c := range []struct {
		s *Store
		k []byte
	}{{a, friendKey("alice", "bob")}, {b, friendedKey("bob", "alice")}, {b, friendKey("bob", "alice")}, {a, friendedKey("alice", "bob")}, {b, requestKey("bob", "alice")}, {a, requestedKey("alice", "bob")}} {
		if has(t, c.s, c.k) {
			t.Errorf("partition %d: %q still there", c.s.opts.Partition, c.k)
		}
	}
	if rc, err := b.RelCounts("bob"); err != nil || rc.Friends != 0 || rc.Pending != 0 {
		t.Fatalf("bob's counters %+v, %v", rc, err)
	}
}

// An account written by an intent is known to the target owner's caches
// at once: AccountExists asked before (and cached as false) answers true
// after, and a deleted one's kick is in force.
func TestIntentsAccountsKeepCaches(t *testing.T) {
	p := newPartitions(t, 2, map[string]int{"alice": 0, "bob": 1})
	a, b := p.owners[0], p.owners[1]
	if ok, err := b.AccountExists("bob"); err != nil || ok {
		t.Fatalf("bob exists before: %v, %v", ok, err)
	}
	if err := a.UpdateFor("alice", func(tx *Tx) error {
		return tx.PutAccount("bob", AccountFields{Nick: "Bob", SetNick: true}, 1)
	}); err != nil {
		t.Fatal(err)
	}
	p.drain(t)
	if ok, err := b.AccountExists("bob"); err != nil || !ok {
		t.Fatalf("bob exists after the intent: %v, %v", ok, err)
	}
	if acc, err := b.GetAccount("bob"); err != nil || acc.Nick != "Bob" {
		t.Fatalf("bob's account %+v, %v", acc, err)
	}
	at := time.Now()
	if err := a.UpdateFor("alice", func(tx *Tx) error { return tx.DeleteAccount("bob", at.UnixNano()) }); err != nil {
		t.Fatal(err)
	}
	p.drain(t)
	if ok, _ := b.AccountExists("bob"); ok {
		t.Fatal("bob still exists after the deleting intent")
	}
	if k := b.KickedAt("bob"); k.IsZero() {
		t.Fatal("no kick recorded for the deleted account")
	}
}

// A raw write from another partition may set only a reverse index of the
// target's user.
func TestIntentRawWriteIsBounded(t *testing.T) {
	for _, c := range []struct {
		k    string
		user string
		ok   bool
	}{{"rg/bob\x00alice", "bob", true}, {"rh/bob\x00x", "bob", true}, {"rs/bob\x00x", "bob", true},
		{"rg/bobby\x00x", "bob", false}, {"rf/bob\x00x", "bob", false}, {"a/bob", "bob", false}, {"rg/bob", "bob", false}} {
		if got := keyOf([]byte(c.k), c.user); got != c.ok {
			t.Errorf("keyOf(%q, %q) = %v", c.k, c.user, got)
		}
	}
}

// A recall from the sender's side changes the recipient's copy in the
// recipient's partition, by MsgKey, with the recipient's own Seq, and
// stops counting it unread there.
func TestIntentsRecallAcrossPartitions(t *testing.T) {
	p := newPartitions(t, 2, map[string]int{"alice": 0, "bob": 1})
	a, b := p.owners[0], p.owners[1]
	m, _ := send(t, a, "alice", "bob", 3, "oops")
	p.drain(t)
	bobSeq := timeline(t, b, "bob")[0].Seq
	recalled := []byte(`"Event":"msg","MsgKey":"` + m.MsgKey + `","MsgFlagBits":1}`)
	if err := a.UpdateFor("alice", func(tx *Tx) error {
		for _, u := range [][2]string{{"bob", "alice"}, {"alice", "bob"}} {
			if err := tx.ChangeCopy(u[0], u[1], m.MsgKey, CopyChange{Flags: 1, Event: recalled, Uncount: true}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	p.drain(t)
	evs := timeline(t, b, "bob")
	if len(evs) != 1 || evs[0].Seq != bobSeq || !bytes.Contains(evs[0].Data, []byte(`"MsgFlagBits":1`)) {
		t.Fatalf("bob's timeline after the recall: %v", evs)
	}
	if h, err := b.GetMessage("bob", "alice", m.MsgKey); err != nil || h.MsgFlagBits != 1 || h.ReceiverSeq != bobSeq {
		t.Fatalf("bob's copy: %+v, %v", h, err)
	}
	if cv, err := b.GetConversation("bob", "alice"); err != nil || cv.Unread != 0 {
		t.Fatalf("bob's conversation: %+v, %v", cv, err)
	}
}

// A transaction that writes a key of another partition other than through
// the deferred operations is refused whole: a missed case of the audit
// (docs/cluster.md §11.2, Q7) fails loudly instead of putting another
// partition's data into this one.
func TestForeignWriteRefused(t *testing.T) {
	p := newPartitions(t, 2, map[string]int{"alice": 0, "bob": 1, "carol": 1})
	a := p.owners[0]
	for _, c := range []struct {
		name string
		fn   func(tx *Tx) error
		ok   bool
	}{
		{"own account", func(tx *Tx) error { tx.Put(accountKey("alice"), []byte(`{}`)); return nil }, true},
		{"history record with a user of this partition", func(tx *Tx) error { tx.Put(historyKey("alice", "bob", 1, 1, 1), []byte(`{}`)); return nil }, true},
		{"another partition's account", func(tx *Tx) error { tx.Put(accountKey("bob"), []byte(`{}`)); return nil }, false},
		{"another partition's profile", func(tx *Tx) error { return tx.PutProfile("bob", &Profile{}) }, false},
		{"a history record of two other users", func(tx *Tx) error { tx.Put(historyKey("bob", "carol", 1, 1, 1), []byte(`{}`)); return nil }, false},
		{"another partition's reverse index, raw", func(tx *Tx) error { tx.Put(friendedKey("bob", "alice"), nil); return nil }, false},
	} {
		err := a.UpdateFor("alice", c.fn)
		if (err == nil) != c.ok {
			t.Errorf("%s: %v", c.name, err)
		}
		if !c.ok && has(t, a, accountKey("bob")) {
			t.Errorf("%s: written anyway", c.name)
		}
	}
}
