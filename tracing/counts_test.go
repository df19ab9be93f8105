package tracing

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCountsSub(t *testing.T) {
	prev := Counts{
		ByPID: map[int]ProcessCounts{
			10: {Total: 7, BySyscall: map[int]uint64{1: 5, 2: 2}},
			11: {Total: 3, BySyscall: map[int]uint64{1: 3}},
			12: {Total: 50, BySyscall: map[int]uint64{0: 50}},
		},
		Dropped:      4,
		LostChildren: 1,
	}
	cur := Counts{
		ByPID: map[int]ProcessCounts{
			10: {Total: 17, BySyscall: map[int]uint64{1: 5, 2: 9, 3: 3}},
			11: {Total: 3, BySyscall: map[int]uint64{1: 3}},
			12: {Total: 20, BySyscall: map[int]uint64{0: 20}}, // zeroed by Reset in between
			13: {Total: 1, BySyscall: map[int]uint64{60: 1}},
		},
		Dropped:      6,
		LostChildren: 1,
	}
	want := Counts{
		ByPID: map[int]ProcessCounts{
			10: {Total: 10, BySyscall: map[int]uint64{2: 7, 3: 3}},
			12: {Total: 20, BySyscall: map[int]uint64{0: 20}},
			13: {Total: 1, BySyscall: map[int]uint64{60: 1}},
		},
		Dropped:      2,
		LostChildren: 0,
	}
	if diff := cmp.Diff(want, cur.Sub(prev)); diff != "" {
		t.Errorf("Sub mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(Counts{ByPID: map[int]ProcessCounts{}}, cur.Sub(cur)); diff != "" {
		t.Errorf("c.Sub(c) mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(cur.ByPID, cur.Sub(Counts{}).ByPID); diff != "" {
		t.Errorf("c.Sub(Counts{}) mismatch (-want +got):\n%s", diff)
	}
}

func TestCountsAccessors(t *testing.T) {
	c := Counts{ByPID: map[int]ProcessCounts{
		10: {Total: 8, BySyscall: map[int]uint64{1: 5, 2: 2, 7: 1}},
		11: {Total: 4, BySyscall: map[int]uint64{2: 3, 9: 1}},
	}}
	if got := c.Total(10); got != 8 {
		t.Errorf("Total(10) = %d, want 8", got)
	}
	if got := c.Total(99); got != 0 {
		t.Errorf("Total(99) = %d, want 0", got)
	}
	if got := c.Syscall(11, 2); got != 3 {
		t.Errorf("Syscall(11, 2) = %d, want 3", got)
	}
	if got := c.Syscall(99, 2); got != 0 {
		t.Errorf("Syscall(99, 2) = %d, want 0", got)
	}
	sum := c.Sum()
	wantSum := ProcessCounts{Total: 12, BySyscall: map[int]uint64{1: 5, 2: 5, 7: 1, 9: 1}}
	if diff := cmp.Diff(wantSum, sum); diff != "" {
		t.Errorf("Sum mismatch (-want +got):\n%s", diff)
	}
	wantSorted := []SyscallCount{{1, 5}, {2, 5}, {7, 1}, {9, 1}}
	if diff := cmp.Diff(wantSorted, sum.Sorted()); diff != "" {
		t.Errorf("Sorted mismatch (-want +got):\n%s", diff)
	}
}
