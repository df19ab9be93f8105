//go:build linux

package ring

import (
	"runtime/debug"
	"testing"
	"unsafe"
)

// touch reads the byte at p and reports whether the read faulted.
func touch(p unsafe.Pointer) (faulted bool) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if recover() != nil {
			faulted = true
		}
	}()
	_ = *(*byte)(p)
	return false
}

// TestGuardPages checks that a segment is mapped between two inaccessible
// pages, for segments made here and segments opened from a descriptor: a
// read one byte past either end faults instead of reading a neighbour.
func TestGuardPages(t *testing.T) {
	seg, err := Create(&Config{Capacity: MinCapacity, OOBCapacity: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	f, err := seg.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	opened, err := Open(f)
	if err != nil {
		t.Fatal(err)
	}
	defer opened.Close()
	for name, s := range map[string]*Segment{"created": seg, "opened": opened} {
		first := unsafe.Pointer(unsafe.SliceData(s.mem))
		last := unsafe.Add(first, len(s.mem)-1)
		if touch(first) || touch(last) {
			t.Fatalf("%s: reading the segment's own first or last byte faulted", name)
		}
		if !touch(unsafe.Add(first, -1)) {
			t.Errorf("%s: the byte before the segment is readable: no guard page", name)
		}
		if !touch(unsafe.Add(last, 1)) {
			t.Errorf("%s: the byte after the segment is readable: no guard page", name)
		}
	}
}
