//go:build !linux

package ring

import "runtime"

func yield() { runtime.Gosched() }
