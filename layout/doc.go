// Package layout is the shmlane segment format: header, offsets table,
// control slots and record headers, as pure code over []byte, with Validate
// to reject anything inconsistent. It imports nothing but the standard
// library and is testable on a plain byte slice.
package layout
