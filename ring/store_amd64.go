package ring

import (
	"sync/atomic"
	"unsafe"
)

// storeRelease stores v to w with release ordering: every store before it
// is visible to a thread that loads v. On amd64 (TSO) a plain store has
// release ordering, and the atomic operations before it are compiler
// barriers, so it costs one MOV instead of an XCHG.
func storeRelease(w *atomic.Uint64, v uint64) { *(*uint64)(unsafe.Pointer(w)) = v }
