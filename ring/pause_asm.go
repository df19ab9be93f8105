//go:build amd64 || arm64

package ring

// pause executes the processor's spin-wait hint n times.
//
//go:noescape
func pause(n uint32)
