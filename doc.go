// Package shmlane connects two processes by name: Listen and Dial meet on a
// unix socket, check each other's credentials and pass a pair of sealed
// memfd rings, one per direction, falling back to the socket itself when
// shared memory cannot be used. Every transport, ring or fallback, honours
// the same Sender and Receiver contract.
//
// A Conn also has an out-of-band lane in each direction, in both modes:
// Conn.SendUrgent sends a message that the peer receives before the data
// queued ahead of it, and Conn.Flush makes the peer discard the data sent
// before it that it has not received yet (see Conn.RecvMsg). Out-of-band
// needs a Conn: the raw transports of package fallback (pipe, FIFO, unix
// socket, TCP) are single channels and have no lane (TCP's urgent byte is
// not used), and a ring.Producer has one only if its segment was created
// with ring.Config.OOBCapacity.
package shmlane

// Reading order of the source:
//
//	shmlane.go, options.go, name.go  the contract, errors, options, names
//	listen.go                        Listener: admission, limits, Accept, Close
//	listen_handshake.go              the listener's side of the handshake
//	dial.go                          Dial: the dialer's side
//	wire.go                          the handshake's messages
//	conn.go                          Conn over a link, chosen at the handshake:
//	conn_ring.go                       shared memory (two rings)
//	conn_socket*.go                    the socket fallback, with its lane
//	inspect.go                       Inspect and the listener's answer
//	sys_linux.go, sys_other.go       the system interface: credentials,
//	                                 SCM_RIGHTS, locks, pidfds
