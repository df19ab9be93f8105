package layout_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"

	"github.com/shmlane/shmlane/internal/layout"
)

// alignedBytes returns n zero bytes that start on an 8-byte boundary, as a
// mapping would (Parse requires it).
func alignedBytes(n int) []byte {
	if n == 0 {
		return []byte{}
	}
	words := make([]uint64, (n+7)/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), n)
}

// newSegment plans and initialises a segment in a fresh aligned buffer.
func newSegment(t *testing.T, capacity, oob uint64, features uint32) ([]byte, layout.Geometry) {
	t.Helper()
	g, err := layout.Plan(capacity, oob, features)
	if err != nil {
		t.Fatalf("Plan(%d, %d, %#x) = %v", capacity, oob, features, err)
	}
	seg := alignedBytes(int(g.Size))
	if err := layout.Init(seg, g, 1234); err != nil {
		t.Fatalf("Init(capacity=%d, oob=%d) = %v", capacity, oob, err)
	}
	return seg, g
}

var ne = binary.NativeEndian

// TestConstants checks the format's constants against each other and
// against the alignment rules, in the manner of static asserts.
func TestConstants(t *testing.T) {
	if layout.SlotSize != 128 {
		t.Errorf("SlotSize = %d, want 128 (two cache lines: the adjacent-line prefetcher pulls pairs)", layout.SlotSize)
	}
	if layout.PageSize != 4096 {
		t.Errorf("PageSize = %d, want 4096", layout.PageSize)
	}
	if layout.HeaderSize%layout.PageSize != 0 {
		t.Errorf("HeaderSize = %d, want a multiple of PageSize", layout.HeaderSize)
	}
	if layout.ControlOffset < layout.HeaderSize {
		t.Errorf("ControlOffset = %d overlaps the header (HeaderSize %d)", layout.ControlOffset, layout.HeaderSize)
	}
	if layout.ControlOffset%layout.SlotSize != 0 {
		t.Errorf("ControlOffset = %d, want a multiple of SlotSize", layout.ControlOffset)
	}
	if layout.ControlSize != layout.NumSlots*layout.SlotSize {
		t.Errorf("ControlSize = %d, want NumSlots*SlotSize = %d", layout.ControlSize, layout.NumSlots*layout.SlotSize)
	}
	if layout.ControlOffset+layout.ControlSize > layout.DataOffset {
		t.Errorf("control area [%d, %d) runs past DataOffset %d", layout.ControlOffset, layout.ControlOffset+layout.ControlSize, layout.DataOffset)
	}
	if layout.DataOffset%layout.PageSize != 0 {
		t.Errorf("DataOffset = %d, want page aligned", layout.DataOffset)
	}
	if layout.SlotOffset(0) != layout.ControlOffset {
		t.Errorf("SlotOffset(0) = %d, want ControlOffset %d", layout.SlotOffset(0), layout.ControlOffset)
	}
	for i := 1; i < layout.NumSlots; i++ {
		if d := layout.SlotOffset(i) - layout.SlotOffset(i-1); d != layout.SlotSize {
			t.Errorf("SlotOffset(%d) - SlotOffset(%d) = %d, want SlotSize %d", i, i-1, d, layout.SlotSize)
		}
	}
	if end := layout.SlotOffset(layout.NumSlots-1) + layout.SlotSize; end > layout.DataOffset {
		t.Errorf("last slot ends at %d, past DataOffset %d", end, layout.DataOffset)
	}

	// Header fields, in order: they must tile [0, OffHeaderEnd) with no gap
	// (a gap would be a byte that Parse neither reads nor requires to be
	// zero) and each must be aligned to its own size.
	fields := []struct {
		name      string
		off, size int
	}{
		{"magic", layout.OffMagic, 8},
		{"version", layout.OffVersion, 4},
		{"features", layout.OffFeatures, 4},
		{"capacity", layout.OffCapacity, 8},
		{"size", layout.OffSize, 8},
		{"creator", layout.OffCreator, 4},
		{"areas", layout.OffAreas, 4},
		{"oobcap", layout.OffOOBCap, 8},
		{"reserved", layout.OffReserved0, 16},
		{"offsets table", layout.OffTable, layout.NumAreas * 16},
	}
	if fields[0].off != 0 {
		t.Errorf("first header field %s at %d, want 0", fields[0].name, fields[0].off)
	}
	for i, f := range fields {
		if a := min(f.size, 8); f.off%a != 0 {
			t.Errorf("header field %s at offset %d is not %d-byte aligned", f.name, f.off, a)
		}
		if i+1 < len(fields) {
			if next := fields[i+1]; f.off+f.size != next.off {
				t.Errorf("header field %s ends at %d, next field %s starts at %d, want them adjacent", f.name, f.off+f.size, next.name, next.off)
			}
		}
	}
	last := fields[len(fields)-1]
	if last.off+last.size != layout.OffHeaderEnd {
		t.Errorf("offsets table ends at %d, want OffHeaderEnd = %d", last.off+last.size, layout.OffHeaderEnd)
	}
	if layout.OffHeaderEnd > layout.HeaderSize {
		t.Errorf("OffHeaderEnd = %d, want <= HeaderSize %d", layout.OffHeaderEnd, layout.HeaderSize)
	}

	areas := map[int]string{}
	for _, a := range []struct {
		name string
		idx  int
	}{{"AreaControl", layout.AreaControl}, {"AreaData", layout.AreaData}, {"AreaOOB", layout.AreaOOB}} {
		if a.idx < 0 || a.idx >= layout.NumAreas {
			t.Errorf("%s = %d, want in [0, NumAreas=%d)", a.name, a.idx, layout.NumAreas)
		}
		if prev, dup := areas[a.idx]; dup {
			t.Errorf("%s and %s share table index %d", prev, a.name, a.idx)
		}
		areas[a.idx] = a.name
	}

	// Slots: distinct and inside the control area; the MPMC range holds no
	// other named slot.
	slots := []struct {
		name string
		idx  int
	}{
		{"SlotProducer", layout.SlotProducer},
		{"SlotConsumer", layout.SlotConsumer},
		{"SlotProducerCtl", layout.SlotProducerCtl},
		{"SlotConsumerCtl", layout.SlotConsumerCtl},
		{"SlotOOBProducer", layout.SlotOOBProducer},
		{"SlotOOBConsumer", layout.SlotOOBConsumer},
		{"SlotOOBConsumerWait", layout.SlotOOBConsumerWait},
		{"SlotOOBFlush", layout.SlotOOBFlush},
	}
	if layout.SlotMPMCFirst > layout.SlotMPMCLast {
		t.Errorf("SlotMPMCFirst = %d > SlotMPMCLast = %d", layout.SlotMPMCFirst, layout.SlotMPMCLast)
	}
	mpmc := []struct {
		name string
		idx  int
	}{
		{"SlotMPMCTail", layout.SlotMPMCTail},
		{"SlotMPMCHead", layout.SlotMPMCHead},
		{"SlotMPMCReclaim", layout.SlotMPMCReclaim},
		{"SlotMPMCConsWait", layout.SlotMPMCConsWait},
		{"SlotMPMCProdWait", layout.SlotMPMCProdWait},
		{"SlotMPMCStats", layout.SlotMPMCStats},
		{"SlotMPMCProducers", layout.SlotMPMCProducers},
		{"SlotMPMCConsumers", layout.SlotMPMCConsumers},
	}
	for _, s := range mpmc {
		if s.idx < layout.SlotMPMCFirst || s.idx > layout.SlotMPMCLast {
			t.Errorf("%s = %d, want in the MPMC range [%d, %d]", s.name, s.idx, layout.SlotMPMCFirst, layout.SlotMPMCLast)
		}
	}
	slots = append(slots, mpmc...)
	seen := map[int]string{}
	for _, s := range slots {
		if s.idx < 0 || s.idx >= layout.NumSlots {
			t.Errorf("%s = %d, want in [0, NumSlots=%d)", s.name, s.idx, layout.NumSlots)
		}
		if prev, dup := seen[s.idx]; dup {
			t.Errorf("%s and %s share slot %d", prev, s.name, s.idx)
		}
		seen[s.idx] = s.name
	}

	// Words inside the hot slots are u64, inside the control slots u32; each
	// must be naturally aligned in the segment, inside its slot, and not
	// overlap another.
	type word struct {
		name      string
		off, size int
	}
	checkWords := func(kind string, slotIdx []int, words []word) {
		t.Helper()
		used := make([]string, layout.SlotSize)
		for _, w := range words {
			if w.off < 0 || w.off+w.size > layout.SlotSize {
				t.Errorf("%s word %s at [%d, %d) is outside its %d-byte slot", kind, w.name, w.off, w.off+w.size, layout.SlotSize)
				continue
			}
			for _, s := range slotIdx {
				if abs := layout.SlotOffset(s) + w.off; abs%w.size != 0 {
					t.Errorf("%s word %s in slot %d at segment offset %d is not %d-byte aligned", kind, w.name, s, abs, w.size)
				}
			}
			for b := w.off; b < w.off+w.size; b++ {
				if used[b] != "" {
					t.Errorf("%s words %s and %s overlap at byte %d", kind, used[b], w.name, b)
					break
				}
				used[b] = w.name
			}
		}
	}
	checkWords("hot", []int{layout.SlotProducer, layout.SlotConsumer}, []word{
		{"HotPos", layout.HotPos, 8},
		{"HotMsgs", layout.HotMsgs, 8},
		{"HotBytes", layout.HotBytes, 8},
		{"HotWakes", layout.HotWakes, 8},
		{"HotSleeps", layout.HotSleeps, 8},
	})
	checkWords("control", []int{layout.SlotProducerCtl, layout.SlotConsumerCtl}, []word{
		{"CtlSeq", layout.CtlSeq, 4},
		{"CtlWaiting", layout.CtlWaiting, 4},
		{"CtlClosed", layout.CtlClosed, 4},
		{"CtlPID", layout.CtlPID, 4},
	})

	checkWords("MPMC wait", []int{layout.SlotMPMCConsWait, layout.SlotMPMCProdWait}, []word{
		{"MPMCWaitSeq", layout.MPMCWaitSeq, 4},
		{"MPMCWaitCount", layout.MPMCWaitCount, 4},
		{"MPMCWaitSleeps", layout.MPMCWaitSleeps, 8},
		{"MPMCWaitWakes", layout.MPMCWaitWakes, 8},
		{"MPMCWaitJoined", layout.MPMCWaitJoined, 4},
		{"MPMCWaitDeaths", layout.MPMCWaitDeaths, 8},
		{"MPMCWaitDropped", layout.MPMCWaitDropped, 8},
	})
	checkWords("MPMC stats", []int{layout.SlotMPMCStats}, []word{
		{"MPMCSent", layout.MPMCSent, 8},
		{"MPMCSentBytes", layout.MPMCSentBytes, 8},
		{"MPMCRecv", layout.MPMCRecv, 8},
		{"MPMCRecvBytes", layout.MPMCRecvBytes, 8},
	})
	if layout.MPMCMaxPeers*4 > layout.SlotSize || layout.MPMCMaxPeers < 1 {
		t.Errorf("MPMCMaxPeers = %d: %d u32 pids do not fit one %d-byte slot", layout.MPMCMaxPeers, layout.MPMCMaxPeers, layout.SlotSize)
	}

	// Capacity bounds and record format.
	for _, c := range []struct {
		name string
		v    uint64
	}{
		{"MinCapacity", layout.MinCapacity},
		{"MaxCapacity", layout.MaxCapacity},
		{"MinOOBCapacity", layout.MinOOBCapacity},
		{"MaxOOBCapacity", layout.MaxOOBCapacity},
	} {
		if bits.OnesCount64(c.v) != 1 || c.v%layout.PageSize != 0 {
			t.Errorf("%s = %d, want a power of two and a multiple of PageSize", c.name, c.v)
		}
	}
	if layout.MinCapacity > layout.MaxCapacity || layout.MinOOBCapacity > layout.MaxOOBCapacity {
		t.Errorf("capacity bounds inverted: [%d, %d], oob [%d, %d]", layout.MinCapacity, layout.MaxCapacity, layout.MinOOBCapacity, layout.MaxOOBCapacity)
	}
	if layout.RecordHeaderSize != 8 || layout.RecordAlign != 8 {
		t.Errorf("RecordHeaderSize, RecordAlign = %d, %d, want 8, 8 (one atomic u64 header)", layout.RecordHeaderSize, layout.RecordAlign)
	}
	if layout.MaxRecordLen != 1<<24-1 {
		t.Errorf("MaxRecordLen = %d, want the 24-bit length field's maximum %d", layout.MaxRecordLen, 1<<24-1)
	}
	types := map[uint8]string{}
	for _, ty := range []struct {
		name string
		v    uint8
	}{
		{"TypeData", layout.TypeData}, {"TypePad", layout.TypePad},
		{"TypeBusy", layout.TypeBusy}, {"TypeReading", layout.TypeReading}, {"TypeDone", layout.TypeDone},
		{"TypeDiscard", layout.TypeDiscard}, {"TypeFree", layout.TypeFree},
	} {
		if ty.v == 0 {
			t.Errorf("%s = 0, want non-zero (0 means unpublished)", ty.name)
		}
		if prev, dup := types[ty.v]; dup {
			t.Errorf("%s and %s are both type %d", prev, ty.name, ty.v)
		}
		types[ty.v] = ty.name
	}
	if layout.FeatureOOB&layout.FeatureMPMC != 0 || bits.OnesCount32(layout.FeatureOOB) != 1 || bits.OnesCount32(layout.FeatureMPMC) != 1 {
		t.Errorf("FeatureOOB, FeatureMPMC = %#x, %#x, want distinct single bits", layout.FeatureOOB, layout.FeatureMPMC)
	}
	if got := string(ne.AppendUint64(nil, layout.Magic)); got != "SHMLANE\x00" {
		t.Errorf("Magic in memory order = %q, want %q", got, "SHMLANE\x00")
	}
}

func TestAlignRecordSize(t *testing.T) {
	for n := 0; n <= 64; n++ {
		got := layout.RecordSize(n)
		want := uint64((8 + n + 7) / 8 * 8)
		if got != want {
			t.Errorf("RecordSize(%d) = %d, want %d", n, got, want)
		}
		if a := layout.Align(uint64(n)); a%8 != 0 || a < uint64(n) || a >= uint64(n)+8 {
			t.Errorf("Align(%d) = %d, want the next multiple of 8", n, a)
		}
	}
	if got, want := layout.RecordSize(layout.MaxRecordLen), uint64(1<<24+8); got != want {
		t.Errorf("RecordSize(MaxRecordLen) = %d, want %d", got, want)
	}
}

// TestMaxMessage checks the guarantee MaxMessage documents for every valid
// capacity: a record of the largest payload, preceded by the largest
// padding it can need and followed by the producer's cleared header word,
// fits in an empty ring.
func TestMaxMessage(t *testing.T) {
	prev := 0
	for c := uint64(layout.MinCapacity); c <= layout.MaxCapacity; c <<= 1 {
		m := layout.MaxMessage(c)
		size := layout.RecordSize(m)
		if m <= 0 || m > layout.MaxRecordLen {
			t.Errorf("MaxMessage(%d) = %d, want in (0, MaxRecordLen=%d]", c, m, layout.MaxRecordLen)
		}
		if size+layout.RecordHeaderSize > c/2 {
			t.Errorf("MaxMessage(%d) = %d: RecordSize %d + header %d > capacity/2 = %d", c, m, size, layout.RecordHeaderSize, c/2)
		}
		// The worst case: the record does not fit before the end by one
		// alignment unit, so padding of size-8 bytes precedes it, and the
		// cleared word follows it.
		if worst := (size - layout.RecordAlign) + size + layout.RecordHeaderSize; worst > c {
			t.Errorf("MaxMessage(%d) = %d: padding %d + record %d + cleared word exceed the capacity", c, m, size-layout.RecordAlign, size)
		}
		if m < prev {
			t.Errorf("MaxMessage(%d) = %d < MaxMessage(%d) = %d, want non-decreasing", c, m, c/2, prev)
		}
		prev = m
	}
	if got, want := layout.MaxMessage(layout.MinCapacity), layout.MinCapacity/2-16; got != want {
		t.Errorf("MaxMessage(MinCapacity) = %d, want %d", got, want)
	}
	if got := layout.MaxMessage(layout.MaxCapacity); got != layout.MaxRecordLen {
		t.Errorf("MaxMessage(MaxCapacity) = %d, want MaxRecordLen %d", got, layout.MaxRecordLen)
	}
}

// TestMaxMessageSmallCapacity: MaxMessage must not answer with a payload
// larger than the area for capacities below 32 bytes (ring.MaxMessage
// passes any int through, 0 and negatives included).
func TestMaxMessageSmallCapacity(t *testing.T) {
	for _, c := range []uint64{0, 8, 16, 24, 31} {
		if got := layout.MaxMessage(c); uint64(got) > c/2 {
			t.Errorf("MaxMessage(%d) = %d, want <= capacity/2 = %d", c, got, c/2)
		}
	}
}

func TestHeaderEncoding(t *testing.T) {
	lens := []uint32{0, 1, 7, 8, 255, 1 << 16, layout.MaxRecordLen}
	positions := []uint64{0, 8, 4088, 4096, 1 << 32, 1<<35 - 8, 1 << 35, 1<<63 + 8, ^uint64(7)}
	for _, typ := range []uint8{layout.TypeData, layout.TypePad} {
		for _, n := range lens {
			for _, pos := range positions {
				h := layout.EncodeHeader(n, typ, pos)
				if h == 0 {
					t.Errorf("EncodeHeader(%d, %d, %d) = 0, want non-zero (0 means unpublished)", n, typ, pos)
				}
				want := layout.Header{Len: n, Type: typ, Tag: layout.Tag(pos)}
				if diff := cmp.Diff(want, layout.DecodeHeader(h)); diff != "" {
					t.Errorf("DecodeHeader(EncodeHeader(%d, %d, %d)) mismatch (-want +got):\n%s", n, typ, pos, diff)
				}
			}
		}
	}
	if got := layout.DecodeHeader(0); got != (layout.Header{}) {
		t.Errorf("DecodeHeader(0) = %+v, want zero", got)
	}
}

func TestTag(t *testing.T) {
	for _, tc := range []struct {
		pos  uint64
		want uint32
	}{
		{0, 0}, {8, 1}, {4096, 512}, {1<<35 - 8, 1<<32 - 1}, {1 << 35, 0}, {1<<35 + 8, 1},
	} {
		if got := layout.Tag(tc.pos); got != tc.want {
			t.Errorf("Tag(%d) = %#x, want %#x", tc.pos, got, tc.want)
		}
	}
	// A header left from an earlier lap, or one written one record off,
	// must carry a different tag, for every capacity and any position.
	for c := uint64(layout.MinCapacity); c <= layout.MaxCapacity; c <<= 1 {
		for _, pos := range []uint64{0, 8, c - 8, c, 3*c + 64, 1<<40 + 8} {
			if layout.Tag(pos) == layout.Tag(pos+c) {
				t.Errorf("Tag(%d) == Tag(%d + capacity %d): an earlier lap's header would pass", pos, pos, c)
			}
			if layout.Tag(pos) == layout.Tag(pos+layout.RecordAlign) {
				t.Errorf("Tag(%d) == Tag(%d): adjacent positions share a tag", pos, pos+layout.RecordAlign)
			}
		}
	}
}

// TestFree: the MPMC free word of a position is never 0, says TypeFree,
// and differs from every other position's, so that a producer holding a
// position from an earlier lap cannot claim.
func TestFree(t *testing.T) {
	for _, pos := range []uint64{0, 8, 4096, 1<<27 - 8, 1 << 27, 1<<35 - 8, 1 << 35, 1 << 50} {
		h := layout.Free(pos)
		if h == 0 || layout.DecodeHeader(h).Type != layout.TypeFree {
			t.Errorf("Free(%d) = %#x, want a non-zero TypeFree word", pos, h)
		}
		for c := uint64(layout.MinCapacity); c <= layout.MaxCapacity; c <<= 1 {
			if layout.Free(pos+c) == h {
				t.Errorf("Free(%d) == Free(%d + capacity %d)", pos, pos, c)
			}
		}
		if layout.Free(pos+8) == h {
			t.Errorf("Free(%d) == Free(%d)", pos, pos+8)
		}
	}
}

func TestPlanInitParse(t *testing.T) {
	for _, tc := range []struct {
		capacity, oob uint64
		features      uint32
	}{
		{layout.MinCapacity, 0, 0},
		{8192, 0, 0},
		{1 << 16, 0, layout.FeatureMPMC},
		{1 << 20, 0, 0},
		{layout.MinCapacity, layout.MinOOBCapacity, 0},
		{1 << 16, 1 << 16, layout.FeatureMPMC},
		{1 << 20, layout.MaxOOBCapacity, 0},
		// FeatureOOB in the request is ignored: the capacity decides.
		{8192, 0, layout.FeatureOOB},
	} {
		g, err := layout.Plan(tc.capacity, tc.oob, tc.features)
		if err != nil {
			t.Errorf("Plan(%d, %d, %#x) = %v, want nil", tc.capacity, tc.oob, tc.features, err)
			continue
		}
		wantFeatures := tc.features &^ layout.FeatureOOB
		if tc.oob != 0 {
			wantFeatures |= layout.FeatureOOB
		}
		want := layout.Geometry{
			Features:    wantFeatures,
			Capacity:    tc.capacity,
			OOBCapacity: tc.oob,
			Size:        layout.DataOffset + tc.capacity + tc.oob,
		}
		want.Areas[layout.AreaControl] = layout.Area{Off: layout.ControlOffset, Len: layout.ControlSize}
		want.Areas[layout.AreaData] = layout.Area{Off: layout.DataOffset, Len: tc.capacity}
		want.Areas[layout.AreaOOB] = layout.Area{Off: layout.DataOffset + tc.capacity, Len: tc.oob}
		if diff := cmp.Diff(want, g); diff != "" {
			t.Errorf("Plan(%d, %d, %#x) mismatch (-want +got):\n%s", tc.capacity, tc.oob, tc.features, diff)
		}

		seg := alignedBytes(int(g.Size))
		if err := layout.Init(seg, g, 4242); err != nil {
			t.Errorf("Init(capacity=%d, oob=%d) = %v, want nil", tc.capacity, tc.oob, err)
			continue
		}
		got, err := layout.Parse(seg)
		if err != nil {
			t.Errorf("Parse(Init(capacity=%d, oob=%d)) = %v, want nil", tc.capacity, tc.oob, err)
			continue
		}
		if diff := cmp.Diff(g, got); diff != "" {
			t.Errorf("Parse(Init(capacity=%d, oob=%d)) mismatch (-want +got):\n%s", tc.capacity, tc.oob, diff)
		}
		if err := layout.Validate(seg); err != nil {
			t.Errorf("Validate() = %v, want nil", err)
		}
		if !bytes.Equal(seg[:8], []byte("SHMLANE\x00")) {
			t.Errorf("segment starts with %q, want the magic %q", seg[:8], "SHMLANE\x00")
		}
		if c := ne.Uint32(seg[layout.OffCreator:]); c != 4242 {
			t.Errorf("creator = %d, want 4242", c)
		}
		// Init writes nothing outside the header.
		for i, b := range seg[layout.HeaderSize:] {
			if b != 0 {
				t.Errorf("Init wrote byte %d = %#x outside the header", layout.HeaderSize+i, b)
				break
			}
		}
	}
}

func TestPlanErrors(t *testing.T) {
	for _, tc := range []struct {
		capacity, oob uint64
		features      uint32
		want          string
	}{
		{0, 0, 0, "capacity=0"},
		{2048, 0, 0, "capacity=2048"},
		{4095, 0, 0, "capacity=4095"},
		{6144, 0, 0, "capacity=6144"},
		{layout.MaxCapacity * 2, 0, 0, "power of two"},
		{4096, 100, 0, "out-of-band capacity=100"},
		{4096, 2048, 0, "out-of-band"},
		{4096, layout.MaxOOBCapacity * 2, 0, "out-of-band"},
		{4096, 0, 1 << 7, "unknown feature bits"},
	} {
		g, err := layout.Plan(tc.capacity, tc.oob, tc.features)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Plan(%d, %d, %#x) = %v, want an error mentioning %q", tc.capacity, tc.oob, tc.features, err, tc.want)
		}
		if g != (layout.Geometry{}) {
			t.Errorf("Plan(%d, %d, %#x) returned geometry %+v with its error, want zero", tc.capacity, tc.oob, tc.features, g)
		}
	}
}

func TestInitErrors(t *testing.T) {
	g, err := layout.Plan(4096, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := layout.Init(alignedBytes(int(g.Size)-8), g, 1); err == nil {
		t.Errorf("Init(short segment) = nil, want a length error")
	}
	// A geometry that did not come from Plan: Init must report it, not
	// write a header that does not fit or leave one that Parse rejects
	// unnoticed.
	bad := g
	bad.Areas[layout.AreaData].Off += 8
	if err := layout.Init(alignedBytes(int(g.Size)), bad, 1); !errors.Is(err, layout.ErrCorrupt) {
		t.Errorf("Init(moved data area) = %v, want ErrCorrupt", err)
	}
}

// TestInitBadGeometry: a Geometry is a plain struct that a caller can fill
// in by hand; Init must reject one too small for the header with an error
// instead of indexing past the slice.
func TestInitBadGeometry(t *testing.T) {
	for _, size := range []uint64{0, 8, 64} {
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("Init(%d-byte segment, Geometry{Size: %d}) panicked: %v; want an error", size, size, r)
				}
			}()
			if err := layout.Init(alignedBytes(int(size)), layout.Geometry{Size: size}, 1); err == nil {
				t.Errorf("Init(%d-byte segment, Geometry{Size: %d}) = nil, want an error", size, size)
			}
		}()
	}
}

// TestValidateRejects applies one mutation at a time to a valid segment.
func TestValidateRejects(t *testing.T) {
	put32 := func(off int, v uint32) func([]byte) []byte {
		return func(s []byte) []byte { ne.PutUint32(s[off:], v); return s }
	}
	put64 := func(off int, v uint64) func([]byte) []byte {
		return func(s []byte) []byte { ne.PutUint64(s[off:], v); return s }
	}
	add64 := func(off int, d uint64) func([]byte) []byte {
		return func(s []byte) []byte { ne.PutUint64(s[off:], ne.Uint64(s[off:])+d); return s }
	}
	table := func(area, field int) int { return layout.OffTable + area*16 + field*8 }
	copyInto := func(n int) func([]byte) []byte {
		return func(s []byte) []byte { b := alignedBytes(n); copy(b, s); return b }
	}

	for _, tc := range []struct {
		name   string
		oob    uint64 // base segment: capacity 8192, this OOB capacity
		mutate func([]byte) []byte
		want   string // in the message
	}{
		{"bad magic", 0, func(s []byte) []byte { s[0] ^= 1; return s }, "bad magic"},
		{"zero magic", 0, put64(layout.OffMagic, 0), "bad magic"},
		{"version 0", 0, put32(layout.OffVersion, 0), "unsupported version 0"},
		{"older version", 0, put32(layout.OffVersion, layout.Version-1), fmt.Sprintf("unsupported version %d", layout.Version-1)},
		{"newer version", 0, put32(layout.OffVersion, layout.Version+1), fmt.Sprintf("unsupported version %d", layout.Version+1)},
		{"unknown feature", 0, put32(layout.OffFeatures, 1<<9), "unknown feature bits 0x200"},
		{"unknown high feature", 4096, put32(layout.OffFeatures, layout.FeatureOOB|1<<31), "unknown feature bits 0x80000000"},
		{"capacity 0", 0, put64(layout.OffCapacity, 0), "capacity=0"},
		{"capacity not power of two", 0, put64(layout.OffCapacity, 8192+4096), "power of two"},
		{"capacity below min", 0, put64(layout.OffCapacity, 2048), "capacity=2048"},
		{"capacity above max", 0, put64(layout.OffCapacity, layout.MaxCapacity*2), "power of two"},
		{"capacity huge", 0, put64(layout.OffCapacity, 1<<63), "power of two"},
		{"capacity changed, rest kept", 0, put64(layout.OffCapacity, 4096), "size"},
		{"oobcap not power of two", 4096, put64(layout.OffOOBCap, 5000), "out-of-band capacity"},
		{"oobcap above max", 4096, put64(layout.OffOOBCap, layout.MaxOOBCapacity*2), "out-of-band capacity"},
		{"header size mismatch", 0, add64(layout.OffSize, 4096), "size"},
		{"header size zero", 0, put64(layout.OffSize, 0), "size"},
		{"truncated by 8", 0, func(s []byte) []byte { return s[:len(s)-8] }, "size"},
		{"truncated to data offset", 0, func(s []byte) []byte { return s[:layout.DataOffset] }, "size"},
		{"truncated into control area", 0, func(s []byte) []byte { return s[:layout.DataOffset-8] }, "shorter than header"},
		{"truncated to nothing", 0, func(s []byte) []byte { return s[:0] }, "shorter than header"},
		{"longer than header says", 0, copyInto(layout.DataOffset + 8192 + 4096), "size"},
		{"areas count 2", 0, put32(layout.OffAreas, 2), "offsets table has 2 entries"},
		{"areas count 4", 0, put32(layout.OffAreas, 4), "offsets table has 4 entries"},
		{"control area moved", 0, add64(table(layout.AreaControl, 0), 128), "offsets table entry 0"},
		{"control area shrunk", 0, put64(table(layout.AreaControl, 1), 128), "offsets table entry 0"},
		{"data area moved", 0, add64(table(layout.AreaData, 0), 4096), "offsets table entry 1"},
		{"data area overlaps control", 0, put64(table(layout.AreaData, 0), layout.ControlOffset), "offsets table entry 1"},
		{"data area grown", 0, put64(table(layout.AreaData, 1), 1<<40), "offsets table entry 1"},
		{"oob area moved", 4096, add64(table(layout.AreaOOB, 0), 8), "offsets table entry 2"},
		{"oob area length", 4096, put64(table(layout.AreaOOB, 1), 0), "offsets table entry 2"},
		{"phantom oob area", 0, put64(table(layout.AreaOOB, 1), 4096), "offsets table entry 2"},
		{"reserved byte 48", 0, func(s []byte) []byte { s[layout.OffReserved0] = 1; return s }, "reserved header byte 48"},
		{"reserved byte 63", 0, func(s []byte) []byte { s[layout.OffTable-1] = 0x80; return s }, "reserved header byte 63"},
		{"reserved byte after table", 0, func(s []byte) []byte { s[layout.OffHeaderEnd] = 1; return s }, "reserved header byte 112"},
		{"reserved last header byte", 0, func(s []byte) []byte { s[layout.HeaderSize-1] = 1; return s }, "reserved header byte 4095"},
		{"oob feature without area", 0, put32(layout.OffFeatures, layout.FeatureOOB), "disagree"},
		{"oob area without feature", 4096, put32(layout.OffFeatures, 0), "disagree"},
		{"oobcap without feature", 0, put64(layout.OffOOBCap, 4096), "disagree"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seg, _ := newSegment(t, 8192, tc.oob, 0)
			seg = tc.mutate(seg)
			err := layout.Validate(seg)
			if !errors.Is(err, layout.ErrCorrupt) {
				t.Fatalf("Validate() = %v, want ErrCorrupt", err)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "shmlane: corrupt segment: ") || !strings.Contains(msg, tc.want) {
				t.Errorf("Validate() = %q, want \"shmlane: corrupt segment: ...%s...\"", msg, tc.want)
			}
			g, perr := layout.Parse(seg)
			if perr == nil || perr.Error() != err.Error() {
				t.Errorf("Parse() error = %v, want the same as Validate(): %v", perr, err)
			}
			if g != (layout.Geometry{}) {
				t.Errorf("Parse() = %+v with an error, want the zero Geometry", g)
			}
		})
	}
}

func TestValidateAcceptsLiveState(t *testing.T) {
	// Validate looks at the header only: indices, counters and records
	// change while a segment is live and must not make it invalid.
	seg, _ := newSegment(t, 4096, 4096, 0)
	for i := layout.HeaderSize; i < len(seg); i++ {
		seg[i] = byte(i*7 + 1)
	}
	if err := layout.Validate(seg); err != nil {
		t.Errorf("Validate() = %v, want nil for a header-valid segment with live control and data areas", err)
	}
	// The creator pid is not checked.
	ne.PutUint32(seg[layout.OffCreator:], ^uint32(0))
	if err := layout.Validate(seg); err != nil {
		t.Errorf("Validate() with creator %#x = %v, want nil", ^uint32(0), err)
	}
}

func TestParseUnaligned(t *testing.T) {
	seg, _ := newSegment(t, 4096, 0, 0)
	b := alignedBytes(len(seg) + 8)
	copy(b[4:], seg)
	if _, err := layout.Parse(b[4 : 4+len(seg)]); err == nil {
		t.Errorf("Parse(unaligned segment) = nil, want an alignment error")
	}
}

// putHeader stores a record header at pos in area.
func putHeader(area []byte, pos, h uint64) {
	ne.PutUint64(area[pos&uint64(len(area)-1):], h)
}

func TestCheckHeader(t *testing.T) {
	const c = 4096
	maxMsg := layout.MaxMessage(c)
	data := func(n uint32, pos uint64) uint64 { return layout.EncodeHeader(n, layout.TypeData, pos) }
	for _, tc := range []struct {
		name     string
		h, pos   uint64
		wantSize uint64
		wantErr  string
	}{
		{"empty record", data(0, 0), 0, 8, ""},
		{"one byte", data(1, 64), 64, 16, ""},
		{"eight bytes", data(8, 64), 64, 16, ""},
		{"max record", data(uint32(maxMsg), 0), 0, layout.RecordSize(maxMsg), ""},
		{"ends at the end", data(8, c-16), c - 16, 16, ""},
		{"later lap", data(100, 5*c+256), 5*c + 256, layout.RecordSize(100), ""},
		{"padding", layout.EncodeHeader(0, layout.TypePad, c-64), c - 64, 64, ""},
		{"padding later lap", layout.EncodeHeader(0, layout.TypePad, 3*c+8), 3*c + 8, c - 8, ""},
		{"tag of next position", data(1, 72), 64, 0, "tag"},
		{"tag of earlier lap", data(1, 64), c + 64, 0, "tag"},
		{"tag of later lap", data(1, c+64), 64, 0, "tag"},
		{"type 0", 1 | uint64(layout.Tag(64))<<32, 64, 0, "unknown type 0"},
		{"type 0xee", layout.EncodeHeader(1, 0xee, 64), 64, 0, "unknown type 238"},
		{"type 255", layout.EncodeHeader(1, 255, 64), 64, 0, "unknown type 255"},
		{"length over max", data(uint32(maxMsg)+1, 0), 0, 0, "length 2033, max 2032"},
		{"length field max", data(layout.MaxRecordLen, 0), 0, 0, "length"},
		{"crossing the end", data(9, c-16), c - 16, 0, "crosses the end"},
		{"crossing by one word", data(16, c-16), c - 16, 0, "crosses the end"},
		{"padding with length", layout.EncodeHeader(8, layout.TypePad, 64), 64, 0, "padding record"},
	} {
		size, err := layout.CheckHeader(tc.h, tc.pos, c, maxMsg)
		if tc.wantErr == "" {
			if err != nil || size != tc.wantSize {
				t.Errorf("%s: CheckHeader(%#x, %d) = %d, %v, want %d, nil", tc.name, tc.h, tc.pos, size, err, tc.wantSize)
			}
			continue
		}
		if !errors.Is(err, layout.ErrCorrupt) || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: CheckHeader(%#x, %d) = %d, %v, want ErrCorrupt mentioning %q", tc.name, tc.h, tc.pos, size, err, tc.wantErr)
		}
	}
}

func TestReadRecord(t *testing.T) {
	const c = 4096
	maxMsg := layout.MaxMessage(c)
	type rec struct {
		pos  uint64
		h    uint64
		fill int // payload bytes to fill with a pattern after the header
	}
	data := func(pos uint64, n int) rec {
		return rec{pos, layout.EncodeHeader(uint32(n), layout.TypeData, pos), n}
	}
	pad := func(pos uint64) rec { return rec{pos, layout.EncodeHeader(0, layout.TypePad, pos), 0} }
	raw := func(pos, h uint64) rec { return rec{pos, h, 0} }

	for _, tc := range []struct {
		name     string
		recs     []rec
		pos      uint64
		wantLen  int    // payload length when ok
		wantAt   uint64 // payload offset in the area when ok
		wantNext uint64
		wantOK   bool
		wantErr  string // "" for no error
	}{
		{"first record", []rec{data(0, 5)}, 0, 5, 8, 16, true, ""},
		{"empty payload", []rec{data(64, 0)}, 64, 0, 72, 72, true, ""},
		{"aligned payload", []rec{data(64, 16)}, 64, 16, 72, 88, true, ""},
		{"max payload", []rec{data(8, maxMsg)}, 8, maxMsg, 16, 8 + layout.RecordSize(maxMsg), true, ""},
		{"ends at the end", []rec{data(c-16, 8)}, c - 16, 8, c - 8, c, true, ""},
		{"second lap", []rec{data(c+128, 3)}, c + 128, 3, 136, c + 144, true, ""},
		{"padding to the end", []rec{pad(c - 40), data(c, 100)}, c - 40, 100, 8, c + layout.RecordSize(100), true, ""},
		{"padding of one word", []rec{pad(2*c - 8), data(2*c, 1)}, 2*c - 8, 1, 8, 2*c + 16, true, ""},
		{"zero header", nil, 256, 0, 0, 256, false, ""},
		{"bad tag", []rec{raw(64, layout.EncodeHeader(5, layout.TypeData, 72))}, 64, 0, 0, 0, false, "tag"},
		{"stale lap", []rec{data(64, 5)}, c + 64, 0, 0, 0, false, "tag"},
		{"bad type", []rec{raw(64, layout.EncodeHeader(5, 0x80, 64))}, 64, 0, 0, 0, false, "unknown type 128"},
		{"type 0 non-zero header", []rec{raw(64, uint64(layout.Tag(64))<<32)}, 64, 0, 0, 0, false, "unknown type 0"},
		{"length over max", []rec{data(0, maxMsg+1)}, 0, 0, 0, 0, false, "length"},
		{"crossing the end", []rec{data(c-24, 24)}, c - 24, 0, 0, 0, false, "crosses the end"},
		{"two paddings", []rec{pad(c - 64), pad(c)}, c - 64, 0, 0, 0, false, "two padding records"},
		{"padding then bad record", []rec{pad(c - 64), raw(c, layout.EncodeHeader(5, layout.TypeData, 0))}, c - 64, 0, 0, 0, false, "tag"},
		{"padding with length", []rec{raw(c-64, layout.EncodeHeader(1, layout.TypePad, c-64))}, c - 64, 0, 0, 0, false, "padding record"},
		{"unaligned position", []rec{data(64, 5)}, 67, 0, 0, 0, false, "aligned"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			area := alignedBytes(c)
			for _, r := range tc.recs {
				putHeader(area, r.pos, r.h)
				for i := 0; i < r.fill; i++ {
					area[(r.pos+8+uint64(i))&(c-1)] = byte(i + 1)
				}
			}
			payload, next, ok, err := layout.ReadRecord(area, tc.pos)
			if tc.wantErr != "" {
				if !errors.Is(err, layout.ErrCorrupt) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("ReadRecord(%d) error = %v, want ErrCorrupt mentioning %q", tc.pos, err, tc.wantErr)
				}
				if payload != nil || ok {
					t.Errorf("ReadRecord(%d) = %q, ok=%v with an error, want nil, false", tc.pos, payload, ok)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadRecord(%d) error = %v, want nil", tc.pos, err)
			}
			if ok != tc.wantOK || next != tc.wantNext {
				t.Errorf("ReadRecord(%d) = next %d, ok %v, want next %d, ok %v", tc.pos, next, ok, tc.wantNext, tc.wantOK)
			}
			if !ok {
				if payload != nil {
					t.Errorf("ReadRecord(%d) = %q with ok=false, want nil", tc.pos, payload)
				}
				return
			}
			if len(payload) != tc.wantLen {
				t.Fatalf("ReadRecord(%d) payload length = %d, want %d", tc.pos, len(payload), tc.wantLen)
			}
			if at := uint64(c - cap(payload)); at != tc.wantAt {
				t.Errorf("ReadRecord(%d) payload at offset %d, want %d", tc.pos, at, tc.wantAt)
			}
			for i, b := range payload {
				if b != byte(i+1) {
					t.Errorf("ReadRecord(%d) payload[%d] = %d, want %d", tc.pos, i, b, byte(i+1))
					break
				}
			}
		})
	}
}

// TestReadRecordPaddingThenNothing: padding is published only together
// with the record that follows it (ring.Producer.write), so padding
// followed by an empty header must not yield a record.
func TestReadRecordPaddingThenNothing(t *testing.T) {
	const c = 4096
	area := alignedBytes(c)
	putHeader(area, c-64, layout.EncodeHeader(0, layout.TypePad, c-64))
	payload, _, ok, err := layout.ReadRecord(area, c-64)
	if ok || payload != nil {
		t.Errorf("ReadRecord(padding, then 0) = %q, ok=%v, %v; want no record", payload, ok, err)
	}
	if err != nil && !errors.Is(err, layout.ErrCorrupt) {
		t.Errorf("ReadRecord(padding, then 0) error = %v, want nil or ErrCorrupt", err)
	}
}

func TestReadRecordBadArea(t *testing.T) {
	for _, n := range []int{0, 8, 2048, 4095, 4096 + 8, 6144} {
		payload, _, ok, err := layout.ReadRecord(alignedBytes(n), 0)
		if err == nil || ok || payload != nil {
			t.Errorf("ReadRecord(%d-byte area) = %q, ok=%v, %v; want an area-size error", n, payload, ok, err)
		}
	}
}
