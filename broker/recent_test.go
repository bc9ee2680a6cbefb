package broker

import (
	"fmt"
	"testing"
)

// The ring of recent events keeps the last recentSize in Seq order and takes
// rewritten copies (a recall) of the events it still holds.
func TestRecentEventsRing(t *testing.T) {
	var r recentEvents
	for seq := uint64(1); seq <= 40; seq++ {
		r.add(seq, []byte(fmt.Sprint("v", seq)))
	}
	if got := r.from(8, 5); got != nil {
		t.Fatalf("Seq 8 fell out of a %d-event ring, got %v", recentSize, got)
	}
	got := r.from(35, 100)
	if len(got) != 6 || got[0].Seq != 35 || string(got[5].Data) != "v40" {
		t.Fatalf("from 35: %v", got)
	}
	r.replace(36, []byte("recalled"))
	r.replace(3, []byte("gone")) // no longer kept: nothing to do
	if got := r.from(36, 1); string(got[0].Data) != "recalled" {
		t.Fatalf("after replace: %s", got[0].Data)
	}
	if got := r.from(41, 1); got != nil {
		t.Fatalf("beyond the end: %v", got)
	}
	r.add(50, []byte("v50")) // not contiguous: the ring starts again
	if got := r.from(40, 1); got != nil {
		t.Fatalf("kept across a gap: %v", got)
	}
	if got := r.from(50, 1); len(got) != 1 || string(got[0].Data) != "v50" {
		t.Fatalf("after restart: %v", got)
	}
}
