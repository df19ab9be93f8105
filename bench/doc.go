// Package bench is shmlane's cross-process benchmark harness, shared by
// "shmlane bench" and the go test benchmarks here ("go test -bench .
// ./bench/"): every transport driven through the same stream and pingpong
// loops with its peer in a copy of the running program, compared as
// ratios within one run, with each side's system calls per message
// counted by an eBPF probe where it can run. A program that calls Run or
// RunHub must call RunPeerIfChild first thing, since the peers are copies
// of it.
// transport.go lists the transports and the link each implements;
// case.go and peer.go run them. RunHub (hub.go) runs something else: one
// server process holding many mostly idle ring connections, a goroutine
// each, to measure what idle connections cost it.
package bench
