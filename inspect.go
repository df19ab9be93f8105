package shmlane

// Inspection. An inspector dials the name like any peer (its credentials
// are checked against the listener's allow-list) and sends kindInspect
// instead of kindDial. The listener's accept goroutine answers it, whether
// or not anyone is in Accept: one kindConnInfo message per live
// connection, then kindEnd. A ring connection's message carries both of
// its segments as new read-only descriptors (the memfd reopened through
// /proc/self/fd with O_RDONLY), so the inspector can read the header,
// indices and counters with pread(2) but can neither write to the segment
// nor map it writable; a fallback connection's carries the listener's
// counters instead. The inspector reads nothing but those pages and
// validates them like any shared memory: as untrusted input.

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/shmlane/shmlane/internal/layout"
	"github.com/shmlane/shmlane/ring"
)

// maxInspectConns bounds the connections an inspector accepts in a report.
const maxInspectConns = 1 << 16

// ListenerInfo is what Inspect reports about a listener.
type ListenerInfo struct {
	Name string `json:"name"`
	Path string `json:"path"` // the socket
	PID  int    `json:"pid"`  // the listener's process (SO_PEERCRED)
	UID  int    `json:"uid"`
	// Conns are the listener's live connections, in no particular order.
	Conns []ConnInfo `json:"conns"`
}

// ConnInfo describes one live connection of a listener.
type ConnInfo struct {
	ID             uint64 `json:"id"`
	Transport      string `json:"transport"` // "ring" or the fallback's name
	FallbackReason string `json:"fallback_reason,omitempty"`
	DialerPID      int    `json:"dialer_pid"`
	DialerUID      int    `json:"dialer_uid"`
	// In shared-memory mode, the two segments by direction (nil in
	// fallback mode). SegmentErr says why they are missing when a ring
	// connection's segments could not be read.
	ToDialer   *SegmentInfo `json:"to_dialer,omitempty"`
	ToListener *SegmentInfo `json:"to_listener,omitempty"`
	SegmentErr string       `json:"segment_err,omitempty"`
	// In fallback mode, the listener's counters: what it sent to the
	// dialer (data, urgent messages, flushes) and what it received from
	// it (data, urgent messages, and the dialer's data that it discarded
	// because of the dialer's flushes). The dialer's own counts are not
	// known to the listener. OOBCapacity is each lane's size, 0 for none.
	Sent           uint64 `json:"sent"`
	SentBytes      uint64 `json:"sent_bytes"`
	Received       uint64 `json:"received"`
	ReceivedBytes  uint64 `json:"received_bytes"`
	OOBCapacity    uint64 `json:"oob_capacity"`
	UrgentSent     uint64 `json:"urgent_sent"`
	Flushes        uint64 `json:"flushes"`
	UrgentReceived uint64 `json:"urgent_received"`
	Discarded      uint64 `json:"discarded"`
	DiscardedBytes uint64 `json:"discarded_bytes"`
}

// SegmentInfo is a segment's header and the state of its ring, with its
// out-of-band lane's counters in Stats (OOBCapacity, UrgentSent,
// UrgentReceived, Flushes, Discarded, DiscardedBytes).
type SegmentInfo struct {
	Magic       uint64     `json:"magic"`
	Version     uint32     `json:"version"`
	Features    uint32     `json:"features"`
	Capacity    uint64     `json:"capacity"` // data area bytes
	OOBCapacity uint64     `json:"oob_capacity"`
	Size        uint64     `json:"size"` // the whole segment
	CreatorPID  uint32     `json:"creator_pid"`
	Stats       ring.Stats `json:"stats"`
}

// Inspect asks the listener on name for the state of its connections. It
// dials like Dial (the same options and credential checks) but takes no
// part in any connection. The listener's answer must be complete within
// DialOptions.HandshakeTimeout (default 5 s) whatever ctx says.
func Inspect(ctx context.Context, name string, opts *DialOptions) (*ListenerInfo, error) {
	return dialLike(ctx, "inspect", name, opts, inspect)
}

func inspect(ctx context.Context, name string, o DialOptions, allow allowList) (*ListenerInfo, error) {
	uc, cred, err := connect(ctx, name, o, allow)
	if err != nil {
		return nil, err
	}
	defer uc.Close()
	uc.SetDeadline(time.Now().Add(o.handshakeTimeout()))
	stop := interruptOn(ctx, uc)
	defer stop()
	info := &ListenerInfo{Name: name, Path: uc.RemoteAddr().String(), PID: cred.PID, UID: cred.UID}
	if err := writePacket(uc, newHello(kindInspect).encode("")); err != nil {
		if r, text, files, rerr := readPacket(uc, 0); rerr == nil {
			closeAll(files)
			if verr := verdict(r, text, cred); verr != nil {
				return nil, verr
			}
		}
		return nil, err
	}
	for {
		h, text, files, err := readPacket(uc, 2)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%w: %w", ctx.Err(), err)
			}
			return nil, err
		}
		switch h.Kind {
		case kindConnInfo:
			if len(info.Conns) >= maxInspectConns {
				closeAll(files)
				return nil, fmt.Errorf("%w: more than %d connections reported", ErrHandshake, maxInspectConns)
			}
			info.Conns = append(info.Conns, connInfo(h, text, files))
			closeAll(files)
		case kindEnd:
			closeAll(files)
			if int(h.ConnID) != len(info.Conns) {
				return nil, fmt.Errorf("%w: listener reported %d connections, sent %d", ErrHandshake, h.ConnID, len(info.Conns))
			}
			return info, nil
		case kindRefuse, kindReject:
			closeAll(files)
			return nil, verdict(h, text, cred)
		default:
			closeAll(files)
			return nil, fmt.Errorf("%w: listener sent %s during inspection", ErrHandshake, kindName(h.Kind))
		}
	}
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// connInfo decodes a kindConnInfo message; its text is the transport, a
// newline, and the fallback reason.
func connInfo(h hello, text string, files []*os.File) ConnInfo {
	transport, reason, _ := strings.Cut(text, "\n")
	ci := ConnInfo{
		ID: h.ConnID, Transport: transport, FallbackReason: reason,
		DialerPID: int(h.PeerPID), DialerUID: int(h.UID),
		Sent: h.Sent, SentBytes: h.SentBytes, Received: h.Received, ReceivedBytes: h.ReceivedBytes,
		OOBCapacity: h.OOBCapacity, UrgentSent: h.UrgentSent, Flushes: h.Flushes,
		UrgentReceived: h.UrgentReceived, Discarded: h.Discarded, DiscardedBytes: h.DiscardedBytes,
	}
	if len(files) == 2 {
		var errs []string
		for i, f := range files {
			s, err := readSegment(f)
			if err != nil {
				errs = append(errs, err.Error())
				continue
			}
			if i == 0 {
				ci.ToDialer = s
			} else {
				ci.ToListener = s
			}
		}
		ci.SegmentErr = strings.Join(errs, "; ")
	} else if transport == "ring" {
		ci.SegmentErr = "the listener could not pass the segments"
	}
	return ci
}

// readSegment reads a segment's header and control pages with pread and
// validates them.
func readSegment(f *os.File) (*SegmentInfo, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat segment: %w", err)
	}
	buf := make([]byte, layout.DataOffset)
	if _, err := f.ReadAt(buf, 0); err != nil {
		return nil, fmt.Errorf("read segment header: %w", err)
	}
	ne := binary.NativeEndian
	s := &SegmentInfo{
		Magic:       ne.Uint64(buf[layout.OffMagic:]),
		Version:     ne.Uint32(buf[layout.OffVersion:]),
		Features:    ne.Uint32(buf[layout.OffFeatures:]),
		Capacity:    ne.Uint64(buf[layout.OffCapacity:]),
		OOBCapacity: ne.Uint64(buf[layout.OffOOBCap:]),
		Size:        ne.Uint64(buf[layout.OffSize:]),
		CreatorPID:  ne.Uint32(buf[layout.OffCreator:]),
	}
	if s.Magic != layout.Magic {
		return nil, fmt.Errorf("%w: bad magic %#x", ErrCorrupt, s.Magic)
	}
	if s.Version != layout.Version {
		return nil, fmt.Errorf("%w: segment version %d, this program reads %d", ErrCorrupt, s.Version, layout.Version)
	}
	g, err := layout.Plan(s.Capacity, s.OOBCapacity, s.Features&^layout.FeatureOOB)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if g.Size != s.Size || int64(s.Size) != fi.Size() {
		return nil, fmt.Errorf("%w: segment size %d, header says %d, capacities imply %d", ErrCorrupt, fi.Size(), s.Size, g.Size)
	}
	hot := func(slot, word int) uint64 { return ne.Uint64(buf[layout.SlotOffset(slot)+word:]) }
	ctl := func(slot, word int) uint32 { return ne.Uint32(buf[layout.SlotOffset(slot)+word:]) }
	s.Stats = ring.Stats{
		Capacity:       s.Capacity,
		Head:           hot(layout.SlotConsumer, layout.HotPos),
		Tail:           hot(layout.SlotProducer, layout.HotPos),
		ProducerPID:    ctl(layout.SlotProducerCtl, layout.CtlPID),
		ConsumerPID:    ctl(layout.SlotConsumerCtl, layout.CtlPID),
		ProducerClosed: ctl(layout.SlotProducerCtl, layout.CtlClosed) != 0,
		ConsumerClosed: ctl(layout.SlotConsumerCtl, layout.CtlClosed) != 0,
		Sent:           hot(layout.SlotProducer, layout.HotMsgs),
		SentBytes:      hot(layout.SlotProducer, layout.HotBytes),
		Received:       hot(layout.SlotConsumer, layout.HotMsgs),
		ReceivedBytes:  hot(layout.SlotConsumer, layout.HotBytes),
		ProducerWakes:  hot(layout.SlotProducer, layout.HotWakes),
		ConsumerWakes:  hot(layout.SlotConsumer, layout.HotWakes),
		ProducerSleeps: hot(layout.SlotProducer, layout.HotSleeps),
		ConsumerSleeps: hot(layout.SlotConsumer, layout.HotSleeps),
		OOBCapacity:    s.OOBCapacity,
		Discarded:      hot(layout.SlotConsumer, layout.HotDiscardMsgs),
		DiscardedBytes: hot(layout.SlotConsumer, layout.HotDiscardBytes),
	}
	if s.OOBCapacity != 0 {
		s.Stats.UrgentSent = hot(layout.SlotOOBProducer, layout.HotMsgs)
		s.Stats.UrgentReceived = hot(layout.SlotOOBConsumer, layout.HotMsgs)
		s.Stats.Flushes = hot(layout.SlotOOBFlush, layout.OOBFlushes)
	}
	return s, nil
}

// answerInspect sends the state of every live connection to an inspector.
func (l *Listener) answerInspect(uc *net.UnixConn) {
	l.mu.Lock()
	conns := make([]*Conn, 0, len(l.conns))
	for _, c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		uc.SetDeadline(time.Now().Add(l.opts.HandshakeTimeout))
		h := newHello(kindConnInfo)
		h.ConnID, h.PeerPID, h.UID = c.id, uint32(max(c.peer.PID, 0)), uint32(max(c.peer.UID, 0))
		text := c.Transport() + "\n" + c.reason
		var files []*os.File
		if r, ok := c.link.(*ringLink); ok {
			files = segmentFiles(r)
		} else {
			st := c.Stats()
			h.Sent, h.SentBytes, h.Received, h.ReceivedBytes = st.Sent, st.SentBytes, st.Received, st.ReceivedBytes
			h.OOBCapacity, h.UrgentSent, h.Flushes = st.OOBCapacity, st.UrgentSent, st.Flushes
			h.UrgentReceived, h.Discarded, h.DiscardedBytes = st.UrgentReceived, st.Discarded, st.DiscardedBytes
		}
		h.FDs = uint32(len(files))
		err := writePacket(uc, h.encode(text), files...)
		closeAll(files)
		if err != nil {
			return
		}
	}
	h := newHello(kindEnd)
	h.ConnID = uint64(len(conns))
	writePacket(uc, h.encode(""))
}

// segmentFiles returns read-only descriptors of a ring connection's
// segments, [listener→dialer, dialer→listener], or none if the connection
// closed meanwhile.
func segmentFiles(r *ringLink) []*os.File {
	var files []*os.File
	for _, s := range r.segs {
		f, err := s.File()
		if err != nil {
			closeAll(files)
			return nil
		}
		ro, err := reopenReadOnly(f)
		f.Close()
		if err != nil {
			closeAll(files)
			return nil
		}
		files = append(files, ro)
	}
	return files
}
