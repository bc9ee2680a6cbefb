package cluster

import (
	"bytes"
	"context"
	"io"
	"reflect"
	"strings"
	"testing"
)

// With several partitions the manifest carries each partition's inbox
// marks, read back as written, and NextSeq is the numbering rule of a
// restore (docs/cluster.md §19): above the partition's own snapshot and
// every other partition's mark for it; 0 (no move) with one partition.
func TestBackupNextSeq(t *testing.T) {
	marks := []map[int]uint64{
		{1: 40, 2: 7}, // partition 0 ran 1's intents up to 40, 2's up to 7
		{0: 90},       // partition 1 ran 0's up to 90: past 0's snapshot (fuzzy)
		nil,           // partition 2 ran nothing
	}
	var buf bytes.Buffer
	_, err := WriteBackup(context.Background(), &buf, t.TempDir(), BackupSource{
		Manifest: Manifest{Cluster: "c", Source: "cluster", Partitions: 3, SnapshotFormat: 1},
		Cursors:  func(context.Context, func(CursorRecord) error) error { return nil },
		Snapshot: func(_ context.Context, p int, put func(uint64, io.Reader) error) error {
			return put([]uint64{80, 50, 3}[p], strings.NewReader("s"))
		},
		Marks: func(_ context.Context, p int) (map[int]uint64, error) { return marks[p], nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := ReadBackup(&buf, BackupReader{})
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range marks {
		if got := m.Parts[p].Inbox; !reflect.DeepEqual(got, want) {
			t.Errorf("partition %d's marks read back %v, want %v", p, got, want)
		}
	}
	for _, c := range []struct {
		p    int
		want uint64
	}{
		{0, 91}, // partition 1's mark for 0 is above 0's own snapshot (80)
		{1, 51}, // its own snapshot (50) is above partition 0's mark for it (40)
		{2, 8},  // partition 0's mark for it (7) is above its snapshot (3)
	} {
		if got := m.NextSeq(c.p); got != c.want {
			t.Errorf("NextSeq(%d) = %d, want %d", c.p, got, c.want)
		}
	}
	one := Manifest{Partitions: 1, Parts: []BackupPart{{Seq: 500}}}
	if got := one.NextSeq(0); got != 0 {
		t.Errorf("one partition: NextSeq %d, want 0 (nothing reads its numbering)", got)
	}
}
