// Package layout is the shmlane segment format: header, offsets table,
// control slots and record headers, as pure code over []byte, with Validate
// to reject anything inconsistent. It imports nothing but the standard
// library and is testable on a plain byte slice.
//
// It is internal: only package ring reads and writes segments. A Go
// program that wants to look at a segment opens it with ring.Open (or asks
// a listener with shmlane.Inspect) and reads ring.Stats; a tool in another
// language reads the format from the comment at the top of layout.go,
// which is its specification (offsets, sizes, byte order, the record
// header), and validates what it reads as Validate does.
package layout
