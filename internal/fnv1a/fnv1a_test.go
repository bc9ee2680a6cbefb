package fnv1a

import (
	"hash/fnv"
	"testing"
)

func TestSum32(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint32
	}{
		{"", 0x811c9dc5},  // the offset basis
		{"a", 0xe40c292c}, // FNV's published test vectors
		{"foobar", 0xbf9cf968},
		{"user_中文", 0}, // checked against hash/fnv below
	} {
		h := fnv.New32a()
		h.Write([]byte(tc.in))
		if tc.want == 0 {
			tc.want = h.Sum32()
		}
		if got := Sum32(tc.in); got != tc.want || got != h.Sum32() {
			t.Errorf("Sum32(%q) = %#x, want %#x (hash/fnv %#x)", tc.in, got, tc.want, h.Sum32())
		}
	}
}

func TestSum32DoesNotAllocate(t *testing.T) {
	s := "alice"
	if n := testing.AllocsPerRun(100, func() { _ = Sum32(s) }); n != 0 {
		t.Errorf("Sum32 allocates %v times", n)
	}
}
