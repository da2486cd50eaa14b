package netstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/wgkit/wgkit/wg"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// relayRig is a forwarder on a bare link, without stack or engine: peer
// 1 has 10.9.1.0/24 and fd09:1::/64, peer 2 10.9.2.0/24 and fd09:2::/64;
// the tunnel's own addresses are 10.9.0.1 and fd09::1.
func relayRig(t testing.TB, ping func(context.Context, netip.Addr, uint16, []byte) error) (*forwarder, *endpoint) {
	n := &Net{
		log:   slog.New(slog.DiscardHandler),
		ep:    newEndpoint(1420),
		addrs: []netip.Addr{netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("fd09::1")},
		done:  make(chan struct{}),
	}
	f, err := newForwarder(n, &ForwardOptions{RelayPeers: true, Allow: allowAll}, []netip.Prefix{netip.MustParsePrefix("10.9.0.1/32"), netip.MustParsePrefix("fd09::1/128")})
	if err != nil {
		t.Fatal(err)
	}
	f.ping = ping
	var k1, k2 wg.Key
	k1[0], k2[0] = 1, 2
	routes := map[netip.Prefix]wg.Key{
		netip.MustParsePrefix("10.9.1.0/24"): k1, netip.MustParsePrefix("fd09:1::/64"): k1,
		netip.MustParsePrefix("10.9.2.0/24"): k2, netip.MustParsePrefix("fd09:2::/64"): k2,
	}
	lookup := func(a netip.Addr) (wg.Key, bool) {
		for p, k := range routes {
			if p.Contains(a) {
				return k, true
			}
		}
		return wg.Key{}, false
	}
	f.lookup.Store(&lookup)
	return f, n.ep
}

// drain returns copies of the packets queued on e.
func drain(e *endpoint) [][]byte {
	e.qmu.Lock()
	defer e.qmu.Unlock()
	var out [][]byte
	for _, pkt := range e.queue {
		b := make([]byte, pkt.Size())
		copyPacket(b, pkt)
		out = append(out, b)
		pkt.DecRef()
	}
	e.queue = nil
	return out
}

// ipPacket returns an IP packet (v4 or v6 by the addresses) with the
// given TTL, transport protocol and payload, checksummed.
func ipPacket(src, dst netip.Addr, ttl uint8, proto uint8, payload []byte) []byte {
	if src.Is4() {
		b := make([]byte, header.IPv4MinimumSize+len(payload))
		ip := header.IPv4(b)
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: ttl, Protocol: proto, SrcAddr: tcpip.AddrFrom4(src.As4()), DstAddr: tcpip.AddrFrom4(dst.As4())})
		ip.SetChecksum(^ip.CalculateChecksum())
		copy(b[header.IPv4MinimumSize:], payload)
		return b
	}
	b := make([]byte, header.IPv6MinimumSize+len(payload))
	header.IPv6(b).Encode(&header.IPv6Fields{PayloadLength: uint16(len(payload)), TransportProtocol: tcpip.TransportProtocolNumber(proto), HopLimit: ttl, SrcAddr: tcpip.AddrFrom16(src.As16()), DstAddr: tcpip.AddrFrom16(dst.As16())})
	copy(b[header.IPv6MinimumSize:], payload)
	return b
}

// checkICMP fails unless b is a well-formed IP packet carrying an ICMP
// message with a valid checksum, and returns its type and code.
func checkICMP(t testing.TB, b []byte) (src, dst netip.Addr, typ, code uint8) {
	t.Helper()
	switch header.IPVersion(b) {
	case header.IPv4Version:
		ip := header.IPv4(b)
		if !ip.IsValid(len(b)) || !ip.IsChecksumValid() || ip.Protocol() != uint8(header.ICMPv4ProtocolNumber) {
			t.Fatalf("not a valid IPv4 ICMP packet: % x", b)
		}
		m := header.ICMPv4(ip.Payload())
		if checksum.Checksum(m, 0) != 0xffff {
			t.Fatalf("bad ICMP checksum: % x", b)
		}
		return addrPortOf(ip.SourceAddress(), 0).Addr(), addrPortOf(ip.DestinationAddress(), 0).Addr(), uint8(m.Type()), uint8(m.Code())
	case header.IPv6Version:
		ip := header.IPv6(b)
		if !ip.IsValid(len(b)) || ip.TransportProtocol() != header.ICMPv6ProtocolNumber {
			t.Fatalf("not a valid IPv6 ICMP packet: % x", b)
		}
		m := header.ICMPv6(ip.Payload())
		xsum := header.PseudoHeaderChecksum(header.ICMPv6ProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(m)))
		if checksum.Checksum(m, xsum) != 0xffff {
			t.Fatalf("bad ICMPv6 checksum: % x", b)
		}
		return addrPortOf(ip.SourceAddress(), 0).Addr(), addrPortOf(ip.DestinationAddress(), 0).Addr(), uint8(m.Type()), uint8(m.Code())
	}
	t.Fatalf("not an IP packet: % x", b)
	return
}

func TestForwardRelayTTL(t *testing.T) {
	udp := make([]byte, 8+4)
	tests := []struct {
		name     string
		src, dst string
		ttl      uint8
		took     bool
		wantTTL  uint8  // of the relayed packet; 0: none relayed
		wantICMP [2]int // type and code of an ICMP error back to src; -1: none
	}{
		{"v4-relayed", "10.9.1.5", "10.9.2.5", 64, true, 63, [2]int{-1, -1}},
		{"v4-ttl-2", "10.9.1.5", "10.9.2.5", 2, true, 1, [2]int{-1, -1}},
		{"v4-ttl-1", "10.9.1.5", "10.9.2.5", 1, true, 0, [2]int{int(header.ICMPv4TimeExceeded), int(header.ICMPv4TTLExceeded)}},
		{"v4-ttl-0", "10.9.1.5", "10.9.2.5", 0, true, 0, [2]int{int(header.ICMPv4TimeExceeded), int(header.ICMPv4TTLExceeded)}},
		{"v6-relayed", "fd09:1::5", "fd09:2::5", 64, true, 63, [2]int{-1, -1}},
		{"v6-hop-1", "fd09:1::5", "fd09:2::5", 1, true, 0, [2]int{int(header.ICMPv6TimeExceeded), int(header.ICMPv6HopLimitExceeded)}},
		{"same-peer", "10.9.1.5", "10.9.1.6", 64, false, 0, [2]int{-1, -1}},
		{"own-address", "10.9.1.5", "10.9.0.1", 64, false, 0, [2]int{-1, -1}},
		{"beyond-tunnel", "10.9.1.5", "192.0.2.1", 64, false, 0, [2]int{-1, -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, ep := relayRig(t, nil)
			src, dst := netip.MustParseAddr(tt.src), netip.MustParseAddr(tt.dst)
			pkt := ipPacket(src, dst, tt.ttl, uint8(header.UDPProtocolNumber), udp)
			if got := f.inbound(pkt); got != tt.took {
				t.Fatalf("inbound took the packet: %v, want %v", got, tt.took)
			}
			out := drain(ep)
			switch {
			case tt.wantTTL != 0:
				if len(out) != 1 {
					t.Fatalf("%d packets out, want the relayed one", len(out))
				}
				want := ipPacket(src, dst, tt.wantTTL, uint8(header.UDPProtocolNumber), udp)
				if diff := cmp.Diff(want, out[0]); diff != "" {
					t.Errorf("relayed packet (-want +got):\n%s", diff)
				}
			case tt.wantICMP[0] >= 0:
				if len(out) != 1 {
					t.Fatalf("%d packets out, want an ICMP error", len(out))
				}
				from, to, typ, code := checkICMP(t, out[0])
				if diff := cmp.Diff(fmt.Sprint(f.ownAddr(src), src, tt.wantICMP[0], tt.wantICMP[1]), fmt.Sprint(from, to, int(typ), int(code))); diff != "" {
					t.Errorf("ICMP error (-want +got):\n%s", diff)
				}
			default:
				if len(out) != 0 {
					t.Errorf("%d packets out, want none", len(out))
				}
			}
		})
	}
}

// FuzzForwardInbound feeds arbitrary packets, as a peer could send, to
// router mode's inbound hook: it must never panic, and whatever it sends
// (a relayed packet, an ICMP error or an echo reply) must be a valid IP
// packet no larger than the input plus an ICMP error's headers.
func FuzzForwardInbound(f *testing.F) {
	udp := make([]byte, 12)
	echo := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1, 'p', 'i', 'n', 'g'}
	echo6 := []byte{128, 0, 0, 0, 0x12, 0x34, 0, 1, 'p', 'i', 'n', 'g'}
	f.Add(ipPacket(netip.MustParseAddr("10.9.1.5"), netip.MustParseAddr("10.9.2.5"), 64, 17, udp))
	f.Add(ipPacket(netip.MustParseAddr("10.9.1.5"), netip.MustParseAddr("10.9.2.5"), 1, 17, udp))
	f.Add(ipPacket(netip.MustParseAddr("fd09:1::5"), netip.MustParseAddr("fd09:2::5"), 1, 17, udp))
	f.Add(ipPacket(netip.MustParseAddr("10.9.1.5"), netip.MustParseAddr("192.0.2.1"), 64, 1, echo))
	f.Add(ipPacket(netip.MustParseAddr("fd09:1::5"), netip.MustParseAddr("2001:db8::1"), 64, 58, echo6))
	f.Add([]byte{0x45})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		fw, ep := relayRig(t, func(context.Context, netip.Addr, uint16, []byte) error { return nil })
		in := append([]byte(nil), pkt...)
		fw.inbound(in)
		fw.stop()
		fw.wait()
		for _, out := range drain(ep) {
			if len(out) > len(pkt)+header.IPv6MinimumSize+header.ICMPv6MinimumSize+header.IPv6MinimumSize {
				t.Fatalf("sent %d bytes for a %d-byte packet", len(out), len(pkt))
			}
			switch header.IPVersion(out) {
			case header.IPv4Version:
				ip := header.IPv4(out)
				if !ip.IsValid(len(out)) || !ip.IsChecksumValid() {
					t.Fatalf("sent an invalid IPv4 packet: % x", out)
				}
			case header.IPv6Version:
				if !header.IPv6(out).IsValid(len(out)) {
					t.Fatalf("sent an invalid IPv6 packet: % x", out)
				}
			default:
				t.Fatalf("sent a non-IP packet: % x", out)
			}
		}
	})
}

// TestForwardEchoReply checks the echo reply the router makes when the
// host's ping succeeds: from the destination to the peer, with the
// request's identifier, sequence and data.
func TestForwardEchoReply(t *testing.T) {
	for _, tt := range []struct{ src, dst string }{{"10.9.1.5", "192.0.2.1"}, {"fd09:1::5", "2001:db8::1"}} {
		t.Run(tt.dst, func(t *testing.T) {
			var got []byte
			f, ep := relayRig(t, func(_ context.Context, _ netip.Addr, seq uint16, data []byte) error {
				got = data
				if seq != 1 {
					return errors.New("wrong sequence")
				}
				return nil
			})
			src, dst := netip.MustParseAddr(tt.src), netip.MustParseAddr(tt.dst)
			typ, proto, reply := uint8(8), uint8(1), uint8(0)
			if src.Is6() {
				typ, proto, reply = 128, 58, 129
			}
			if !f.inbound(ipPacket(src, dst, 64, proto, []byte{typ, 0, 0, 0, 0x12, 0x34, 0, 1, 'h', 'i'})) {
				t.Fatal("inbound did not take the echo request")
			}
			f.stop()
			f.wait()
			out := drain(ep)
			if len(out) != 1 {
				t.Fatalf("%d packets out, want one reply", len(out))
			}
			from, to, rtyp, code := checkICMP(t, out[0])
			if diff := cmp.Diff(fmt.Sprint(dst, src, reply, 0, "hi"), fmt.Sprint(from, to, rtyp, code, string(got))); diff != "" {
				t.Errorf("reply (-want +got):\n%s", diff)
			}
			hl := header.IPv4MinimumSize
			if src.Is6() {
				hl = header.IPv6MinimumSize
			}
			if diff := cmp.Diff([]byte{0x12, 0x34, 0, 1, 'h', 'i'}, out[0][hl+4:]); diff != "" {
				t.Errorf("reply's identifier, sequence and data (-want +got):\n%s", diff)
			}
		})
	}
}
