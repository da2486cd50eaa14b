//go:build !unix && !windows

package udpbind

import "syscall"

// control sets the socket options of a new socket: none here.
func (b *Bind) control(network, address string, c syscall.RawConn) error { return nil }
