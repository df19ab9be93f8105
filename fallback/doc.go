// Package fallback carries shmlane messages over pipes, FIFOs, unix sockets
// and TCP when a shared-memory ring cannot be used, with the ring's contract:
// one message per call with its boundaries kept, nothing lost on a short
// buffer, and io.EOF once the peer has closed and everything was delivered.
package fallback
