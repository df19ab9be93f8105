package fallback

// FIFOSender is the write end of a FIFO (named pipe) carrying framed
// messages, opened by name by a process unrelated to the receiver. The
// contract is one sender and one receiver per FIFO.
//
// Concurrency: as PipeSender.
type FIFOSender struct {
	endpoint
	sendHalf
}

// FIFOReceiver is the read end of a FIFO carrying framed messages.
//
// A FIFO has no connection: its reader sees end-of-file whenever no
// writer has it open, including before the first one arrives. A
// FIFOReceiver therefore waits for a sender to open the FIFO, and reports
// io.EOF only once a sender has opened it and every sender has closed it
// again, with everything they sent delivered. io.EOF is final: a sender
// arriving later is not read.
//
// Concurrency: as PipeReceiver.
type FIFOReceiver struct {
	endpoint
	recvHalf
}

func newFIFOSender(c conn) *FIFOSender {
	s := &FIFOSender{}
	s.endpoint.init(c, "fifo", MaxStreamMessage)
	s.sendHalf.e = &s.endpoint
	return s
}

func newFIFOReceiver(c conn) *FIFOReceiver {
	r := &FIFOReceiver{}
	r.endpoint.init(c, "fifo", MaxStreamMessage)
	r.recvHalf.e = &r.endpoint
	return r
}
