//go:build !linux

package shmlane

import (
	"os"
	"time"
)

// fbIO is the system side of a fallback connection (see fbconn_linux.go).
// Other platforms never make one: Listen and Dial fail first.
type fbIO struct {
	lane       *os.File
	laneRoom   int
	rbuf, lbuf []byte
}

func newFbIO(data, lane *os.File) (*fbIO, error) {
	data.Close()
	if lane != nil {
		lane.Close()
	}
	return nil, notSupported("fallback connection")
}

func (fio *fbIO) readData() (int, error)              { return 0, notSupported("recv") }
func (fio *fbIO) readLane() (int, error)              { return 0, notSupported("recv") }
func (fio *fbIO) dropLane()                           {}
func (fio *fbIO) sendLane(p []byte) error             { return notSupported("send urgent") }
func (fio *fbIO) wait(ready func(uintptr) bool) error { return notSupported("recv") }
func (fio *fbIO) waitLane(try func() bool) error      { return notSupported("flush") }
func (fio *fbIO) setReadDeadline(t time.Time) error   { return notSupported("set deadline") }
func (fio *fbIO) setLaneDeadline(t time.Time) error   { return notSupported("set deadline") }
func (fio *fbIO) close()                              {}

func newLanePair(oobCap int) (mine, theirs *os.File, err error) {
	return nil, nil, notSupported("create the out-of-band lane")
}

func checkLaneSocket(f *os.File, pid int) error { return notSupported("check the out-of-band lane") }
