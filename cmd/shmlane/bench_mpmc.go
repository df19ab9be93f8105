package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/shmlane/shmlane/ring"
)

var mpmcTransport = &transport{
	name: "mpmc",
	how: "the MPMC ring with -producers producer and -consumers consumer processes (all peers of this one), " +
		"stream only: each producer publishes -batch messages per SendBatch for the duration, each consumer takes " +
		"what is available with RecvBatch and copies each out; msgs/s is the aggregate, over the span from the " +
		"first consumer's first message to the last consumer's last.",
	check: func(cfg *benchConfig) error {
		limit := ring.MaxMessage(cfg.capacity)
		for _, size := range cfg.sizes {
			if size > limit {
				return usageErrorf("size %d is over the ring's largest message, %d bytes at -capacity %d", size, limit, cfg.capacity)
			}
		}
		return nil
	},
	newCase:    func(c benchCase) caseRunner { return &mpmcStream{c: c} },
	streamOnly: true,
}

// mpmcStream runs P producer and C consumer peers over one MPMC segment.
type mpmcStream struct {
	c          benchCase
	seg        *ring.Segment
	prods      []*peer
	cons       []*peer
	done, shut bool
}

func (m *mpmcStream) setup() error {
	seg, err := ring.CreateMPMC(&ring.Config{Capacity: m.c.capacity, Name: "shmlane-bench"})
	if err != nil {
		return err
	}
	m.seg = seg
	start := func(role string) (*peer, error) {
		f, err := seg.File()
		if err != nil {
			return nil, err
		}
		spec := peerSpec{Role: role, Size: m.c.size, Duration: m.c.duration, Batch: m.c.batch}
		p, err := startPeer(spec, m.c.limit(), []*os.File{f})
		if err != nil {
			return nil, err
		}
		return p, p.awaitReady()
	}
	for i := 0; i < m.c.consumers; i++ {
		p, err := start("mpmc-recv")
		if p != nil {
			m.cons = append(m.cons, p)
		}
		if err != nil {
			return err
		}
	}
	// Producers start sending as soon as they are ready.
	for i := 0; i < m.c.producers; i++ {
		p, err := start("mpmc-send")
		if p != nil {
			m.prods = append(m.prods, p)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (m *mpmcStream) pids() sidePIDs {
	var s sidePIDs
	for _, p := range m.prods {
		s.Producers = append(s.Producers, p.pid())
	}
	for _, p := range m.cons {
		s.Consumers = append(s.Consumers, p.pid())
	}
	s.Producer, s.Consumer = s.Producers[0], s.Consumers[0]
	return s
}

func (m *mpmcStream) run() (measurement, error) {
	var sent, received, timed uint64
	for _, p := range m.prods {
		rep, err := p.awaitReport()
		if err != nil {
			return measurement{}, err
		}
		sent += rep.Received
	}
	var first, last int64
	for _, p := range m.cons {
		rep, err := p.awaitReport()
		if err != nil {
			return measurement{}, err
		}
		received += rep.Received
		if rep.Received == 0 {
			continue
		}
		timed += rep.Received
		if first == 0 || rep.First < first {
			first = rep.First
		}
		last = max(last, rep.Last)
	}
	if received != sent {
		return measurement{}, fmtCountError("consumers received", received, sent)
	}
	m.done = true
	return measurement{messages: timed, seconds: float64(last-first) / 1e9}, nil
}

func (m *mpmcStream) close() error {
	if m.shut {
		return nil
	}
	m.shut = true
	grace := time.Duration(0)
	if m.done {
		grace = 5 * time.Second
	}
	var first error
	for _, p := range append(m.prods, m.cons...) {
		if err := p.stop(grace); err != nil && first == nil {
			first = err
		}
	}
	if m.seg != nil {
		m.seg.Close()
	}
	return first
}

func openMPMC(files []*os.File) (*ring.Segment, error) {
	if err := checkFiles(files, 1); err != nil {
		return nil, err
	}
	defer files[0].Close()
	return ring.OpenMPMC(files[0])
}

// mpmcSendPeer sends for the duration, then closes; it reports how many
// messages it sent.
func mpmcSendPeer(spec peerSpec, files []*os.File, ready func() error) (peerReport, error) {
	seg, err := openMPMC(files)
	if err != nil {
		return peerReport{}, err
	}
	defer seg.Close()
	p, err := seg.MPMCProducer(nil)
	if err != nil {
		return peerReport{}, err
	}
	defer p.Close()
	if err := ready(); err != nil {
		return peerReport{}, err
	}
	batch := make([][]byte, max(spec.Batch, 1))
	for i := range batch {
		batch[i] = payload(spec.Size)
	}
	end := time.Now().Add(spec.Duration)
	var sent uint64
	for i := 0; ; i++ {
		n, err := p.SendBatch(batch)
		sent += uint64(n)
		if err != nil {
			return peerReport{Received: sent}, fmt.Errorf("send: %w", err)
		}
		if i%16 == 0 && !time.Now().Before(end) {
			break
		}
	}
	return peerReport{Received: sent}, p.Close()
}

// mpmcRecvPeer receives until every producer has closed and reports its
// count and the times of its first and last message.
func mpmcRecvPeer(spec peerSpec, files []*os.File, ready func() error) (peerReport, error) {
	seg, err := openMPMC(files)
	if err != nil {
		return peerReport{}, err
	}
	defer seg.Close()
	c, err := seg.MPMCConsumer(nil)
	if err != nil {
		return peerReport{}, err
	}
	defer c.Close()
	if err := ready(); err != nil {
		return peerReport{}, err
	}
	var rep peerReport
	buf := make([]byte, spec.Size)
	var bad error
	take := func(msg []byte) {
		copy(buf, msg)
		if len(msg) != spec.Size && bad == nil {
			bad = fmt.Errorf("message of %d bytes, want %d", len(msg), spec.Size)
		}
	}
	for {
		n, err := c.RecvBatch(0, take)
		if n > 0 {
			now := time.Now().UnixNano()
			if rep.Received == 0 {
				rep.First = now
			}
			rep.Last = now
			rep.Received += uint64(n)
		}
		if bad != nil {
			return rep, bad
		}
		if errors.Is(err, io.EOF) {
			return rep, nil
		}
		if err != nil {
			return rep, fmt.Errorf("receive: %w", err)
		}
	}
}
