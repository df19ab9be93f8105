package fallback

import (
	"errors"
	"fmt"
	"os"
)

// PipeSender is the write end of a pipe carrying framed messages.
//
// Concurrency: one goroutine at a time may send (calls from several
// goroutines are serialised, never interleaved within a message).
// SetDeadline and Close may be called from any goroutine; Close unblocks
// a waiting Send.
type PipeSender struct {
	endpoint
	sendHalf
}

// PipeReceiver is the read end of a pipe carrying framed messages.
//
// Concurrency: one goroutine at a time may receive (calls are
// serialised). SetDeadline and Close may be called from any goroutine;
// Close unblocks a waiting Recv.
type PipeReceiver struct {
	endpoint
	recvHalf
}

// NewPipe returns the two ends of a new pipe (os.Pipe). MaxMessage is
// MaxStreamMessage.
func NewPipe() (*PipeSender, *PipeReceiver, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, fmt.Errorf("new pipe: %w", err)
	}
	return newPipeSender(w, "pipe"), newPipeReceiver(r, "pipe"), nil
}

// NewPipeSender sends over f, the write end of a pipe or FIFO, such as one
// a parent process passed in exec.Cmd.ExtraFiles. It takes ownership of f.
// If f is not in the runtime's poller (a descriptor inherited in blocking
// mode), f is replaced by a duplicate in non-blocking mode and closed; the
// open file description, shared with any other holder, becomes
// non-blocking.
func NewPipeSender(f *os.File) (*PipeSender, error) {
	f, err := adoptPipe(f, true)
	if err != nil {
		return nil, fmt.Errorf("new pipe sender: %w", err)
	}
	return newPipeSender(f, "pipe"), nil
}

// NewPipeReceiver receives from f, the read end of a pipe or FIFO. It
// takes ownership of f as NewPipeSender does.
func NewPipeReceiver(f *os.File) (*PipeReceiver, error) {
	f, err := adoptPipe(f, false)
	if err != nil {
		return nil, fmt.Errorf("new pipe receiver: %w", err)
	}
	return newPipeReceiver(f, "pipe"), nil
}

func newPipeSender(c conn, transport string) *PipeSender {
	s := &PipeSender{}
	s.endpoint.init(c, transport, MaxStreamMessage)
	s.sendHalf.e = &s.endpoint
	return s
}

func newPipeReceiver(c conn, transport string) *PipeReceiver {
	r := &PipeReceiver{}
	r.endpoint.init(c, transport, MaxStreamMessage)
	r.recvHalf.e = &r.endpoint
	return r
}

// checkPipe refuses a nil file or one that is not a pipe or FIFO.
func checkPipe(f *os.File) error {
	if f == nil {
		return errors.New("file is nil")
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeNamedPipe == 0 {
		return fmt.Errorf("%s is not a pipe or FIFO: mode=%v", f.Name(), fi.Mode())
	}
	return nil
}
