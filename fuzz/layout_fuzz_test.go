package fuzz

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/bits"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"

	"github.com/shmlane/shmlane/internal/layout"
)

// aligned returns n zero bytes starting on an 8-byte boundary, as a mapping
// would: Parse and the record decoders require the alignment.
func aligned(n int) []byte {
	if n == 0 {
		return []byte{}
	}
	words := make([]uint64, (n+7)/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), n)
}

// maxFuzzSegment bounds the segments FuzzValidate builds: every data and
// out-of-band capacity up to 64 KiB is reachable, and each run stays cheap.
const maxFuzzSegment = layout.DataOffset + 1<<16 + 1<<16

// validHeader returns the header page of a freshly initialised segment.
func validHeader(tb testing.TB, capacity, oob uint64, features uint32) (hdr []byte, size uint64) {
	g, err := layout.Plan(capacity, oob, features)
	if err != nil {
		tb.Fatalf("Plan(%d, %d, %#x) = %v", capacity, oob, features, err)
	}
	seg := aligned(int(g.Size))
	if err := layout.Init(seg, g, 4321); err != nil {
		tb.Fatalf("Init: %v", err)
	}
	return bytes.Clone(seg[:layout.HeaderSize]), g.Size
}

// FuzzValidate feeds arbitrary header bytes, in a segment of arbitrary
// length, to Parse and Validate. header is copied to the start of an
// aligned, zeroed segment of length size % (maxFuzzSegment+1); what lies
// after the header page does not matter to Parse, so the fuzzer spends its
// mutations on the header. Parse must not panic, must return the zero
// Geometry with an error, and must accept only what Init would write.
func FuzzValidate(f *testing.F) {
	ne := binary.NativeEndian
	for _, s := range []struct {
		capacity, oob uint64
		features      uint32
	}{
		{layout.MinCapacity, 0, 0},
		{8192, layout.MinOOBCapacity, 0},
		{1 << 16, 1 << 16, layout.FeatureMPMC},
	} {
		hdr, size := validHeader(f, s.capacity, s.oob, s.features)
		f.Add(hdr[:layout.OffHeaderEnd], uint32(size))
		f.Add(hdr[:layout.OffHeaderEnd], uint32(size-8))
		f.Add(hdr[:layout.OffHeaderEnd], uint32(size+layout.PageSize))

		mut := func(fn func(h []byte)) {
			h := bytes.Clone(hdr[:layout.OffHeaderEnd])
			fn(h)
			f.Add(h, uint32(size))
		}
		mut(func(h []byte) { h[0] ^= 0xff })
		mut(func(h []byte) { ne.PutUint32(h[layout.OffVersion:], layout.Version+1) })
		mut(func(h []byte) {
			ne.PutUint32(h[layout.OffFeatures:], ne.Uint32(h[layout.OffFeatures:])^layout.FeatureOOB)
		})
		mut(func(h []byte) { ne.PutUint64(h[layout.OffCapacity:], s.capacity*2) })
		mut(func(h []byte) { ne.PutUint64(h[layout.OffCapacity:], s.capacity+8) })
		mut(func(h []byte) { ne.PutUint64(h[layout.OffSize:], size+layout.PageSize) })
		mut(func(h []byte) { ne.PutUint64(h[layout.OffOOBCap:], s.oob^layout.PageSize) })
		mut(func(h []byte) { ne.PutUint32(h[layout.OffAreas:], 2) })
		mut(func(h []byte) { h[layout.OffReserved0+3] = 1 })
		mut(func(h []byte) { ne.PutUint64(h[layout.OffTable+16:], layout.ControlOffset) })
		mut(func(h []byte) { ne.PutUint64(h[layout.OffTable+40:], 1<<40) })
		// A non-zero byte in the reserved tail of the header page.
		f.Add(append(bytes.Clone(hdr[:layout.OffHeaderEnd]), 0, 0, 0, 9), uint32(size))
	}
	f.Add([]byte{}, uint32(0))
	f.Add([]byte("SHMLANE\x00"), uint32(layout.DataOffset))

	f.Fuzz(func(t *testing.T, header []byte, size uint32) {
		n := int(size % (maxFuzzSegment + 1))
		seg := aligned(n)
		copy(seg, header)

		g, err := layout.Parse(seg)
		verr := layout.Validate(seg)
		if (err == nil) != (verr == nil) {
			t.Fatalf("Parse() error = %v but Validate() = %v, want both nil or both non-nil", err, verr)
		}
		if err != nil {
			if g != (layout.Geometry{}) {
				t.Fatalf("Parse() = %+v, %v: want the zero Geometry with an error", g, err)
			}
			// The buffer is aligned, so every rejection is about the
			// contents and must say so.
			if !errors.Is(err, layout.ErrCorrupt) {
				t.Fatalf("Parse() = %v, want an error wrapping ErrCorrupt", err)
			}
			return
		}

		// Accepted: the geometry must describe seg exactly and be the one
		// Plan gives for its capacities, and Init must write the very same
		// header page (so no byte of an accepted header goes unchecked).
		if g.Size != uint64(len(seg)) {
			t.Fatalf("Parse() = %+v for a %d-byte segment: Size mismatch", g, len(seg))
		}
		if bits.OnesCount64(g.Capacity) != 1 || g.Capacity < layout.MinCapacity || g.Capacity > layout.MaxCapacity {
			t.Fatalf("Parse() accepted capacity %d", g.Capacity)
		}
		if (g.OOBCapacity != 0) != (g.Features&layout.FeatureOOB != 0) {
			t.Fatalf("Parse() accepted features %#x with oob capacity %d", g.Features, g.OOBCapacity)
		}
		end := uint64(0)
		for i, a := range g.Areas {
			if a.Off < end || a.Off+a.Len > g.Size || a.Off+a.Len < a.Off || a.Off%layout.RecordAlign != 0 {
				t.Fatalf("Parse() area %d = %+v: overlaps, unaligned or outside the %d-byte segment", i, a, g.Size)
			}
			end = a.Off + a.Len
		}
		if a := g.Areas[layout.AreaData]; a.Off%layout.PageSize != 0 || a.Len != g.Capacity {
			t.Fatalf("Parse() data area %+v, want page aligned and %d bytes", a, g.Capacity)
		}
		want, perr := layout.Plan(g.Capacity, g.OOBCapacity, g.Features)
		if perr != nil {
			t.Fatalf("Plan(%d, %d, %#x) = %v for a geometry Parse accepted", g.Capacity, g.OOBCapacity, g.Features, perr)
		}
		if diff := cmp.Diff(want, g); diff != "" {
			t.Fatalf("Parse() geometry differs from Plan's (-plan +parse):\n%s", diff)
		}
		fresh := aligned(len(seg))
		if err := layout.Init(fresh, g, ne.Uint32(seg[layout.OffCreator:])); err != nil {
			t.Fatalf("Init(Parse()) = %v", err)
		}
		if !bytes.Equal(fresh[:layout.HeaderSize], seg[:layout.HeaderSize]) {
			t.Fatalf("Parse() accepted a header page that Init would not write:\n got %x\nwant %x", seg[:layout.OffHeaderEnd], fresh[:layout.OffHeaderEnd])
		}
	})
}

// FuzzRecord reads a record from an arbitrary data area at an arbitrary
// position. The area's length is MinCapacity << (shift % 4); data is
// written into it starting at pos's offset and wrapping at the end, so the
// first bytes the fuzzer controls are the header at pos (and, near the
// end, the record after a padding one). ReadRecord must not panic; on
// error it returns no payload; a record it returns lies inside the area,
// behind a data header that matches it, at pos or right after the padding
// at pos.
func FuzzRecord(f *testing.F) {
	ne := binary.NativeEndian
	hdr := func(n uint32, typ uint8, pos uint64) []byte {
		return ne.AppendUint64(nil, layout.EncodeHeader(n, typ, pos))
	}
	const c = layout.MinCapacity
	f.Add(append(hdr(5, layout.TypeData, 0), "hello"...), uint64(0), uint8(0))
	f.Add(append(hdr(0, layout.TypeData, 64), 0), uint64(64), uint8(0))
	f.Add(append(hdr(8, layout.TypeData, c-16), "8 bytes!"...), uint64(c-16), uint8(0))
	f.Add(append(hdr(9, layout.TypeData, c-16), "9 bytes!!"...), uint64(c-16), uint8(0))
	f.Add(append(hdr(2032, layout.TypeData, 8), make([]byte, 2032)...), uint64(8), uint8(0))
	f.Add(append(hdr(2033, layout.TypeData, 8), make([]byte, 2033)...), uint64(8), uint8(0))
	pad := append(hdr(0, layout.TypePad, c-24), make([]byte, 16)...)
	f.Add(append(append(pad, hdr(3, layout.TypeData, c)...), "abc"...), uint64(c-24), uint8(0))
	f.Add(append(pad, hdr(0, layout.TypePad, c)...), uint64(c-24), uint8(0))
	f.Add(pad, uint64(c-24), uint8(0))
	f.Add(hdr(1, layout.TypeData, 5*c+8), uint64(5*c+8), uint8(0))
	f.Add(hdr(1, layout.TypeData, 4*c+8), uint64(5*c+8), uint8(1))
	f.Add(hdr(1, 3, 64), uint64(64), uint8(2))
	f.Add(hdr(1, layout.TypeData, 64), uint64(67), uint8(3))
	f.Add(hdr(1, layout.TypeData, ^uint64(7)), ^uint64(7), uint8(0))

	f.Fuzz(func(t *testing.T, data []byte, pos uint64, shift uint8) {
		capacity := uint64(layout.MinCapacity) << (shift % 4)
		mask := capacity - 1
		area := aligned(int(capacity))
		if uint64(len(data)) > capacity {
			data = data[:capacity]
		}
		for i, b := range data {
			area[(pos+uint64(i))&mask] = b
		}
		before := bytes.Clone(area)

		payload, next, ok, err := layout.ReadRecord(area, pos)
		if !bytes.Equal(area, before) {
			t.Fatalf("ReadRecord(%d) wrote to the area", pos)
		}
		if err != nil {
			if payload != nil || ok {
				t.Fatalf("ReadRecord(%d) = %q, ok=%v, %v: want no payload with an error", pos, payload, ok, err)
			}
			if !errors.Is(err, layout.ErrCorrupt) {
				t.Fatalf("ReadRecord(%d) = %v, want an error wrapping ErrCorrupt", pos, err)
			}
			return
		}
		if pos%layout.RecordAlign != 0 {
			t.Fatalf("ReadRecord(%d) accepted an unaligned position", pos)
		}
		first := ne.Uint64(area[pos&mask:])
		if !ok {
			if payload != nil {
				t.Fatalf("ReadRecord(%d) = %q with ok=false, want nil", pos, payload)
			}
			if first == 0 && next != pos {
				t.Fatalf("ReadRecord(%d) at a zero header: next = %d, want %d", pos, next, pos)
			}
			return
		}

		// The payload aliases the area: area[start : start+len].
		if payload == nil {
			t.Fatalf("ReadRecord(%d) = nil payload with ok=true", pos)
		}
		start := capacity - uint64(cap(payload))
		if cap(payload) > len(area) || start < layout.RecordHeaderSize || start%layout.RecordAlign != 0 || start+uint64(len(payload)) > capacity {
			t.Fatalf("ReadRecord(%d) payload at [%d, %d) of a %d-byte area, want inside and after an aligned header", pos, start, start+uint64(len(payload)), capacity)
		}
		if len(payload) > 0 && &payload[0] != &area[start] {
			t.Fatalf("ReadRecord(%d) payload does not alias the area", pos)
		}
		if len(payload) > layout.MaxMessage(capacity) {
			t.Fatalf("ReadRecord(%d) payload of %d bytes, max %d", pos, len(payload), layout.MaxMessage(capacity))
		}

		// The record sits at pos, or right after the padding at pos; its
		// header matches the payload, and next follows it. Positions are
		// modular (they only wrap after 2^64 bytes).
		recPos := pos
		if layout.DecodeHeader(first).Type == layout.TypePad {
			recPos = pos + (capacity - pos&mask)
		}
		h := layout.DecodeHeader(ne.Uint64(area[recPos&mask:]))
		want := layout.Header{Len: uint32(len(payload)), Type: layout.TypeData, Tag: layout.Tag(recPos)}
		if h != want {
			t.Fatalf("ReadRecord(%d) = %d-byte payload behind header %+v at position %d, want %+v", pos, len(payload), h, recPos, want)
		}
		if recPos&mask+layout.RecordHeaderSize != start {
			t.Fatalf("ReadRecord(%d) payload at offset %d, want %d", pos, start, recPos&mask+layout.RecordHeaderSize)
		}
		if got, wantNext := next, recPos+layout.RecordSize(len(payload)); got != wantNext {
			t.Fatalf("ReadRecord(%d) next = %d, want %d", pos, got, wantNext)
		}
		if span := next - pos; span == 0 || span > 2*capacity {
			t.Fatalf("ReadRecord(%d) next = %d: does not advance by one record", pos, next)
		}
	})
}
