package shmlane

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"
)

// TestConnOutOfBand: in shared-memory mode, in both directions, an urgent
// message overtakes queued messages and a flush discards exactly what was
// sent before it; in fallback mode both say ErrNotSupported.
func TestConnOutOfBand(t *testing.T) {
	ctx := context.Background()
	a, b := newPair(t, modes[0])
	msg := func(i uint64) []byte { m := make([]byte, 16); binary.LittleEndian.PutUint64(m, i); return m }
	for _, dir := range []struct {
		name     string
		from, to *Conn
	}{{"listener to dialer", a, b}, {"dialer to listener", b, a}} {
		t.Run(dir.name, func(t *testing.T) {
			buf := make([]byte, dir.to.MaxMessage())
			recv := func() (uint64, bool) {
				t.Helper()
				n, urgent, err := dir.to.RecvMsg(ctx, buf)
				if err != nil || n != 16 {
					t.Fatalf("RecvMsg() = %d, %v", n, err)
				}
				return binary.LittleEndian.Uint64(buf), urgent
			}
			for i := uint64(0); i < 100; i++ {
				dir.from.Send(msg(i))
			}
			if err := dir.from.SendUrgent(msg(1000)); err != nil {
				t.Fatal(err)
			}
			if v, urgent := recv(); v != 1000 || !urgent {
				t.Fatalf("RecvMsg() = %d (urgent %v), want the urgent message first", v, urgent)
			}
			if v, urgent := recv(); v != 0 || urgent {
				t.Fatalf("RecvMsg() = %d (urgent %v), want data message 0", v, urgent)
			}
			if err := dir.from.Flush(); err != nil {
				t.Fatal(err)
			}
			dir.from.Send(msg(200))
			if v, _ := recv(); v != 200 {
				t.Fatalf("RecvMsg() after Flush = %d, want 200 (1..99 discarded)", v)
			}
		})
	}
	fa, fb := newPair(t, modes[1])
	if err := fa.SendUrgent([]byte("x")); !errors.Is(err, ErrNotSupported) {
		t.Errorf("SendUrgent in fallback mode = %v, want ErrNotSupported", err)
	}
	if err := fb.Flush(); !errors.Is(err, ErrNotSupported) {
		t.Errorf("Flush in fallback mode = %v, want ErrNotSupported", err)
	}
}
