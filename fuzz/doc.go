// Package fuzz holds shmlane's native Go fuzz targets: the segment header
// and record decoders of package layout fed arbitrary bytes, and the SPSC
// ring driven by random operation sequences against a plain Go queue.
package fuzz
