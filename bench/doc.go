// Package bench holds shmlane's go test benchmarks: the ring between two
// processes and within one, and a pipe between two processes for
// comparison, at several message sizes. Run them with
// "go test -bench . ./bench/"; "shmlane bench" compares more transports.
package bench
