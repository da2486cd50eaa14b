package udpbind

import (
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"
)

// Endpoint is a peer's UDP address, as a conn.Endpoint of this package,
// and, with Options.StickySource, the local address the peer's datagram
// arrived at: the source Send replies from.
//
// Its addresses are immutable: a ReceiveFunc hands the same *Endpoint out
// for every datagram from one address to one local address, and the
// engine may keep it as the peer's endpoint. Only ClearSrc changes it,
// once and for good: a later datagram of the same pair gets a new
// Endpoint. Its methods are safe for concurrent use.
type Endpoint struct {
	ap    netip.AddrPort // IPv4 addresses are never IPv4-mapped
	scope uint32         // the interface index of ap's zone, or 0

	// src is the sticky source, never IPv4-mapped; the zero Addr when
	// there is none. srcIf is the index of the interface it arrived on
	// when src is an IPv6 link-local address (which needs it), else 0.
	src   netip.Addr
	srcIf uint32
	// cleared is set by ClearSrc, or by Send when the kernel refuses src.
	cleared atomic.Bool
}

// newEndpoint returns the Endpoint for ap, which must not be IPv4-mapped.
func newEndpoint(ap netip.AddrPort) *Endpoint {
	e := &Endpoint{ap: ap}
	if z := ap.Addr().Zone(); z != "" {
		if id, err := strconv.ParseUint(z, 10, 32); err == nil {
			e.scope = uint32(id)
		} else if ifi, err := net.InterfaceByName(z); err == nil {
			e.scope = uint32(ifi.Index)
		}
	}
	return e
}

var _ conn.Endpoint = (*Endpoint)(nil)

// AddrPort returns the destination address; an IPv4 address is a 4-byte
// netip.Addr.
func (e *Endpoint) AddrPort() netip.AddrPort { return e.ap }

// ClearSrc forgets the sticky source address: Send lets the kernel choose
// the source from then on.
func (e *Endpoint) ClearSrc() { e.cleared.Store(true) }

// source returns the sticky source and its interface index, or the zero
// Addr.
func (e *Endpoint) source() (netip.Addr, uint32) {
	if !e.src.IsValid() || e.cleared.Load() {
		return netip.Addr{}, 0
	}
	return e.src, e.srcIf
}

// SrcToString returns the sticky source address ("" when there is none):
// "1.2.3.4" or "2001:db8::1".
func (e *Endpoint) SrcToString() string {
	if src := e.SrcIP(); src.IsValid() {
		return src.String()
	}
	return ""
}

// SrcIP returns the sticky source address, or the zero Addr when there is
// none (without Options.StickySource, from ParseEndpoint, or after
// ClearSrc). An IPv4 address is a 4-byte netip.Addr.
func (e *Endpoint) SrcIP() netip.Addr {
	src, _ := e.source()
	return src
}

// DstToString returns the destination as "1.2.3.4:5" or "[::1]:5".
func (e *Endpoint) DstToString() string { return e.ap.String() }

// DstToBytes returns the destination in a binary form, which the engine
// feeds to its cookie MAC.
func (e *Endpoint) DstToBytes() []byte {
	b, _ := e.ap.MarshalBinary()
	return b
}

// DstIP returns the destination address.
func (e *Endpoint) DstIP() netip.Addr { return e.ap.Addr() }

// maxCachedEndpoints bounds an endpointCache. A tunnel talks to few
// addresses; a flood from many only costs an allocation per new address.
const maxCachedEndpoints = 1024

// endpointKey is what tells Endpoints apart in an endpointCache: the
// peer's address and, with a sticky source, the local one.
type endpointKey struct {
	ap    netip.AddrPort // never IPv4-mapped
	src   netip.Addr     // never IPv4-mapped; zero without a sticky source
	srcIf uint32         // as Endpoint.srcIf
}

// endpointCache hands out one *Endpoint per key, so that receiving from a
// known address allocates nothing. It is owned by one receiver and not
// safe for concurrent use.
type endpointCache struct {
	m map[endpointKey]*Endpoint
}

// get returns the Endpoint for k. One whose sticky source was cleared is
// replaced: the peer has just written to that address again. (The engine
// clears it when a handshake goes unanswered, so that costs an
// allocation per handshake attempt at most.)
func (c *endpointCache) get(k endpointKey) *Endpoint {
	if e, ok := c.m[k]; ok && (!k.src.IsValid() || !e.cleared.Load()) {
		return e
	}
	if c.m == nil {
		c.m = make(map[endpointKey]*Endpoint)
	} else if len(c.m) >= maxCachedEndpoints {
		clear(c.m)
	}
	e := newEndpoint(k.ap)
	e.src, e.srcIf = k.src, k.srcIf
	c.m[k] = e
	return e
}
