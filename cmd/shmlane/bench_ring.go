package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/shmlane/shmlane/ring"
)

var ringTransport = &transport{
	name: "ring",
	how: "the SPSC ring between two processes. Stream: the producer publishes -batch messages per SendBatch " +
		"(one index store and at most one wake per batch; -batch 1 is one Send per message), the consumer takes all " +
		"available messages with RecvBatch (one index store per batch) and copies each out; amortising the publication " +
		"is what the ring can do and a pipe write or a channel send cannot. Pingpong: a ring each way, Send and Recv.",
	check: func(cfg *benchConfig) error {
		limit := ring.MaxMessage(cfg.capacity)
		for _, size := range cfg.sizes {
			if size > limit {
				return usageErrorf("size %d is over the ring's largest message, %d bytes at -capacity %d: raise -capacity or drop the size", size, limit, cfg.capacity)
			}
		}
		return nil
	},
	newCase: func(c benchCase) caseRunner {
		if c.mode == modeStream {
			return &ringStream{peerCase: peerCase{c: c}}
		}
		return &ringPingpong{peerCase: peerCase{c: c}}
	},
	oob:     func(c benchCase) caseRunner { return &ringOOB{peerCase: peerCase{c: c}} },
	batches: true,
}

// ringLaneTransport is the ring with an out-of-band lane present and idle:
// the cost of the lane's check on the data path.
var ringLaneTransport = &transport{
	name:  "ringlane",
	how:   "the ring as above, in a segment with a 4 KiB out-of-band lane that carries nothing: the consumer checks it before every data message.",
	check: func(cfg *benchConfig) error { return ringTransport.check(cfg) },
	newCase: func(c benchCase) caseRunner {
		if c.mode == modeStream {
			return &ringStream{peerCase: peerCase{c: c}, lane: true}
		}
		return &ringPingpong{peerCase: peerCase{c: c}, lane: true}
	},
	batches: true,
}

// ringSegment creates a segment and returns it with a descriptor of it for
// the peer.
func (pc *peerCase) ringSegment(lane bool) (*ring.Segment, *os.File, error) {
	cfg := &ring.Config{Capacity: pc.c.capacity, Name: "shmlane-bench"}
	if lane {
		cfg.OOBCapacity = 4096
	}
	seg, err := ring.Create(cfg)
	if err != nil {
		return nil, nil, err
	}
	pc.onClose(seg.Close)
	f, err := seg.File()
	if err != nil {
		return nil, nil, err
	}
	return seg, f, nil
}

// openSegment maps the segment a peer got as its descriptor f.
func openSegment(f *os.File) (*ring.Segment, error) {
	defer f.Close()
	return ring.Open(f)
}

// ringStream: this process produces, the peer consumes.
type ringStream struct {
	peerCase
	prod  *ring.Producer
	lane  bool
	batch [][]byte // -batch messages, stamped and sent again and again
}

func (r *ringStream) setup() error {
	r.batch = newBatch(r.c.batch, r.c.size)
	seg, f, err := r.ringSegment(r.lane)
	if err != nil {
		return err
	}
	if r.prod, err = seg.Producer(nil); err != nil {
		f.Close()
		return err
	}
	r.onClose(r.prod.Close)
	r.peer, err = startPeer(peerSpec{Role: "ring-stream", Size: r.c.size}, r.c.limit(), []*os.File{f}, func() { r.prod.Close() })
	if err != nil {
		return err
	}
	return r.peer.awaitReady()
}

func (r *ringStream) run(w *window) (measurement, error) {
	batch := r.batch
	// Look at the clock about every 64 messages.
	every := max(64/len(batch), 1)
	var seq uint64
	w.open()
	end := time.Now().Add(r.c.duration)
	for i := 1; ; i++ {
		if len(batch) == 1 {
			stamp(batch[0], seq)
			if err := r.prod.Send(batch[0]); err != nil {
				return measurement{}, r.peer.explain(fmt.Errorf("send message %d: %w", seq, err))
			}
			seq++
		} else {
			stampBatch(batch, seq, 0)
			n, err := r.prod.SendBatch(batch)
			seq += uint64(n)
			if err != nil {
				return measurement{}, r.peer.explain(fmt.Errorf("send message %d: %w", seq, err))
			}
		}
		if i%every == 0 && !time.Now().Before(end) {
			break
		}
	}
	w.close(seq)
	r.prod.Close()
	return r.streamEnd(seq)
}

func ringStreamPeer(spec peerSpec, files []*os.File, ready func() error) (peerReport, error) {
	if err := checkFiles(files, 1); err != nil {
		return peerReport{}, err
	}
	seg, err := openSegment(files[0])
	if err != nil {
		return peerReport{}, err
	}
	defer seg.Close()
	c, err := seg.Consumer(nil)
	if err != nil {
		return peerReport{}, err
	}
	defer c.Close()
	if err := ready(); err != nil {
		return peerReport{}, err
	}
	s := newStreamCounter(spec.Size)
	take := s.take
	for {
		if _, err := c.RecvBatch(0, take); err != nil {
			if errors.Is(err, io.EOF) {
				return s.report(time.Now()), nil
			}
			return s.report(time.Now()), fmt.Errorf("receive message %d: %w", s.n, err)
		}
	}
}

// ringPingpong: this process sends requests on one ring and receives the
// peer's echoes on another.
type ringPingpong struct {
	peerCase
	req  *ring.Producer
	resp *ring.Consumer
	lane bool
}

func (r *ringPingpong) setup() error {
	reqSeg, reqFile, err := r.ringSegment(r.lane)
	if err != nil {
		return err
	}
	respSeg, respFile, err := r.ringSegment(r.lane)
	if err != nil {
		reqFile.Close()
		return err
	}
	files := []*os.File{reqFile, respFile}
	if r.req, err = reqSeg.Producer(nil); err == nil {
		r.onClose(r.req.Close)
		if r.resp, err = respSeg.Consumer(nil); err == nil {
			r.onClose(r.resp.Close)
		}
	}
	if err != nil {
		reqFile.Close()
		respFile.Close()
		return err
	}
	r.peer, err = startPeer(peerSpec{Role: "ring-echo", Size: r.c.size}, r.c.limit(), files, func() {
		r.req.Close()
		r.resp.Close()
	})
	if err != nil {
		return err
	}
	return r.peer.awaitReady()
}

func (r *ringPingpong) run(w *window) (measurement, error) {
	m, err := r.pingpong(w, r.req.Send, r.resp.Recv)
	if err != nil {
		return m, err
	}
	r.req.Close()
	return r.pingpongEnd(m)
}

func ringEchoPeer(spec peerSpec, files []*os.File, ready func() error) (peerReport, error) {
	if err := checkFiles(files, 2); err != nil {
		return peerReport{}, err
	}
	reqSeg, err := openSegment(files[0])
	if err != nil {
		files[1].Close()
		return peerReport{}, err
	}
	defer reqSeg.Close()
	respSeg, err := openSegment(files[1])
	if err != nil {
		return peerReport{}, err
	}
	defer respSeg.Close()
	req, err := reqSeg.Consumer(nil)
	if err != nil {
		return peerReport{}, err
	}
	defer req.Close()
	resp, err := respSeg.Producer(nil)
	if err != nil {
		return peerReport{}, err
	}
	defer resp.Close()
	if err := ready(); err != nil {
		return peerReport{}, err
	}
	buf := make([]byte, spec.Size)
	var echoed uint64
	for {
		n, err := req.Recv(buf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return peerReport{Received: echoed}, fmt.Errorf("receive request %d: %w", echoed, err)
		}
		if err := resp.Send(buf[:n]); err != nil {
			return peerReport{Received: echoed}, fmt.Errorf("send reply %d: %w", echoed, err)
		}
		echoed++
	}
	return peerReport{Received: echoed}, nil
}
