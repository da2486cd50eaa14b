package netstack

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/waiter"
)

const (
	// defaultUDPSendBuffer is the send buffer of the Net's UDP sockets
	// until SetWriteBuffer changes it, in bytes of datagrams (payload and
	// headers) that the engine has not taken off the link yet: a Write
	// waits while it is full, so it holds an unpaced writer to the
	// engine's pace in small steps. A datagram is accepted whole while
	// any room is left, so this bounds no datagram's size. With gVisor's
	// default, 212 KiB, the writer runs ahead in bursts: in the unpaced
	// benchmark (before the in-flight bound of inflight.go) the loss
	// doubled (10 vs 5 %, within the noise) and the peak heap grew by
	// 65 %; 4 KiB blocked the writer too often (see BENCHMARKS.md).
	defaultUDPSendBuffer = 16 << 10

	// minUDPBuffer and maxUDPBuffer bound what SetReadBuffer and
	// SetWriteBuffer accept, in bytes; values outside are clamped.
	// maxUDPBuffer leaves room for QUIC stacks, which ask for 7 MiB.
	minUDPBuffer = 4 << 10
	maxUDPBuffer = 8 << 20
)

// udpConn is a UDP socket over the tunnel, connected (Dial) or not
// (ListenPacket): a net.Conn and net.PacketConn straight over a gVisor
// endpoint, with the net package's error conventions.
//
// Like tcpConn it keeps what the endpoint needs per call (the reader and
// writer, the wait queue entries and their channels, the destination) in
// the conn, and common datagrams take the conn's own path past gVisor's
// endpoint, which allocates per datagram (udpfast.go), so that in steady
// state Read, Write, ReadFromUDPAddrPort, WriteToUDPAddrPort and WriteTo
// with a *net.UDPAddr allocate nothing, anywhere in the process; ReadFrom
// allocates only when the source differs from the previous ReadFrom's
// (see ReadFrom). Reads are serialized by readMu and writes by writeMu.
//
// A Write waits while the socket's send buffer (defaultUDPSendBuffer) is
// full of datagrams the engine has not taken yet, or while the link's
// queue to the engine is full, so an unpaced writer is held to the
// engine's pace instead of having its datagrams dropped; the write
// deadline bounds that wait.
type udpConn struct {
	n       *Net
	ep      tcpip.Endpoint
	wq      *waiter.Queue
	local   *net.UDPAddr // kept: the endpoint reports none after Close
	remote  *net.UDPAddr // nil for ListenPacket's sockets
	closed  atomic.Bool
	closing chan struct{} // closed by Close; wakes blocked calls

	readMu    sync.Mutex
	readBuf   tcpip.SliceWriter // guarded by readMu; the current read's buffer
	readEntry waiter.Entry      // guarded by readMu; registered while a read waits
	readable  chan struct{}     // capacity 1; readEntry's notifications
	fromAP    netip.AddrPort    // guarded by readMu; the source fromAddr names
	fromAddr  *net.UDPAddr      // guarded by readMu; the last address ReadFrom returned

	writeMu    sync.Mutex
	writeBuf   bytes.Reader       // guarded by writeMu; the current datagram
	writeEntry waiter.Entry       // guarded by writeMu; registered while a write waits
	writable   chan struct{}      // capacity 1; writeEntry's notifications
	dest       tcpip.FullAddress  // guarded by writeMu; WriteTo's destination
	writeOpts  tcpip.WriteOptions // guarded by writeMu; To is nil or &dest

	fast udpFast // the data path past gVisor's endpoint (udpfast.go)

	deadlines
}

var (
	_ net.Conn       = (*udpConn)(nil)
	_ net.PacketConn = (*udpConn)(nil)
)

// newUDPConn wraps a bound or connected UDP endpoint and its wait queue;
// bound is the address ListenPacket bound, or invalid.
func newUDPConn(n *Net, ep tcpip.Endpoint, wq *waiter.Queue, bound netip.Addr) *udpConn {
	c := &udpConn{
		n:        n,
		ep:       ep,
		wq:       wq,
		closing:  make(chan struct{}),
		readable: make(chan struct{}, 1),
		writable: make(chan struct{}, 1),
	}
	if a, err := ep.GetLocalAddress(); err == nil {
		c.local = net.UDPAddrFromAddrPort(addrPortOf(a.Addr, a.Port))
		if !c.local.AddrPort().Addr().IsValid() && bound.IsValid() {
			// gVisor reports a wildcard as empty.
			c.local = net.UDPAddrFromAddrPort(netip.AddrPortFrom(bound, a.Port))
		}
	}
	if a, err := ep.GetRemoteAddress(); err == nil {
		c.remote = net.UDPAddrFromAddrPort(addrPortOf(a.Addr, a.Port))
	}
	ep.SocketOptions().SetSendBufferSize(defaultUDPSendBuffer, true)
	// EventErr too: an ICMP error (ECONNREFUSED on a dialed conn) fails
	// the pending call, as on a kernel socket.
	c.readEntry.Init(waiter.ChannelNotifier(c.readable), waiter.ReadableEvents|waiter.EventErr)
	c.writeEntry.Init(waiter.ChannelNotifier(c.writable), waiter.WritableEvents|waiter.EventErr)
	c.deadlines.init()
	c.initFast(n, ep)
	return c
}

// LocalAddr returns the local address, a *net.UDPAddr.
func (c *udpConn) LocalAddr() net.Addr {
	if c.local == nil {
		return nil // never a typed nil
	}
	return c.local
}

// RemoteAddr returns the remote address of a dialed conn, a *net.UDPAddr,
// and nil for ListenPacket's sockets.
func (c *udpConn) RemoteAddr() net.Addr {
	if c.remote == nil {
		return nil
	}
	return c.remote
}

func (c *udpConn) isClosed() bool { return c.closed.Load() || c.n.isClosed() }

// opErr returns err as the net package reports it for op: as net.ErrClosed
// once the conn or the Net was closed, whatever the endpoint said.
func (c *udpConn) opErr(op string, addr net.Addr, err error) error {
	if c.isClosed() {
		err = net.ErrClosed
	}
	var src net.Addr
	if c.local != nil {
		src = c.local
	}
	if addr == nil && c.remote != nil {
		addr = c.remote
	}
	return &net.OpError{Op: op, Net: "udp", Source: src, Addr: addr, Err: err}
}

// Read reads one datagram into b, like net.UDPConn.Read; the part of a
// datagram that does not fit b is discarded.
func (c *udpConn) Read(b []byte) (int, error) {
	k, _, err := c.ReadFromUDPAddrPort(b)
	return k, err
}

// ReadFrom reads one datagram into b and returns its source, a
// *net.UDPAddr, like net.UDPConn.ReadFrom. The address returned is the
// one an earlier ReadFrom returned when the source is the same, so that
// reading from one peer allocates nothing: treat it as read-only (copy it
// before changing it). ReadFromUDPAddrPort never allocates.
func (c *udpConn) ReadFrom(b []byte) (int, net.Addr, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	k, from, err := c.readLocked(b)
	if err != nil {
		return k, nil, err
	}
	if c.fromAddr == nil || from != c.fromAP {
		c.fromAP = from
		c.fromAddr = net.UDPAddrFromAddrPort(from)
	}
	return k, c.fromAddr, nil
}

// ReadFromUDPAddrPort is ReadFrom returning the source as a
// netip.AddrPort, like net.UDPConn.ReadFromUDPAddrPort. It does not
// allocate.
func (c *udpConn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	return c.readLocked(b)
}

// readLocked reads one datagram into b, waiting for one. c.readMu is held.
func (c *udpConn) readLocked(b []byte) (int, netip.AddrPort, error) {
	c.readBuf = b
	defer func() { c.readBuf = nil }() // do not keep the caller's buffer
	expired := c.readDeadline.channel()
	select {
	case <-expired:
		return 0, netip.AddrPort{}, c.opErr("read", nil, os.ErrDeadlineExceeded)
	default:
	}
	registered := false
	defer func() {
		if registered {
			c.wq.EventUnregister(&c.readEntry)
		}
	}()
	for {
		res, terr := c.ep.Read(&c.readBuf, tcpip.ReadOptions{NeedRemoteAddr: true})
		switch terr.(type) {
		case nil:
			return res.Count, addrPortOf(res.RemoteAddr.Addr, res.RemoteAddr.Port), nil
		case *tcpip.ErrBadBuffer:
			// Nothing of the datagram fit: b is empty. The datagram is
			// gone, as with a kernel socket.
			return 0, addrPortOf(res.RemoteAddr.Addr, res.RemoteAddr.Port), nil
		case *tcpip.ErrWouldBlock:
			// gVisor's queue holds what the link did not hand to the
			// conn itself (fragments, local traffic); errors come first.
			if k, from, ok := c.fast.pop(b); ok {
				return k, from, nil
			}
		case *tcpip.ErrClosedForReceive:
			return 0, netip.AddrPort{}, c.opErr("read", nil, net.ErrClosed)
		default:
			return 0, netip.AddrPort{}, c.opErr("read", nil, convertErr("read", terr))
		}
		if !registered {
			// Try again once registered: a datagram may have come in between.
			c.wq.EventRegister(&c.readEntry)
			registered = true
			continue
		}
		if err := c.wait("read", c.readable, expired); err != nil {
			return 0, netip.AddrPort{}, err
		}
	}
}

// Write sends b as one datagram to the remote address of a dialed conn,
// like net.UDPConn.Write. It waits while the send buffer is full (see
// udpConn), at most until the write deadline.
func (c *udpConn) Write(b []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.writeOpts.To = nil
	return c.writeLocked(b, nil, c.fast.remote)
}

// WriteTo sends b as one datagram to addr, like net.UDPConn.WriteTo. addr
// may be any net.Addr whose String is an "ip:port"; a *net.UDPAddr costs
// no allocation. On a dialed conn it fails with net.ErrWriteToConnected. WriteTo does not check addr against the peers'
// AllowedIPs: datagrams no peer accepts are dropped by the engine.
func (c *udpConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	var ap netip.AddrPort
	switch a := addr.(type) {
	case nil:
		return 0, c.opErr("write", nil, errors.New("netstack: missing address"))
	case *net.UDPAddr:
		if a == nil {
			return 0, c.opErr("write", nil, errors.New("netstack: missing address"))
		}
		ap = a.AddrPort()
	default:
		var err error
		if ap, err = netip.ParseAddrPort(addr.String()); err != nil {
			return 0, c.opErr("write", addr, &net.AddrError{Err: "netstack: unsupported address", Addr: addr.String()})
		}
	}
	return c.writeTo(b, ap, addr)
}

// WriteToUDPAddrPort is WriteTo with a netip.AddrPort, like
// net.UDPConn.WriteToUDPAddrPort. It does not allocate.
func (c *udpConn) WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	return c.writeTo(b, addr, nil)
}

// writeTo sends b to ap; addr is what the caller passed, for errors.
func (c *udpConn) writeTo(b []byte, ap netip.AddrPort, addr net.Addr) (int, error) {
	if !ap.IsValid() {
		return 0, c.opErr("write", addr, &net.AddrError{Err: "netstack: invalid address", Addr: ap.String()})
	}
	if c.remote != nil {
		return 0, c.opErr("write", addr, net.ErrWriteToConnected)
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	// The stack wants 4 bytes for IPv4, also on a dual-stack socket.
	ip := ap.Addr().Unmap()
	if ip.Is4() {
		c.dest.Addr = tcpip.AddrFrom4(ip.As4())
	} else {
		c.dest.Addr = tcpip.AddrFrom16(ip.As16())
	}
	c.dest.Port = ap.Port()
	c.writeOpts.To = &c.dest
	return c.writeLocked(b, addr, ap)
}

// writeLocked sends b to dst (c.writeOpts for gVisor's endpoint), waiting
// for room in the send buffer. c.writeMu is held.
func (c *udpConn) writeLocked(b []byte, addr net.Addr, dst netip.AddrPort) (int, error) {
	defer c.writeBuf.Reset(nil) // do not keep the caller's buffer
	expired := c.writeDeadline.channel()
	select {
	case <-expired:
		return 0, c.opErr("write", addr, os.ErrDeadlineExceeded)
	default:
	}
	if c.isClosed() {
		return 0, c.opErr("write", addr, net.ErrClosed)
	}
	registered := false
	defer func() {
		if registered {
			c.wq.EventUnregister(&c.writeEntry)
		}
	}()
	var room <-chan struct{}
	for {
		k, terr, handled := c.sendFastLocked(b, dst)
		if !handled {
			// A datagram goes whole or not at all; when the endpoint
			// would block it has not read the payload.
			c.writeBuf.Reset(b)
			k, terr = c.sendLocked()
		}
		switch terr.(type) {
		case nil:
			return int(k), nil
		case *tcpip.ErrWouldBlock:
		case *tcpip.ErrNoBufferSpace:
			// The link's queue to the engine is full (other sockets
			// filled it): wait for the engine to take packets, then try
			// again, instead of failing with ENOBUFS.
			if room == nil {
				// Try again once the channel is taken: room may have
				// freed in between.
				room = c.n.ep.room()
				continue
			}
			if err := waitReady(room, expired, c.closing, c.n.done); err != nil {
				return 0, c.opErr("write", addr, err)
			}
			room = nil
			continue
		default:
			return 0, c.opErr("write", addr, convertErr("write", terr))
		}
		if !registered {
			// Try again once registered: room may have freed in between.
			c.wq.EventRegister(&c.writeEntry)
			registered = true
			continue
		}
		if err := c.wait("write", c.writable, expired); err != nil {
			return 0, err
		}
	}
}

// sendLocked hands c.writeBuf to the endpoint with c.writeOpts.
// c.writeMu is held.
//
// A full link queue refuses the packet with ErrNoBufferSpace, which gVisor
// passes on to the writer only with IP_RECVERR set, as Linux does. So the
// option is on for the call only: with it on, ICMP errors also queue on
// the socket's error queue, which nothing reads, so what queued meanwhile
// is dropped at once and the queue stays empty.
func (c *udpConn) sendLocked() (int64, tcpip.Error) {
	so := c.ep.SocketOptions()
	so.SetIPv4RecvError(true)
	so.SetIPv6RecvError(true)
	k, terr := c.ep.Write(&c.writeBuf, c.writeOpts)
	so.SetIPv4RecvError(false)
	so.SetIPv6RecvError(false)
	for so.DequeueErr() != nil {
	}
	return k, terr
}

// wait waits for a notification on ready; it fails once expired is
// closed (the deadline passed) or the conn or the Net is closed.
func (c *udpConn) wait(op string, ready, expired <-chan struct{}) error {
	if err := waitReady(ready, expired, c.closing, c.n.done); err != nil {
		return c.opErr(op, nil, err)
	}
	return nil
}

// SetReadBuffer sets the socket's receive buffer, like
// net.UDPConn.SetReadBuffer; datagrams arriving while it is full are
// dropped. The default is gVisor's, 212 KiB, as Linux's; bytes is clamped
// to [4 KiB, 8 MiB]. quic-go calls SetReadBuffer(7 MiB) (and
// SetWriteBuffer(7 MiB)) on a conn that has the method and no
// SyscallConn. A larger buffer rides out longer stalls of the reader,
// which competes for the CPU with the engine that delivers to it: a
// reader not scheduled for 10 ms at 1 Gbit/s meets 1.2 MiB of datagrams
// (see BENCHMARKS.md for what the default loses).
//
// The buffer counts payload bytes, as gVisor does (a datagram of less
// than 64 bytes counts as 64); each queued datagram also holds its
// payload rounded up to a power of two and about 100 bytes of
// bookkeeping (500 for the datagrams gVisor's endpoint queues: fragmented
// ones, local traffic), so the memory held can be twice the buffer's size
// (1200-byte datagrams: 2 KiB each).
func (c *udpConn) SetReadBuffer(bytes int) error {
	if c.isClosed() {
		return c.opErr("set", nil, net.ErrClosed)
	}
	c.ep.SocketOptions().SetReceiveBufferSize(int64(min(max(bytes, minUDPBuffer), maxUDPBuffer)), true)
	return nil
}

// SetWriteBuffer sets the socket's send buffer, in bytes of datagrams
// the engine has not taken yet, like net.UDPConn.SetWriteBuffer; a Write
// waits while it is full. The default is 16 KiB; bytes is clamped to
// [4 KiB, 8 MiB].
func (c *udpConn) SetWriteBuffer(bytes int) error {
	if c.isClosed() {
		return c.opErr("set", nil, net.ErrClosed)
	}
	c.ep.SocketOptions().SetSendBufferSize(int64(min(max(bytes, minUDPBuffer), maxUDPBuffer)), true)
	return nil
}

// Close closes the socket and wakes blocked calls, which return errors
// wrapping net.ErrClosed. A second Close returns such an error too.
func (c *udpConn) Close() error {
	if c.closed.Swap(true) {
		return c.opErr("close", nil, net.ErrClosed)
	}
	close(c.closing)
	c.closeFast()
	c.ep.Close()
	c.deadlines.stop()
	return nil
}
