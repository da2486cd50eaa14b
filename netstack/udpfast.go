package netstack

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// This file holds the UDP conns' own data path, past gVisor's UDP
// endpoint, for the common datagram: gVisor's endpoint allocates 6 times
// per datagram (8 for an unconnected WriteTo) in code no caller can
// reach, so the conns send and receive plain datagrams themselves:
//
//   - outbound, a datagram that fits the MTU, to a unicast address beyond
//     the tunnel's own, is built (IP and UDP headers, checksums) into a
//     pooled packet buffer and queued on the link, as gVisor would after
//     its route lookup; the conn's send buffer counts it until the
//     engine has taken it, as gVisor's does;
//   - inbound, the link hands each UDP datagram to udpDemux before the
//     stack: one for a conn's address and port (unfragmented, without IP
//     options or extension headers, with a valid UDP length) is copied
//     into the conn's own queue, bounded by its receive buffer.
//
// Everything else goes through gVisor's endpoint, which stays bound (it
// holds the port, receives fragments and local traffic, answers the
// stack's ICMP errors, which a Read or Write returns as before): a
// datagram to one of the tunnel's own addresses, to a broadcast or
// multicast address, larger than the MTU. The two paths count their
// own datagrams against the send and receive buffers' sizes, so a conn
// whose datagrams take both may hold up to twice each. Checksums are as
// gVisor's: computed on send; on receive not checked, as the link
// declares them checked (see endpoint.Capabilities), but the UDP length
// is.

// udpMinCharge is the least a queued datagram counts against the receive
// buffer, in bytes, so that the buffer also bounds how many empty
// datagrams queue (gVisor counts payload bytes only).
const udpMinCharge = 64

// udpDemux finds the UDP conn an inbound datagram is for. The link calls
// deliver for each inbound packet; conns add themselves when made and
// remove themselves on Close. It is safe for concurrent use; the zero
// value is empty and ready.
type udpDemux struct {
	n     atomic.Int32 // how many conns ports holds: 0 spares deliver the lock
	mu    sync.RWMutex
	ports map[uint16][]*udpConn // guarded by mu; by local port
}

// add makes c's datagrams go to c.
func (d *udpDemux) add(c *udpConn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ports == nil {
		d.ports = make(map[uint16][]*udpConn)
	}
	d.ports[c.fast.port] = append(d.ports[c.fast.port], c)
	d.n.Add(1)
}

// remove undoes add; it is a no-op for a conn not added.
func (d *udpDemux) remove(c *udpConn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	conns := d.ports[c.fast.port]
	i := slices.Index(conns, c)
	if i < 0 {
		return
	}
	conns = slices.Delete(conns, i, i+1)
	if len(conns) == 0 {
		delete(d.ports, c.fast.port)
	} else {
		d.ports[c.fast.port] = conns
	}
	d.n.Add(-1)
}

// lookup returns the conn a datagram from src to dst:port is for, or nil.
func (d *udpDemux) lookup(src netip.AddrPort, dst netip.Addr, port uint16) *udpConn {
	d.mu.RLock()
	defer d.mu.RUnlock()
	var best *udpConn
	for _, c := range d.ports[port] {
		switch c.fast.accepts(src, dst) {
		case matchConnected:
			return c
		case matchBound:
			if best == nil {
				best = c
			}
		}
	}
	return best
}

// deliver queues the IP packet pkt on the conn it is for and reports
// whether it did (or dropped it for a full receive buffer); false leaves
// the packet to the stack. pkt is the engine's buffer: the payload is
// copied.
func (d *udpDemux) deliver(pkt []byte) bool {
	if d.n.Load() == 0 {
		return false
	}
	var src, dst netip.Addr
	var udp []byte
	switch header.IPVersion(pkt) {
	case header.IPv4Version:
		h := header.IPv4(pkt)
		if !h.IsValid(len(pkt)) || h.HeaderLength() != header.IPv4MinimumSize ||
			h.Protocol() != uint8(header.UDPProtocolNumber) ||
			h.FragmentOffset() != 0 || h.Flags()&header.IPv4FlagMoreFragments != 0 {
			return false
		}
		src, dst = netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
		udp = pkt[header.IPv4MinimumSize:h.TotalLength()]
	case header.IPv6Version:
		h := header.IPv6(pkt)
		if !h.IsValid(len(pkt)) || h.NextHeader() != uint8(header.UDPProtocolNumber) || h.PayloadLength() == 0 {
			return false
		}
		src, dst = netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))
		udp = pkt[header.IPv6MinimumSize : header.IPv6MinimumSize+int(h.PayloadLength())]
	default:
		return false
	}
	if len(udp) < header.UDPMinimumSize {
		return false // the stack counts it as malformed
	}
	if !src.IsGlobalUnicast() && !src.IsLinkLocalUnicast() {
		return false // the stack's: a martian source
	}
	uh := header.UDP(udp)
	if l := uh.Length(); l < header.UDPMinimumSize || int(l) > len(udp) {
		return false // the stack counts it as malformed
	}
	from := netip.AddrPortFrom(src, uh.SourcePort())
	c := d.lookup(from, dst, uh.DestinationPort())
	if c == nil {
		return false
	}
	c.fast.push(c, udp[header.UDPMinimumSize:], from)
	return true
}

// udpMatch is how well a datagram matches a conn.
type udpMatch int

const (
	matchNone      udpMatch = iota
	matchBound              // the conn's local address and port
	matchConnected          // and its remote address and port
)

// udpFast is a udpConn's state for its own data path. The fields set by
// initFast are immutable after.
type udpFast struct {
	enabled bool
	port    uint16         // local port
	local   netip.Addr     // bound or connected local address; invalid for a wildcard
	remote  netip.AddrPort // connected remote; invalid for ListenPacket's sockets
	v4, v6  bool           // the families the socket sends and receives
	own     []netip.Addr   // the tunnel's addresses (Net.addrs)
	src4    netip.Addr     // a wildcard socket's IPv4 source: the tunnel's only one, if one
	src6    netip.Addr     // the same for IPv6; with several, sourceLocked asks the stack
	ttl4    uint8          // the stack's default TTL
	ttl6    uint8          // and hop limit
	ipID    atomic.Uint32  // the next IPv4 ID

	// Guarded by the conn's writeMu: the last destination the fast path
	// checked, and its source (invalid: not for the fast path).
	lastDst netip.Addr
	lastSrc netip.Addr

	smu   sync.Mutex
	inUse int64           // guarded by smu; bytes queued and not yet taken by the engine
	free  []*udpSendToken // guarded by smu; tokens to reuse

	rmu    sync.Mutex
	queue  []udpQueued // guarded by rmu; FIFO from head
	head   int         // guarded by rmu
	queued int64       // guarded by rmu; bytes charged for the queue
	closed bool        // guarded by rmu
}

// udpQueued is a datagram in a conn's receive queue.
type udpQueued struct {
	payload *buffer.View
	from    netip.AddrPort
}

// udpSendToken releases one sent datagram's share of the send buffer
// when the link is done with its packet. Its release func is made once,
// so a send allocates no closure.
type udpSendToken struct {
	f       *udpFast
	ready   chan<- struct{} // the conn's writable channel
	size    int64
	release func()
}

func (t *udpSendToken) done() {
	f := t.f
	f.smu.Lock()
	f.inUse -= t.size
	f.free = append(f.free, t)
	f.smu.Unlock()
	select {
	case t.ready <- struct{}{}:
	default:
	}
}

// initFast sets up c's own data path from its endpoint's addresses, and
// adds c to the link's demux.
func (c *udpConn) initFast(n *Net, ep tcpip.Endpoint) {
	f := &c.fast
	la, terr := ep.GetLocalAddress()
	if terr != nil || la.Port == 0 {
		return
	}
	info, ok := ep.Info().(*stack.TransportEndpointInfo)
	if !ok {
		return
	}
	f.port = la.Port
	f.local = addrPortOf(la.Addr, 0).Addr()
	if ra, err := ep.GetRemoteAddress(); err == nil {
		f.remote = addrPortOf(ra.Addr, ra.Port)
	}
	switch {
	case info.NetProto == ipv4.ProtocolNumber:
		f.v4 = true
	case f.local.IsValid():
		f.v4, f.v6 = f.local.Is4(), f.local.Is6()
	default:
		f.v6 = true
		f.v4 = !ep.SocketOptions().GetV6Only()
	}
	if f.remote.IsValid() && (f.remote.Addr().Is4() && !f.v4 || f.remote.Addr().Is6() && !f.v6) {
		return
	}
	f.own = n.addrs
	var n4, n6 int
	for _, a := range n.addrs {
		if a.Is4() {
			f.src4 = a
			n4++
		} else {
			f.src6 = a
			n6++
		}
	}
	if n4 != 1 {
		f.src4 = netip.Addr{}
	}
	if n6 != 1 {
		f.src6 = netip.Addr{}
	}
	f.ttl4, f.ttl6 = ipv4.DefaultTTL, ipv6.DefaultTTL
	var ttl tcpip.DefaultTTLOption
	if n.stack.NetworkProtocolOption(ipv4.ProtocolNumber, &ttl) == nil {
		f.ttl4 = uint8(ttl)
	}
	if n.stack.NetworkProtocolOption(ipv6.ProtocolNumber, &ttl) == nil {
		f.ttl6 = uint8(ttl)
	}
	f.ipID.Store(rand.Uint32())
	f.enabled = true
	n.ep.udpConns.add(c)
}

// closeFast removes c from the demux and releases its queued datagrams.
func (c *udpConn) closeFast() {
	f := &c.fast
	if !f.enabled {
		return
	}
	c.n.ep.udpConns.remove(c)
	f.rmu.Lock()
	f.closed = true
	q := f.queue[f.head:]
	f.queue, f.head, f.queued = nil, 0, 0
	f.rmu.Unlock()
	for _, d := range q {
		d.payload.Release()
	}
}

// accepts reports whether a datagram from src to dst is for the conn.
func (f *udpFast) accepts(src netip.AddrPort, dst netip.Addr) udpMatch {
	if dst.Is4() && !f.v4 || dst.Is6() && !f.v6 {
		return matchNone
	}
	if slices.Contains(f.own, src.Addr()) {
		return matchNone // the stack drops a packet from its own address
	}
	if f.local.IsValid() {
		if dst != f.local {
			return matchNone
		}
	} else if !slices.Contains(f.own, dst) {
		return matchNone // router mode's, or not for the tunnel at all
	}
	if !f.remote.IsValid() {
		return matchBound
	}
	if src != f.remote {
		return matchNone // gVisor would not take it either: it goes to the stack
	}
	return matchConnected
}

// push queues a datagram's payload for c's reader, or drops it if the
// receive buffer is full.
func (f *udpFast) push(c *udpConn, payload []byte, from netip.AddrPort) {
	charge := int64(max(len(payload), udpMinCharge))
	f.rmu.Lock()
	if f.closed || f.queued >= c.ep.SocketOptions().GetReceiveBufferSize() {
		f.rmu.Unlock()
		c.n.stack.Stats().UDP.ReceiveBufferErrors.Increment()
		return
	}
	if len(f.queue) == cap(f.queue) && f.head > 0 {
		// Reuse the consumed front rather than grow.
		k := copy(f.queue, f.queue[f.head:])
		clear(f.queue[k:])
		f.queue, f.head = f.queue[:k], 0
	}
	f.queue = append(f.queue, udpQueued{payload: buffer.NewViewWithData(payload), from: from})
	f.queued += charge
	f.rmu.Unlock()
	c.n.stack.Stats().UDP.PacketsReceived.Increment()
	select {
	case c.readable <- struct{}{}:
	default:
	}
}

// pop takes the oldest queued datagram into b; the part that does not fit
// is discarded. ok is false if none is queued.
func (f *udpFast) pop(b []byte) (k int, from netip.AddrPort, ok bool) {
	if !f.enabled {
		return 0, netip.AddrPort{}, false
	}
	f.rmu.Lock()
	if f.head == len(f.queue) {
		f.rmu.Unlock()
		return 0, netip.AddrPort{}, false
	}
	d := f.queue[f.head]
	f.queue[f.head] = udpQueued{}
	f.head++
	if f.head == len(f.queue) {
		f.queue, f.head = f.queue[:0], 0
	}
	f.queued -= int64(max(d.payload.Size(), udpMinCharge))
	f.rmu.Unlock()
	k = copy(b, d.payload.AsSlice())
	d.payload.Release()
	return k, d.from, true
}

// sourceLocked returns the source address of a datagram to dst on the
// fast path, or false if gVisor must send it. The answer is kept for the
// next datagram to the same destination: for a wildcard socket on a
// tunnel with several addresses of dst's family it costs a route lookup,
// which allocates. c.writeMu is held.
func (c *udpConn) sourceLocked(dst netip.Addr) (netip.Addr, bool) {
	f := &c.fast
	if dst == f.lastDst {
		return f.lastSrc, f.lastSrc.IsValid()
	}
	var src netip.Addr
	switch {
	case dst.Is4() && !f.v4, dst.Is6() && !f.v6:
	case dst.IsLoopback(), dst.IsMulticast(), dst.IsUnspecified(), dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
	case slices.Contains(f.own, dst): // the stack delivers it locally
	case f.local.IsValid():
		if f.local.Is4() == dst.Is4() {
			src = f.local
		}
	case dst.Is4():
		src = f.src4
	default:
		src = f.src6
	}
	proto := ipv4.ProtocolNumber
	if dst.Is6() {
		proto = ipv6.ProtocolNumber
	}
	if !src.IsValid() && !f.local.IsValid() && (dst.Is4() && f.v4 || dst.Is6() && f.v6) {
		// A wildcard socket on a tunnel with several addresses of dst's
		// family: the stack's choice, once per destination.
		if r, terr := c.n.stack.FindRoute(0, tcpip.Address{}, tcpipAddr(dst), proto, false); terr == nil {
			if a := addrPortOf(r.LocalAddress(), 0).Addr(); slices.Contains(f.own, a) {
				src = a
			}
			r.Release()
		}
	}
	if src.IsValid() && c.n.stack.IsSubnetBroadcast(0, proto, tcpipAddr(dst)) {
		src = netip.Addr{} // gVisor checks SO_BROADCAST
	}
	f.lastDst, f.lastSrc = dst, src
	return src, src.IsValid()
}

// sendFastLocked sends b to dst on the fast path. handled is false if
// the datagram is gVisor's to send (see sourceLocked); else the result is
// the endpoint's: ErrWouldBlock while the send buffer is full,
// ErrNoBufferSpace while the link's queue is. c.writeMu is held.
func (c *udpConn) sendFastLocked(b []byte, dst netip.AddrPort) (k int64, terr tcpip.Error, handled bool) {
	f := &c.fast
	if !f.enabled || !dst.IsValid() || dst.Port() == 0 {
		return 0, nil, false // gVisor's errors
	}
	dip := dst.Addr().Unmap()
	sip, ok := c.sourceLocked(dip)
	if !ok {
		return 0, nil, false
	}
	ipLen := header.IPv4MinimumSize
	if dip.Is6() {
		ipLen = header.IPv6MinimumSize
	}
	size := ipLen + header.UDPMinimumSize + len(b)
	if size > int(c.n.ep.MTU()) {
		return 0, nil, false // gVisor fragments it
	}
	// An ICMP error that came in since the last call fails this one, as
	// in gVisor's endpoint (and Linux).
	if terr := c.ep.LastError(); terr != nil {
		return 0, terr, true
	}
	f.smu.Lock()
	if f.inUse >= c.ep.SocketOptions().GetSendBufferSize() {
		f.smu.Unlock()
		return 0, &tcpip.ErrWouldBlock{}, true
	}
	var t *udpSendToken
	if last := len(f.free) - 1; last >= 0 {
		t = f.free[last]
		f.free[last] = nil
		f.free = f.free[:last]
	} else {
		t = &udpSendToken{f: f, ready: c.writable}
		t.release = t.done
	}
	// As gVisor's, the buffer takes a datagram whole while any room is
	// left.
	t.size = int64(size)
	f.inUse += t.size
	f.smu.Unlock()

	v := buffer.NewViewSize(size)
	p := v.AsSlice()
	src, dstA := tcpipAddr(sip), tcpipAddr(dip)
	proto := ipv4.ProtocolNumber
	if ipLen == header.IPv4MinimumSize {
		ip := header.IPv4(p)
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(size),
			ID:          uint16(f.ipID.Add(1)),
			TTL:         f.ttl4,
			Protocol:    uint8(header.UDPProtocolNumber),
			SrcAddr:     src,
			DstAddr:     dstA,
		})
		ip.SetChecksum(^ip.CalculateChecksum())
	} else {
		proto = ipv6.ProtocolNumber
		header.IPv6(p).Encode(&header.IPv6Fields{
			PayloadLength:     uint16(size - ipLen),
			TransportProtocol: header.UDPProtocolNumber,
			HopLimit:          f.ttl6,
			SrcAddr:           src,
			DstAddr:           dstA,
		})
	}
	udp := header.UDP(p[ipLen:])
	length := uint16(size - ipLen)
	udp.Encode(&header.UDPFields{SrcPort: f.port, DstPort: dst.Port(), Length: length})
	copy(p[ipLen+header.UDPMinimumSize:], b)
	xsum := udp.CalculateChecksum(checksum.Combine(
		header.PseudoHeaderChecksum(header.UDPProtocolNumber, src, dstA, length),
		checksum.Checksum(b, 0)))
	if xsum != math.MaxUint16 { // as gVisor: a zero sum goes as all ones
		xsum = ^xsum
	}
	udp.SetChecksum(xsum)

	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithView(v), OnRelease: t.release})
	pkt.NetworkProtocolNumber = proto
	pkt.TransportProtocolNumber = header.UDPProtocolNumber
	one := [1]*stack.PacketBuffer{pkt}
	_, terr = c.n.ep.enqueue(one[:])
	pkt.DecRef() // the queue holds its own reference; a refused packet goes now
	if terr != nil {
		return 0, terr, true
	}
	c.n.stack.Stats().UDP.PacketsSent.Increment()
	return int64(len(b)), nil, true
}

// tcpipAddr converts an unmapped address without allocating (AsSlice
// would).
func tcpipAddr(a netip.Addr) tcpip.Address {
	if a.Is4() {
		return tcpip.AddrFrom4(a.As4())
	}
	return tcpip.AddrFrom16(a.As16())
}
