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
	// sticky is Options.StickySource: datagrams read come with their
	// destination address (IP_PKTINFO, IPV6_PKTINFO), sent ones with
	// their Endpoint's.
	sticky bool

	rmu sync.Mutex // guards r
	r   recvState  // guarded by rmu

	sends sync.Pool // of *sendState, one per concurrent Send
}

// recvState is the reusable state of receive.
type recvState struct {
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	oob   []byte // oobSize bytes per message, for the UDP_GRO and PKTINFO cmsgs
	cache endpointCache

	// With GRO, datagrams read that did not fit in the caller's buffers
	// wait in scratch for the next receive calls, in order.
	scratch []byte
	pending []pending
	// msgs describes the messages of the last read.
	msgs []msgInfo
	// singles counts the datagrams read since the last coalesced one:
	// with GRO, a read asks for one message until it reaches
	// batchAfterSingles, and for a batch after (see receiveGRO).
	singles int
	// lastSegs is how many datagrams the last message read with GRO
	// held; when they were more than the caller's buffers, receiveGRO
	// reads the next message into scratch (see there).
	lastSegs int

	// The arguments and results of recvmmsg, which fn reads and writes so
	// that rc.Read takes a function value made once.
	count int
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

// pending is a run of datagrams of seg bytes (the last may be shorter)
// from ep that a receive read but could not hand over.
type pending struct {
	data []byte
	seg  int
	ep   *Endpoint
}

// msgInfo is one message of a GRO read.
type msgInfo struct {
	n, seg int // bytes, and bytes per datagram
	segs   int // datagrams
	start  int // index of its first datagram in the caller's buffers
	ep     *Endpoint
}

// sendState is the reusable state of one send.
type sendState struct {
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	oob   []byte // oobSize bytes per message, for the UDP_SEGMENT and PKTINFO cmsgs
	first []int  // the index in bufs of each message's first datagram
	name  unix.RawSockaddrInet6

	count int // messages in hdrs
	done  int // messages sent
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

// control sets the socket options of a new socket.
func (b *Bind) control(network, address string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		f := int(fd)
		_ = unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_RCVBUF, socketBufferSize)
		_ = unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_SNDBUF, socketBufferSize)
		_ = unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBufferSize)
		_ = unix.SetsockoptInt(f, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBufferSize)
		if b.offload {
			_ = unix.SetsockoptInt(f, unix.IPPROTO_UDP, unix.UDP_GRO, 1)
		}
		if b.sticky {
			serr = setPktinfo(f, network)
		}
	}); err != nil {
		return err
	}
	return serr
}

// setPktinfo asks for the destination address of every datagram read on
// fd. A dual-stack socket (network "udp6") reports IPv4 datagrams'
// as IPv4-mapped IPV6_PKTINFO.
func setPktinfo(fd int, network string) error {
	if network == "udp4" {
		return os.NewSyscallError("setsockopt IP_PKTINFO", unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1))
	}
	return os.NewSyscallError("setsockopt IPV6_RECVPKTINFO", unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1))
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
	s := &socket{c: c, rc: rc, v6: v6, log: b.log, sticky: b.sticky}
	var gso, gro bool
	if err := rc.Control(func(fd uintptr) { gso, gro = offloads(int(fd), b.offload) }); err != nil {
		return nil, err
	}
	s.gso.Store(gso)
	s.gro = gro
	b.log.Debug("udpbind: socket open", "addr", c.LocalAddr(), "gso", gso, "gro", gro, "sticky", b.sticky)
	r := &s.r
	r.hdrs = make([]mmsghdr, b.batch)
	r.iovs = make([]unix.Iovec, b.batch)
	r.names = make([]unix.RawSockaddrInet6, b.batch)
	if s.wantsControl() {
		r.oob = make([]byte, b.batch*oobSize)
	}
	for i := range r.hdrs {
		h := &r.hdrs[i].hdr
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
		if s.wantsControl() {
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
	// oobSize is the control buffer of one message: room for the
	// UDP_SEGMENT or UDP_GRO cmsg and an IP_PKTINFO or IPV6_PKTINFO one,
	// 8-byte aligned. A receive that brings more (none is asked for) is
	// cut short by the kernel, which drops the rest.
	oobSize = 64
	// batchAfterSingles is how many datagrams in a row must arrive
	// uncoalesced before a GRO socket reads a batch of messages per call.
	batchAfterSingles = 64
)

// receive is the ReceiveFunc of s.
func (s *socket) receive(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	r := &s.r
	if len(r.pending) > 0 {
		return r.takePending(bufs, sizes, eps), nil
	}
	if s.gro {
		return s.receiveGRO(bufs, sizes, eps)
	}
	count, err := s.read(bufs, min(len(bufs), len(r.hdrs)))
	if err != nil || count == 0 {
		return 0, err
	}
	for i := range r.n {
		sizes[i] = int(r.hdrs[i].n)
		k := endpointKey{ap: sockaddrToAddrPort(&r.names[i])}
		if s.sticky {
			_, k.src, k.srcIf = parseControl(r.control(i))
		}
		eps[i] = r.cache.get(k)
	}
	return r.n, nil
}

// wantsControl reports whether reads ask for control messages.
func (s *socket) wantsControl() bool { return s.gro || s.sticky }

// control returns the control messages of message i of the last read.
func (r *recvState) control(i int) []byte {
	return r.oob[i*oobSize:][:r.hdrs[i].hdr.Controllen]
}

// read reads up to count messages into bufs with recvmmsg(2), and
// returns how many it asked for: fewer than count if a buffer is empty.
// r.n holds how many arrived.
func (s *socket) read(bufs [][]byte, count int) (int, error) {
	r := &s.r
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
		if s.wantsControl() {
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
	return count, nil
}

// receiveGRO is receive on a GRO socket, where a message may hold up to
// 64 datagrams of one size (more from a local sender on recent kernels).
//
// While datagrams arrive coalesced, it reads one message per call, so
// that what does not fit in bufs (at most one message) waits in a 64 KiB
// scratch buffer. A message is read into bufs[0] and split from there
// into the other buffers, unless the last message held more datagrams
// than there are buffers: then one like it would be copied twice (split,
// then its overflow into scratch and out again), so it is read into
// scratch and each datagram copied once. That is the common case when
// the caller's batch is smaller than what the peer sends with GSO or
// the NIC coalesces (up to 64). After batchAfterSingles datagrams in a
// row arrived one per message, it reads a batch of len(bufs) messages
// per call as without GRO; should coalesced ones arrive then, scratch
// grows to hold what does not fit, and shrinks back once handed over.
func (s *socket) receiveGRO(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	r := &s.r
	count := 1
	if r.singles >= batchAfterSingles {
		count = min(len(bufs), len(r.hdrs))
	}
	for i, b := range bufs[:count] {
		if len(b) < maxDatagram {
			// Too short for a coalesced message.
			count = i
			break
		}
	}
	if count == 1 && r.lastSegs > len(bufs) {
		count = 0
	}
	if count == 0 {
		// Read one message into scratch and hand it over from there.
		r.grow(maxDatagram)
		if c, err := s.read([][]byte{r.scratch[:maxDatagram]}, 1); err != nil || c == 0 || r.n == 0 {
			return 0, err
		}
		m := s.message(0)
		r.count1(m)
		r.pending = append(r.pending, pending{r.scratch[:m.n], m.seg, m.ep})
		return r.takePending(bufs, sizes, eps), nil
	}
	count, err := s.read(bufs, count)
	if err != nil || count == 0 {
		return 0, err
	}
	r.msgs = r.msgs[:0]
	for i := range r.n {
		m := s.message(i)
		r.msgs = append(r.msgs, m)
		r.count1(m)
	}
	return r.spread(bufs, sizes, eps), nil
}

// count1 updates singles and lastSegs for message m, just read.
func (r *recvState) count1(m msgInfo) {
	if m.segs > 1 {
		r.singles = 0
	} else {
		r.singles++
	}
	r.lastSegs = m.segs
}

// spread hands over the datagrams of the messages in r.msgs, read into
// bufs one per buffer: as many as fit in bufs, in order, and the others
// to r.pending. It returns how many it put in bufs.
func (r *recvState) spread(bufs [][]byte, sizes []int, eps []conn.Endpoint) int {
	total := 0
	for i := range r.msgs {
		r.msgs[i].start = total
		total += r.msgs[i].segs
	}
	if total > len(bufs) {
		r.keepOverflow(bufs, len(bufs))
		total = len(bufs)
	}
	// Last message first: message i moves to buffers start..start+segs-1,
	// where start >= i, which only overwrites messages already moved.
	for i := len(r.msgs) - 1; i >= 0; i-- {
		m := &r.msgs[i]
		src := bufs[i][:m.n]
		for k := m.segs - 1; k >= 0; k-- {
			d := m.start + k
			off := k * m.seg
			sizes[d] = copy(bufs[d], src[off:min(off+m.seg, m.n)])
			eps[d] = m.ep
		}
	}
	return total
}

// message returns what the kernel wrote for message i of the last read.
func (s *socket) message(i int) msgInfo {
	r := &s.r
	k := endpointKey{ap: sockaddrToAddrPort(&r.names[i])}
	seg, src, srcIf := parseControl(r.control(i))
	if s.sticky {
		k.src, k.srcIf = src, srcIf
	}
	m := msgInfo{n: int(r.hdrs[i].n), seg: seg, segs: 1}
	if m.seg <= 0 || m.seg >= m.n {
		m.seg = m.n
	} else {
		m.segs = (m.n + m.seg - 1) / m.seg
	}
	m.ep = r.cache.get(k)
	return m
}

// keepOverflow moves the datagrams of r.msgs past the first room buffers
// into scratch, and trims r.msgs to what fits.
func (r *recvState) keepOverflow(bufs [][]byte, room int) {
	// c is the first message that does not fit whole.
	c := 0
	for r.msgs[c].start+r.msgs[c].segs <= room {
		c++
	}
	fit := room - r.msgs[c].start // datagrams of c that fit, maybe none
	need := 0
	for i := c; i < len(r.msgs); i++ {
		need += r.msgs[i].n
	}
	r.grow(need)
	off := 0
	for i := c; i < len(r.msgs); i++ {
		m := &r.msgs[i]
		from := 0
		if i == c {
			from = fit * m.seg
		}
		n := copy(r.scratch[off:], bufs[i][from:m.n])
		r.pending = append(r.pending, pending{r.scratch[off : off+n], m.seg, m.ep})
		off += n
	}
	r.msgs[c].n, r.msgs[c].segs = fit*r.msgs[c].seg, fit
	r.msgs = r.msgs[:c+1]
}

// grow makes scratch at least n bytes long. It is empty: nothing pending.
func (r *recvState) grow(n int) {
	if len(r.scratch) < n {
		r.scratch = make([]byte, max(n, maxDatagram))
	}
}

// takePending moves pending datagrams into bufs.
func (r *recvState) takePending(bufs [][]byte, sizes []int, eps []conn.Endpoint) int {
	k := 0
	for k < len(bufs) && len(r.pending) > 0 {
		p := &r.pending[0]
		d := p.data[:min(p.seg, len(p.data))]
		sizes[k] = copy(bufs[k], d)
		eps[k] = p.ep
		k++
		p.data = p.data[len(d):]
		if len(p.data) == 0 {
			r.pending = append(r.pending[:0], r.pending[1:]...)
		}
	}
	if len(r.pending) == 0 && len(r.scratch) > maxDatagram {
		// Grown for a batch that overflowed: give it back.
		r.scratch = nil
	}
	return k
}

// parseControl returns what the control messages of a read in oob say:
// the datagram size of a UDP_GRO cmsg (0 without), and the local address
// of an IP_PKTINFO or IPV6_PKTINFO cmsg (the zero Addr without, or when
// no reply can come from it: multicast), unmapped, with the index of its
// interface when it is an IPv6 link-local address (else 0).
func parseControl(oob []byte) (seg int, src netip.Addr, srcIf uint32) {
	for len(oob) >= unix.SizeofCmsghdr {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			break
		}
		switch {
		case h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && len(data) >= 4:
			seg = int(int32(binary.NativeEndian.Uint32(data)))
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			info := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
			src = netip.AddrFrom4(info.Spec_dst)
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			info := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
			src = netip.AddrFrom16(info.Addr).Unmap()
			if src.Is6() && src.IsLinkLocalUnicast() {
				srcIf = info.Ifindex
			}
		}
		oob = rest
	}
	if src.IsMulticast() || src.IsUnspecified() {
		src, srcIf = netip.Addr{}, 0
	}
	return seg, src, srcIf
}

// putSource writes the cmsg that makes src (with srcIf, see Endpoint) the
// source of a send to oob, and returns its length: IP_PKTINFO for an IPv4
// source (also on a dual-stack socket, whose IPv4 sends take it), else
// IPV6_PKTINFO. The interface is left to the routing table but for IPv6
// link-local sources, which need it.
func putSource(oob []byte, src netip.Addr, srcIf uint32) int {
	c := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	data := unsafe.Pointer(&oob[unix.CmsgLen(0)])
	if src.Is4() {
		c.Level, c.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
		c.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
		*(*unix.Inet4Pktinfo)(data) = unix.Inet4Pktinfo{Spec_dst: src.As4()}
		return unix.CmsgSpace(unix.SizeofInet4Pktinfo)
	}
	c.Level, c.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
	c.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
	*(*unix.Inet6Pktinfo)(data) = unix.Inet6Pktinfo{Addr: src.As16(), Ifindex: srcIf}
	return unix.CmsgSpace(unix.SizeofInet6Pktinfo)
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
	src, srcIf := e.source()
	st.build(bufs, s.putSockaddr(&st.name, e), gso, e.ap.Addr().Is4(), src, srcIf)
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
	if src.IsValid() && srcRefused(st.errno) {
		// The source may not be (or no longer be) a local address: send
		// the rest from the one the routing table picks, until the
		// peer's next datagram brings a new Endpoint. (An error that was
		// not the source's clears it too, once, and comes back from the
		// second try.)
		e.ClearSrc()
		s.log.Debug("udpbind: source address refused, cleared", "src", src, "dst", e.ap, "err", st.errno)
		return s.send(bufs[st.first[st.done]:], e)
	}
	if gso && gsoRefused(st.errno) && st.hdrs[st.done].hdr.Iovlen > 1 {
		// The kernel would not segment this message: send the rest one
		// datagram per message, from now on.
		if s.gso.CompareAndSwap(true, false) {
			s.log.Warn("udpbind: UDP GSO refused, turned off", "addr", s.c.LocalAddr(), "err", st.errno)
		}
		return s.send(bufs[st.first[st.done]:], e)
	}
	return &net.OpError{Op: "write", Net: "udp", Addr: net.UDPAddrFromAddrPort(e.ap), Err: os.NewSyscallError("sendmmsg", st.errno)}
}

// srcRefused reports whether a send with a source address may have
// failed for that address: IPv4 routing refuses a source that is no local
// address with ENETUNREACH (EINVAL on older kernels, and for a multicast
// or broadcast source), IPV6_PKTINFO with EINVAL.
func srcRefused(errno syscall.Errno) bool {
	return errno == unix.EINVAL || errno == unix.ENETUNREACH || errno == unix.EADDRNOTAVAIL
}

// gsoRefused reports whether a UDP_SEGMENT send failed for want of GSO:
// EIO when the device cannot checksum on transmit, which GSO needs;
// EMSGSIZE (EINVAL on some kernels) when a segment exceeds the path MTU,
// which IP fragmentation handles without GSO.
func gsoRefused(errno syscall.Errno) bool {
	return errno == unix.EIO || errno == unix.EINVAL || errno == unix.EMSGSIZE
}

// build fills st with the messages that send bufs to the sockaddr in
// st.name, from src when it is valid (see putSource). With gso, runs of
// datagrams of one size (the last of a run may be shorter) go in one
// message, segmented by the kernel (UDP_SEGMENT).
func (st *sendState) build(bufs [][]byte, namelen int, gso, to4 bool, src netip.Addr, srcIf uint32) {
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
		oob, n := st.oob[m*oobSize:][:oobSize], 0
		if src.IsValid() {
			n = putSource(oob, src, srcIf)
		}
		if j-i > 1 {
			c := (*unix.Cmsghdr)(unsafe.Pointer(&oob[n]))
			c.Level, c.Type = unix.SOL_UDP, unix.UDP_SEGMENT
			c.SetLen(unix.CmsgLen(2))
			binary.NativeEndian.PutUint16(oob[n+unix.CmsgLen(0):], uint16(size))
			n += unix.CmsgSpace(2)
		}
		if n > 0 {
			h.Control = &oob[0]
			h.SetControllen(n)
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
