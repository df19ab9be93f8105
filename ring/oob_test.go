package ring

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func newLaneRing(t *testing.T, capacity int, po, co *Options) (*Segment, *Producer, *Consumer) {
	t.Helper()
	seg, err := Create(&Config{Capacity: capacity, OOBCapacity: 4096})
	if err != nil {
		t.Fatal(err)
	}
	p, err := seg.Producer(po)
	if err != nil {
		t.Fatal(err)
	}
	c, err := seg.Consumer(co)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(); c.Close(); seg.Close() })
	return seg, p, c
}

func seqMsg(seq uint64, n int) []byte {
	b := make([]byte, max(n, 8))
	binary.LittleEndian.PutUint64(b, seq)
	return b
}

func recvMsg(t *testing.T, c *Consumer) (seq uint64, urgent bool) {
	t.Helper()
	buf := make([]byte, c.MaxMessage())
	n, urgent, err := c.RecvMsg(context.Background(), buf)
	if err != nil || n < 8 {
		t.Fatalf("RecvMsg() = %d, %v", n, err)
	}
	return binary.LittleEndian.Uint64(buf), urgent
}

func TestOOBConfig(t *testing.T) {
	for _, oc := range []int{-1, 100, 2048, 3 << 12, 2 << 20} {
		if _, err := Create(&Config{OOBCapacity: oc}); err == nil {
			t.Errorf("Create(OOBCapacity=%d) = nil error", oc)
		}
	}
	if _, err := CreateMPMC(&Config{OOBCapacity: 4096}); err == nil {
		t.Error("CreateMPMC with an out-of-band lane = nil error, want an error")
	}
	_, p, _ := newRing(t, 4096, nil, nil)
	if err := p.SendUrgent([]byte("x")); !errors.Is(err, ErrNoLane) || !errors.Is(err, ErrNotSupported) {
		t.Errorf("SendUrgent without a lane = %v, want ErrNoLane (ErrNotSupported)", err)
	}
	if err := p.Flush(); !errors.Is(err, ErrNoLane) {
		t.Errorf("Flush without a lane = %v, want ErrNoLane", err)
	}
}

func TestUrgentOvertakes(t *testing.T) {
	seg, p, c := newLaneRing(t, 1<<16, nil, nil)
	for i := uint64(0); i < 100; i++ {
		p.Send(seqMsg(i, 64))
	}
	if err := p.SendUrgent(seqMsg(1000, 16)); err != nil {
		t.Fatal(err)
	}
	if seq, urgent := recvMsg(t, c); seq != 1000 || !urgent {
		t.Fatalf("first RecvMsg() = %d (urgent %v), want the urgent message 1000", seq, urgent)
	}
	for i := uint64(0); i < 100; i++ {
		if seq, urgent := recvMsg(t, c); seq != i || urgent {
			t.Fatalf("RecvMsg() = %d (urgent %v), want data message %d", seq, urgent, i)
		}
	}
	// Peek and batches see urgent messages first too.
	p.Send(seqMsg(7, 8))
	p.SendUrgent(seqMsg(8, 8))
	m, urgent, err := c.PeekMsg(context.Background())
	if err != nil || !urgent || binary.LittleEndian.Uint64(m) != 8 {
		t.Fatalf("PeekMsg() = %x, %v, %v; want urgent 8", m, urgent, err)
	}
	c.Release()
	var got []string
	c.RecvBatchMsg(context.Background(), 0, func(m []byte, u bool) { got = append(got, fmt.Sprint(binary.LittleEndian.Uint64(m), u)) })
	if strings.Join(got, ",") != "7 false" {
		t.Errorf("RecvBatchMsg saw %v, want [7 false]", got)
	}
	st := seg.Stats()
	if st.UrgentSent != 2 || st.UrgentReceived != 2 || st.Received != 101 {
		t.Errorf("Stats() = %+v, want 2 urgent sent and received, 101 data received", st)
	}
}

func TestLaneFull(t *testing.T) {
	_, p, _ := newLaneRing(t, 4096, nil, nil)
	if _, err := p.Reserve(10); err != nil { // a data reservation does not block the lane
		t.Fatal(err)
	}
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		err = p.SendUrgent(make([]byte, 100))
	}
	if !errors.Is(err, ErrLaneFull) {
		t.Errorf("SendUrgent on a full lane = %v, want ErrLaneFull", err)
	}
	if err := p.SendUrgent(make([]byte, p.MaxUrgent()+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("SendUrgent(MaxUrgent+1) = %v, want ErrTooLarge", err)
	}
}

func TestFlush(t *testing.T) {
	seg, p, c := newLaneRing(t, 1<<16, nil, nil)
	for i := uint64(0); i < 100; i++ {
		p.Send(seqMsg(i, 100))
	}
	if seq, _ := recvMsg(t, c); seq != 0 {
		t.Fatalf("RecvMsg() = %d, want 0", seq)
	}
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := uint64(100); i < 110; i++ {
		p.Send(seqMsg(i, 100))
	}
	for i := uint64(100); i < 110; i++ {
		if seq, _ := recvMsg(t, c); seq != i {
			t.Fatalf("RecvMsg() after Flush = %d, want %d (messages 1..99 discarded)", seq, i)
		}
	}
	st := seg.Stats()
	if st.Discarded != 99 || st.DiscardedBytes != 99*100 || st.Flushes != 1 || st.Received != 11 {
		t.Errorf("Stats() = %+v, want 99 discarded (9900 bytes), 1 flush, 11 received", st)
	}
	// A flush with nothing queued discards nothing.
	p.Flush()
	p.Send(seqMsg(5, 8))
	if seq, _ := recvMsg(t, c); seq != 5 {
		t.Fatalf("RecvMsg() = %d, want 5", seq)
	}
	if st := seg.Stats(); st.Discarded != 99 {
		t.Errorf("Discarded = %d after an empty flush, want 99", st.Discarded)
	}
}

func TestFlushPeeked(t *testing.T) {
	seg, p, c := newLaneRing(t, 1<<16, nil, nil)
	for i := uint64(0); i < 10; i++ {
		p.Send(seqMsg(i, 64))
	}
	m, err := c.Peek()
	if err != nil || binary.LittleEndian.Uint64(m) != 0 {
		t.Fatalf("Peek() = %x, %v", m, err)
	}
	p.Flush()
	p.Send(seqMsg(10, 64))
	// The peeked message stays valid and the same until Release.
	if m2, _ := c.Peek(); &m2[0] != &m[0] || binary.LittleEndian.Uint64(m2) != 0 {
		t.Fatalf("second Peek() after a flush = %x, want message 0 in place", m2)
	}
	c.Release()
	if seq, _ := recvMsg(t, c); seq != 10 {
		t.Fatalf("RecvMsg() = %d, want 10", seq)
	}
	if st := seg.Stats(); st.Discarded != 9 || st.Received != 2 {
		t.Errorf("Stats() = %+v, want 9 discarded and 2 received", st)
	}
}

func TestFlushUnblocksSend(t *testing.T) {
	_, p, c := newLaneRing(t, 4096, nil, nil)
	fill(t, p)
	errc := make(chan error, 1)
	go func() { errc <- p.Send(seqMsg(77, 100)) }()
	time.Sleep(20 * time.Millisecond)
	if err := p.Flush(); err != nil { // from another goroutine, while Send waits
		t.Fatal(err)
	}
	// The consumer applies the flush when it next looks, which frees the
	// space the blocked Send needs.
	if seq, _ := recvMsg(t, c); seq != 77 {
		t.Fatalf("RecvMsg() = %d, want 77", seq)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Send() = %v", err)
	}
}

func TestUrgentWakesSleeper(t *testing.T) {
	seg, p, c := newLaneRing(t, 4096, nil, &Options{SpinTime: -1})
	done := make(chan uint64, 1)
	go func() { seq, _ := recvMsg(t, c); done <- seq }()
	for seg.consumerSide().waiting.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	p.SendUrgent(seqMsg(9, 8))
	select {
	case seq := <-done:
		if seq != 9 {
			t.Errorf("RecvMsg() = %d, want 9", seq)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("sleeping consumer not woken by an urgent message")
	}
}

func TestFlushCorrupt(t *testing.T) {
	for name, poke := range map[string]func(w oobWords){
		"beyond tail":       func(w oobWords) { w.pos.Store(1 << 40) },
		"unaligned":         func(w oobWords) { w.pos.Store(w.pos.Load() + 3) },
		"inside a record":   func(w oobWords) { w.pos.Store(16) },
		"past the last one": func(w oobWords) { w.pos.Store(w.pos.Load() + 72) },
	} {
		t.Run(name, func(t *testing.T) {
			seg, p, c := newLaneRing(t, 1<<16, nil, nil)
			for i := uint64(0); i < 10; i++ {
				p.Send(seqMsg(i, 64))
			}
			p.Flush()
			poke(seg.oobWords())
			if _, err := c.Recv(make([]byte, 128)); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Recv() = %v, want ErrCorrupt", err)
			}
		})
	}
}

func init() {
	// flushprod sends rounds of data, flushing at random points, and
	// reports the sequence number at each flush on stdout.
	helpers["flushprod"] = func() error {
		seg, err := Open(os.NewFile(3, "segment"))
		if err != nil {
			return err
		}
		p, err := seg.Producer(nil)
		if err != nil {
			return err
		}
		rounds, per := helperInt(0), helperInt(1)
		out := bufio.NewWriter(os.Stdout)
		var seq uint64
		batch := make([][]byte, 16)
		for r := 0; r < rounds; r++ {
			n := per/2 + int(seq*7919%uint64(per))
			for i := 0; i < n; i += len(batch) {
				for j := range batch {
					batch[j] = seqMsg(seq+uint64(j), 24+int((seq+uint64(j))%40))
				}
				if _, err := p.SendBatch(batch); err != nil {
					return err
				}
				seq += uint64(len(batch))
			}
			if err := p.Flush(); err != nil {
				return err
			}
			fmt.Fprintln(out, seq)
		}
		out.Flush()
		return p.Close()
	}
}

// TestFlushRaceCrossProcess: a producer process flushes hundreds of times
// while this process receives in batches. Every gap in what arrives must
// end exactly at a flush point (a flush discards only what was committed
// before it), nothing arrives twice or out of order, and received plus
// discarded equals sent.
func TestFlushRaceCrossProcess(t *testing.T) {
	rounds, per := 300, 2000
	if testing.Short() || raceEnabled {
		rounds = 50
	}
	seg, err := Create(&Config{Capacity: 1 << 16, OOBCapacity: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	c, err := seg.Consumer(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cmd := startMPMCHelper(t, seg, "flushprod", nil, itoa(rounds), itoa(per))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	pointsc := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(stdout); pointsc <- b }()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	type gap struct{ from, to uint64 } // [from, to) never arrived
	var gaps []gap
	var next, received uint64
	for {
		_, err := c.RecvBatchMsg(context.Background(), 0, func(m []byte, urgent bool) {
			seq := binary.LittleEndian.Uint64(m)
			if urgent || seq < next {
				t.Fatalf("message %d (urgent %v) arrived when %d or later was due", seq, urgent, next)
			}
			if len(m) != 24+int(seq%40) {
				t.Fatalf("message %d has %d bytes, want %d", seq, len(m), 24+seq%40)
			}
			if seq > next {
				gaps = append(gaps, gap{next, seq})
			}
			next = seq + 1
			received++
		})
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("RecvBatchMsg() = %v", err)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("producer: %v", err)
	}
	points := map[uint64]bool{}
	var last uint64
	for _, f := range strings.Fields(string(<-pointsc)) {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		points[v], last = true, v
	}
	if len(points) != rounds {
		t.Fatalf("producer reported %d flush points, want %d", len(points), rounds)
	}
	var discarded uint64
	for _, g := range gaps {
		if !points[g.to] {
			t.Errorf("messages [%d, %d) were lost: %d is not a flush point", g.from, g.to, g.to)
		}
		discarded += g.to - g.from
	}
	// What was sent after the last received message and before the last
	// flush was discarded by it.
	if next < last {
		discarded += last - next
	}
	st := seg.Stats()
	if st.Discarded != discarded || st.Received != received || received+discarded != last {
		t.Errorf("received %d, discarded %d (counted from the gaps), sent %d; Stats() = %+v", received, discarded, last, st)
	}
	t.Logf("%d flushes: %d received, %d discarded in %d gaps", rounds, received, discarded, len(gaps))
}

func init() {
	// lateconsumer waits for a byte on stdin, then checks that the first
	// message is the urgent one and the data follows in order.
	helpers["lateconsumer"] = func() error {
		seg, err := Open(os.NewFile(3, "segment"))
		if err != nil {
			return err
		}
		c, err := seg.Consumer(nil)
		if err != nil {
			return err
		}
		os.Stdin.Read(make([]byte, 1))
		buf := make([]byte, c.MaxMessage())
		n, urgent, err := c.RecvMsg(context.Background(), buf)
		if err != nil || !urgent || string(buf[:n]) != "abort" {
			return fmt.Errorf("first RecvMsg() = %q, urgent %v, %v; want the urgent \"abort\"", buf[:n], urgent, err)
		}
		for i := uint64(0); ; i++ {
			n, urgent, err := c.RecvMsg(context.Background(), buf)
			if err == io.EOF {
				if i != uint64(helperInt(0)) {
					return fmt.Errorf("io.EOF after %d data messages, want %d", i, helperInt(0))
				}
				return nil
			}
			if err != nil || urgent || binary.LittleEndian.Uint64(buf[:n]) != i {
				return fmt.Errorf("RecvMsg() = %d bytes, urgent %v, %v; want data message %d", n, urgent, err, i)
			}
		}
	}
}

// TestUrgentOvertakesFullRingCrossProcess queues 64 MiB behind a consumer
// process that has not started reading, then sends an urgent message: it is
// the first thing the consumer receives.
func TestUrgentOvertakesFullRingCrossProcess(t *testing.T) {
	seg, err := Create(&Config{Capacity: 1 << 27, OOBCapacity: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	p, err := seg.Producer(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const msgs = (64 << 20) / 4096
	cmd := startMPMCHelper(t, seg, "lateconsumer", nil, itoa(msgs))
	stdin, _ := cmd.StdinPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	for i := uint64(0); i < msgs; i++ {
		if err := p.Send(seqMsg(i, 4096-8)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.SendUrgent([]byte("abort")); err != nil {
		t.Fatal(err)
	}
	p.Close()
	stdin.Write([]byte{1})
	if err := cmd.Wait(); err != nil {
		t.Fatalf("consumer: %v", err)
	}
}
