package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/wgkit/wgkit/wg"
	"golang.org/x/net/proxy"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

var _ proxy.ContextDialer = (*Net)(nil)
var _ proxy.Dialer = (*Net)(nil)

// MaxHalfOpenDials is the most TCP dials of one Net that are in their
// handshake at once (see DialContext).
const MaxHalfOpenDials = 256

// listenBacklog is the accept queue length of Listen's listeners.
const listenBacklog = 128

// Dial is DialContext with context.Background.
func (n *Net) Dial(network, address string) (net.Conn, error) {
	return n.DialContext(context.Background(), network, address)
}

// DialContext connects to address over the tunnel, like
// net.Dialer.DialContext. network is "tcp", "tcp4", "tcp6", "udp", "udp4"
// or "udp6"; address is "host:port", where a host name is resolved by the
// tunnel's DNS servers (see LookupHost), never the host's resolver. The
// addresses of a name are tried in turn, IPv4 first, skipping families
// the tunnel has no address of.
//
// ctx bounds the dial (name resolution and connection set-up), not the
// returned connection: cancelling it after DialContext returns has no
// effect on the connection. Use SetDeadline for that.
//
// At most MaxHalfOpenDials TCP dials of a Net are in their handshake at
// once; more wait for one of them to finish, within their ctx. Each
// half-open connection holds packets in the engine's 64 KiB buffers on
// both ends, so the cap is what bounds the memory of a dial burst (5000
// dials at once to a listener that never accepts peaked near 200 MiB
// without it, near 45 MiB with it).
//
// A destination that no peer's AllowedIPs covers (and that is not one of
// the tunnel's own addresses) fails at once with an error wrapping
// ErrNoRoute.
// A refused connection is an *net.OpError wrapping syscall.ECONNREFUSED;
// an expired ctx deadline is an error whose Timeout method reports true.
// A TCP dial to a peer that completes no WireGuard handshake fails after
// Options.HandshakeTimeout with an error wrapping wg.ErrHandshakeTimeout
// (a timeout too) that names the peer's public key and endpoint; the
// destination's other addresses routed to that peer are not tried. A dial
// to a peer not heard from for 10 s asks the device for a handshake at
// once, and a TCP dial still waiting after half a second asks again, so
// that a peer that restarted and lost its session is reached within
// about a second.
// DialContext fits http.Transport.DialContext and proxy.ContextDialer.
func (n *Net) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	opErr := func(addr net.Addr, err error) error {
		return &net.OpError{Op: "dial", Net: network, Addr: addr, Err: err}
	}
	var isTCP bool
	switch network {
	case "tcp", "tcp4", "tcp6":
		isTCP = true
	case "udp", "udp4", "udp6":
	default:
		return nil, opErr(nil, net.UnknownNetworkError(network))
	}
	if n.isClosed() {
		return nil, opErr(nil, net.ErrClosed)
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, opErr(nil, err)
	}
	port, err := parsePort(network, portStr)
	if err != nil {
		return nil, opErr(nil, err)
	}
	ips, err := n.resolveForDial(ctx, network, host)
	if err != nil {
		return nil, opErr(nil, err)
	}
	var firstErr error
	var deadPeer *wg.Key // a peer whose handshake timed out: skip its other addresses
	for _, ip := range ips {
		if deadPeer != nil {
			if p, ok := n.dev.PeerFor(ip); ok && p == *deadPeer {
				continue
			}
		}
		ap := netip.AddrPortFrom(ip, port)
		var raddr net.Addr = net.TCPAddrFromAddrPort(ap)
		if !isTCP {
			raddr = net.UDPAddrFromAddrPort(ap)
		}
		if err := n.checkRoute(ip); err != nil {
			firstErr = cmpFirst(firstErr, opErr(raddr, err))
			continue
		}
		// As net.Dialer does, an ended ctx fails the dial even where
		// nothing would wait for it (UDP, TCP within the stack).
		if err := ctx.Err(); err != nil {
			firstErr = cmpFirst(firstErr, opErr(raddr, err))
			break
		}
		var c net.Conn
		if isTCP {
			c, err = n.dialTCP(ctx, ap)
		} else {
			if peer, ok := n.dev.PeerFor(ip); ok {
				n.nudgeHandshake(peer) // nothing waits for a UDP dial: just ask
			}
			c, err = n.dialUDP(ap)
		}
		if err == nil {
			return c, nil
		}
		if hsErr := (*handshakeTimeoutError)(nil); errors.As(err, &hsErr) {
			deadPeer = &hsErr.peer
		}
		firstErr = cmpFirst(firstErr, opErr(raddr, err))
		if ctx.Err() != nil || n.isClosed() {
			break
		}
	}
	return nil, firstErr
}

func cmpFirst(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

func parsePort(network, s string) (uint16, error) {
	if p, err := strconv.ParseUint(s, 10, 16); err == nil {
		return uint16(p), nil
	}
	// Service names come from the host's services database, a local file:
	// nothing is sent on any network.
	p, err := net.LookupPort(network, s)
	if err != nil {
		return 0, err
	}
	return uint16(p), nil
}

// resolveForDial returns the addresses to try for host: the literal IP, or
// the names' addresses from the tunnel's DNS, filtered by network and by
// the families the tunnel has addresses of, IPv4 first.
func (n *Net) resolveForDial(ctx context.Context, network, host string) ([]netip.Addr, error) {
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip.Unmap().WithZone("")}
	} else {
		ips, err = n.lookupAddrs(ctx, host)
		if err != nil {
			return nil, err
		}
	}
	want4 := n.v4 && network[len(network)-1] != '6'
	want6 := n.v6 && network[len(network)-1] != '4'
	var v4, v6 []netip.Addr
	for _, ip := range ips {
		switch {
		case ip.Is4() && want4:
			v4 = append(v4, ip)
		case ip.Is6() && want6:
			v6 = append(v6, ip)
		}
	}
	if out := append(v4, v6...); len(out) > 0 {
		return out, nil
	}
	return nil, &net.AddrError{Err: "netstack: no address of a family the tunnel has (" + n.familyText() + ")", Addr: host}
}

func (n *Net) familyText() string {
	switch {
	case n.v4 && n.v6:
		return "IPv4 and IPv6"
	case n.v4:
		return "IPv4 only"
	case n.v6:
		return "IPv6 only"
	}
	return "no addresses"
}

// checkRoute fails unless ip is one of the tunnel's own addresses or in
// some peer's AllowedIPs. It asks the device each time, so it follows
// peers changed at run time through Device or wg(8); Device.PeerFor keeps
// that cheap (no UAPI text per dial, whatever the number of peers).
func (n *Net) checkRoute(ip netip.Addr) error {
	for _, a := range n.addrs {
		if a == ip {
			return nil
		}
	}
	if _, ok := n.dev.PeerFor(ip); ok {
		return nil
	}
	if n.isClosed() {
		return net.ErrClosed
	}
	// Bare: the callers' errors name the destination already.
	return ErrNoRoute
}

// ErrNoRoute is wrapped by the errors of DialContext, Dial and Ping for a
// destination that is neither one of the tunnel's own addresses nor in
// any peer's AllowedIPs: no peer would take the packets, so the call fails
// at once instead of timing out.
var ErrNoRoute = errors.New("netstack: no peer's AllowedIPs covers the destination")

func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	proto := ipv4.ProtocolNumber
	if ap.Addr().Is6() {
		proto = ipv6.ProtocolNumber
	}
	var addr tcpip.Address
	if !ap.Addr().IsUnspecified() {
		addr = tcpip.AddrFromSlice(ap.Addr().AsSlice())
	}
	return tcpip.FullAddress{NIC: 0, Addr: addr, Port: ap.Port()}, proto
}

// dialTCP connects a TCP endpoint to ap, waiting for ctx, Close or the
// outcome of the handshake.
func (n *Net) dialTCP(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
	select {
	case n.dialSlots <- struct{}{}:
		defer func() { <-n.dialSlots }()
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-n.done:
		return nil, net.ErrClosed
	}
	fa, proto := fullAddr(ap)
	wq := new(waiter.Queue)
	ep, terr := n.stack.NewEndpoint(tcp.ProtocolNumber, proto, wq)
	if terr != nil {
		return nil, convertErr("socket", terr)
	}
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	hs := n.newHandshakeCheck(ap.Addr())
	terr = ep.Connect(fa)
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		// hsTick drives the handshake check; nil without one.
		var hsTimer *time.Timer
		var hsTick <-chan time.Time
		if hs != nil {
			hsTimer = time.NewTimer(hs.first())
			defer hsTimer.Stop()
			hsTick = hsTimer.C
		}
	wait:
		for {
			select {
			case <-notify:
				terr = ep.LastError()
				break wait
			case now := <-hsTick:
				next, err := hs.step(now)
				if err != nil {
					ep.Close()
					return nil, err
				}
				if next == 0 {
					hsTick = nil
				} else {
					hsTimer.Reset(next)
				}
			case <-ctx.Done():
				ep.Close()
				return nil, ctx.Err()
			case <-n.done:
				ep.Close()
				return nil, net.ErrClosed
			}
		}
	}
	if terr != nil {
		ep.Close()
		if n.isClosed() {
			return nil, net.ErrClosed
		}
		return nil, convertErr("connect", terr)
	}
	return newTCPConn(n, ep, wq), nil
}

// dialUDP returns a UDP endpoint connected to ap.
func (n *Net) dialUDP(ap netip.AddrPort) (net.Conn, error) {
	fa, proto := fullAddr(ap)
	wq := new(waiter.Queue)
	ep, terr := n.stack.NewEndpoint(udp.ProtocolNumber, proto, wq)
	if terr != nil {
		return nil, convertErr("socket", terr)
	}
	if terr := ep.Connect(fa); terr != nil {
		ep.Close()
		return nil, convertErr("connect", terr)
	}
	return newUDPConn(n, ep, wq, netip.Addr{}), nil
}

// listenAddr parses a listen address: host must be empty (all of the
// tunnel's addresses) or a literal IP.
func (n *Net) listenAddr(network, address string) (netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return netip.AddrPort{}, err
	}
	port, err := parsePort(network, portStr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	var ip netip.Addr
	switch {
	case host != "":
		ip, err = netip.ParseAddr(host)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("netstack: listen address must be an IP literal or empty: %w", err)
		}
		ip = ip.Unmap().WithZone("")
	case network[len(network)-1] == '4' || !n.v6:
		ip = netip.IPv4Unspecified()
	default:
		// "[::]" with dual stack (see bind) accepts both families.
		ip = netip.IPv6Unspecified()
	}
	return netip.AddrPortFrom(ip, port), nil
}

// bind creates an endpoint of transport bound to ap. An IPv6 wildcard is
// dual-stack unless network ends in "6", as with the net package.
func (n *Net) bind(network string, transport tcpip.TransportProtocolNumber, ap netip.AddrPort) (tcpip.Endpoint, *waiter.Queue, error) {
	fa, proto := fullAddr(ap)
	if ap.Addr().Is4() && network[len(network)-1] == '6' || ap.Addr().Is6() && network[len(network)-1] == '4' {
		return nil, nil, &net.AddrError{Err: "netstack: address family does not match network " + network, Addr: ap.String()}
	}
	wq := new(waiter.Queue)
	ep, terr := n.stack.NewEndpoint(transport, proto, wq)
	if terr != nil {
		return nil, nil, convertErr("socket", terr)
	}
	if proto == ipv6.ProtocolNumber {
		ep.SocketOptions().SetV6Only(network[len(network)-1] == '6')
	}
	if terr := ep.Bind(fa); terr != nil {
		ep.Close()
		return nil, nil, convertErr("bind", terr)
	}
	return ep, wq, nil
}

// Listen listens for TCP connections on the tunnel, like net.Listen.
// network is "tcp", "tcp4" or "tcp6"; address is "ip:port" with one of the
// tunnel's addresses, or ":port" for all of them. Port 0 picks a free port;
// see the listener's Addr. The listener is closed by its Close or by the
// Net's; Accept then returns an error wrapping net.ErrClosed.
func (n *Net) Listen(network, address string) (net.Listener, error) {
	// As in the net package, errors name the address once it is parsed.
	var addr net.Addr
	opErr := func(err error) error {
		return &net.OpError{Op: "listen", Net: network, Addr: addr, Err: err}
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, opErr(net.UnknownNetworkError(network))
	}
	ap, err := n.listenAddr(network, address)
	if err != nil {
		return nil, opErr(err)
	}
	addr = net.TCPAddrFromAddrPort(ap)
	if n.isClosed() {
		return nil, opErr(net.ErrClosed)
	}
	ep, wq, err := n.bind(network, tcp.ProtocolNumber, ap)
	if err != nil {
		return nil, opErr(err)
	}
	if terr := ep.Listen(listenBacklog); terr != nil {
		ep.Close()
		return nil, opErr(convertErr("listen", terr))
	}
	l := newTCPListener(n, ep, wq, ap.Addr())
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		l.shutdown()
		return nil, opErr(net.ErrClosed)
	}
	n.listeners[l] = struct{}{}
	return l, nil
}

// ListenPacket opens a UDP socket on the tunnel, like net.ListenPacket.
// network is "udp", "udp4" or "udp6"; address is as for Listen.
// WriteTo does not check the destination against the peers' AllowedIPs:
// datagrams no peer accepts are dropped by the engine, as on a WireGuard
// interface.
//
// The UDP conns of ListenPacket and DialContext also have the methods
// ReadFromUDPAddrPort, WriteToUDPAddrPort, SetReadBuffer and
// SetWriteBuffer of *net.UDPConn. In steady state they allocate nothing
// per datagram; ReadFrom allocates its address only when the source
// changes. A write waits while the socket's send buffer (16 KiB by
// default) or the link's queue to the engine is full, within the write
// deadline; datagrams arriving while the receive buffer (212 KiB by
// default; see SetReadBuffer) is full are dropped.
func (n *Net) ListenPacket(network, address string) (net.PacketConn, error) {
	var addr net.Addr // as for Listen
	opErr := func(err error) error {
		return &net.OpError{Op: "listen", Net: network, Addr: addr, Err: err}
	}
	switch network {
	case "udp", "udp4", "udp6":
	default:
		return nil, opErr(net.UnknownNetworkError(network))
	}
	ap, err := n.listenAddr(network, address)
	if err != nil {
		return nil, opErr(err)
	}
	addr = net.UDPAddrFromAddrPort(ap)
	if n.isClosed() {
		return nil, opErr(net.ErrClosed)
	}
	ep, wq, err := n.bind(network, udp.ProtocolNumber, ap)
	if err != nil {
		return nil, opErr(err)
	}
	return newUDPConn(n, ep, wq, ap.Addr()), nil
}

// fixWildcard fills in the bound wildcard address when gVisor reports a
// local address without one (it reports wildcards as empty).
func fixWildcard(a net.Addr, bound netip.Addr) net.Addr {
	switch a := a.(type) {
	case nil:
		return nil
	case *net.TCPAddr:
		if len(a.IP) == 0 && bound.IsValid() {
			return &net.TCPAddr{IP: bound.AsSlice(), Port: a.Port}
		}
	}
	return a
}
