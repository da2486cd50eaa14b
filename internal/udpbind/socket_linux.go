package udpbind

import (
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

// batching reports whether a ReceiveFunc fills more than one buffer.
const batching = true

// socketBufferSize is the send and receive buffer asked of the kernel, as
// conn.NewDefaultBind does; beyond net.core.[rw]mem_max only with
// CAP_NET_ADMIN. The kernel charges it as datagrams queue, not up front.
const socketBufferSize = 7 << 20

// mmsghdr is struct mmsghdr of recvmmsg(2) and sendmmsg(2). Go pads it to
// the alignment of unix.Msghdr, as C does.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// socket is one UDP socket of an open Bind, read and written in batches
// with recvmmsg(2) and sendmmsg(2) on the socket's raw descriptor, so that
// no per-datagram address is allocated.
type socket struct {
	c     *net.UDPConn
	rc    syscall.RawConn
	v6    bool // an AF_INET6 socket; IPv4 peers appear IPv4-mapped
	batch int
	log   *slog.Logger

	rmu sync.Mutex // guards r
	r   recvState  // guarded by rmu

	sends sync.Pool // of *sendState, one per concurrent Send
}

// recvState is the reusable state of receive.
type recvState struct {
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	cache endpointCache

	// The arguments and results of recvmmsg, which fn reads and writes so
	// that rc.Read takes a function value made once.
	count int
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

// sendState is the reusable state of one send.
type sendState struct {
	hdrs []mmsghdr
	iovs []unix.Iovec
	name unix.RawSockaddrInet6

	count int // messages in hdrs
	done  int // messages sent
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

// control sets the socket options of a new socket.
func (b *Bind) control(network, address string, c syscall.RawConn) error {
	return c.Control(func(fd uintptr) {
		f := int(fd)
		_ = unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_RCVBUF, socketBufferSize)
		_ = unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_SNDBUF, socketBufferSize)
		_ = unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBufferSize)
		_ = unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBufferSize)
	})
}

func (b *Bind) newSocket(c *net.UDPConn, v6 bool) (*socket, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	s := &socket{c: c, rc: rc, v6: v6, batch: b.batch, log: b.log}
	r := &s.r
	r.hdrs = make([]mmsghdr, b.batch)
	r.iovs = make([]unix.Iovec, b.batch)
	r.names = make([]unix.RawSockaddrInet6, b.batch)
	for i := range r.hdrs {
		h := &r.hdrs[i].hdr
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
	}
	r.fn = r.recvmmsg
	s.sends.New = func() any {
		st := &sendState{}
		st.fn = st.sendmmsg
		return st
	}
	return s, nil
}

// receive is the ReceiveFunc of s.
func (s *socket) receive(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	r := &s.r
	count := min(len(bufs), len(r.hdrs))
	for i := range count {
		b := bufs[i]
		if len(b) == 0 {
			// An empty iovec would still consume a datagram.
			count = i
			break
		}
		r.iovs[i].Base = &b[0]
		r.iovs[i].SetLen(len(b))
		r.hdrs[i].hdr.Namelen = unix.SizeofSockaddrInet6
		r.hdrs[i].hdr.Flags = 0
	}
	if count == 0 {
		return 0, nil
	}
	r.count = count
	if err := s.rc.Read(r.fn); err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, &net.OpError{Op: "read", Net: "udp", Addr: s.c.LocalAddr(), Err: os.NewSyscallError("recvmmsg", r.errno)}
	}
	for i := range r.n {
		sizes[i] = int(r.hdrs[i].n)
		eps[i] = r.cache.get(sockaddrToAddrPort(&r.names[i]))
	}
	// Drop the references to the caller's buffers.
	for i := range count {
		r.iovs[i].Base = nil
	}
	return r.n, nil
}

// recvmmsg runs recvmmsg(2) for receive, reporting whether it is done (not
// waiting for the socket to become readable).
func (r *recvState) recvmmsg(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(r.count), 0, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		r.n, r.errno = int(n), e
		return true
	}
}

// sockaddrToAddrPort converts a sockaddr written by the kernel, unmapping
// an IPv4-mapped address.
func sockaddrToAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	if sa.Family == unix.AF_INET {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	}
	a := netip.AddrFrom16(sa.Addr).Unmap()
	if sa.Scope_id != 0 && a.Is6() {
		// Rare (link-local peers): the zone costs an allocation.
		a = a.WithZone(strconv.FormatUint(uint64(sa.Scope_id), 10))
	}
	return netip.AddrPortFrom(a, port)
}

// putSockaddr writes ap to sa in the family of s.
func (s *socket) putSockaddr(sa *unix.RawSockaddrInet6, ap netip.AddrPort) int {
	*sa = unix.RawSockaddrInet6{}
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], ap.Port())
	if !s.v6 {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		sa4.Family = unix.AF_INET
		sa4.Addr = ap.Addr().As4()
		return unix.SizeofSockaddrInet4
	}
	sa.Family = unix.AF_INET6
	sa.Addr = ap.Addr().As16()
	if z := ap.Addr().Zone(); z != "" {
		if id, err := strconv.ParseUint(z, 10, 32); err == nil {
			sa.Scope_id = uint32(id)
		} else if ifi, err := net.InterfaceByName(z); err == nil {
			sa.Scope_id = uint32(ifi.Index)
		}
	}
	return unix.SizeofSockaddrInet6
}

func (s *socket) send(bufs [][]byte, e *Endpoint) error {
	if len(bufs) == 0 {
		return nil
	}
	st := s.sends.Get().(*sendState)
	defer s.sends.Put(st)
	namelen := s.putSockaddr(&st.name, e.ap)
	if cap(st.hdrs) < len(bufs) {
		st.hdrs = make([]mmsghdr, len(bufs))
		st.iovs = make([]unix.Iovec, len(bufs))
	}
	st.hdrs = st.hdrs[:len(bufs)]
	st.iovs = st.iovs[:len(bufs)]
	for i, b := range bufs {
		st.iovs[i].Base = unsafe.SliceData(b)
		st.iovs[i].SetLen(len(b))
		h := &st.hdrs[i].hdr
		*h = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&st.name)), Namelen: uint32(namelen), Iov: &st.iovs[i]}
		h.SetIovlen(1)
	}
	st.count, st.done, st.errno = len(bufs), 0, 0
	err := s.rc.Write(st.fn)
	for i := range st.iovs {
		st.iovs[i].Base = nil
	}
	if err != nil {
		return err
	}
	if st.errno != 0 {
		return &net.OpError{Op: "write", Net: "udp", Addr: net.UDPAddrFromAddrPort(e.ap), Err: os.NewSyscallError("sendmmsg", st.errno)}
	}
	return nil
}

// sendmmsg runs sendmmsg(2) for send until every message is sent or one
// fails, reporting whether it is done (not waiting for the socket to
// become writable).
func (st *sendState) sendmmsg(fd uintptr) bool {
	for st.done < st.count {
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&st.hdrs[st.done])), uintptr(st.count-st.done), 0, 0, 0)
		switch e {
		case 0:
			st.done += int(n)
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			st.errno = e
			return true
		}
	}
	return true
}

// setMark sets SO_MARK.
func (s *socket) setMark(mark uint32) error {
	var serr error
	err := s.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
	})
	if err != nil {
		return err
	}
	return os.NewSyscallError("setsockopt SO_MARK", serr)
}

func (s *socket) close() error { return s.c.Close() }
