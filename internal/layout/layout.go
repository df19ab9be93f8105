// The shmlane segment format.
//
// A segment is one memfd, sized once and sealed. All integers are in the
// host's native byte order: a segment never leaves the host that made it.
// Every offset below is a named constant or is read from the offsets table,
// and Parse checks each of them against the mapping before anyone uses it.
//
//	offset 0                                        HeaderSize (4096)
//	+------------------------------------------------+
//	| header                                         |
//	|   0 magic      u64  "SHMLANE\x00"              |
//	|   8 version    u32                             |
//	|  12 features   u32  FeatureOOB | FeatureMPMC   |
//	|  16 capacity   u64  data area bytes (2^n)      |
//	|  24 size       u64  whole segment bytes        |
//	|  32 creator    u32  pid of the creating process|
//	|  36 areas      u32  entries in the table (=3)  |
//	|  40 oobcap     u64  out-of-band area bytes     |
//	|  48 reserved   2×u64, zero                     |
//	|  64 offsets table: NumAreas × {off u64, len u64}
//	|     [AreaControl] [AreaData] [AreaOOB]         |
//	| 112 reserved, zero, up to HeaderSize           |
//	+------------------------------------------------+ ControlOffset (4096)
//	| control slots: NumSlots × SlotSize (128 bytes) |
//	|   SlotProducer    tail and counters (hot)      |
//	|   SlotConsumer    head and counters (hot)      |
//	|   SlotProducerCtl futex word, waiting, closed, pid
//	|   SlotConsumerCtl futex word, waiting, closed, pid
//	|   SlotOOB*        out-of-band lane             |
//	|   SlotMPMC*        MPMC claim words (reserved) |
//	+------------------------------------------------+ DataOffset (8192)
//	| data area: capacity bytes of records           |
//	+------------------------------------------------+ DataOffset+capacity
//	| out-of-band area: oobcap bytes (optional)      |
//	+------------------------------------------------+ size
//
// Every word that one side writes sits alone in its 128-byte slot, so that
// the adjacent-line prefetcher does not make two writers share a line.
//
// A record is an 8-byte header followed by its payload, padded to 8 bytes:
//
//	bits  0..23  payload length in bytes (0 .. MaxRecordLen)
//	bits 24..31  type: TypeData, TypePad (0 means "not yet published")
//	bits 32..63  tag: uint32(position >> 3), the record's own position
//
// A header is published by one atomic store after its payload is written;
// a header of 0 means "nothing here yet". The tag makes a header that was
// left over from an earlier lap, or one that a corrupt peer wrote at the
// wrong place, detectable. A padding record fills the end of the data area
// when the next record would not fit before it; its length field is 0 and it
// always extends to the end of the area.
package layout

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"unsafe"
)

// ErrCorrupt is wrapped by every error about a malformed segment or record.
var ErrCorrupt = errors.New("shmlane: corrupt segment")

// Magic identifies a shmlane segment ("SHMLANE\0" in memory order).
var Magic = binary.NativeEndian.Uint64([]byte("SHMLANE\x00"))

// Version of the format described in this file. Version 2: the MPMC
// sleeper count carries the pending-wake bit (MPMCWaitCount), the producer
// keeps no sequence lock in its hot slot, and a flush record is its
// position and a count (OOBFlushes).
const Version = 2

// Feature bits in the header.
const (
	// FeatureOOB: the segment has an out-of-band area (AreaOOB non-empty).
	FeatureOOB uint32 = 1 << 0
	// FeatureMPMC: the data area is used by the multi-producer ring.
	FeatureMPMC uint32 = 1 << 1

	knownFeatures = FeatureOOB | FeatureMPMC
)

// Page and slot geometry.
const (
	PageSize   = 4096
	HeaderSize = PageSize
	SlotSize   = 128 // one index or futex word per slot: two cache lines
	NumSlots   = 32
	// ControlSize is the control area: NumSlots slots, one page.
	ControlSize   = NumSlots * SlotSize
	ControlOffset = HeaderSize
	// DataOffset is where the data area starts, page aligned.
	DataOffset = ControlOffset + ControlSize
)

// Header field offsets.
const (
	OffMagic     = 0
	OffVersion   = 8
	OffFeatures  = 12
	OffCapacity  = 16
	OffSize      = 24
	OffCreator   = 32
	OffAreas     = 36
	OffOOBCap    = 40
	OffReserved0 = 48
	OffTable     = 64
	tableEntry   = 16
	// OffHeaderEnd is the end of the defined header; the rest is zero.
	OffHeaderEnd = OffTable + NumAreas*tableEntry
)

// Areas named by the offsets table.
const (
	AreaControl = iota
	AreaData
	AreaOOB
	NumAreas
)

// Control slots, by index. Each is SlotSize bytes at
// ControlOffset + index*SlotSize.
//
// The hot slots are written on every operation by their owner and read by
// the peer only when its cached copy runs out. The control slots are written
// rarely (on sleep, wake and close) and read by the peer on every publish,
// so they stay shared in both caches.
const (
	SlotProducer    = 0 // written by the producer only
	SlotConsumer    = 1 // written by the consumer only
	SlotProducerCtl = 2 // the producer's futex word, waiting flag, closed, pid
	SlotConsumerCtl = 3 // the consumer's futex word, waiting flag, closed, pid
	// Slots 4..7 belong to the out-of-band lane, 8..15 to the MPMC ring;
	// 16..31 are reserved. All are zero in a version-1 SPSC segment.
	SlotOOBProducer     = 4 // hot slot of the urgent lane's producer
	SlotOOBConsumer     = 5 // hot slot of the urgent lane's consumer
	SlotOOBConsumerWait = 6 // reserved: the lane shares the data ring's control slots
	SlotOOBFlush        = 7 // OOB* words: event count and the last flush
	SlotMPMCFirst       = 8
	SlotMPMCLast        = 15
)

// MPMC control slots (FeatureMPMC segments; SPSC slots 0..3 stay zero).
const (
	SlotMPMCTail      = 8  // u64 claim position, CAS by producers
	SlotMPMCHead      = 9  // u64 claim position, CAS by consumers
	SlotMPMCReclaim   = 10 // u64 free position, CAS by whoever reclaims
	SlotMPMCConsWait  = 11 // consumers' futex word and sleeper count
	SlotMPMCProdWait  = 12 // producers' futex word and sleeper count
	SlotMPMCStats     = 13 // counters, see MPMC* word offsets
	SlotMPMCProducers = 14 // MPMCMaxPeers u32 pids of attached producers
	SlotMPMCConsumers = 15 // MPMCMaxPeers u32 pids of attached consumers
)

// Word offsets inside SlotMPMCConsWait and SlotMPMCProdWait.
const (
	MPMCWaitSeq = 0 // u32 futex word
	// MPMCWaitCount is a u32: the number of sleepers in bits 0..30 and, in
	// bit 31, the pending-wake bit. A waker sets the bit (with one CAS of
	// the whole word, only if the count is non-zero) when it issues a
	// FUTEX_WAKE; a sleeper increments the count and then clears the bit
	// when it is about to sleep, and decrements the count and then clears
	// the bit when it stops. While it is set, the woken sleepers have not
	// yet looked at the ring, so further wakes would be redundant.
	MPMCWaitCount   = 8
	MPMCWaitSleeps  = 16 // u64 sleeps of that side
	MPMCWaitWakes   = 24 // u64 FUTEX_WAKE calls issued to that side
	MPMCWaitJoined  = 32 // u32 non-zero once a peer of that side attached
	MPMCWaitLive    = 36 // u32 peers of that side attached now
	MPMCWaitDeaths  = 40 // u64 peers of that side found dead
	MPMCWaitDropped = 48 // u64 consumers: messages lost with a dead consumer; producers: reservations discarded
)

// Word offsets inside SlotMPMCStats (u64 each, added to atomically).
const (
	MPMCSent      = 0
	MPMCSentBytes = 8
	MPMCRecv      = 16
	MPMCRecvBytes = 24
)

// MPMCMaxPeers is how many producers (and consumers) may be attached to an
// MPMC ring at once: one u32 pid each in a 128-byte slot.
const MPMCMaxPeers = SlotSize / 4

// Word offsets inside a hot slot (SlotProducer, SlotConsumer). Each word is
// a u64 written only by the slot's owner.
const (
	HotPos    = 0  // producer: tail position; consumer: head position
	HotMsgs   = 8  // messages committed (producer) or released (consumer)
	HotBytes  = 16 // payload bytes likewise
	HotWakes  = 24 // FUTEX_WAKE calls issued to the other side
	HotSleeps = 32 // futex sleeps of this side
	// HotDiscardMsgs and HotDiscardBytes (consumer only): data messages
	// and payload bytes discarded by flushes.
	HotDiscardMsgs  = 40
	HotDiscardBytes = 48
)

// Word offsets inside SlotOOBFlush (u64 each), written by the producer.
const (
	// OOBEvents counts urgent messages and flushes. The consumer compares
	// it with its cached copy before each data message: the lane's whole
	// cost on the hot path is this one load.
	OOBEvents = 0
	// OOBFlushes counts flushes; the producer adds to it after it stores
	// OOBFlushPos.
	OOBFlushes = 8
	// OOBFlushPos is the producer's published tail when it last flushed:
	// every data record before it not yet received is discarded.
	OOBFlushPos = 16
)

// Word offsets inside a control slot (SlotProducerCtl, SlotConsumerCtl).
// All are u32.
const (
	// CtlSeq is the futex word the owner sleeps on. Whoever wakes the owner
	// increments it first, so that a sleeper that has read it but not yet
	// slept does not miss the wake.
	CtlSeq = 0
	// CtlWaiting is 1 while the owner is about to sleep or sleeping; the
	// peer clears it (compare-and-swap 1 to 0) when it wakes the owner.
	CtlWaiting = 8
	// CtlClosed is non-zero once the owner has closed its side.
	CtlClosed = 16
	// CtlPID is the pid of the process attached to the side, 0 if none.
	CtlPID = 24
)

// Capacity bounds of the data area.
const (
	MinCapacity = PageSize
	MaxCapacity = 1 << 30
	// MinOOBCapacity and MaxOOBCapacity bound the out-of-band area (when
	// present).
	MinOOBCapacity = PageSize
	MaxOOBCapacity = 1 << 20
)

// Record format.
const (
	RecordHeaderSize = 8
	RecordAlign      = 8
	// MaxRecordLen is the largest payload the 24-bit length field holds.
	MaxRecordLen = 1<<24 - 1

	TypeData uint8 = 1
	TypePad  uint8 = 2

	// MPMC record states. A record's header moves through
	// Free -> Busy -> Data -> Reading -> Done -> Reclaimed (or Busy ->
	// Discard -> Reclaimed, Busy -> Pad -> Reclaimed). Busy and Reading
	// carry the owner's pid in place of the tag; Free carries a 56-bit
	// tag; Reclaimed keeps the record's length and the tag of the position
	// its word has in the next lap, where it is free.
	TypeBusy      uint8 = 3
	TypeReading   uint8 = 4
	TypeDone      uint8 = 5
	TypeDiscard   uint8 = 6
	TypeFree      uint8 = 7
	TypeReclaimed uint8 = 8
)

// Free is the word an MPMC data area holds at every 8-byte position pos
// that is free for the lap in which pos is written: a producer claims a
// record at pos by a compare-and-swap from Free(pos) to a Busy header, so a
// producer holding a stale position can never claim (positions only grow,
// and the 56-bit tag names the lap).
func Free(pos uint64) uint64 {
	q := pos >> 3
	return q&0xFFFFFF | uint64(TypeFree)<<24 | (q>>24)<<32
}

// OwnerHeader builds a Busy or Reading header: length and owner pid.
func OwnerHeader(n uint32, typ uint8, pid uint32) uint64 {
	return uint64(n) | uint64(typ)<<24 | uint64(pid)<<32
}

// Geometry is a parsed or planned segment: sizes and the offsets table.
type Geometry struct {
	Features    uint32
	Capacity    uint64
	OOBCapacity uint64
	Size        uint64
	Areas       [NumAreas]Area
}

// Area is one entry of the offsets table.
type Area struct {
	Off, Len uint64
}

// Plan returns the geometry of a segment with the given data capacity and
// out-of-band capacity (0 for none).
func Plan(capacity, oobCapacity uint64, features uint32) (Geometry, error) {
	if err := checkCapacity("capacity", capacity, MinCapacity, MaxCapacity); err != nil {
		return Geometry{}, err
	}
	features &^= FeatureOOB
	if oobCapacity != 0 {
		if err := checkCapacity("out-of-band capacity", oobCapacity, MinOOBCapacity, MaxOOBCapacity); err != nil {
			return Geometry{}, err
		}
		features |= FeatureOOB
	}
	if features&^knownFeatures != 0 {
		return Geometry{}, fmt.Errorf("unknown feature bits: features=%#x", features)
	}
	g := Geometry{Features: features, Capacity: capacity, OOBCapacity: oobCapacity}
	g.Areas[AreaControl] = Area{ControlOffset, ControlSize}
	g.Areas[AreaData] = Area{DataOffset, capacity}
	g.Areas[AreaOOB] = Area{DataOffset + capacity, oobCapacity}
	g.Size = DataOffset + capacity + oobCapacity
	return g, nil
}

func checkCapacity(what string, c, lo, hi uint64) error {
	if c < lo || c > hi || c&(c-1) != 0 {
		return fmt.Errorf("%s must be a power of two in [%d, %d]: %s=%d", what, lo, hi, what, c)
	}
	return nil
}

// Init writes the header of g into seg, which must be zeroed and exactly
// g.Size bytes long.
func Init(seg []byte, g Geometry, creator uint32) error {
	want, err := Plan(g.Capacity, g.OOBCapacity, g.Features)
	if err != nil {
		return err
	}
	if g != want {
		return corrupt("geometry %+v is not what Plan gives for its capacities: %+v", g, want)
	}
	if uint64(len(seg)) != g.Size {
		return fmt.Errorf("segment length %d does not match planned size %d", len(seg), g.Size)
	}
	ne := binary.NativeEndian
	ne.PutUint64(seg[OffMagic:], Magic)
	ne.PutUint32(seg[OffVersion:], Version)
	ne.PutUint32(seg[OffFeatures:], g.Features)
	ne.PutUint64(seg[OffCapacity:], g.Capacity)
	ne.PutUint64(seg[OffSize:], g.Size)
	ne.PutUint32(seg[OffCreator:], creator)
	ne.PutUint32(seg[OffAreas:], NumAreas)
	ne.PutUint64(seg[OffOOBCap:], g.OOBCapacity)
	for i, a := range g.Areas {
		ne.PutUint64(seg[OffTable+i*tableEntry:], a.Off)
		ne.PutUint64(seg[OffTable+i*tableEntry+8:], a.Len)
	}
	_, err = Parse(seg)
	return err
}

// Validate reports whether seg holds a consistent version-1 segment header
// whose areas lie inside seg. It does not look at indices or records: those
// change while the segment is live and are checked where they are read.
func Validate(seg []byte) error {
	_, err := Parse(seg)
	return err
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

// Parse validates the header of seg and returns its geometry.
func Parse(seg []byte) (Geometry, error) {
	if len(seg) < DataOffset {
		return Geometry{}, corrupt("segment shorter than header and control area: len=%d, want >= %d", len(seg), DataOffset)
	}
	if uintptr(unsafe.Pointer(&seg[0]))%RecordAlign != 0 {
		return Geometry{}, fmt.Errorf("segment is not 8-byte aligned in memory")
	}
	ne := binary.NativeEndian
	if m := ne.Uint64(seg[OffMagic:]); m != Magic {
		return Geometry{}, corrupt("bad magic %#x", m)
	}
	if v := ne.Uint32(seg[OffVersion:]); v != Version {
		return Geometry{}, corrupt("unsupported version %d, want %d", v, Version)
	}
	var g Geometry
	g.Features = ne.Uint32(seg[OffFeatures:])
	if g.Features&^knownFeatures != 0 {
		return Geometry{}, corrupt("unknown feature bits %#x", g.Features&^knownFeatures)
	}
	g.Capacity = ne.Uint64(seg[OffCapacity:])
	g.Size = ne.Uint64(seg[OffSize:])
	g.OOBCapacity = ne.Uint64(seg[OffOOBCap:])
	if n := ne.Uint32(seg[OffAreas:]); n != NumAreas {
		return Geometry{}, corrupt("offsets table has %d entries, want %d", n, NumAreas)
	}
	for off := OffReserved0; off < OffTable; off++ {
		if seg[off] != 0 {
			return Geometry{}, corrupt("reserved header byte %d is not zero", off)
		}
	}
	for off := OffHeaderEnd; off < HeaderSize; off++ {
		if seg[off] != 0 {
			return Geometry{}, corrupt("reserved header byte %d is not zero", off)
		}
	}
	want, err := Plan(g.Capacity, g.OOBCapacity, g.Features&^FeatureOOB)
	if err != nil {
		return Geometry{}, corrupt("%v", err)
	}
	if (g.Features&FeatureOOB != 0) != (g.OOBCapacity != 0) {
		return Geometry{}, corrupt("out-of-band feature bit and capacity disagree: features=%#x oobcap=%d", g.Features, g.OOBCapacity)
	}
	if g.Size != want.Size || g.Size != uint64(len(seg)) {
		return Geometry{}, corrupt("segment size %d, header says %d, capacities imply %d", len(seg), g.Size, want.Size)
	}
	for i := range g.Areas {
		g.Areas[i].Off = ne.Uint64(seg[OffTable+i*tableEntry:])
		g.Areas[i].Len = ne.Uint64(seg[OffTable+i*tableEntry+8:])
		if g.Areas[i] != want.Areas[i] {
			return Geometry{}, corrupt("offsets table entry %d is %+v, want %+v", i, g.Areas[i], want.Areas[i])
		}
	}
	return g, nil
}

// SlotOffset returns the offset of control slot i from the segment start.
func SlotOffset(i int) int { return ControlOffset + i*SlotSize }

// Align rounds n up to the record alignment.
func Align(n uint64) uint64 { return (n + RecordAlign - 1) &^ (RecordAlign - 1) }

// RecordSize is the space a record with an n-byte payload takes.
func RecordSize(n int) uint64 { return Align(RecordHeaderSize + uint64(n)) }

// MaxMessage returns the largest payload a data area of the given capacity
// accepts. A record must fit twice into the area less one header: when it
// does not fit before the end, a padding record fills the rest, and the
// producer keeps one free header word ahead of its tail. Half the capacity
// less two headers guarantees that any record fits once the ring is empty.
func MaxMessage(capacity uint64) int {
	if capacity < 4*RecordHeaderSize {
		return 0
	}
	m := capacity/2 - 2*RecordHeaderSize
	if m > MaxRecordLen {
		m = MaxRecordLen
	}
	return int(m)
}

// Tag is the tag a record header at position pos carries.
func Tag(pos uint64) uint32 { return uint32(pos >> 3) }

// EncodeHeader builds a record header. n must be <= MaxRecordLen.
func EncodeHeader(n uint32, typ uint8, pos uint64) uint64 {
	return uint64(n) | uint64(typ)<<24 | uint64(Tag(pos))<<32
}

// Header is a decoded record header.
type Header struct {
	Len  uint32
	Type uint8
	Tag  uint32
}

// DecodeHeader splits h without validating it.
func DecodeHeader(h uint64) Header {
	return Header{Len: uint32(h) & MaxRecordLen, Type: uint8(h >> 24), Tag: uint32(h >> 32)}
}

// CheckHeader validates a non-zero header read at position pos of a data
// area of the given capacity whose largest payload is maxMsg. It returns
// the record's total size, padding included: the position of the next
// record is pos+size.
func CheckHeader(h uint64, pos, capacity uint64, maxMsg int) (size uint64, err error) {
	d := DecodeHeader(h)
	if d.Tag != Tag(pos) {
		return 0, corrupt("record at position %d has tag %#x, want %#x", pos, d.Tag, Tag(pos))
	}
	off := pos & (capacity - 1)
	switch d.Type {
	case TypeData:
		if int(d.Len) > maxMsg {
			return 0, corrupt("record at position %d has length %d, max %d", pos, d.Len, maxMsg)
		}
		size = RecordSize(int(d.Len))
		if off+size > capacity {
			return 0, corrupt("record at position %d (offset %d, size %d) crosses the end of a %d-byte area", pos, off, size, capacity)
		}
		return size, nil
	case TypePad:
		if d.Len != 0 {
			return 0, corrupt("padding record at position %d has length %d, want 0", pos, d.Len)
		}
		return capacity - off, nil
	default:
		return 0, corrupt("record at position %d has unknown type %d", pos, d.Type)
	}
}

// ReadRecord decodes the record at position pos of a data area (a plain
// []byte whose length is the capacity, a power of two), skipping padding.
// It returns the payload (aliasing area), the position of the following
// record, and an error wrapping ErrCorrupt if anything is inconsistent; a
// header of 0 gives ok=false. On error the payload is nil.
func ReadRecord(area []byte, pos uint64) (payload []byte, next uint64, ok bool, err error) {
	capacity := uint64(len(area))
	if capacity < MinCapacity || bits.OnesCount64(capacity) != 1 {
		return nil, 0, false, fmt.Errorf("data area length must be a power of two >= %d: len=%d", MinCapacity, capacity)
	}
	if pos%RecordAlign != 0 {
		return nil, 0, false, corrupt("position %d is not %d-byte aligned", pos, RecordAlign)
	}
	maxMsg := MaxMessage(capacity)
	for skipped := 0; ; skipped++ {
		off := pos & (capacity - 1)
		h := binary.NativeEndian.Uint64(area[off:])
		if h == 0 {
			if skipped > 0 {
				return nil, 0, false, corrupt("padding at position %d is not followed by a record", pos)
			}
			return nil, pos, false, nil
		}
		size, err := CheckHeader(h, pos, capacity, maxMsg)
		if err != nil {
			return nil, 0, false, err
		}
		if DecodeHeader(h).Type == TypePad {
			if skipped > 0 {
				return nil, 0, false, corrupt("two padding records in a row at position %d", pos)
			}
			pos += size
			continue
		}
		n := uint64(DecodeHeader(h).Len)
		return area[off+RecordHeaderSize : off+RecordHeaderSize+n], pos + size, true, nil
	}
}
