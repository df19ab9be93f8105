package shmlane

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shmlane/shmlane/ring"
)

// ringLink is the shared-memory mode of a Conn: this side's Producer on
// the segment it sends through and its Consumer on the one it receives
// from.
type ringLink struct {
	prod *ring.Producer
	cons *ring.Consumer
	segs [2]*ring.Segment // [send, receive]
}

// newRingConn makes a shared-memory Conn. It takes ownership of its
// arguments.
func newRingConn(id uint64, peer Cred, prod *ring.Producer, cons *ring.Consumer, send, recv *ring.Segment) *Conn {
	return &Conn{id: id, peer: peer, link: &ringLink{prod: prod, cons: cons, segs: [2]*ring.Segment{send, recv}}}
}

func (r *ringLink) send(ctx context.Context, msg []byte) error {
	if ctx == nil {
		return r.tooLarge("send", len(msg), r.prod.Send(msg))
	}
	return r.tooLarge("send", len(msg), r.prod.SendContext(ctx, msg))
}

func (r *ringLink) sendBatch(ctx context.Context, msgs [][]byte) (int, error) {
	n, err := r.prod.SendBatchContext(ctx, msgs)
	if err != nil && n < len(msgs) {
		err = r.tooLarge("send", len(msgs[n]), err)
	}
	return n, err
}

// tooLarge adds the sizes to the ring's ErrTooLarge.
func (r *ringLink) tooLarge(op string, n int, err error) error {
	if err != nil && errors.Is(err, ring.ErrTooLarge) {
		return fmt.Errorf("%s: %w: message is %d bytes, MaxMessage is %d", op, err, n, r.prod.MaxMessage())
	}
	return err
}

func (r *ringLink) sendUrgent(msg []byte) error {
	err := r.prod.SendUrgent(msg)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ring.ErrNoLane):
		return errNoLane("send urgent")
	case errors.Is(err, ring.ErrTooLarge):
		return fmt.Errorf("send urgent: %w: message is %d bytes, MaxUrgent is %d", err, len(msg), r.prod.MaxUrgent())
	case errors.Is(err, ring.ErrLaneFull):
		return fmt.Errorf("send urgent: %w: the peer has not received the urgent messages ahead (lane of %d bytes)", err, r.segs[0].OOBCapacity())
	}
	return err
}

func (r *ringLink) flush() error {
	if err := r.prod.Flush(); err != nil {
		if errors.Is(err, ring.ErrNoLane) {
			return errNoLane("flush")
		}
		return err
	}
	return nil
}

func (r *ringLink) recv(ctx context.Context, buf []byte) (int, error) {
	if ctx == nil {
		return r.cons.Recv(buf)
	}
	return r.cons.RecvContext(ctx, buf)
}

func (r *ringLink) recvMsg(ctx context.Context, buf []byte) (int, bool, error) {
	return r.cons.RecvMsg(ctx, buf)
}

func (r *ringLink) recvBatch(ctx context.Context, max int, fn func(msg []byte, urgent bool)) (int, error) {
	return r.cons.RecvBatchMsg(ctx, max, fn)
}

func (r *ringLink) setDeadline(t time.Time) error {
	return errors.Join(r.prod.SetDeadline(t), r.cons.SetDeadline(t))
}

func (r *ringLink) limits() (int, int) { return r.prod.MaxMessage(), r.prod.MaxUrgent() }

func (r *ringLink) transport() string { return r.prod.Transport() }

// stats reads the counters from the segments.
func (r *ringLink) stats(st *Stats) {
	st.Send, st.Recv = r.segs[0].Stats(), r.segs[1].Stats()
	st.Sent, st.SentBytes = st.Send.Sent, st.Send.SentBytes
	st.Received, st.ReceivedBytes = st.Recv.Received, st.Recv.ReceivedBytes
	st.OOBCapacity = st.Send.OOBCapacity
	st.UrgentSent, st.Flushes = st.Send.UrgentSent, st.Send.Flushes
	st.UrgentReceived = st.Recv.UrgentReceived
	st.Discarded, st.DiscardedBytes = st.Recv.Discarded, st.Recv.DiscardedBytes
}

func (r *ringLink) close() error {
	return errors.Join(r.prod.Close(), r.cons.Close(), r.segs[0].Close(), r.segs[1].Close())
}
