package netstack

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// linkUDPConn returns a UDP conn on a link-test Net dialed to peer:9.
func linkUDPConn(t *testing.T, n *Net, peer netip.Addr) *udpConn {
	t.Helper()
	proto := ipv4.ProtocolNumber
	if peer.Is6() {
		proto = ipv6.ProtocolNumber
	}
	wq := new(waiter.Queue)
	ep, terr := n.stack.NewEndpoint(udp.ProtocolNumber, proto, wq)
	if terr != nil {
		t.Fatal(terr)
	}
	fa, _ := fullAddr(netip.AddrPortFrom(peer, 9))
	if terr := ep.Connect(fa); terr != nil {
		ep.Close()
		t.Fatal(terr)
	}
	c := newUDPConn(n, ep, wq, netip.Addr{})
	t.Cleanup(func() { c.Close() })
	return c
}

// TestUDPFastPathWire checks the packets the UDP conns' own path builds
// as a kernel peer would: IP header fields and checksum, UDP ports,
// length and checksum (the link leaves checking them to the peer), for
// IPv4 and IPv6 and an odd payload length. And that an inbound datagram
// whose UDP length exceeds the packet is not queued on the conn but left
// to the stack, which counts it malformed.
func TestUDPFastPathWire(t *testing.T) {
	n, dev := newLinkTest(t)
	for _, tt := range []struct {
		local, peer netip.Addr
	}{
		{linkLocal4, linkPeer4},
		{linkLocal6, linkPeer6},
	} {
		t.Run(tt.peer.String(), func(t *testing.T) {
			c := linkUDPConn(t, n, tt.peer)
			payload := bytes.Repeat([]byte{0xa5, 0x3c, 0xff}, 67)[:201]
			if _, err := c.Write(payload); err != nil {
				t.Fatal(err)
			}
			bufs, sizes := [][]byte{make([]byte, 1500)}, []int{0}
			if k, err := dev.Read(bufs, sizes, 0); err != nil || k != 1 {
				t.Fatalf("engine Read = %d, %v; want 1 packet", k, err)
			}
			pkt := bufs[0][:sizes[0]]
			var src, dst tcpip.Address
			var rest []byte
			if tt.peer.Is4() {
				ip := header.IPv4(pkt)
				if !ip.IsValid(len(pkt)) || !ip.IsChecksumValid() || ip.TTL() != ipv4.DefaultTTL ||
					ip.Protocol() != uint8(header.UDPProtocolNumber) || int(ip.TotalLength()) != len(pkt) {
					t.Fatalf("bad IPv4 header % x", pkt[:header.IPv4MinimumSize])
				}
				src, dst, rest = ip.SourceAddress(), ip.DestinationAddress(), pkt[ip.HeaderLength():]
			} else {
				ip := header.IPv6(pkt)
				if !ip.IsValid(len(pkt)) || ip.HopLimit() != ipv6.DefaultTTL ||
					ip.NextHeader() != uint8(header.UDPProtocolNumber) || int(ip.PayloadLength())+header.IPv6MinimumSize != len(pkt) {
					t.Fatalf("bad IPv6 header % x", pkt[:header.IPv6MinimumSize])
				}
				src, dst, rest = ip.SourceAddress(), ip.DestinationAddress(), pkt[header.IPv6MinimumSize:]
			}
			if src != tcpipAddr(tt.local) || dst != tcpipAddr(tt.peer) {
				t.Errorf("packet from %v to %v, want %v to %v", src, dst, tt.local, tt.peer)
			}
			u := header.UDP(rest)
			if u.SourcePort() != c.fast.port || u.DestinationPort() != 9 || int(u.Length()) != len(rest) {
				t.Errorf("UDP header % x, want ports %d and 9, length %d", rest[:header.UDPMinimumSize], c.fast.port, len(rest))
			}
			if !u.IsChecksumValid(src, dst, checksum.Checksum(u.Payload(), 0)) {
				t.Errorf("bad UDP checksum %#04x", u.Checksum())
			}
			if !bytes.Equal(u.Payload(), payload) {
				t.Error("payload changed")
			}
			if sent, _ := gvisorUDPStats(t, c); sent != 0 {
				t.Errorf("gVisor's endpoint sent %d datagrams, want 0", sent)
			}

			// The answer, once with a UDP length beyond the packet.
			malformed := n.stack.Stats().UDP.MalformedPacketsReceived.Value()
			answer := bytes.Clone(pkt)
			if tt.peer.Is4() {
				ip := header.IPv4(answer)
				ip.SetSourceAddress(dst)
				ip.SetDestinationAddress(src)
			} else {
				ip := header.IPv6(answer)
				ip.SetSourceAddress(dst)
				ip.SetDestinationAddress(src)
			}
			au := header.UDP(answer[len(pkt)-len(rest):])
			au.SetSourcePort(9)
			au.SetDestinationPort(c.fast.port)
			au.SetLength(uint16(len(rest) + 1))
			if _, err := dev.Write([][]byte{answer}, 0); err != nil {
				t.Fatal(err)
			}
			if got := n.stack.Stats().UDP.MalformedPacketsReceived.Value(); got != malformed+1 {
				t.Errorf("the stack counted %d malformed datagrams, want %d", got, malformed+1)
			}
			au.SetLength(uint16(len(rest)))
			if _, err := dev.Write([][]byte{answer}, 0); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			got := make([]byte, 512)
			k, err := c.Read(got)
			if err != nil || !bytes.Equal(got[:k], payload) {
				t.Fatalf("Read = %d bytes, %v; want the %d-byte answer", k, err, len(payload))
			}
			if _, received := gvisorUDPStats(t, c); received != 0 {
				t.Errorf("gVisor's endpoint received %d datagrams, want 0", received)
			}
		})
	}
}
