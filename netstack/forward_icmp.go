package netstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/icmp"
	xipv4 "golang.org/x/net/ipv4"
	xipv6 "golang.org/x/net/ipv6"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// This file holds router mode's packet-level work on the link's inbound
// path (relaying between peers, answering echo requests) and the ICMP
// errors it sends.

// icmpKind is an ICMP error router mode sends, mapped to the ICMPv4 and
// ICMPv6 type and code by icmpTypeCode.
type icmpKind int

const (
	unreachNet        icmpKind = iota // no route to the network
	unreachHost                       // the host did not answer (or the dial timed out)
	unreachProhibited                 // refused by policy (Allow)
	ttlExceeded                       // a relayed packet's TTL or hop limit ran out
)

func icmpTypeCode(k icmpKind, v6 bool) (typ, code uint8) {
	if v6 {
		// Every ICMPv6 destination-unreachable says "no route" (code 0):
		// gVisor, the stack of netstack peers, acts on no other code but
		// "port unreachable", and Linux fails a connect on it too.
		if k == ttlExceeded {
			return uint8(header.ICMPv6TimeExceeded), uint8(header.ICMPv6HopLimitExceeded)
		}
		return uint8(header.ICMPv6DstUnreachable), uint8(header.ICMPv6NetworkUnreachable)
	}
	switch k {
	case unreachNet:
		return uint8(header.ICMPv4DstUnreachable), uint8(header.ICMPv4NetUnreachable)
	case unreachHost:
		return uint8(header.ICMPv4DstUnreachable), uint8(header.ICMPv4HostUnreachable)
	case unreachProhibited:
		return uint8(header.ICMPv4DstUnreachable), uint8(header.ICMPv4AdminProhibited)
	default:
		return uint8(header.ICMPv4TimeExceeded), uint8(header.ICMPv4TTLExceeded)
	}
}

// ownAddr returns the tunnel's first address of a's family, or a itself if
// it has none: the source of the ICMP errors the router sends.
func (f *forwarder) ownAddr(a netip.Addr) netip.Addr {
	for _, own := range f.n.addrs {
		if own.Is4() == a.Is4() {
			return own
		}
	}
	return a
}

// sendUnreachable sends the peer an ICMP error of kind k about the packet
// whose start q is (its IP header and 8 more bytes, see quote). A malformed
// q sends nothing.
func (f *forwarder) sendUnreachable(q []byte, k icmpKind) {
	if b := icmpError(q, k, f.ownAddr); b != nil {
		f.inject(b)
	}
}

// icmpError builds the IP packet of an ICMP error of kind k about the
// packet starting with q, sent back to q's source from from(q's
// destination). It returns nil if q is not the start of an IP packet.
func icmpError(q []byte, k icmpKind, from func(netip.Addr) netip.Addr) []byte {
	if len(q) == 0 {
		return nil
	}
	switch header.IPVersion(q) {
	case header.IPv4Version:
		if len(q) < header.IPv4MinimumSize {
			return nil
		}
		orig := header.IPv4(q)
		src := addrPortOf(orig.DestinationAddress(), 0).Addr()
		return icmpPacket4(from(src), addrPortOf(orig.SourceAddress(), 0).Addr(), k, 0, q)
	case header.IPv6Version:
		if len(q) < header.IPv6MinimumSize {
			return nil
		}
		orig := header.IPv6(q)
		src := addrPortOf(orig.DestinationAddress(), 0).Addr()
		return icmpPacket6(from(src), addrPortOf(orig.SourceAddress(), 0).Addr(), k, 0, q)
	}
	return nil
}

// icmpPacket4 builds an IPv4 packet from src to dst carrying an ICMP
// message: an error of kind k (rest is 0) or, for k < 0, an echo reply
// whose identifier and sequence are in rest. body follows the 8-byte
// ICMP header.
func icmpPacket4(src, dst netip.Addr, k icmpKind, rest uint32, body []byte) []byte {
	typ, code := icmpTypeCode(k, false)
	if k < 0 {
		typ, code = uint8(header.ICMPv4EchoReply), 0
	}
	b := make([]byte, header.IPv4MinimumSize+header.ICMPv4MinimumSize+len(body))
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)),
		TTL:         64,
		Protocol:    uint8(header.ICMPv4ProtocolNumber),
		SrcAddr:     tcpip.AddrFrom4(src.As4()),
		DstAddr:     tcpip.AddrFrom4(dst.As4()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	m := header.ICMPv4(b[header.IPv4MinimumSize:])
	m.SetType(header.ICMPv4Type(typ))
	m.SetCode(header.ICMPv4Code(code))
	binary.BigEndian.PutUint32(m[4:8], rest)
	copy(m[header.ICMPv4MinimumSize:], body)
	m.SetChecksum(header.ICMPv4Checksum(m[:header.ICMPv4MinimumSize], checksum.Checksum(body, 0)))
	return b
}

// icmpPacket6 is icmpPacket4 for IPv6; an error quotes at most what keeps
// the packet within the IPv6 minimum MTU, as RFC 4443 asks.
func icmpPacket6(src, dst netip.Addr, k icmpKind, rest uint32, body []byte) []byte {
	typ, code := icmpTypeCode(k, true)
	if k < 0 {
		typ, code = uint8(header.ICMPv6EchoReply), 0
	} else if limit := header.IPv6MinimumMTU - header.IPv6MinimumSize - header.ICMPv6MinimumSize; len(body) > limit {
		body = body[:limit]
	}
	b := make([]byte, header.IPv6MinimumSize+header.ICMPv6MinimumSize+len(body))
	s, d := tcpip.AddrFrom16(src.As16()), tcpip.AddrFrom16(dst.As16())
	header.IPv6(b).Encode(&header.IPv6Fields{
		PayloadLength:     uint16(len(b) - header.IPv6MinimumSize),
		TransportProtocol: header.ICMPv6ProtocolNumber,
		HopLimit:          64,
		SrcAddr:           s,
		DstAddr:           d,
	})
	m := header.ICMPv6(b[header.IPv6MinimumSize:])
	m.SetType(header.ICMPv6Type(typ))
	m.SetCode(header.ICMPv6Code(code))
	binary.BigEndian.PutUint32(m[4:8], rest)
	copy(m[header.ICMPv6MinimumSize:], body)
	m.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
		Header:      m[:header.ICMPv6MinimumSize],
		Src:         s,
		Dst:         d,
		PayloadCsum: checksum.Checksum(body, 0),
		PayloadLen:  len(body),
	}))
	return b
}

// inject queues an IP packet the router made for the engine, as if the
// stack had sent it. Like any packet on a full queue, it may be dropped.
func (f *forwarder) inject(b []byte) {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	one := [1]*stack.PacketBuffer{pkt}
	f.n.ep.enqueue(one[:])
	pkt.DecRef()
}

// inbound is the link's router hook (endpoint.inbound), called for each
// packet from the engine before the stack sees it: it relays packets meant
// for another peer (RelayPeers) and answers echo requests to foreign
// destinations, and reports whether it took the packet. Everything else
// (the tunnel's own traffic, forwarded TCP and UDP) goes on to the stack.
// pkt is the engine's buffer: whatever is kept is copied.
func (f *forwarder) inbound(pkt []byte) bool {
	var (
		src, dst netip.Addr
		ttl      uint8
		proto    uint8
		hlen     int
		echo     bool
	)
	switch header.IPVersion(pkt) {
	case header.IPv4Version:
		h := header.IPv4(pkt)
		if !h.IsValid(len(pkt)) {
			return false
		}
		src, dst = addrPortOf(h.SourceAddress(), 0).Addr(), addrPortOf(h.DestinationAddress(), 0).Addr()
		ttl, proto, hlen = h.TTL(), h.Protocol(), int(h.HeaderLength())
		echo = proto == uint8(header.ICMPv4ProtocolNumber) && h.FragmentOffset() == 0 && h.Flags()&header.IPv4FlagMoreFragments == 0 &&
			len(pkt) >= hlen+header.ICMPv4MinimumSize && pkt[hlen] == uint8(header.ICMPv4Echo) && pkt[hlen+1] == 0
	case header.IPv6Version:
		h := header.IPv6(pkt)
		if !h.IsValid(len(pkt)) {
			return false
		}
		src, dst = addrPortOf(h.SourceAddress(), 0).Addr(), addrPortOf(h.DestinationAddress(), 0).Addr()
		ttl, proto, hlen = h.HopLimit(), h.NextHeader(), header.IPv6MinimumSize
		echo = proto == uint8(header.ICMPv6ProtocolNumber) &&
			len(pkt) >= hlen+header.ICMPv6MinimumSize && pkt[hlen] == uint8(header.ICMPv6EchoRequest) && pkt[hlen+1] == 0
	default:
		return false
	}
	if !dst.IsValid() || dst.IsMulticast() || dst.IsUnspecified() {
		return false // neighbour discovery, multicast: the stack's
	}
	for _, own := range f.n.addrs {
		if own == dst {
			return false
		}
	}
	if f.relay {
		if to, ok := f.peerFor(dst); ok {
			if from, _ := f.peerFor(src); from != to {
				f.relayPacket(pkt, ttl, hlen)
				return true
			}
		}
	}
	if echo {
		// Always taken: the promiscuous stack would answer any echo
		// request itself, for any address.
		f.echo(pkt, src, dst, hlen)
		return true
	}
	return false
}

// relayPacket sends a copy of pkt, with ttl (its TTL or hop limit) less
// one, back to the engine, which encrypts it to the peer whose AllowedIPs
// cover its destination. A packet whose TTL runs out is answered with an
// ICMP time-exceeded instead.
func (f *forwarder) relayPacket(pkt []byte, ttl uint8, hlen int) {
	if ttl <= 1 {
		f.ttlExceeded.Add(1)
		f.sendUnreachable(pkt[:min(len(pkt), hlen+8)], ttlExceeded)
		return
	}
	b := bytes.Clone(pkt)
	if header.IPVersion(b) == header.IPv4Version {
		h := header.IPv4(b)
		h.SetTTL(ttl - 1)
		h.SetChecksum(0)
		h.SetChecksum(^h.CalculateChecksum())
	} else {
		header.IPv6(b).SetHopLimit(ttl - 1)
	}
	f.relayed.Add(1)
	f.inject(b)
}

// echo answers an echo request from src to the foreign destination dst,
// in its own goroutine, if Allow permits and the host's own echo request
// to dst is answered; else it never answers. At most maxPendingPings wait
// at once; further requests are dropped.
func (f *forwarder) echo(pkt []byte, src, dst netip.Addr, hlen int) {
	select {
	case f.pings <- struct{}{}:
	default:
		f.dropped.Add(1)
		return
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		<-f.pings
		return
	}
	f.wg.Add(1)
	f.mu.Unlock()
	rest := binary.BigEndian.Uint32(pkt[hlen+4 : hlen+8]) // identifier and sequence
	data := bytes.Clone(pkt[hlen+8:])
	go func() {
		defer f.wg.Done()
		defer func() { <-f.pings }()
		if f.verdict("icmp", netip.AddrPortFrom(src, 0), netip.AddrPortFrom(dst, 0)) != "" {
			return
		}
		ctx, cancel := context.WithTimeout(f.ctx, pingTimeout)
		err := f.ping(ctx, dst, uint16(rest), data)
		cancel()
		if err != nil {
			f.n.log.Debug("netstack: forward: echo not answered", "src", src, "dst", dst, "err", err)
			return
		}
		if dst.Is4() {
			f.inject(icmpPacket4(dst, src, -1, rest, data))
		} else {
			f.inject(icmpPacket6(dst, src, -1, rest, data))
		}
	}()
}

// hostPing sends one echo request with sequence seq and payload data to
// dst from the host and waits, within ctx, for the matching reply. It uses
// an unprivileged ICMP socket where the host allows one
// (net.ipv4.ping_group_range on Linux), else a raw ICMP socket where the
// process may open one; if neither, it fails.
func hostPing(ctx context.Context, dst netip.Addr, seq uint16, data []byte) error {
	network, raw, laddr, proto := "udp4", "ip4:icmp", "0.0.0.0", 1
	var typ, reply icmp.Type = xipv4.ICMPTypeEcho, xipv4.ICMPTypeEchoReply
	if dst.Is6() {
		network, raw, laddr, proto = "udp6", "ip6:ipv6-icmp", "::", 58
		typ, reply = xipv6.ICMPTypeEchoRequest, xipv6.ICMPTypeEchoReply
	}
	privileged := false
	c, err := icmp.ListenPacket(network, laddr)
	if err != nil {
		if c, err = icmp.ListenPacket(raw, laddr); err != nil {
			return err
		}
		privileged = true
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	var idb [2]byte
	rand.Read(idb[:])
	id := int(binary.BigEndian.Uint16(idb[:]))
	msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: int(seq), Data: data}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return err
	}
	var to net.Addr = &net.UDPAddr{IP: dst.AsSlice()}
	if privileged {
		to = &net.IPAddr{IP: dst.AsSlice()}
	}
	if _, err := c.WriteTo(b, to); err != nil {
		return err
	}
	buf := make([]byte, len(b)+512)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || m.Type != reply {
			continue
		}
		e, ok := m.Body.(*icmp.Echo)
		if !ok || e.Seq != int(seq) || !bytes.Equal(e.Data, data) || privileged && e.ID != id {
			continue
		}
		if a, ok := netip.AddrFromSlice(addrIP(from)); !ok || a.Unmap() != dst {
			continue
		}
		return nil
	}
}

func addrIP(a net.Addr) net.IP {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.IP
	case *net.IPAddr:
		return a.IP
	}
	return nil
}
