//go:build unix

package netstack

import (
	"net"
	"syscall"
)

// upstreamReader returns a function that waits for the next datagram of
// the UDP socket c and reads it into a buffer from udpBufs, which the
// caller puts back; so a flow waiting for its upstream holds no buffer.
// It honours c's read deadline. It returns nil if c is not a UDP socket.
func upstreamReader(c net.Conn) func() (*[]byte, int, error) {
	uc, ok := c.(*net.UDPConn)
	if !ok {
		return nil
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil
	}
	return func() (*[]byte, int, error) {
		var (
			bp   *[]byte
			n    int
			rerr error
		)
		err := rc.Read(func(fd uintptr) bool {
			bp = udpBufs.Get().(*[]byte)
			n, rerr = syscall.Read(int(fd), *bp)
			if rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK || rerr == syscall.EINTR {
				udpBufs.Put(bp)
				bp = nil
				return false // wait until readable
			}
			return true
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			if bp != nil {
				udpBufs.Put(bp)
			}
			return nil, 0, err
		}
		return bp, n, nil
	}
}
