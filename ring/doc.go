// Package ring is shmlane's engine: memfd segments shared between processes
// and the lock-free rings of variable-length messages that live in them (one
// producer and one consumer, or many of each), with futex sleeps only when a
// side has nothing to do.
package ring
