package futex

// ParkerUsable reports whether this process parks waits in io_uring.
func ParkerUsable() bool { return Parking() }

// BreakParker makes Wait use the system call for every wait, as on a
// kernel without IORING_OP_FUTEX_WAIT, until the returned func restores it.
func BreakParker() (restore func()) {
	p := theParker()
	if p == nil {
		return func() {}
	}
	p.broken.Store(true)
	return func() { p.broken.Store(false) }
}
