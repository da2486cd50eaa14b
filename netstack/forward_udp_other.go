//go:build !unix

package netstack

import "net"

// upstreamReader returns a function that waits for the next datagram of
// the UDP socket c and reads it into a buffer from udpBufs, which the
// caller puts back; so a flow waiting for its upstream holds no buffer.
// It honours c's read deadline. On this platform (no readiness wait
// without a read) it returns nil: the flow reads into a buffer of its own.
func upstreamReader(c net.Conn) func() (*[]byte, int, error) { return nil }
