// Package fuzz holds shmlane's native Go fuzz targets: the segment header
// and record decoders of package layout fed arbitrary bytes, and the SPSC
// and MPMC rings driven by random operation sequences against models.
package fuzz
