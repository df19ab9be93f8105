// Package shmlane connects two processes by name: Listen and Dial meet on a
// unix socket, check each other's credentials and pass a pair of sealed
// memfd rings, one per direction, falling back to the socket itself when
// shared memory cannot be used. Every transport, ring or fallback, honours
// the same Sender and Receiver contract.
package shmlane
