//go:build race

package ring

import (
	"os"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The race detector cannot see synchronisation through a shared mapping.
// Each segment (identified by its memfd's inode, so that two handles of the
// same segment in one process agree) gets a Go-side sentinel: publishing a
// record releases it and consuming one acquires it, which gives the race
// detector the happens-before edge that the atomic header store and load
// give the hardware.
type raceSentinel struct{ p *uint64 }

var raceSentinels sync.Map // inode -> *uint64

func (r *raceSentinel) init(f *os.File) {
	var st unix.Stat_t
	key := uint64(0)
	if raw, err := f.SyscallConn(); err == nil {
		raw.Control(func(fd uintptr) {
			if unix.Fstat(int(fd), &st) == nil {
				key = st.Ino
			}
		})
	}
	v, _ := raceSentinels.LoadOrStore(key, new(uint64))
	r.p = v.(*uint64)
}

func raceRelease(r *raceSentinel) { runtime.RaceReleaseMerge(unsafe.Pointer(r.p)) }
func raceAcquire(r *raceSentinel) { runtime.RaceAcquire(unsafe.Pointer(r.p)) }
