package udpbind

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/windows"
)

// socketBufferSize is the send and receive buffer asked of the system, as
// conn.NewDefaultBind does.
const socketBufferSize = 7 << 20

// control sets the socket options of a new socket.
func (b *Bind) control(network, address string, c syscall.RawConn) error {
	return c.Control(func(fd uintptr) {
		h := windows.Handle(fd)
		_ = windows.SetsockoptInt(h, windows.SOL_SOCKET, windows.SO_RCVBUF, socketBufferSize)
		_ = windows.SetsockoptInt(h, windows.SOL_SOCKET, windows.SO_SNDBUF, socketBufferSize)
		// Without this, an ICMP port unreachable for an earlier send fails
		// the next read with WSAECONNRESET.
		off := uint32(0)
		var ret uint32
		_ = windows.WSAIoctl(h, windows.SIO_UDP_CONNRESET, (*byte)(unsafe.Pointer(&off)), 4, nil, 0, &ret, nil, 0)
	})
}
