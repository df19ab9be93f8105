//go:build !amd64 && !arm64

package ring

var pauseSink uint32

// pause busy-waits for about n short steps.
func pause(n uint32) {
	for i := uint32(0); i < n; i++ {
		pauseSink += i
	}
}
