package netstack

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// FuzzLinkInbound hands arbitrary bytes to the link as if the engine had
// decrypted them from a peer (a peer may send anything inside its
// tunnel): alone, twice in one batch (so that GRO sees two packets of the
// same flow), after a valid TCP segment, and after a flow's segment that
// the link holds above a hole (reorder.go). The stack has a TCP listener
// and a UDP socket so that inputs reach the transports. Nothing may panic,
// and after every input an ICMP echo round trip through the same link
// still works, the outbound queue stays within its bound and what the
// link holds for reordering is within its bounds, sorted and above the
// hole.
//
// The seeds (here and in testdata/fuzz/FuzzLinkInbound) are packets to
// the stack's own addresses: valid ones of each protocol, then truncated,
// with bad checksums and lengths, fragments, IPv4 options and IPv6
// extension headers.
func FuzzLinkInbound(f *testing.F) {
	for _, s := range linkFuzzSeeds(f) {
		f.Add(s)
	}
	n, dev := newLinkTest(f)
	n.listeners = make(map[*tcpListener]struct{})
	ln, err := n.Listen("tcp", ":80")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { ln.Close() })
	pc, err := n.ListenPacket("udp", ":53")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { pc.Close() })
	seq := 0
	f.Fuzz(func(t *testing.T, pkt []byte) {
		batches := [][][]byte{
			{pkt},
			{pkt, pkt},
			{tcpSegment(linkPeer4, linkLocal4, 80, header.TCPFlagSyn, nil), pkt},
			{dataSegment(false, seg{40000, 1, 100}, 0), dataSegment(false, seg{40000, 1001, 100}, 0), pkt},
		}
		for _, b := range batches {
			// Write must not keep the caller's buffers: copy, write, then
			// scribble over them.
			bufs := make([][]byte, len(b))
			for i, p := range b {
				bufs[i] = append([]byte(nil), p...)
			}
			if _, err := dev.Write(bufs, 0); err != nil {
				t.Fatalf("Write: %v", err)
			}
			for _, p := range bufs {
				clear(p)
			}
		}
		seq++
		checkEchoWorks(t, n, dev, seq)
		checkReorderBounds(t, n.ep)
	})
}

// checkReorderBounds fails t unless every flow the link tracks holds at
// most reorderPerFlow segments and reorderMaxBytes of payload (as
// counted), sorted by sequence number and all above the hole the flow
// waits for, with a deadline set.
func checkReorderBounds(t *testing.T, e *endpoint) {
	t.Helper()
	e.gmu.Lock()
	defer e.gmu.Unlock()
	for i := range e.reorder.flows {
		f := &e.reorder.flows[i]
		if len(f.held) > reorderPerFlow {
			t.Fatalf("flow %d holds %d segments, bound %d", i, len(f.held), reorderPerFlow)
		}
		bytes := 0
		for j, h := range f.held {
			if !seqBefore(f.next, h.seq) || j > 0 && seqBefore(h.seq, f.held[j-1].seq) {
				t.Fatalf("flow %d (next %d) holds %v", i, f.next, f.held)
			}
			bytes += int(h.end - h.seq)
		}
		if bytes != f.bytes || bytes > reorderMaxBytes {
			t.Fatalf("flow %d holds %d payload bytes, counted %d, bound %d", i, bytes, f.bytes, reorderMaxBytes)
		}
		if len(f.held) > 0 && f.since.IsZero() {
			t.Fatalf("flow %d holds segments without a deadline", i)
		}
	}
}

// checkEchoWorks sends an echo request with sequence number seq through
// the link and reads until its reply, discarding what else the stack sent
// (RSTs, ICMP errors, SYN-ACKs). It fails t if no reply comes within 5 s
// or if the outbound queue exceeds its bound.
func checkEchoWorks(t *testing.T, n *Net, dev *tunDevice, seq int) {
	t.Helper()
	req := echoRequest(t, linkPeer4, linkLocal4, seq&0xffff, 0)
	if _, err := dev.Write([][]byte{req}, 0); err != nil {
		t.Fatalf("echo request: %v", err)
	}
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 1500)
	}
	sizes := make([]int, len(bufs))
	deadline := time.Now().Add(5 * time.Second)
	for {
		n.ep.qmu.Lock()
		queued := len(n.ep.queue)
		n.ep.qmu.Unlock()
		if queued > maxQueuedPackets {
			t.Fatalf("outbound queue holds %d packets, bound %d", queued, maxQueuedPackets)
		}
		if queued == 0 {
			// Read would block; the reply is not queued yet.
			if time.Now().After(deadline) {
				t.Fatal("no echo reply within 5s of the fuzz input")
			}
			time.Sleep(100 * time.Microsecond)
			continue
		}
		k, err := dev.Read(bufs, sizes, 0)
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		for i := range k {
			if isEchoReply(bufs[i][:sizes[i]], seq&0xffff) {
				return
			}
		}
	}
}

// isEchoReply reports whether pkt is an IPv4 ICMP echo reply from
// linkLocal4 with sequence number seq.
func isEchoReply(pkt []byte, seq int) bool {
	if len(pkt) < header.IPv4MinimumSize || header.IPVersion(pkt) != 4 {
		return false
	}
	ip := header.IPv4(pkt)
	if !ip.IsValid(len(pkt)) || ip.Protocol() != uint8(header.ICMPv4ProtocolNumber) || ip.SourceAddress() != tcpip.AddrFrom4(linkLocal4.As4()) {
		return false
	}
	icmp := header.ICMPv4(ip.Payload())
	return len(icmp) >= header.ICMPv4MinimumSize && icmp.Type() == header.ICMPv4EchoReply && int(icmp.Sequence()) == seq
}

// tcpSegment returns an IPv4 or IPv6 packet with a TCP segment from src
// (port 40000) to dst:port with the given flags and payload, checksums
// set.
func tcpSegment(src, dst netip.Addr, port uint16, flags header.TCPFlags, payload []byte) []byte {
	tcp := make([]byte, header.TCPMinimumSize+len(payload))
	header.TCP(tcp).Encode(&header.TCPFields{
		SrcPort:    40000,
		DstPort:    port,
		SeqNum:     1,
		AckNum:     1,
		DataOffset: header.TCPMinimumSize,
		Flags:      flags,
		WindowSize: 65535,
	})
	copy(tcp[header.TCPMinimumSize:], payload)
	return l4Packet(src, dst, header.TCPProtocolNumber, tcp)
}

// udpPacket returns an IPv4 or IPv6 packet with a UDP datagram from src
// (port 40000) to dst:port, checksums set.
func udpPacket(src, dst netip.Addr, port uint16, payload []byte) []byte {
	udp := make([]byte, header.UDPMinimumSize+len(payload))
	header.UDP(udp).Encode(&header.UDPFields{SrcPort: 40000, DstPort: port, Length: uint16(len(udp))})
	copy(udp[header.UDPMinimumSize:], payload)
	return l4Packet(src, dst, header.UDPProtocolNumber, udp)
}

// l4Packet sets the transport checksum of l4 (TCP or UDP; other
// protocols carry their own) and wraps it in an IPv4 or IPv6 header with
// ipPacket.
func l4Packet(src, dst netip.Addr, proto tcpip.TransportProtocolNumber, l4 []byte) []byte {
	s, d := tcpip.AddrFromSlice(src.AsSlice()), tcpip.AddrFromSlice(dst.AsSlice())
	xsum := header.PseudoHeaderChecksum(proto, s, d, uint16(len(l4)))
	switch proto {
	case header.TCPProtocolNumber:
		t := header.TCP(l4)
		t.SetChecksum(^t.CalculateChecksum(xsum))
	case header.UDPProtocolNumber:
		u := header.UDP(l4)
		u.SetChecksum(^u.CalculateChecksum(xsum))
	}
	return ipPacket(src, dst, 64, uint8(proto), l4)
}

// icmpEcho returns an IPv4 or IPv6 packet with an ICMP echo request from
// src to dst with sequence number seq, checksums set.
func icmpEcho(src, dst netip.Addr, seq uint16) []byte {
	body := []byte("wgkit fuzz seed")
	if src.Is4() {
		m := make([]byte, header.ICMPv4MinimumSize+len(body))
		icmp := header.ICMPv4(m)
		icmp.SetType(header.ICMPv4Echo)
		icmp.SetIdent(7)
		icmp.SetSequence(seq)
		copy(icmp.Payload(), body)
		icmp.SetChecksum(header.ICMPv4Checksum(icmp, 0))
		return l4Packet(src, dst, header.ICMPv4ProtocolNumber, m)
	}
	m := make([]byte, header.ICMPv6EchoMinimumSize+len(body))
	icmp := header.ICMPv6(m)
	icmp.SetType(header.ICMPv6EchoRequest)
	icmp.SetIdent(7)
	icmp.SetSequence(seq)
	copy(icmp.MessageBody(), body)
	icmp.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
		Header: icmp,
		Src:    tcpip.AddrFrom16(src.As16()),
		Dst:    tcpip.AddrFrom16(dst.As16()),
	}))
	return l4Packet(src, dst, header.ICMPv6ProtocolNumber, m)
}

// withIPv4Options inserts opts (a multiple of 4 bytes) after pkt's
// 20-byte IPv4 header and fixes the lengths and checksum.
func withIPv4Options(pkt, opts []byte) []byte {
	out := append(append(append([]byte(nil), pkt[:header.IPv4MinimumSize]...), opts...), pkt[header.IPv4MinimumSize:]...)
	ip := header.IPv4(out)
	ip.SetHeaderLength(uint8(header.IPv4MinimumSize + len(opts)))
	ip.SetTotalLength(uint16(len(out)))
	ip.SetChecksum(0)
	ip.SetChecksum(^ip.CalculateChecksum())
	return out
}

// withIPv6Ext inserts one extension header (its next-header byte is set
// here) after pkt's fixed IPv6 header.
func withIPv6Ext(pkt []byte, extType uint8, ext []byte) []byte {
	ext = append([]byte(nil), ext...)
	ext[0] = pkt[6] // the extension's next header is the old one
	out := append(append(append([]byte(nil), pkt[:header.IPv6MinimumSize]...), ext...), pkt[header.IPv6MinimumSize:]...)
	out[6] = extType
	binary.BigEndian.PutUint16(out[4:], uint16(len(out)-header.IPv6MinimumSize))
	return out
}

// fragments4 cuts an IPv4 packet's payload into two fragments at off
// (a multiple of 8).
func fragments4(pkt []byte, off int) (first, second []byte) {
	hdr := pkt[:header.IPv4MinimumSize]
	payload := pkt[header.IPv4MinimumSize:]
	mk := func(part []byte, fragOff int, more bool) []byte {
		out := append(append([]byte(nil), hdr...), part...)
		ip := header.IPv4(out)
		ip.SetTotalLength(uint16(len(out)))
		ip.SetID(0x4242)
		flags := uint8(0)
		if more {
			flags = header.IPv4FlagMoreFragments
		}
		ip.SetFlagsFragmentOffset(flags, uint16(fragOff))
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		return out
	}
	return mk(payload[:off], 0, true), mk(payload[off:], off, false)
}

// linkFuzzSeeds returns the fuzz seeds: interesting inbound packets.
func linkFuzzSeeds(tb testing.TB) [][]byte {
	tb.Helper()
	big := make([]byte, 600)
	for i := range big {
		big[i] = byte(i)
	}
	echo4 := icmpEcho(linkPeer4, linkLocal4, 1)
	echo6 := icmpEcho(linkPeer6, linkLocal6, 1)
	syn4 := tcpSegment(linkPeer4, linkLocal4, 80, header.TCPFlagSyn, nil)
	syn6 := tcpSegment(linkPeer6, linkLocal6, 80, header.TCPFlagSyn, nil)
	data4 := tcpSegment(linkPeer4, linkLocal4, 80, header.TCPFlagAck|header.TCPFlagPsh, big)
	udp4 := udpPacket(linkPeer4, linkLocal4, 53, []byte("query"))
	udp6 := udpPacket(linkPeer6, linkLocal6, 53, []byte("query"))
	bigUDP := udpPacket(linkPeer4, linkLocal4, 53, big)
	frag1, frag2 := fragments4(bigUDP, 296)

	seeds := [][]byte{
		{}, {0x45}, {0x60}, {0xff, 0xff},
		echo4, echo6, syn4, syn6, data4, udp4, udp6, frag1, frag2,
	}
	// Segments of the flow the fuzz test's last batch opens a hole in:
	// one that fills it, one further above, a FIN and an RST above it,
	// and one that wraps the sequence space.
	for _, s := range []struct {
		s     seg
		flags header.TCPFlags
	}{
		{seg{40000, 101, 900}, 0}, {seg{40000, 2001, 100}, 0},
		{seg{40000, 1101, 0}, header.TCPFlagFin}, {seg{40000, 1101, 0}, header.TCPFlagRst},
		{seg{40000, 1<<32 - 50, 100}, 0},
	} {
		seeds = append(seeds, dataSegment(false, s.s, s.flags))
	}
	// Truncated: inside the IP header, inside the transport header.
	seeds = append(seeds, echo4[:10], syn4[:30], syn6[:20], syn6[:50], udp6[:44])
	// Bad checksums: the link does not check them (WireGuard authenticated
	// the bytes), so the stack must cope with whatever arrives.
	badSum := append([]byte(nil), data4...)
	badSum[header.IPv4MinimumSize+16] ^= 0xff
	badIPSum := append([]byte(nil), syn4...)
	badIPSum[10] ^= 0xff
	seeds = append(seeds, badSum, badIPSum)
	// Bad lengths: total length above and below the bytes, header length
	// below 20 and beyond the packet, IPv6 payload length too long, UDP
	// length beyond the datagram, TCP data offset beyond the segment.
	long := append([]byte(nil), udp4...)
	binary.BigEndian.PutUint16(long[2:], 1400)
	short := append([]byte(nil), data4...)
	binary.BigEndian.PutUint16(short[2:], 24)
	ihlSmall := append([]byte(nil), echo4...)
	ihlSmall[0] = 0x44
	ihlBig := append([]byte(nil), echo4...)
	ihlBig[0] = 0x4f
	v6long := append([]byte(nil), udp6...)
	binary.BigEndian.PutUint16(v6long[4:], 0xffff)
	udpLen := append([]byte(nil), udp4...)
	binary.BigEndian.PutUint16(udpLen[header.IPv4MinimumSize+4:], 0xfff0)
	doff := append([]byte(nil), syn4...)
	doff[header.IPv4MinimumSize+12] = 0xf0
	seeds = append(seeds, long, short, ihlSmall, ihlBig, v6long, udpLen, doff)
	// Fragments: overlapping, a tiny first fragment, a fragment at the
	// largest offset, the second fragment alone.
	overlap := append([]byte(nil), frag2...)
	header.IPv4(overlap).SetFlagsFragmentOffset(0, 8)
	maxOff := append([]byte(nil), frag2...)
	header.IPv4(maxOff).SetFlagsFragmentOffset(header.IPv4FlagMoreFragments, 0xfff8)
	tiny, _ := fragments4(syn4, 8)
	seeds = append(seeds, overlap, maxOff, tiny)
	// IPv4 options: record route, timestamp, router alert, a bad length.
	seeds = append(seeds,
		withIPv4Options(echo4, []byte{7, 7, 4, 0, 0, 0, 0, 0}),
		withIPv4Options(syn4, []byte{68, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0}),
		withIPv4Options(udp4, []byte{148, 4, 0, 0}),
		withIPv4Options(echo4, []byte{7, 0xff, 4, 0}),
	)
	// IPv6 extension headers: hop-by-hop with a router alert, routing
	// type 0, a fragment header, destination options with an unknown
	// option that asks for an ICMP error, a too-long header length.
	seeds = append(seeds,
		withIPv6Ext(echo6, 0, []byte{0, 0, 5, 2, 0, 0, 1, 0}),
		withIPv6Ext(udp6, 43, []byte{0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}),
		withIPv6Ext(syn6, 44, []byte{0, 0, 0, 1, 0, 0, 0x42, 0x42}),
		withIPv6Ext(echo6, 60, []byte{0, 0, 0x80, 2, 0, 0, 1, 0}),
		withIPv6Ext(udp6, 60, []byte{0, 0xff, 1, 4, 0, 0, 0, 0}),
	)
	return seeds
}
