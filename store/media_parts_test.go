package store

import (
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"
)

// Media records and the time index read through the front of several
// partitions (docs/cluster.md §10.1, §14.3, §14.4, §11.2 item 6): an
// upload is found by UUID in whichever partition holds it; each message
// is scanned once, from its sender's partition; the cleaner of the
// uploader's partition finds a message sent by a user of another
// partition only by looking there; a late mark is its sender partition's,
// named by a user of that partition, and cleared there.
func TestMediaAcrossPartitions(t *testing.T) {
	p := newPartitions(t, 3, map[string]int{"admin": 0, "alice": 1, "bob": 2})
	front := &Store{opts: Options{PartitionOf: p.of}, parts: p.owners}
	now := time.Now()
	upload := func(owner, uuid string, admin bool) {
		t.Helper()
		u := &Upload{UUID: uuid, Owner: owner, Admin: admin, Type: "image", Created: now.Unix(), Deadline: now.Unix()}
		err := front.UpdateFor(owner, func(tx *Tx) error {
			if err := tx.PutUpload(u); err != nil {
				return err
			}
			return tx.CommitUpload(u)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	upload("admin", "u-admin", true)
	upload("alice", "u-alice", false)
	// msg stores a message carrying uuid, sent at `at`, as sendmsg does.
	msg := func(from, to string, random uint32, at time.Time, uuid string) *Message {
		t.Helper()
		m := &Message{From: from, To: to, MsgSeq: 1, MsgRandom: random, MsgTime: at.Unix(),
			MsgKey:  "1_" + strconv.FormatUint(uint64(random), 10) + "_" + strconv.FormatInt(at.Unix(), 10),
			MsgBody: json.RawMessage(`[{"MsgType":"TIMImageElem","MsgContent":{"UUID":"` + uuid + `"}}]`)}
		if err := front.UpdateFor(from, func(tx *Tx) error { return tx.PutMessage(m) }); err != nil {
			t.Fatal(err)
		}
		p.drain(t)
		return m
	}
	m1 := msg("alice", "bob", 1, now, "u-alice")
	m2 := msg("bob", "alice", 2, now, "u-admin") // the admin's upload, sent as bob

	for _, id := range []string{"u-admin", "u-alice"} {
		if u, err := front.GetUpload(id); err != nil || u.UUID != id {
			t.Fatalf("GetUpload(%s) on the front: %+v, %v", id, u, err)
		}
	}
	if _, err := front.GetUpload("u-none"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetUpload of no upload: %v", err)
	}
	seen := map[string]int{}
	if err := front.ScanMessages(now.Add(-time.Hour), now.Add(time.Hour), func(m *Message) error { seen[m.MsgKey]++; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 || seen[m1.MsgKey] != 1 || seen[m2.MsgKey] != 1 {
		t.Fatalf("ScanMessages on the front saw %v, want each of %s, %s once", seen, m1.MsgKey, m2.MsgKey)
	}
	if first, ok, err := front.FirstMessageTime(); !ok || err != nil || first.Unix() != now.Unix() {
		t.Fatalf("FirstMessageTime on the front: %v %v %v", first, ok, err)
	}

	// The admin's partition has no reference of bob's message: only the
	// look into the other partitions keeps the upload.
	d := DueCheck{UUID: "u-admin", At: now.Unix()}
	errDryRun := errors.New("dry run")
	err := p.owners[0].Update(func(tx *Tx) error {
		_, keep, err := tx.CheckCarried(d, now)
		if err == nil && keep {
			t.Errorf("the admin's partition alone found bob's message")
		}
		return errDryRun
	})
	if !errors.Is(err, errDryRun) {
		t.Fatal(err)
	}
	err = p.owners[0].Update(func(tx *Tx) error {
		_, keep, err := tx.CheckCarried(d, now, p.owners[1], p.owners[2])
		if err == nil && !keep {
			t.Errorf("CheckCarried with the other partitions gave up the admin's upload bob sent")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	// A late message into an hour that is over: bob's partition marks it.
	hour := now.Add(-3 * time.Hour).Truncate(time.Hour)
	msg("bob", "alice", 3, hour.Add(time.Minute), "x")
	if hs, err := front.DirtyHours(now.Unix(), 10); err != nil || len(hs) != 1 || hs[0] != hour.Unix() {
		t.Fatalf("DirtyHours on the front: %v, %v", hs, err)
	}
	marks, err := front.DirtyMarks(hour.Unix())
	if err != nil || len(marks) != 1 {
		t.Fatalf("DirtyMarks on the front: %q, %v", marks, err)
	}
	groups, err := front.SplitMarks(marks)
	if err != nil || len(groups) != 1 || groups[2] == nil || groups[2].User != "bob" {
		t.Fatalf("SplitMarks: %+v, %v; want bob's partition's, named by bob", groups, err)
	}
	if err := front.UpdateFor("bob", func(tx *Tx) error { return tx.ClearMarks(groups[2].Keys) }); err != nil {
		t.Fatal(err)
	}
	if err := front.MarkArchived(hour.Unix(), []byte(`{}`), marks); err != nil {
		t.Fatal(err)
	}
	if marks, err := front.DirtyMarks(hour.Unix()); err != nil || len(marks) != 0 {
		t.Fatalf("marks after the clear: %q, %v", marks, err)
	}
	if last, err := front.LastArchivedHour(); err != nil || last != hour.Unix() {
		t.Fatalf("LastArchivedHour on the front: %d, %v", last, err)
	}
	if err := front.UpdateFor("bob", func(tx *Tx) error { return tx.ClearMarks([][]byte{[]byte("mu/x")}) }); err == nil {
		t.Fatal("ClearMarks deleted a key that is no mark")
	}
}
