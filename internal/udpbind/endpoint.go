package udpbind

import (
	"net"
	"net/netip"
	"strconv"

	"golang.zx2c4.com/wireguard/conn"
)

// Endpoint is a peer's UDP address, as a conn.Endpoint of this package.
// It is immutable: a ReceiveFunc hands the same *Endpoint out for every
// datagram from one address, and the engine may keep it as the peer's
// endpoint. It has no sticky source address, so ClearSrc does nothing and
// SrcIP and SrcToString report none.
type Endpoint struct {
	ap    netip.AddrPort // IPv4 addresses are never IPv4-mapped
	scope uint32         // the interface index of ap's zone, or 0
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

// ClearSrc does nothing: there is no sticky source address.
func (e *Endpoint) ClearSrc() {}

// SrcToString returns "": there is no sticky source address.
func (e *Endpoint) SrcToString() string { return "" }

// SrcIP returns the zero Addr: there is no sticky source address.
func (e *Endpoint) SrcIP() netip.Addr { return netip.Addr{} }

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

// endpointCache hands out one *Endpoint per address, so that receiving
// from a known address allocates nothing. It is owned by one receiver and
// not safe for concurrent use.
type endpointCache struct {
	m map[netip.AddrPort]*Endpoint
}

// get returns the Endpoint for ap, which must not be IPv4-mapped.
func (c *endpointCache) get(ap netip.AddrPort) *Endpoint {
	if e, ok := c.m[ap]; ok {
		return e
	}
	if c.m == nil {
		c.m = make(map[netip.AddrPort]*Endpoint)
	} else if len(c.m) >= maxCachedEndpoints {
		clear(c.m)
	}
	e := newEndpoint(ap)
	c.m[ap] = e
	return e
}
