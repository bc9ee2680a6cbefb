package store

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
)

// With partitions (docs/cluster.md §11.2) the sender's and the recipient's
// copies of a message are two records in two partitions, and each knows
// its own side's Seq only: the sender's copy says ReceiverSeq 0. A recall
// or an edit homed at the sender changes the recipient's copy, event and
// unread count by MsgKey, from the recipient's own copy. Two stores stand
// for the two partitions; the change made in the sender's is then run as
// the intent in the recipient's, with the same plain arguments.
func TestChangeCopyFromOwnCopy(t *testing.T) {
	const (
		key  = "7_99_1700000000"
		text = `[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]`
		edit = `[{"MsgType":"TIMTextElem","MsgContent":{"Text":"edited"}}]`
	)
	msg := Message{From: "alice", To: "bob", MsgSeq: 7, MsgRandom: 99, MsgTime: 1700000000, MsgKey: key, MsgBody: json.RawMessage(text)}
	eventOf := func(m *Message) []byte {
		return fmt.Appendf(nil, `"Event":"msg","From_Account":"alice","To_Account":"bob","MsgKey":%q,"MsgBody":%s,"CloudCustomData":%q,"MsgFlagBits":%d}`,
			m.MsgKey, m.MsgBody, m.CloudCustomData, m.MsgFlagBits)
	}
	for _, tc := range []struct {
		name     string
		change   CopyChange
		readTime int64 // bob's ReadTime with alice
		// bob's copy and unread count afterwards
		body, ccd string
		flags     int
		unread    int
	}{
		{"recall", CopyChange{Flags: FlagRecalled, Body: json.RawMessage(`[]`), Uncount: true}, 0, `[]`, "", FlagRecalled, 0},
		{"recall of a message read", CopyChange{Flags: FlagRecalled, Body: json.RawMessage(`[]`), Uncount: true}, msg.MsgTime, `[]`, "", FlagRecalled, 1},
		{"edit", CopyChange{Body: json.RawMessage(edit), CCD: "note", SetCCD: true}, 0, edit, "note", 0, 1},
		{"edit of CloudCustomData", CopyChange{CCD: "only", SetCCD: true}, 0, text, "only", 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var bobCommits [][]Appended
			alice := open(t, t.TempDir(), Options{})
			defer alice.Close()
			bob := open(t, t.TempDir(), Options{OnCommit: func(a []Appended) {
				mu.Lock()
				bobCommits = append(bobCommits, a)
				mu.Unlock()
			}})
			defer bob.Close()
			sent := eventOf(&msg)

			// The send: alice's partition stores her event and her copy
			// (ReceiverSeq unknown there); bob's stores his event (at
			// another Seq), his copy with both Seqs, and counts it unread.
			var aliceSeq, bobSeq uint64
			if err := alice.Update(func(tx *Tx) error {
				var err error
				if _, err = tx.Append("alice", []byte(`"Event":"x"}`)); err != nil {
					return err
				}
				if aliceSeq, err = tx.Append("alice", sent); err != nil {
					return err
				}
				m := msg
				m.SenderSeq = aliceSeq
				return tx.PutMessage(&m)
			}); err != nil {
				t.Fatal(err)
			}
			if err := bob.Update(func(tx *Tx) error {
				for range 4 {
					if _, err := tx.Append("bob", []byte(`"Event":"x"}`)); err != nil {
						return err
					}
				}
				var err error
				if bobSeq, err = tx.Append("bob", sent); err != nil {
					return err
				}
				m := msg
				m.SenderSeq, m.ReceiverSeq = aliceSeq, bobSeq
				if err := tx.PutMessage(&m); err != nil {
					return err
				}
				return tx.PutConversation("bob", &Conversation{Peer: "alice", MsgTime: msg.MsgTime, LastMsgKey: key, Unread: 1, ReadTime: tc.readTime})
			}); err != nil {
				t.Fatal(err)
			}

			// The command, homed at alice: its decisions and the new event
			// come from her copy, which does not know bob's Seq.
			c := tc.change
			if err := alice.Update(func(tx *Tx) error {
				m, err := tx.Message("alice", "bob", key)
				if err != nil {
					return err
				}
				if m.ReceiverSeq != 0 {
					return fmt.Errorf("alice's copy knows bob's Seq %d", m.ReceiverSeq)
				}
				m.MsgFlagBits |= c.Flags
				if c.Body != nil {
					m.MsgBody = c.Body
				}
				if c.SetCCD {
					m.CloudCustomData = c.CCD
				}
				c.Event = eventOf(m)
				return tx.ChangeCopy("alice", "bob", key, c)
			}); err != nil {
				t.Fatal(err)
			}
			// bob's partition runs the intent: plain arguments only.
			mu.Lock()
			before := len(bobCommits)
			mu.Unlock()
			if err := bob.Update(func(tx *Tx) error { return tx.ChangeCopy("bob", "alice", key, c) }); err != nil {
				t.Fatal(err)
			}

			for _, side := range []struct {
				s          *Store
				user, peer string
				seq        uint64
				senderSeq  uint64
				recvSeq    uint64
			}{
				{alice, "alice", "bob", aliceSeq, aliceSeq, 0},
				{bob, "bob", "alice", bobSeq, aliceSeq, bobSeq},
			} {
				evs, err := side.s.ReadTimeline(side.user, side.seq-1, 1)
				if err != nil {
					t.Fatal(err)
				}
				if exp := fmt.Sprintf(`{"Seq":%d,%s`, side.seq, c.Event); len(evs) != 1 || string(evs[0].Data) != exp {
					var got []string
					for _, e := range evs {
						got = append(got, string(e.Data))
					}
					t.Errorf("%s's event %d: %q, want %s", side.user, side.seq, got, exp)
				}
				m, err := side.s.GetMessage(side.user, side.peer, key)
				if err != nil {
					t.Fatal(err)
				}
				// The copy keeps its own Seqs: never the other side's record.
				if m.SenderSeq != side.senderSeq || m.ReceiverSeq != side.recvSeq || string(m.MsgBody) != tc.body ||
					m.CloudCustomData != tc.ccd || m.MsgFlagBits != tc.flags || m.MsgTime != msg.MsgTime {
					t.Errorf("%s's copy: Seqs %d/%d, body %s, CloudCustomData %q, flags %d; want Seqs %d/%d, body %s, %q, %d",
						side.user, m.SenderSeq, m.ReceiverSeq, m.MsgBody, m.CloudCustomData, m.MsgFlagBits, side.senderSeq, side.recvSeq, tc.body, tc.ccd, tc.flags)
				}
			}
			mu.Lock()
			after := bobCommits[before:]
			mu.Unlock()
			if len(after) != 1 || len(after[0]) != 1 || after[0][0].User != "bob" || after[0][0].Seq != bobSeq || !after[0][0].Rewritten {
				t.Errorf("bob's devices were told %+v, want bob's event %d rewritten", after, bobSeq)
			}
			var unread int
			if err := bob.Update(func(tx *Tx) error {
				cv, err := tx.Conversation("bob", "alice")
				if cv != nil {
					unread = cv.Unread
				}
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if unread != tc.unread {
				t.Errorf("bob's unread with alice: %d, want %d", unread, tc.unread)
			}
		})
	}
}
