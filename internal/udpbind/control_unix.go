//go:build unix && !linux

package udpbind

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// socketBufferSize is the send and receive buffer asked of the system, as
// conn.NewDefaultBind does (7 MiB, the most macOS allows by default).
const socketBufferSize = 7 << 20

// control sets the socket options of a new socket.
func (b *Bind) control(network, address string, c syscall.RawConn) error {
	return c.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, socketBufferSize)
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, socketBufferSize)
	})
}
