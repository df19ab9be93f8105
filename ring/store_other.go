//go:build !amd64

package ring

import "sync/atomic"

// storeRelease stores v to w with release ordering: every store before it
// is visible to a thread that loads v. Weakly ordered machines need the
// atomic store for that.
func storeRelease(w *atomic.Uint64, v uint64) { w.Store(v) }
