// Package ring is shmlane's engine: memfd segments shared between processes
// and the lock-free single-producer, single-consumer ring of variable-length
// messages that lives in them, with futex sleeps only when a side has nothing
// to do.
package ring
