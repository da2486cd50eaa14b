package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wgkit/wgkit/internal/pipe"
	"github.com/wgkit/wgkit/wg"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/loopback"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Router mode (Options.Forward). Packets from peers to addresses that are
// not the tunnel's own go one of three ways:
//
//   - to another peer, when RelayPeers is set and another peer's
//     AllowedIPs cover the destination: straight back to the engine, from
//     the link's inbound path, before the stack sees them (forward_icmp.go);
//   - ICMP echo requests: answered from the same inbound path when the
//     host's own ping of the destination is answered (forward_icmp.go);
//   - TCP and UDP: the NIC is promiscuous, so the stack accepts them, and
//     gVisor's forwarders hand each new flow to this file (TCP) or
//     forward_udp.go, which dial the destination on the host
//     (ForwardOptions.Dial) and join the two sides.
//
// A destination inside the tunnel (one of the interface's prefixes, or
// covered by a peer's AllowedIPs) is never dialled on the host: a TCP
// connect to one gets an ICMP destination-unreachable, as a Linux
// WireGuard interface answers for an address no peer has, and UDP and
// echo requests to one are dropped.

// Defaults and bounds of ForwardOptions.
const (
	defaultMaxFlows        = 4096
	defaultMaxPendingDials = 256
	defaultUDPIdleTimeout  = 60 * time.Second
	defaultDialTimeout     = 10 * time.Second

	// maxPendingPings bounds the ICMP echo requests waiting for the host's
	// answer; further requests are dropped (and counted in Dropped).
	maxPendingPings = 64

	// pingTimeout is how long a forwarded echo request waits for the
	// host's answer.
	pingTimeout = 5 * time.Second
)

// ForwardOptions switch a Net into router mode (Options.Forward): the
// tunnel carries its peers' traffic to destinations beyond its own
// addresses, as a Linux host with ip_forward=1 and a masquerading rule
// would, but in process and without root. A peer routes a subnet or
// 0.0.0.0/0 and ::/0 through the tunnel, and its TCP connections and UDP
// flows are re-originated from the host (Dial); ICMP echo requests are
// answered when the host's own ping is. A nil *ForwardOptions keeps the
// default, where only the tunnel's own addresses answer; every zero field
// means its documented default.
//
// The values are read once, by Open; the functions are called from many
// goroutines at once and must be safe for concurrent use.
type ForwardOptions struct {
	// Dial opens the upstream of a TCP ("tcp") or UDP ("udp") flow that
	// peer address src sent to dst. ctx ends after DialTimeout or when
	// the Net closes; it bounds the dial, not the connection. The Net
	// owns the returned conn and closes it when the flow ends. An
	// application can route, log or refuse flows here, or write a PROXY
	// protocol header before returning. An error wrapping
	// syscall.ECONNREFUSED makes the peer's connect fail with a TCP
	// reset; any other error with an ICMP destination-unreachable. nil
	// means the host network: a net.Dialer dialling dst.
	Dial func(ctx context.Context, network string, src, dst netip.AddrPort) (net.Conn, error)

	// Allow decides whether peer address src may reach dst; network is
	// "tcp", "udp" or "icmp" (an echo request; ports are 0). It is asked
	// once per new flow or echo request, before Dial, and must not block
	// for long. A refused TCP connect gets an ICMP destination-unreachable
	// (administratively prohibited), so it fails at once; refused UDP
	// datagrams and echo requests are dropped. Destinations inside the
	// tunnel, multicast, broadcast and unspecified ones are never asked
	// about: they are refused. nil allows every
	// destination except loopback, link-local, multicast and unspecified
	// addresses and the host's own interface addresses, so that a peer
	// cannot reach the host's own services unless the application says
	// so.
	Allow func(network string, src, dst netip.AddrPort) bool

	// MaxFlows bounds the forwarded TCP connections (including those
	// still dialling) and UDP flows open at once. A new flow beyond it is
	// dropped: its SYN or datagram is discarded as if lost. 0 means 4096.
	MaxFlows int

	// MaxPendingDials bounds the TCP connections whose upstream is still
	// being dialled (the peer's SYN received, not yet answered). SYNs
	// beyond it are dropped, not queued; the peer's TCP retries them. So
	// that one destination that never answers (a blackhole, a flood)
	// cannot stall every other flow for DialTimeout, a destination that
	// holds more than half of the pending dials yields one to a SYN for
	// another destination: that dial is cancelled (its peer gets an ICMP
	// destination-unreachable) and the new SYN takes its place. 0 means
	// 256.
	MaxPendingDials int

	// UDPIdleTimeout ends a UDP flow after that long without a datagram
	// either way. 0 means 60 seconds.
	UDPIdleTimeout time.Duration

	// DialTimeout bounds each Dial. A TCP connect whose dial times out
	// gets an ICMP destination-unreachable, so the peer learns within
	// DialTimeout, not when its own TCP gives up. 0 means 10 seconds.
	DialTimeout time.Duration

	// RelayPeers sends packets from one peer to an address another peer's
	// AllowedIPs cover on to that peer, as a WireGuard hub does, with the
	// IPv4 TTL or IPv6 hop limit decremented and an ICMP time-exceeded
	// sent back when it reaches zero. Packets to the sending peer's own
	// AllowedIPs are not sent back to it. false means peers reach the
	// tunnel (and, through Dial, the host's networks) but not each other.
	RelayPeers bool
}

// publicDest reports whether a is a destination the default Allow
// permits as far as its kind goes: a unicast address that is not
// loopback or link-local (net.IP's notion of global unicast, which
// includes private ranges).
func publicDest(a netip.Addr) bool { return a.Unmap().IsGlobalUnicast() }

// unicast reports whether a can be a flow's destination at all: not
// multicast, the IPv4 limited broadcast or unspecified. Others are refused
// whatever Allow says.
func unicast(a netip.Addr) bool {
	return a.IsValid() && !a.IsMulticast() && !a.IsUnspecified() && a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// hostAddrsTTL is how long the default Allow trusts its list of the host's
// own addresses before asking the system again.
const hostAddrsTTL = 5 * time.Second

// defaultAllow is the policy of a nil ForwardOptions.Allow: publicDest,
// and not one of the host's own interface addresses (a service bound to
// all addresses is the host's own service, like one on loopback).
func (f *forwarder) defaultAllow(_ string, _, dst netip.AddrPort) bool {
	a := dst.Addr().Unmap()
	if !publicDest(a) {
		return false
	}
	f.hostMu.Lock()
	defer f.hostMu.Unlock()
	if time.Since(f.hostAt) > hostAddrsTTL {
		f.hostAddrs = f.hostAddrs[:0]
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			// Unknown host addresses: refuse rather than risk reaching one.
			f.n.log.Debug("netstack: forward: host addresses", "err", err)
			return false
		}
		for _, ad := range addrs {
			if ipn, ok := ad.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
					f.hostAddrs = append(f.hostAddrs, ip.Unmap())
				}
			}
		}
		f.hostAt = time.Now()
	}
	return !slices.Contains(f.hostAddrs, a)
}

// ForwardStats is a snapshot of router mode's counters (see
// Net.ForwardStats). Counts of open things are current values; the others
// count since Open.
type ForwardStats struct {
	TCPFlows     int    // forwarded TCP connections open (upstream connected)
	UDPFlows     int    // forwarded UDP flows open
	PendingDials int    // TCP connections whose upstream is being dialled (not counting evicted ones still ending)
	PendingPings int    // echo requests waiting for the host's answer
	Refused      uint64 // flows and echo requests refused by Allow or because the destination is inside the tunnel
	Dropped      uint64 // SYNs, datagrams and echo requests dropped over MaxFlows, MaxPendingDials or the ping bound
	Evicted      uint64 // pending dials cancelled to make room for another destination (see MaxPendingDials)
	DialErrors   uint64 // dials that failed (refused, unreachable, timed out)
	Relayed      uint64 // packets relayed from one peer to another (RelayPeers)
	TTLExceeded  uint64 // relayed packets dropped because their TTL or hop limit ran out
}

// ForwardStats returns a snapshot of router mode's counters; without
// Options.Forward it returns zeros. It is safe for concurrent use.
func (n *Net) ForwardStats() ForwardStats {
	f := n.fwd
	if f == nil {
		return ForwardStats{}
	}
	f.mu.Lock()
	pending := len(f.pending) - f.evictedLive
	f.mu.Unlock()
	return ForwardStats{
		TCPFlows:     int(f.tcpOpen.Load()),
		UDPFlows:     int(f.udpOpen.Load()),
		PendingDials: pending,
		PendingPings: len(f.pings),
		Refused:      f.refused.Load(),
		Dropped:      f.dropped.Load(),
		Evicted:      f.evicted.Load(),
		DialErrors:   f.dialErrors.Load(),
		Relayed:      f.relayed.Load(),
		TTLExceeded:  f.ttlExceeded.Load(),
	}
}

// forwarder is the state of router mode. Its goroutines (one per TCP
// connection being dialled or joined, one per UDP flow plus one, one per
// echo request) are counted in wg; shutdown ends them all.
type forwarder struct {
	n        *Net
	dial     func(ctx context.Context, network string, src, dst netip.AddrPort) (net.Conn, error)
	allow    func(network string, src, dst netip.AddrPort) bool
	maxFlows int
	maxDials int
	idle     time.Duration
	timeout  time.Duration
	relay    bool
	prefixes []netip.Prefix // the interface's prefixes, masked; immutable

	// ping sends one echo request from the host and waits for its reply;
	// tests replace it.
	ping func(ctx context.Context, dst netip.Addr, seq uint16, data []byte) error

	ctx    context.Context // ends at shutdown; parent of every dial's
	cancel context.CancelFunc
	// lookup is the engine's Device.PeerFor, set once the engine runs
	// (nil before); tests set their own.
	lookup atomic.Pointer[func(netip.Addr) (wg.Key, bool)]
	tcpFwd *tcp.Forwarder
	pings  chan struct{} // semaphore of maxPendingPings
	wg     sync.WaitGroup

	tcpOpen, udpOpen                                            atomic.Int64
	refused, dropped, evicted, dialErrors, relayed, ttlExceeded atomic.Uint64

	hostMu    sync.Mutex
	hostAddrs []netip.Addr // guarded by hostMu; the host's own addresses
	hostAt    time.Time    // guarded by hostMu; when hostAddrs was read

	mu      sync.Mutex
	closed  bool                                       // guarded by mu
	flows   int                                        // guarded by mu; TCP (pending and open) plus UDP
	pending map[stack.TransportEndpointID]*pendingDial // guarded by mu; SYNs being dialled
	perDst  map[netip.Addr]int                         // guarded by mu; pending entries per destination
	// evictedLive counts the entries of pending marked evicted.
	evictedLive int                                     // guarded by mu
	conns       map[interface{ Close() error }]struct{} // guarded by mu; closed by shutdown
}

// newForwarder fills in o's defaults and checks its bounds.
func newForwarder(n *Net, o *ForwardOptions, prefixes []netip.Prefix) (*forwarder, error) {
	f := &forwarder{
		n:        n,
		dial:     o.Dial,
		allow:    o.Allow,
		maxFlows: o.MaxFlows,
		maxDials: o.MaxPendingDials,
		idle:     o.UDPIdleTimeout,
		timeout:  o.DialTimeout,
		relay:    o.RelayPeers,
		ping:     hostPing,
		pings:    make(chan struct{}, maxPendingPings),
		pending:  make(map[stack.TransportEndpointID]*pendingDial),
		perDst:   make(map[netip.Addr]int),
		conns:    make(map[interface{ Close() error }]struct{}),
	}
	switch {
	case o.MaxFlows < 0:
		return nil, fmt.Errorf("bad Forward.MaxFlows %d", o.MaxFlows)
	case o.MaxPendingDials < 0:
		return nil, fmt.Errorf("bad Forward.MaxPendingDials %d", o.MaxPendingDials)
	case o.UDPIdleTimeout < 0:
		return nil, fmt.Errorf("bad Forward.UDPIdleTimeout %v", o.UDPIdleTimeout)
	case o.DialTimeout < 0:
		return nil, fmt.Errorf("bad Forward.DialTimeout %v", o.DialTimeout)
	}
	if f.dial == nil {
		f.dial = hostDial
	}
	if f.allow == nil {
		f.allow = f.defaultAllow
	}
	if f.maxFlows == 0 {
		f.maxFlows = defaultMaxFlows
	}
	if f.maxDials == 0 {
		f.maxDials = defaultMaxPendingDials
	}
	if f.idle == 0 {
		f.idle = defaultUDPIdleTimeout
	}
	if f.timeout == 0 {
		f.timeout = defaultDialTimeout
	}
	for _, p := range prefixes {
		f.prefixes = append(f.prefixes, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-unmapBits(p)).Masked())
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	return f, nil
}

func unmapBits(p netip.Prefix) int {
	if p.Addr().Is4In6() {
		return 96
	}
	return 0
}

// hostDial is the default ForwardOptions.Dial.
func hostDial(ctx context.Context, network string, _, dst netip.AddrPort) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, dst.String())
}

// install sets the stack up for router mode: a promiscuous NIC that
// accepts packets for any address, spoofing so that replies leave from
// the address the peer sent to, and the TCP and UDP forwarders for
// packets no endpoint of the stack claims.
func (f *forwarder) install(st *stack.Stack) error {
	if terr := st.SetPromiscuousMode(nicID, true); terr != nil {
		return fmt.Errorf("set promiscuous mode: %s", terr)
	}
	if terr := st.SetSpoofing(nicID, true); terr != nil {
		return fmt.Errorf("set spoofing: %s", terr)
	}
	// handleSYN admits at most 2 x maxDials requests at once (see
	// evictLocked) and the forwarder forgets a request (Complete) before
	// handleSYN does, so gVisor's own in-flight bound never drops a SYN
	// handleSYN admitted.
	// The forwarded endpoints' receive window honours MaxTCPBuffer.
	rcvWnd := 0
	if f.n.maxTCPBuffer > 0 {
		rcvWnd = min(f.n.maxTCPBuffer, tcp.DefaultReceiveBufferSize)
	}
	f.tcpFwd = tcp.NewForwarder(st, rcvWnd, 2*f.maxDials, f.tcpRequest)
	st.SetTransportProtocolHandler(tcp.ProtocolNumber, f.handleSYN)
	st.SetTransportProtocolHandler(udp.ProtocolNumber, udp.NewForwarder(st, f.udpRequest).HandlePacket)
	return nil
}

// loopNIC is router mode's loopback NIC (see addLoopback).
const loopNIC tcpip.NICID = 2

// addLoopback gives the stack a loopback NIC holding the tunnel's own
// addresses, with host routes to them, so that the Net's connections to
// its own addresses stay in the stack: router mode's stack cannot have
// HandleLocal (see newStack), without which they would leave on the
// tunnel, where no peer takes them. Call it after the addresses are set.
func (f *forwarder) addLoopback(st *stack.Stack) error {
	if terr := st.CreateNIC(loopNIC, loopback.New()); terr != nil {
		return fmt.Errorf("create loopback NIC: %s", terr)
	}
	for _, a := range f.n.addrs {
		proto := header.IPv4ProtocolNumber
		if a.Is6() {
			proto = header.IPv6ProtocolNumber
		}
		ap := tcpip.AddressWithPrefix{Address: tcpip.AddrFromSlice(a.AsSlice()), PrefixLen: a.BitLen()}
		if terr := st.AddProtocolAddress(loopNIC, tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: ap}, stack.AddressProperties{}); terr != nil {
			return fmt.Errorf("add loopback address %s: %s", a, terr)
		}
		st.AddRoute(tcpip.Route{Destination: ap.Subnet(), NIC: loopNIC})
	}
	return nil
}

// start lets the forwarder ask dev about peers.
func (f *forwarder) start(dev *wg.Device) {
	lookup := dev.PeerFor
	f.lookup.Store(&lookup)
}

// peerFor is Device.PeerFor once the engine runs: the peer whose
// AllowedIPs cover a.
func (f *forwarder) peerFor(a netip.Addr) (wg.Key, bool) {
	if lookup := f.lookup.Load(); lookup != nil {
		return (*lookup)(a)
	}
	return wg.Key{}, false
}

// stop ends every flow: it cancels pending dials and closes every
// upstream and tunnel-side conn. Call it after the engine stopped (no new
// packets) and before the stack closes, which aborts handshakes in
// progress; then wait.
func (f *forwarder) stop() {
	f.mu.Lock()
	f.closed = true
	conns := f.conns
	f.conns = nil
	f.mu.Unlock()
	f.cancel()
	for c := range conns {
		c.Close()
	}
}

// wait waits for the forwarder's goroutines to end.
func (f *forwarder) wait() { f.wg.Wait() }

// track registers c for shutdown; it reports false (and closes c) if
// shutdown has begun.
func (f *forwarder) track(c interface{ Close() error }) bool {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		c.Close()
		return false
	}
	f.conns[c] = struct{}{}
	f.mu.Unlock()
	return true
}

func (f *forwarder) untrack(c interface{ Close() error }) {
	f.mu.Lock()
	if f.conns != nil {
		delete(f.conns, c)
	}
	f.mu.Unlock()
	c.Close()
}

// admitFlow takes a flow slot and a goroutine count; it reports false when
// MaxFlows is reached or shutdown has begun.
func (f *forwarder) admitFlowLocked() bool {
	if f.closed {
		return false
	}
	if f.flows >= f.maxFlows {
		f.dropped.Add(1)
		return false
	}
	f.flows++
	f.wg.Add(1)
	return true
}

// endFlow gives back what admitFlowLocked took.
func (f *forwarder) endFlow() {
	f.mu.Lock()
	f.flows--
	f.mu.Unlock()
	f.wg.Done()
}

// verdict says why a flow from src to dst may not be forwarded: "" if it
// may. Destinations inside the tunnel are never dialled on the host.
func (f *forwarder) verdict(network string, src, dst netip.AddrPort) string {
	a := dst.Addr()
	for _, own := range f.n.addrs {
		if own == a {
			return "own"
		}
	}
	if f.inTunnel(a) {
		f.refused.Add(1)
		return "tunnel"
	}
	if !unicast(a) {
		f.refused.Add(1)
		return "allow"
	}
	if !f.allow(network, src, dst) {
		f.refused.Add(1)
		return "allow"
	}
	return ""
}

// inTunnel reports whether a belongs to the tunnel: an interface prefix
// or a peer's AllowedIPs.
func (f *forwarder) inTunnel(a netip.Addr) bool {
	for _, p := range f.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	_, ok := f.peerFor(a)
	return ok
}

func addrPortOf(a tcpip.Address, port uint16) netip.AddrPort {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return netip.AddrPortFrom(ip.Unmap(), port)
}

// handleSYN is the stack's handler of TCP segments no endpoint claims. It
// admits a new connection request (a SYN) if MaxPendingDials and MaxFlows
// allow, keeps its headers for an ICMP error, and passes it to gVisor's
// forwarder, which starts tcpRequest. Other segments go to the stack's
// default handling (a reset).
func (f *forwarder) handleSYN(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	th := header.TCP(pkt.TransportHeader().Slice())
	if len(th) < header.TCPMinimumSize {
		return false
	}
	if flags := th.Flags(); !flags.Contains(header.TCPFlagSyn) || flags.Contains(header.TCPFlagAck) {
		return false
	}
	dst := addrPortOf(id.LocalAddress, 0).Addr()
	f.mu.Lock()
	if _, ok := f.pending[id]; ok {
		f.mu.Unlock()
		return true // a retransmitted SYN: the dial is under way
	}
	if len(f.pending)-f.evictedLive >= f.maxDials && !f.evictLocked(dst) {
		f.mu.Unlock()
		f.dropped.Add(1)
		return true
	}
	if !f.admitFlowLocked() {
		f.mu.Unlock()
		return true
	}
	f.pending[id] = &pendingDial{quote: quote(pkt), dst: dst}
	f.perDst[dst]++
	f.mu.Unlock()
	if !f.tcpFwd.HandlePacket(id, pkt) {
		f.forget(id)
		f.endFlow()
		return false
	}
	return true
}

// pendingDial is a TCP connection request being dialled.
type pendingDial struct {
	quote   []byte             // the SYN's headers, for an ICMP error
	dst     netip.Addr         // its destination
	cancel  context.CancelFunc // cancels its dial; nil until the dial starts
	dialing bool               // the dial is under way (cancel set, not returned)
	evicted bool               // marked by evictLocked: cancel it, it yields its slot
}

// evictLocked makes room for a SYN to dst when the pending dials are
// full: if another destination holds more than half of them, one of its
// dials still in progress (or not started) is marked evicted and
// cancelled, and evictLocked reports true. Evicted entries stay in
// pending until their dial returns, at most maxDials of them, so pending
// never holds more than 2 x maxDials entries.
func (f *forwarder) evictLocked(dst netip.Addr) bool {
	if f.evictedLive >= f.maxDials || f.perDst[dst] > f.maxDials/2 {
		return false // dst is the hog itself: its SYNs are dropped
	}
	for _, p := range f.pending {
		if p.evicted || p.dst == dst || f.perDst[p.dst] <= f.maxDials/2 || p.cancel != nil && !p.dialing {
			continue
		}
		p.evicted = true
		f.evictedLive++
		f.evicted.Add(1)
		if p.cancel != nil {
			p.cancel()
		}
		return true
	}
	return false
}

// forget removes a request from pending.
func (f *forwarder) forget(id stack.TransportEndpointID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.pending[id]
	if !ok {
		return
	}
	delete(f.pending, id)
	if p.evicted {
		f.evictedLive--
	}
	if f.perDst[p.dst]--; f.perDst[p.dst] == 0 {
		delete(f.perDst, p.dst)
	}
}

// quote returns the start of pkt that an ICMP error carries: its IP header
// and the first 8 bytes of its transport header.
func quote(pkt *stack.PacketBuffer) []byte {
	nh := pkt.NetworkHeader().Slice()
	th := pkt.TransportHeader().Slice()
	q := make([]byte, 0, len(nh)+8)
	q = append(q, nh...)
	return append(q, th[:min(8, len(th))]...)
}

// tcpRequest handles one admitted SYN, in its own goroutine: it dials the
// upstream and only then completes the peer's handshake, so that the peer
// sees a connection exactly when the destination accepted one. Every path
// completes the request, which frees gVisor's in-flight slot.
func (f *forwarder) tcpRequest(r *tcp.ForwarderRequest) {
	defer f.endFlow()
	id := r.ID()
	src, dst := addrPortOf(id.RemoteAddress, id.RemotePort), addrPortOf(id.LocalAddress, id.LocalPort)
	f.mu.Lock()
	p := f.pending[id]
	f.mu.Unlock()
	q := p.quote
	// done completes the request, then forgets it; in that order, so that
	// a retransmitted SYN meanwhile is still taken for this one.
	done := func(reset bool) {
		r.Complete(reset)
		f.forget(id)
	}
	switch f.verdict("tcp", src, dst) {
	case "":
	case "own":
		done(true) // a closed port of the tunnel's own
		return
	case "tunnel":
		done(false)
		f.sendUnreachable(q, unreachHost)
		return
	default:
		done(false)
		f.sendUnreachable(q, unreachProhibited)
		return
	}
	ctx, cancel := context.WithTimeout(f.ctx, f.timeout)
	f.mu.Lock()
	p.cancel, p.dialing = cancel, true
	if p.evicted {
		cancel()
	}
	f.mu.Unlock()
	up, err := f.dial(ctx, "tcp", src, dst)
	f.mu.Lock()
	p.dialing = false
	f.mu.Unlock()
	cancel()
	if err != nil {
		f.dialErrors.Add(1)
		f.n.log.Debug("netstack: forward: dial failed", "src", src, "dst", dst, "err", err)
		switch {
		case f.ctx.Err() != nil:
			done(false)
		case errors.Is(err, syscall.ECONNREFUSED):
			done(true)
		case errors.Is(err, syscall.ENETUNREACH):
			done(false)
			f.sendUnreachable(q, unreachNet)
		default:
			done(false)
			f.sendUnreachable(q, unreachHost)
		}
		return
	}
	if !f.track(up) {
		done(false)
		return
	}
	defer f.untrack(up)
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	done(false)
	if terr != nil {
		// The peer gave up meanwhile, or the stack is closing.
		return
	}
	// Keepalives (gVisor's defaults, as Linux's: after 2 hours idle) end
	// a flow whose peer vanished without a FIN, so it does not hold a
	// MaxFlows slot for ever.
	ep.SocketOptions().SetKeepAlive(true)
	down := newTCPConn(f.n, ep, &wq)
	if !f.track(down) {
		return
	}
	defer f.untrack(down)
	f.tcpOpen.Add(1)
	defer f.tcpOpen.Add(-1)
	pipe.Join(down, up)
}
