package shmlane

// The rendezvous protocol. Every message on the socket during the
// handshake is one SOCK_SEQPACKET packet: a fixed hello record in native
// byte order (both ends are on one host) followed by up to maxText bytes
// of text, with descriptors attached as SCM_RIGHTS where the kind says so.
//
//	dialer                                listener
//	connect ─────────────────────────────▶ accept; SO_PEERCRED on both ends
//	kindDial {capacity, oobcap, flags}──▶ (or kindRefuse if the dialer
//	                                        does not allow the listener)
//	                                     ◀── kindRefuse {uid}  (dialer not
//	                                          allowed), or kindReject {text,
//	                                          flags: busy, noshm}
//	                                     ◀── kindRing {capacity, oobcap}
//	                                          + 2 memfds [listener→dialer,
//	                                          dialer→listener]
//	                                          or kindFallback {text: reason,
//	                                          oobcap} + the lane socket
//	kindAttached ───────────────────────▶  (both rings attached)
//	or kindNoMap {text: reason} ────────▶  (fall back to the socket)
//	or kindReject {text, flags: noshm} ─▶  (the dialer will not)
//	                                     ◀── kindLane {oobcap} + the lane
//	                                          socket (after kindNoMap only)
//
// oobcap is the size of the out-of-band lane of each direction, 0 for
// none. In a kindDial it is the dialer's preference (flagNoOOB: none at
// all); in a kindRing it is the lane both segments have; in a kindFallback
// or kindLane it is the send buffer of the lane socket, one end of a
// SOCK_SEQPACKET socketpair that the listener made for the connection and
// passes with SCM_RIGHTS when oobcap is not 0 (see fbConn).
//
// A listener at a limit answers a new socket with kindReject (flagBusy)
// before reading anything. A side that requires shared memory answers a
// would-be fallback with kindReject (flagNoShm) instead of kindFallback,
// kindLane or kindAttached. Older peers read both as a plain rejection.
//
// Inspection: an inspector sends kindInspect instead of kindDial; the
// listener answers with one kindConnInfo per live connection (two
// read-only memfds attached for a ring connection, none for a fallback
// one) and a final kindEnd.
//
// After the handshake a fallback connection carries each message as one
// packet on the rendezvous socket, and urgent messages and flushes as
// packets on the lane (see fbConn).
//
// Version 2 added oobcap, the out-of-band counters of kindConnInfo,
// kindLane and flagNoOOB. Version 3 added the lane count to the fallback
// data packet's header.

import (
	"encoding/binary"
	"fmt"
)

const (
	helloMagic   uint32 = 0x4c524853 // "SHRL" in little-endian memory order
	helloVersion uint16 = 3
	maxText             = 1024
	// maxPacket bounds a handshake packet.
	maxPacket = helloSize + maxText
)

// Message kinds.
const (
	kindDial     uint16 = 1
	kindInspect  uint16 = 2
	kindRefuse   uint16 = 3
	kindReject   uint16 = 4
	kindRing     uint16 = 5
	kindFallback uint16 = 6
	kindAttached uint16 = 7
	kindNoMap    uint16 = 8
	kindConnInfo uint16 = 9
	kindEnd      uint16 = 10
	kindLane     uint16 = 11
)

// Flags of a kindDial.
const (
	// flagFallback: the dialer wants the socket fallback; the reason is
	// the text.
	flagFallback uint32 = 1 << 0
	// flagNoOOB: the dialer wants no out-of-band lane (NoOOB).
	flagNoOOB uint32 = 1 << 1
	// flagRequireShm: the dialer refuses the socket fallback
	// (DialOptions.RequireSharedMemory).
	flagRequireShm uint32 = 1 << 2
)

// Flags of a kindReject.
const (
	// flagBusy: the listener is at one of its limits (ErrListenerBusy).
	flagBusy uint32 = 1 << 0
	// flagNoShm: the sender requires shared memory, and the connection
	// would fall back to the socket (ErrNoSharedMemory).
	flagNoShm uint32 = 1 << 1
)

// hello is the fixed part of every handshake message. Its encoding:
//
//	 0 magic u32      4 version u16    6 kind u16
//	 8 flags u32     12 pid u32       16 uid u32      20 fds u32
//	24 capacity u64  32 ipcns u64     40 connid u64
//	48 peerpid u32   52 reserved u32 (zero)
//	56 sent u64      64 sentbytes u64 72 received u64 80 receivedbytes u64
//	88 oobcap u64    96 urgentsent u64 104 urgentreceived u64
//	112 flushes u64  120 discarded u64 128 discardedbytes u64
//	136 end (helloSize)
//
// Magic and version come first and are checked before the length, so that
// a peer of another version learns which.
type hello struct {
	Magic    uint32
	Version  uint16
	Kind     uint16
	Flags    uint32
	PID      uint32 // the sender's pid, as it sees itself
	UID      uint32 // kindRefuse: the refused uid; kindConnInfo: the dialer's
	FDs      uint32 // descriptors attached
	Capacity uint64 // kindDial: preference; kindRing: both rings'
	// IPCNS was the inode of the sender's IPC namespace, which version 3
	// peers compared to decide a fallback. IPC namespaces do not matter
	// to memfds and futexes, so it is now always sent as 0 (which older
	// peers read as "unknown") and ignored.
	IPCNS uint64
	// kindConnInfo only (ConnID also in kindRing and kindFallback).
	ConnID        uint64
	PeerPID       uint32
	Sent          uint64
	SentBytes     uint64
	Received      uint64
	ReceivedBytes uint64
	// OOBCapacity: kindDial: preference; kindRing, kindFallback,
	// kindLane, kindConnInfo: the lanes' size, 0 for none.
	OOBCapacity uint64
	// kindConnInfo of a fallback connection: the listener's out-of-band
	// counters.
	UrgentSent, UrgentReceived, Flushes, Discarded, DiscardedBytes uint64
}

const (
	helloSize = 136
	// helloHead is the part of a hello that every version shares.
	helloHead = 8
)

func newHello(kind uint16) hello {
	return hello{Magic: helloMagic, Version: helloVersion, Kind: kind, PID: uint32(selfPID)}
}

func kindName(k uint16) string {
	names := [...]string{"", "dial", "inspect", "refuse", "reject", "ring", "fallback", "attached", "nomap", "conninfo", "end", "lane"}
	if int(k) < len(names) && names[k] != "" {
		return names[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// encode returns the packet of h followed by text (cut to maxText).
func (h hello) encode(text string) []byte {
	if len(text) > maxText {
		text = text[:maxText]
	}
	b := make([]byte, helloSize, helloSize+len(text))
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], h.Magic)
	ne.PutUint16(b[4:], h.Version)
	ne.PutUint16(b[6:], h.Kind)
	ne.PutUint32(b[8:], h.Flags)
	ne.PutUint32(b[12:], h.PID)
	ne.PutUint32(b[16:], h.UID)
	ne.PutUint32(b[20:], h.FDs)
	ne.PutUint64(b[24:], h.Capacity)
	ne.PutUint64(b[32:], h.IPCNS)
	ne.PutUint64(b[40:], h.ConnID)
	ne.PutUint32(b[48:], h.PeerPID)
	ne.PutUint64(b[56:], h.Sent)
	ne.PutUint64(b[64:], h.SentBytes)
	ne.PutUint64(b[72:], h.Received)
	ne.PutUint64(b[80:], h.ReceivedBytes)
	ne.PutUint64(b[88:], h.OOBCapacity)
	ne.PutUint64(b[96:], h.UrgentSent)
	ne.PutUint64(b[104:], h.UrgentReceived)
	ne.PutUint64(b[112:], h.Flushes)
	ne.PutUint64(b[120:], h.Discarded)
	ne.PutUint64(b[128:], h.DiscardedBytes)
	return append(b, text...)
}

// decodeHello parses a packet. The caller checks the kind.
func decodeHello(p []byte) (hello, string, error) {
	var h hello
	if len(p) < helloHead {
		return h, "", fmt.Errorf("%w: handshake packet of %d bytes is shorter than %d", ErrHandshake, len(p), helloHead)
	}
	ne := binary.NativeEndian
	h.Magic, h.Version, h.Kind = ne.Uint32(p[0:]), ne.Uint16(p[4:]), ne.Uint16(p[6:])
	if h.Magic != helloMagic {
		return h, "", fmt.Errorf("%w: not a shmlane peer: magic %#x, want %#x", ErrHandshake, h.Magic, helloMagic)
	}
	if h.Version != helloVersion {
		return h, "", fmt.Errorf("%w: peer speaks handshake version %d, this side %d", ErrHandshake, h.Version, helloVersion)
	}
	if len(p) < helloSize {
		return h, "", fmt.Errorf("%w: handshake packet of %d bytes is shorter than %d", ErrHandshake, len(p), helloSize)
	}
	h = hello{
		Magic:          h.Magic,
		Version:        h.Version,
		Kind:           h.Kind,
		Flags:          ne.Uint32(p[8:]),
		PID:            ne.Uint32(p[12:]),
		UID:            ne.Uint32(p[16:]),
		FDs:            ne.Uint32(p[20:]),
		Capacity:       ne.Uint64(p[24:]),
		IPCNS:          ne.Uint64(p[32:]),
		ConnID:         ne.Uint64(p[40:]),
		PeerPID:        ne.Uint32(p[48:]),
		Sent:           ne.Uint64(p[56:]),
		SentBytes:      ne.Uint64(p[64:]),
		Received:       ne.Uint64(p[72:]),
		ReceivedBytes:  ne.Uint64(p[80:]),
		OOBCapacity:    ne.Uint64(p[88:]),
		UrgentSent:     ne.Uint64(p[96:]),
		UrgentReceived: ne.Uint64(p[104:]),
		Flushes:        ne.Uint64(p[112:]),
		Discarded:      ne.Uint64(p[120:]),
		DiscardedBytes: ne.Uint64(p[128:]),
	}
	text := p[helloSize:]
	if len(text) > maxText {
		return h, "", fmt.Errorf("%w: handshake text of %d bytes is longer than %d", ErrHandshake, len(text), maxText)
	}
	return h, string(text), nil
}
