//go:build !unix

package ring

// alive cannot tell on this platform, where no segment can be made
// anyway: it reports every pid but 0 as alive.
func alive(pid uint32) bool { return pid != 0 }
