package udpbind

import (
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
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
	c   *net.UDPConn
	rc  syscall.RawConn
	v6  bool // an AF_INET6 socket; IPv4 peers appear IPv4-mapped
	log *slog.Logger
	gso atomic.Bool // UDP_SEGMENT works; cleared when the kernel refuses it
	gro bool        // UDP_GRO is on: a datagram read may hold several

	rmu sync.Mutex // guards r
	r   recvState  // guarded by rmu

	sends sync.Pool // of *sendState, one per concurrent Send
}

// recvState is the reusable state of receive.
type recvState struct {
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	oob   []byte // oobSize bytes per message for the UDP_GRO cmsg
	cache endpointCache

	// With GRO, the datagrams of a coalesced read that did not fit in the
	// caller's buffers wait in scratch for the next receive: rest holds
	// them back to back, restSeg long each (the last may be shorter).
	scratch []byte
	rest    []byte
	restSeg int
	restEp  *Endpoint

	// The arguments and results of recvmmsg, which fn reads and writes so
	// that rc.Read takes a function value made once.
	count int
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

// sendState is the reusable state of one send.
type sendState struct {
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	oob   []byte // oobSize bytes per message for the UDP_SEGMENT cmsg
	first []int  // the index in bufs of each message's first datagram
	name  unix.RawSockaddrInet6

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
		if b.offload {
			_ = unix.SetsockoptInt(f, unix.IPPROTO_UDP, unix.UDP_GRO, 1)
		}
	})
}

// offloads reports whether UDP GSO works on fd and whether UDP GRO is on.
// Kernels before 5.12 cannot report UDP_GRO; it is turned off there, as
// coalesced datagrams this Bind does not know of would be delivered whole.
func offloads(fd int, want bool) (gso, gro bool) {
	if !want {
		return false, false
	}
	_, err := unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT)
	gso = err == nil
	on, err := unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO)
	if err != nil {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 0)
	}
	return gso, err == nil && on == 1
}

func (b *Bind) newSocket(c *net.UDPConn, v6 bool) (*socket, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	s := &socket{c: c, rc: rc, v6: v6, log: b.log}
	var gso, gro bool
	if err := rc.Control(func(fd uintptr) { gso, gro = offloads(int(fd), b.offload) }); err != nil {
		return nil, err
	}
	s.gso.Store(gso)
	s.gro = gro
	b.log.Debug("udpbind: socket open", "addr", c.LocalAddr(), "gso", gso, "gro", gro)
	r := &s.r
	r.hdrs = make([]mmsghdr, b.batch)
	r.iovs = make([]unix.Iovec, b.batch)
	r.names = make([]unix.RawSockaddrInet6, b.batch)
	if gro {
		r.oob = make([]byte, b.batch*oobSize)
	}
	for i := range r.hdrs {
		h := &r.hdrs[i].hdr
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
		if gro {
			h.Control = &r.oob[i*oobSize]
		}
	}
	r.fn = r.recvmmsg
	s.sends.New = func() any {
		st := &sendState{}
		st.fn = st.sendmmsg
		return st
	}
	return s, nil
}

const (
	// maxDatagram is the largest UDP payload, and so the largest read
	// with GRO.
	maxDatagram = 1<<16 - 1
	// maxGSOSegments is the most datagrams one UDP_SEGMENT send may
	// carry (UDP_MAX_SEGMENTS of older kernels).
	maxGSOSegments = 64
	// oobSize is the control buffer of one message, room for the
	// UDP_SEGMENT or UDP_GRO cmsg (8-byte aligned).
	oobSize = 32
)

// receive is the ReceiveFunc of s.
func (s *socket) receive(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	r := &s.r
	if len(r.rest) > 0 {
		return r.takeRest(bufs, sizes, eps), nil
	}
	count := min(len(bufs), len(r.hdrs))
	scratch := false
	if s.gro {
		// One read may carry up to 64 datagrams (more from a local
		// sender on recent kernels): read one at a time, and split it.
		count = min(count, 1)
		if count == 1 && len(bufs[0]) < maxDatagram {
			// Too short for a coalesced read: read into scratch.
			scratch = true
			if r.scratch == nil {
				r.scratch = make([]byte, maxDatagram)
			}
		}
	}
	for i := range count {
		b := bufs[i]
		if scratch {
			b = r.scratch
		}
		if len(b) == 0 {
			// An empty iovec would still consume a datagram.
			count = i
			break
		}
		r.iovs[i].Base = &b[0]
		r.iovs[i].SetLen(len(b))
		r.hdrs[i].hdr.Namelen = unix.SizeofSockaddrInet6
		r.hdrs[i].hdr.Flags = 0
		if s.gro {
			r.hdrs[i].hdr.SetControllen(oobSize)
		}
	}
	if count == 0 {
		return 0, nil
	}
	r.count = count
	err := s.rc.Read(r.fn)
	// Drop the references to the caller's buffers.
	for i := range count {
		r.iovs[i].Base = nil
	}
	if err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, &net.OpError{Op: "read", Net: "udp", Addr: s.c.LocalAddr(), Err: os.NewSyscallError("recvmmsg", r.errno)}
	}
	if !s.gro {
		for i := range r.n {
			sizes[i] = int(r.hdrs[i].n)
			eps[i] = r.cache.get(sockaddrToAddrPort(&r.names[i]))
		}
		return r.n, nil
	}
	// GRO: one message, maybe several datagrams of seg bytes each (the
	// last may be shorter).
	h := &r.hdrs[0]
	n := int(h.n)
	seg := groSize(r.oob[:h.hdr.Controllen])
	if seg <= 0 || seg > n {
		seg = n
	}
	ep := r.cache.get(sockaddrToAddrPort(&r.names[0]))
	if scratch {
		r.rest, r.restSeg, r.restEp = r.scratch[:n], seg, ep
		return r.takeRest(bufs, sizes, eps), nil
	}
	src := bufs[0][:n]
	k := 1
	for off := seg; off < n && k < len(bufs); off += seg {
		sizes[k] = copy(bufs[k], src[off:min(off+seg, n)])
		eps[k] = ep
		k++
	}
	if off := k * seg; off < n {
		// More datagrams than buffers: keep the others for next time.
		if r.scratch == nil {
			r.scratch = make([]byte, maxDatagram)
		}
		r.rest = r.scratch[:copy(r.scratch, src[off:])]
		r.restSeg, r.restEp = seg, ep
	}
	sizes[0], eps[0] = seg, ep
	return k, nil
}

// takeRest moves datagrams kept from a coalesced read into bufs.
func (r *recvState) takeRest(bufs [][]byte, sizes []int, eps []conn.Endpoint) int {
	k := 0
	for ; k < len(bufs) && len(r.rest) > 0; k++ {
		d := r.rest[:min(r.restSeg, len(r.rest))]
		sizes[k] = copy(bufs[k], d)
		eps[k] = r.restEp
		r.rest = r.rest[len(d):]
	}
	if len(r.rest) == 0 {
		r.rest, r.restEp = nil, nil
	}
	return k
}

// groSize returns the datagram size of a UDP_GRO cmsg in oob, or 0.
func groSize(oob []byte) int {
	for len(oob) >= unix.SizeofCmsghdr {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && len(data) >= 4 {
			return int(int32(binary.NativeEndian.Uint32(data)))
		}
		oob = rest
	}
	return 0
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

// putSockaddr writes e's address to sa in the family of s.
func (s *socket) putSockaddr(sa *unix.RawSockaddrInet6, e *Endpoint) int {
	*sa = unix.RawSockaddrInet6{}
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], e.ap.Port())
	if !s.v6 {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		sa4.Family = unix.AF_INET
		sa4.Addr = e.ap.Addr().As4()
		return unix.SizeofSockaddrInet4
	}
	sa.Family = unix.AF_INET6
	sa.Addr = e.ap.Addr().As16() // IPv4-mapped for an IPv4 peer
	sa.Scope_id = e.scope
	return unix.SizeofSockaddrInet6
}

func (s *socket) send(bufs [][]byte, e *Endpoint) error {
	if len(bufs) == 0 {
		return nil
	}
	st := s.sends.Get().(*sendState)
	defer s.sends.Put(st)
	gso := s.gso.Load() && len(bufs) > 1
	st.build(bufs, s.putSockaddr(&st.name, e), gso, e.ap.Addr().Is4())
	err := s.rc.Write(st.fn)
	for i := range st.iovs {
		st.iovs[i].Base = nil
	}
	if err != nil {
		return err
	}
	if st.errno == 0 {
		return nil
	}
	if gso && gsoRefused(st.errno) && st.hdrs[st.done].hdr.Controllen != 0 {
		// The kernel would not segment this message: send the rest one
		// datagram per message, from now on.
		if s.gso.CompareAndSwap(true, false) {
			s.log.Warn("udpbind: UDP GSO refused, turned off", "addr", s.c.LocalAddr(), "err", st.errno)
		}
		return s.send(bufs[st.first[st.done]:], e)
	}
	return &net.OpError{Op: "write", Net: "udp", Addr: net.UDPAddrFromAddrPort(e.ap), Err: os.NewSyscallError("sendmmsg", st.errno)}
}

// gsoRefused reports whether a UDP_SEGMENT send failed for want of GSO:
// EIO when the device cannot checksum on transmit, which GSO needs;
// EMSGSIZE (EINVAL on some kernels) when a segment exceeds the path MTU,
// which IP fragmentation handles without GSO.
func gsoRefused(errno syscall.Errno) bool {
	return errno == unix.EIO || errno == unix.EINVAL || errno == unix.EMSGSIZE
}

// build fills st with the messages that send bufs to the sockaddr in
// st.name. With gso, runs of datagrams of one size (the last of a run may
// be shorter) go in one message, segmented by the kernel (UDP_SEGMENT).
func (st *sendState) build(bufs [][]byte, namelen int, gso, to4 bool) {
	if cap(st.hdrs) < len(bufs) {
		st.hdrs = make([]mmsghdr, len(bufs))
		st.iovs = make([]unix.Iovec, len(bufs))
		st.first = make([]int, len(bufs))
		st.oob = make([]byte, len(bufs)*oobSize)
	}
	st.hdrs = st.hdrs[:len(bufs)]
	st.iovs = st.iovs[:len(bufs)]
	for i, b := range bufs {
		st.iovs[i].Base = unsafe.SliceData(b)
		st.iovs[i].SetLen(len(b))
	}
	// The largest UDP payload: the IPv6 payload length leaves out its
	// header, IPv4's total length does not.
	maxPayload := maxDatagram - 8
	if to4 {
		maxPayload -= 20
	}
	m := 0
	for i := 0; i < len(bufs); m++ {
		size, total := len(bufs[i]), len(bufs[i])
		j := i + 1
		for gso && size > 0 && j < len(bufs) && j-i < maxGSOSegments {
			l := len(bufs[j])
			if l == 0 || l > size || total+l > maxPayload {
				break
			}
			total += l
			j++
			if l < size {
				break // a shorter datagram ends the run
			}
		}
		h := &st.hdrs[m].hdr
		*h = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&st.name)), Namelen: uint32(namelen), Iov: &st.iovs[i]}
		h.SetIovlen(j - i)
		if j-i > 1 {
			oob := st.oob[m*oobSize:]
			c := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
			c.Level, c.Type = unix.SOL_UDP, unix.UDP_SEGMENT
			c.SetLen(unix.CmsgLen(2))
			binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(size))
			h.Control = &oob[0]
			h.SetControllen(unix.CmsgSpace(2))
		}
		st.first[m] = i
		i = j
	}
	st.hdrs = st.hdrs[:m]
	st.count, st.done, st.errno = m, 0, 0
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
