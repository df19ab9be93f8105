//go:build !linux

package fallback

// vecReader is Linux's scattering read; elsewhere there is no transport
// to use it and newVecReader returns nil.
type vecReader struct{}

func newVecReader(conn) *vecReader { return nil }

func (*vecReader) read(hdr, p, spare []byte) (int, error) { return 0, ErrNotSupported }
