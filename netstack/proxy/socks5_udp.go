package proxy

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// UDP relay bounds.
const (
	// udpBufSize holds the largest UDP payload plus the SOCKS5 header.
	udpBufSize = 64<<10 + maxUDPHeader
	// maxUDPHeader is RSV, FRAG, ATYP, an IPv6 address and a port; the
	// header of a domain name destination is longer but only comes from
	// clients.
	maxUDPHeader = 2 + 1 + 1 + 16 + 2
	// nameCacheSize bounds the names an association remembers the
	// address of; it is emptied when full.
	nameCacheSize = 64
	// nameCacheTTL is how long a remembered address is used.
	nameCacheTTL = time.Minute
)

// association is one UDP ASSOCIATE: a relay socket on the client's side
// and an unconnected socket in the tunnel, alive as long as the control
// connection.
type association struct {
	s      *SOCKS5Server
	ctx    context.Context // ends with the control connection or Close
	relay  net.PacketConn  // the client's side, bound to the address it connected to
	tunnel net.PacketConn  // in the tunnel, sends to any destination
	log    *slog.Logger

	clientIP   netip.Addr
	clientPort atomic.Uint32 // 0 until known; then the port datagrams must come from

	names map[string]nameEntry // only the relay goroutine uses it
}

type nameEntry struct {
	addr  netip.Addr
	until time.Time
}

// associate serves UDP ASSOCIATE (RFC 1928 section 7) until the control
// connection c ends.
func (s *SOCKS5Server) associate(c net.Conn, req request, log *slog.Logger) {
	local, remote := addrPortOf(c.LocalAddr()), addrPortOf(c.RemoteAddr())
	if !local.IsValid() || !remote.IsValid() {
		writeReply(c, repGeneralFailure, netip.AddrPort{})
		log.Warn("socks5: udp associate: control connection has no IP addresses", "local", c.LocalAddr())
		return
	}
	// Bound to the address the client reached, never a wildcard: the relay
	// must not listen on every address of the host.
	relay, err := s.listen("udp", netip.AddrPortFrom(local.Addr().Unmap(), 0).String())
	if err != nil {
		writeReply(c, repGeneralFailure, netip.AddrPort{})
		log.Warn("socks5: udp associate: relay socket", "err", err)
		return
	}
	defer relay.Close()
	tunnel, err := s.n.ListenPacket("udp", ":0")
	if err != nil {
		writeReply(c, replyCode(err), netip.AddrPort{})
		log.Warn("socks5: udp associate: tunnel socket", "err", err)
		return
	}
	defer tunnel.Close()
	ctx, cancel := context.WithCancel(s.t.ctx)
	defer cancel()
	a := &association{
		s: s, ctx: ctx, relay: relay, tunnel: tunnel, log: log,
		clientIP: remote.Addr().Unmap(),
		names:    make(map[string]nameEntry),
	}
	// The client may name the port it will send from; the address it
	// names is not trusted: datagrams must come from the control
	// connection's address.
	a.clientPort.Store(uint32(req.port))
	if err := writeReply(c, repSucceeded, addrPortOf(relay.LocalAddr())); err != nil {
		log.Info("socks5: udp associate reply", "err", err)
		return
	}
	c.SetDeadline(time.Time{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		a.fromClient()
	}()
	go func() {
		defer wg.Done()
		a.toClient()
	}()
	// RFC 1928: the association ends when the TCP connection does. What
	// the client sends on it meanwhile means nothing.
	io.Copy(io.Discard, c)
	cancel() // ends a lookup in progress
	relay.Close()
	tunnel.Close()
	wg.Wait()
}

// fromClient relays the client's datagrams into the tunnel.
func (a *association) fromClient() {
	buf := make([]byte, udpBufSize)
	for {
		n, from, err := a.relay.ReadFrom(buf)
		if err != nil {
			return
		}
		src := addrPortOf(from)
		if src.Addr().Unmap() != a.clientIP {
			continue // not the client: dropped
		}
		if p := a.clientPort.Load(); p == 0 {
			// The first datagram from the client's address fixes the
			// port (RFC 1928: a client that did not know it sent 0).
			a.clientPort.CompareAndSwap(0, uint32(src.Port()))
		} else if uint16(p) != src.Port() {
			continue
		}
		dst, payload, ok := a.parse(buf[:n])
		if !ok {
			continue
		}
		a.tunnel.WriteTo(payload, net.UDPAddrFromAddrPort(dst))
	}
}

// parse reads a client datagram's header: the destination (a name
// resolved by the tunnel's DNS) and the payload. Fragments, malformed
// headers and names that do not resolve give ok false (the datagram is
// dropped, as RFC 1928 says for what a relay cannot deliver).
func (a *association) parse(b []byte) (dst netip.AddrPort, payload []byte, ok bool) {
	if len(b) < 4 || b[0] != 0 || b[1] != 0 || b[2] != 0 {
		return netip.AddrPort{}, nil, false // short, bad RSV, or FRAG != 0
	}
	var ip netip.Addr
	rest := b[4:]
	switch b[3] {
	case atypIPv4:
		if len(rest) < 4+2 {
			return netip.AddrPort{}, nil, false
		}
		ip = netip.AddrFrom4([4]byte(rest[:4]))
		rest = rest[4:]
	case atypIPv6:
		if len(rest) < 16+2 {
			return netip.AddrPort{}, nil, false
		}
		ip = netip.AddrFrom16([16]byte(rest[:16])).Unmap()
		rest = rest[16:]
	case atypDomain:
		if len(rest) < 1 || len(rest) < 1+int(rest[0])+2 {
			return netip.AddrPort{}, nil, false
		}
		name := string(rest[1 : 1+int(rest[0])])
		rest = rest[1+int(rest[0]):]
		var found bool
		if ip, found = a.resolve(name); !found {
			return netip.AddrPort{}, nil, false
		}
	default:
		return netip.AddrPort{}, nil, false
	}
	return netip.AddrPortFrom(ip, binary.BigEndian.Uint16(rest)), rest[2:], true
}

// resolve looks name up with the tunnel's DNS, remembering answers for a
// minute. The lookup ends with the association, or after DialTimeout.
func (a *association) resolve(name string) (netip.Addr, bool) {
	if e, ok := a.names[name]; ok && time.Now().Before(e.until) {
		return e.addr, true
	}
	if checkDomain(name) != nil {
		return netip.Addr{}, false
	}
	ctx, cancel := context.WithTimeout(a.ctx, a.s.dialTO)
	defer cancel()
	addrs, err := a.s.n.LookupHost(ctx, name)
	if err != nil {
		a.log.Info("socks5: udp: lookup failed", "name", name, "err", err)
		return netip.Addr{}, false
	}
	for _, s := range addrs {
		if ip, err := netip.ParseAddr(s); err == nil {
			if len(a.names) >= nameCacheSize {
				clear(a.names)
			}
			a.names[name] = nameEntry{addr: ip.Unmap(), until: time.Now().Add(nameCacheTTL)}
			return ip.Unmap(), true
		}
	}
	return netip.Addr{}, false
}

// toClient relays datagrams from the tunnel to the client, each behind
// a header naming its source. The header is written into the room left
// before the payload, so nothing is copied.
func (a *association) toClient() {
	buf := make([]byte, udpBufSize)
	for {
		n, from, err := a.tunnel.ReadFrom(buf[maxUDPHeader:])
		if err != nil {
			return
		}
		port := a.clientPort.Load()
		if port == 0 {
			continue // the client has not sent yet: nowhere to send to
		}
		src := addrPortOf(from)
		hlen := 4 + 4 + 2
		if src.Addr().Unmap().Is6() {
			hlen = 4 + 16 + 2
		}
		h := buf[maxUDPHeader-hlen : maxUDPHeader-hlen]
		h = append(h, 0, 0, 0)
		appendAddr(h, src)
		a.relay.WriteTo(buf[maxUDPHeader-hlen:maxUDPHeader+n], net.UDPAddrFromAddrPort(netip.AddrPortFrom(a.clientIP, uint16(port))))
	}
}
