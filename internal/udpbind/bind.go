// Package udpbind implements wireguard-go's conn.Bind over UDP sockets,
// built so that an idle tunnel holds little memory and a busy one
// allocates nothing per packet.
//
// wireguard-go preallocates, for every receive function a Bind returns,
// BatchSize() message buffers of 64 KiB, and as many again for its TUN
// reader when the Bind's batch is the larger. conn.NewDefaultBind reports
// a batch of 128 on Linux and opens one socket per address family: about
// 24 MiB of buffers per tunnel, and an allocation per datagram received.
// This Bind opens a single dual-stack socket where the system allows it
// (one receive function) and reports a configurable, smaller batch
// (Options.BatchSize, default 16: about 2 MiB per tunnel).
//
// On Linux it moves up to Options.BatchSize datagrams per system call
// with recvmmsg(2) and sendmmsg(2), without allocating per datagram, and,
// where the kernel supports them, uses UDP generic segmentation offload on
// send (UDP_SEGMENT: a run of same-size datagrams to one peer is one
// message) and generic receive offload on receive (UDP_GRO: the kernel
// hands over up to 64 datagrams of one flow as one message, which the
// Bind splits into the caller's buffers). Datagrams that do not fit wait
// in a per-socket scratch buffer for the next call: 64 KiB, made on first
// need, larger only until drained when a batch read meets several
// coalesced messages. Elsewhere it reads and writes one datagram per call.
//
// With Options.StickySource (Linux only) it keeps, as conn.NewDefaultBind
// does, a sticky source address: the local address each datagram arrived
// at (IP_PKTINFO, IPV6_PKTINFO), kept in the Endpoint, is the source of
// the replies sent to it, so that a host with several addresses answers
// from the one the peer wrote to. A netstack tunnel leaves the source to
// the host's routing table and does without.
package udpbind

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.zx2c4.com/wireguard/conn"
)

// DefaultBatchSize is the batch size used when Options.BatchSize is zero.
const DefaultBatchSize = 16

// maxBatchSize bounds Options.BatchSize: conn.IdealBatchSize is what the
// engine's queues are sized for.
const maxBatchSize = conn.IdealBatchSize

// Options are the optional settings of New. A nil *Options and every zero
// field mean the documented default.
type Options struct {
	// BatchSize is the number of datagrams moved per receive or send call,
	// and what BatchSize reports to the engine. It is the memory/throughput
	// knob: wireguard-go holds about BatchSize x 64 KiB of buffers for each
	// receive goroutine (one per socket; one in total where a dual-stack
	// socket is available). Zero means DefaultBatchSize (16, about 1 MiB);
	// values above 128 are lowered to 128. It applies on Linux only: other
	// systems read one datagram per call, and the Bind reports 1.
	BatchSize int

	// ListenAddr is the local address to bind. The zero value and "::"
	// mean every address of both families; "0.0.0.0" means every IPv4
	// address; another address binds to that address only, so that only
	// its family can be reached (e.g. 127.0.0.1 in tests).
	ListenAddr netip.Addr

	// Logger receives the Bind's notices (offloads found or disabled).
	// nil discards them.
	Logger *slog.Logger

	// DisableOffload turns off UDP GSO and GRO on Linux. The zero value
	// uses them when the kernel supports them; a send that the kernel
	// refuses with GSO turns GSO off for the socket and is retried without.
	DisableOffload bool

	// StickySource, when true, replies from the local address the peer's
	// datagram arrived at (Linux only; ignored elsewhere): receive reads
	// each datagram's destination address, the Endpoint keeps it (SrcIP)
	// and Send passes it to the kernel as the source. When the kernel
	// refuses it (the address is gone: ENETUNREACH or EINVAL; any such
	// error is taken for that), Send clears it (ClearSrc) and sends again
	// without, leaving the source to the routing table until the peer's
	// next datagram; the engine clears it too when a handshake goes
	// unanswered. (wireguard-go's own Bind is also cleared when a route
	// changes: the engine runs its route listener for that Bind only.)
	// false (the default) leaves every source to the routing table, and
	// Endpoints have none.
	StickySource bool
}

// Bind is a conn.Bind on UDP sockets. Create one with New.
//
// All methods are safe for concurrent use. Each ReceiveFunc returned by
// Open must be called from one goroutine at a time, as the engine does.
type Bind struct {
	batch   int
	addr    netip.Addr
	log     *slog.Logger
	offload bool
	sticky  bool
	// noDualStack forces one socket per family, to test the fallback.
	noDualStack bool

	mu   sync.Mutex // serializes Open, Close and SetMark
	mark uint32     // guarded by mu; reapplied on every Open
	// socks is the open state, nil when closed. It is written under mu
	// and read without it by Send.
	socks atomic.Pointer[sockets]
}

// sockets is the immutable state of an open Bind.
type sockets struct {
	all []*socket // every socket, in the order of the ReceiveFuncs
	v4  *socket   // sends to IPv4 destinations; nil if none can be reached
	v6  *socket   // sends to IPv6 destinations; nil if none can be reached
}

var _ conn.Bind = (*Bind)(nil)

// New returns a closed Bind with opts (nil means defaults). The engine
// opens it on its listen port.
func New(opts *Options) *Bind {
	if opts == nil {
		opts = &Options{}
	}
	b := &Bind{
		batch:   opts.BatchSize,
		addr:    opts.ListenAddr.Unmap(),
		log:     opts.Logger,
		offload: !opts.DisableOffload,
		sticky:  opts.StickySource,
	}
	if b.batch <= 0 {
		b.batch = DefaultBatchSize
	}
	b.batch = min(b.batch, maxBatchSize)
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	return b
}

// BatchSize reports Options.BatchSize on Linux and 1 elsewhere.
func (b *Bind) BatchSize() int {
	if !batching {
		return 1
	}
	return b.batch
}

// Open binds the UDP socket(s) to port (0 picks a free one) and returns one
// ReceiveFunc per socket and the port bound. It returns
// conn.ErrBindAlreadyOpen if the Bind is open.
func (b *Bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.socks.Load() != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	s, actual, err := b.listen(port)
	if err != nil {
		return nil, 0, fmt.Errorf("udpbind: listen on port %d: %w", port, err)
	}
	if b.mark != 0 {
		for _, so := range s.all {
			if err := so.setMark(b.mark); err != nil {
				s.close()
				return nil, 0, fmt.Errorf("udpbind: set mark: %w", err)
			}
		}
	}
	fns := make([]conn.ReceiveFunc, len(s.all))
	for i, so := range s.all {
		// The engine names its receive goroutines after these methods.
		switch {
		case so == s.v4 && so == s.v6:
			fns[i] = so.receiveDualStack
		case so == s.v4:
			fns[i] = so.receiveIPv4
		default:
			fns[i] = so.receiveIPv6
		}
	}
	b.socks.Store(s)
	return fns, actual, nil
}

// receiveDualStack is the ReceiveFunc of a dual-stack socket.
func (s *socket) receiveDualStack(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	return s.receive(bufs, sizes, eps)
}

// receiveIPv4 is the ReceiveFunc of an IPv4 socket.
func (s *socket) receiveIPv4(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	return s.receive(bufs, sizes, eps)
}

// receiveIPv6 is the ReceiveFunc of an IPv6-only socket.
func (s *socket) receiveIPv6(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	return s.receive(bufs, sizes, eps)
}

func (s *sockets) close() error {
	var errs []error
	for _, so := range s.all {
		errs = append(errs, so.close())
	}
	return errors.Join(errs...)
}

// listen opens the sockets of Open.
func (b *Bind) listen(port uint16) (*sockets, uint16, error) {
	switch {
	case b.addr.Is4():
		so, p, err := b.listenOne("udp4", b.addr, port)
		if err != nil {
			return nil, 0, err
		}
		return &sockets{all: []*socket{so}, v4: so}, p, nil
	case b.addr.Is6() && !b.addr.IsUnspecified():
		so, p, err := b.listenOne("udp6", b.addr, port)
		if err != nil {
			return nil, 0, err
		}
		return &sockets{all: []*socket{so}, v6: so}, p, nil
	}
	if !b.noDualStack {
		// Go opens "udp" on a wildcard address as one AF_INET6 socket
		// with IPV6_V6ONLY off when the system supports v4-mapped
		// addresses, and as an AF_INET socket otherwise.
		so, p, err := b.listenOne("udp", netip.Addr{}, port)
		if err != nil {
			return nil, 0, err
		}
		if so.v6 {
			return &sockets{all: []*socket{so}, v4: so, v6: so}, p, nil
		}
		so.close()
	}
	return b.listenPair(port)
}

// listenPair opens an IPv4 and an IPv6 socket on the same port, either
// of which may be missing when its family is not available.
func (b *Bind) listenPair(port uint16) (*sockets, uint16, error) {
	const tries = 100
	for range tries {
		s := &sockets{}
		p := port
		v4, p4, err := b.listenOne("udp4", netip.Addr{}, p)
		switch {
		case err == nil:
			s.v4, p = v4, p4
			s.all = append(s.all, v4)
		case !noFamily(err):
			return nil, 0, err
		}
		v6, p6, err := b.listenOne("udp6", netip.Addr{}, p)
		switch {
		case err == nil:
			s.v6, p = v6, p6
			s.all = append(s.all, v6)
		case port == 0 && s.v4 != nil && errors.Is(err, syscall.EADDRINUSE):
			// The port picked for IPv4 is taken for IPv6: pick again.
			s.close()
			continue
		case !noFamily(err):
			s.close()
			return nil, 0, err
		}
		if len(s.all) == 0 {
			return nil, 0, syscall.EAFNOSUPPORT
		}
		return s, p, nil
	}
	return nil, 0, fmt.Errorf("no port free for both IPv4 and IPv6 after %d tries: %w", tries, syscall.EADDRINUSE)
}

// noFamily reports whether err says an address family is unavailable.
func noFamily(err error) bool {
	return errors.Is(err, syscall.EAFNOSUPPORT) || errors.Is(err, syscall.EADDRNOTAVAIL) ||
		errors.Is(err, syscall.EPROTONOSUPPORT)
}

// listenOne opens one socket on network ("udp", "udp4" or "udp6").
func (b *Bind) listenOne(network string, addr netip.Addr, port uint16) (*socket, uint16, error) {
	host := ""
	if addr.IsValid() {
		host = addr.String()
	}
	lc := net.ListenConfig{Control: b.control}
	pc, err := lc.ListenPacket(context.Background(), network, net.JoinHostPort(host, strconv.Itoa(int(port))))
	if err != nil {
		return nil, 0, err
	}
	c := pc.(*net.UDPConn)
	la := c.LocalAddr().(*net.UDPAddr)
	v6 := la.IP.To4() == nil
	so, err := b.newSocket(c, v6)
	if err != nil {
		c.Close()
		return nil, 0, err
	}
	return so, uint16(la.Port), nil
}

// Close closes the sockets. The ReceiveFuncs of the last Open return an
// error wrapping net.ErrClosed; the Bind can be opened again. Closing a
// closed Bind does nothing, as the engine closes it before every Open.
func (b *Bind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.socks.Swap(nil)
	if s == nil {
		return nil
	}
	if err := s.close(); err != nil {
		return fmt.Errorf("udpbind: close: %w", err)
	}
	return nil
}

// SetMark sets SO_MARK on the sockets on Linux, now and on every later
// Open; elsewhere it does nothing.
func (b *Bind) SetMark(mark uint32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.mark = mark
	s := b.socks.Load()
	if s == nil {
		return nil
	}
	for _, so := range s.all {
		if err := so.setMark(mark); err != nil {
			return fmt.Errorf("udpbind: set mark: %w", err)
		}
	}
	return nil
}

// Send writes bufs as datagrams to ep, which must come from this package
// (ParseEndpoint or a ReceiveFunc). len(bufs) may exceed BatchSize.
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*Endpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	s := b.socks.Load()
	if s == nil {
		return fmt.Errorf("udpbind: send: %w", net.ErrClosed)
	}
	so := s.v4
	if e.ap.Addr().Is6() {
		so = s.v6
	}
	if so == nil {
		return fmt.Errorf("udpbind: send to %v: %w", e.ap, syscall.EAFNOSUPPORT)
	}
	return so.send(bufs, e)
}

// ParseEndpoint parses "ip:port" or "[ipv6]:port" into an *Endpoint. An
// IPv4-mapped IPv6 address is unmapped, so "[::ffff:1.2.3.4]:5" and
// "1.2.3.4:5" are the same endpoint.
func (b *Bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, fmt.Errorf("udpbind: parse endpoint: %w", err)
	}
	return newEndpoint(unmap(ap)), nil
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	if ap.Addr().Is4In6() {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return ap
}
