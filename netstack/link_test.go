package netstack

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wgkit/wgkit/internal/udpbind"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// The tests in this file drive the link (endpoint and tunDevice) directly,
// without a WireGuard device: they write IP packets as the engine would
// and read what the stack sends back.

var (
	linkLocal4 = netip.MustParseAddr("10.9.0.1")
	linkPeer4  = netip.MustParseAddr("10.9.0.2")
	linkLocal6 = netip.MustParseAddr("fd00:9::1")
	linkPeer6  = netip.MustParseAddr("fd00:9::2")
)

// newLinkTest returns a stack with the link's local addresses and its
// tun.Device, both closed at cleanup.
func newLinkTest(t testing.TB) (*Net, *tunDevice) {
	t.Helper()
	n := &Net{ep: newEndpoint(1420), done: make(chan struct{})}
	st, err := n.newStack([]netip.Prefix{
		netip.PrefixFrom(linkLocal4, 24),
		netip.PrefixFrom(linkLocal6, 64),
	})
	if err != nil {
		t.Fatal(err)
	}
	n.stack = st
	dev := newTUNDevice(n.ep, 1420, func() string { return "test" })
	t.Cleanup(func() {
		dev.Close()
		st.Close()
		st.Wait()
	})
	if ev := <-dev.Events(); ev != 1 {
		t.Errorf("first event = %v, want EventUp", ev)
	}
	return n, dev
}

// echoRequest returns an IPv4 or IPv6 packet carrying an ICMP echo request
// with sequence number seq, leaving offset bytes of headroom.
func echoRequest(t *testing.T, src, dst netip.Addr, seq, offset int) []byte {
	t.Helper()
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: 7, Seq: seq, Data: []byte("wgkit link test")}}
	var psh []byte
	if src.Is6() {
		msg.Type = ipv6.ICMPTypeEchoRequest
		psh = icmp.IPv6PseudoHeader(src.AsSlice(), dst.AsSlice())
	}
	body, err := msg.Marshal(psh)
	if err != nil {
		t.Fatal(err)
	}
	if src.Is4() {
		pkt := make([]byte, offset+header.IPv4MinimumSize+len(body))
		ip := header.IPv4(pkt[offset:])
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(len(pkt) - offset),
			TTL:         64,
			Protocol:    uint8(header.ICMPv4ProtocolNumber),
			SrcAddr:     tcpip.AddrFrom4(src.As4()),
			DstAddr:     tcpip.AddrFrom4(dst.As4()),
		})
		ip.SetChecksum(^ip.CalculateChecksum())
		copy(pkt[offset+header.IPv4MinimumSize:], body)
		return pkt
	}
	pkt := make([]byte, offset+header.IPv6MinimumSize+len(body))
	ip := header.IPv6(pkt[offset:])
	ip.Encode(&header.IPv6Fields{
		PayloadLength:     uint16(len(body)),
		TransportProtocol: header.ICMPv6ProtocolNumber,
		HopLimit:          64,
		SrcAddr:           tcpip.AddrFrom16(src.As16()),
		DstAddr:           tcpip.AddrFrom16(dst.As16()),
	})
	copy(pkt[offset+header.IPv6MinimumSize:], body)
	return pkt
}

// echoReplySeq parses an echo reply packet and returns its sequence number.
func echoReplySeq(t *testing.T, pkt []byte) (src, dst netip.Addr, seq int) {
	t.Helper()
	var proto int
	var payload []byte
	switch header.IPVersion(pkt) {
	case 4:
		ip := header.IPv4(pkt)
		src, dst = netip.AddrFrom4(ip.SourceAddress().As4()), netip.AddrFrom4(ip.DestinationAddress().As4())
		proto, payload = 1, ip.Payload()
	case 6:
		ip := header.IPv6(pkt)
		src, dst = netip.AddrFrom16(ip.SourceAddress().As16()), netip.AddrFrom16(ip.DestinationAddress().As16())
		proto, payload = 58, ip.Payload()
	default:
		t.Fatalf("not an IP packet: % x", pkt)
	}
	m, err := icmp.ParseMessage(proto, payload)
	if err != nil {
		t.Fatalf("parse ICMP: %v", err)
	}
	echo, ok := m.Body.(*icmp.Echo)
	if !ok || (m.Type != ipv4.ICMPTypeEchoReply && m.Type != ipv6.ICMPTypeEchoReply) {
		t.Fatalf("got ICMP %v, want an echo reply", m.Type)
	}
	return src, dst, echo.Seq
}

func TestLinkEchoBothFamilies(t *testing.T) {
	tests := []struct {
		name        string
		local, peer netip.Addr
	}{
		{"ipv4", linkLocal4, linkPeer4},
		{"ipv6", linkLocal6, linkPeer6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, dev := newLinkTest(t)
			const offset = 16
			k, err := dev.Write([][]byte{echoRequest(t, tt.peer, tt.local, 1, offset)}, offset)
			if err != nil || k != 1 {
				t.Fatalf("Write = %d, %v; want 1, nil", k, err)
			}
			bufs := [][]byte{make([]byte, 2000)}
			sizes := make([]int, 1)
			k, err = readSkippingNoise(dev, bufs, sizes, offset)
			if err != nil || k != 1 {
				t.Fatalf("Read = %d, %v; want 1, nil", k, err)
			}
			src, dst, seq := echoReplySeq(t, bufs[0][offset:offset+sizes[0]])
			if src != tt.local || dst != tt.peer || seq != 1 {
				t.Errorf("reply %s -> %s seq %d, want %s -> %s seq 1", src, dst, seq, tt.local, tt.peer)
			}
		})
	}
}

// readSkippingNoise reads like dev.Read but drops the IPv6 control
// packets (MLD reports, router solicitations) the stack sends by itself,
// which would make the tests depend on timing.
func readSkippingNoise(dev *tunDevice, bufs [][]byte, sizes []int, offset int) (int, error) {
	for {
		k, err := dev.Read(bufs, sizes, offset)
		if err != nil {
			return k, err
		}
		out := 0
		for i := range k {
			pkt := bufs[i][offset : offset+sizes[i]]
			if header.IPVersion(pkt) == 6 && header.IsV6MulticastAddress(header.IPv6(pkt).DestinationAddress()) {
				continue
			}
			bufs[out], bufs[i] = bufs[i], bufs[out]
			sizes[out] = sizes[i]
			out++
		}
		if out > 0 {
			return out, nil
		}
	}
}

// TestLinkBatches checks that a Write of many packets is answered by Reads
// that return whole batches, in order.
func TestLinkBatches(t *testing.T) {
	_, dev := newLinkTest(t)
	const count = defaultBatchSize + 8
	var in [][]byte
	for i := range count {
		in = append(in, echoRequest(t, linkPeer4, linkLocal4, i, 0))
	}
	if k, err := dev.Write(in, 0); err != nil || k != count {
		t.Fatalf("Write = %d, %v; want %d, nil", k, err, count)
	}
	bufs := make([][]byte, 2*defaultBatchSize)
	for i := range bufs {
		bufs[i] = make([]byte, 1500)
	}
	sizes := make([]int, len(bufs))
	var gotSeqs, gotBatches []int
	for len(gotSeqs) < count {
		k, err := readSkippingNoise(dev, bufs, sizes, 0)
		if err != nil {
			t.Fatal(err)
		}
		gotBatches = append(gotBatches, k)
		for i := range k {
			_, _, seq := echoReplySeq(t, bufs[i][:sizes[i]])
			gotSeqs = append(gotSeqs, seq)
		}
	}
	var wantSeqs []int
	for i := range count {
		wantSeqs = append(wantSeqs, i)
	}
	if diff := cmp.Diff(wantSeqs, gotSeqs); diff != "" {
		t.Errorf("reply sequence numbers (-want +got):\n%s", diff)
	}
	// All replies were queued before the first Read, so the first Read
	// returns all of them: it fills as many buffers as it is given.
	if gotBatches[0] != count {
		t.Errorf("first Read returned %d packets, want %d (batches %v)", gotBatches[0], count, gotBatches)
	}
	if dev.BatchSize() != defaultBatchSize || defaultBatchSize < 2 {
		t.Errorf("BatchSize() = %d, want %d > 1", dev.BatchSize(), defaultBatchSize)
	}
}

// TestLinkQueueBound checks that the outbound queue drops beyond its bound
// instead of growing.
func TestLinkQueueBound(t *testing.T) {
	n, dev := newLinkTest(t)
	var in [][]byte
	for i := range maxQueuedPackets + 10 {
		in = append(in, echoRequest(t, linkPeer4, linkLocal4, i, 0))
	}
	if _, err := dev.Write(in, 0); err != nil {
		t.Fatal(err)
	}
	n.ep.qmu.Lock()
	queued := len(n.ep.queue)
	n.ep.qmu.Unlock()
	if queued != maxQueuedPackets {
		t.Errorf("queued %d packets, want the bound %d", queued, maxQueuedPackets)
	}
	if d := n.ep.dropped.Load(); d < 10 {
		t.Errorf("dropped = %d, want >= 10", d)
	}
}

func TestLinkSmallBufferDropsPacket(t *testing.T) {
	n, dev := newLinkTest(t)
	if _, err := dev.Write([][]byte{echoRequest(t, linkPeer4, linkLocal4, 1, 0)}, 0); err != nil {
		t.Fatal(err)
	}
	before := n.ep.dropped.Load()
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Too small for the reply: dropped, then Read blocks until Close.
		_, err := dev.Read([][]byte{make([]byte, 10)}, []int{0}, 0)
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Read after Close = %v, want os.ErrClosed", err)
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for n.ep.dropped.Load() == before && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n.ep.dropped.Load() == before {
		t.Error("oversized packet was not dropped")
	}
	dev.Close()
	<-done
}

func TestLinkInvalidPacketsDropped(t *testing.T) {
	n, dev := newLinkTest(t)
	k, err := dev.Write([][]byte{{0x00, 0x01}, {}, {0x50, 0, 0, 0}}, 0)
	if err != nil || k != 3 {
		t.Fatalf("Write = %d, %v; want 3, nil", k, err)
	}
	if d := n.ep.dropped.Load(); d != 2 {
		t.Errorf("dropped = %d, want 2 (the empty buffer is skipped)", d)
	}
}

func TestLinkClose(t *testing.T) {
	_, dev := newLinkTest(t)
	errc := make(chan error, 1)
	go func() {
		_, err := dev.Read([][]byte{make([]byte, 1500)}, []int{0}, 0)
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	if err := dev.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("blocked Read returned %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
	if _, err := dev.Write([][]byte{echoRequest(t, linkPeer4, linkLocal4, 1, 0)}, 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write after Close = %v, want os.ErrClosed", err)
	}
	if _, ok := <-dev.Events(); ok {
		t.Error("Events channel still open after Close")
	}
	if err := dev.Close(); err == nil {
		t.Error("second Close returned nil, want an error wrapping net.ErrClosed")
	}
}

// TestCopyPacketSpansViews checks copyPacket on a packet whose bytes are
// split over several views with a header offset.
func TestCopyPacketSpansViews(t *testing.T) {
	want := make([]byte, 3000)
	for i := range want {
		want[i] = byte(i)
	}
	binary.BigEndian.PutUint16(want, 0x4500)
	pkt := newTestPacket(want)
	defer pkt.DecRef()
	got := make([]byte, 4000)
	k, ok := copyPacket(got, pkt)
	if !ok || k != len(want) {
		t.Fatalf("copyPacket = %d, %v; want %d, true", k, ok, len(want))
	}
	if diff := cmp.Diff(want, got[:k]); diff != "" {
		t.Errorf("copied bytes (-want +got):\n%s", diff)
	}
	if _, ok := copyPacket(got[:len(want)-1], pkt); ok {
		t.Error("copyPacket into a short buffer succeeded")
	}
}

// newTestPacket returns a packet buffer holding b: the first 20 bytes as a
// pushed network header, the rest as a payload of three views.
func newTestPacket(b []byte) *stack.PacketBuffer {
	var payload buffer.Buffer
	rest := b[20:]
	third := len(rest) / 3
	payload.Append(buffer.NewViewWithData(rest[:third]))
	payload.Append(buffer.NewViewWithData(rest[third : 2*third]))
	payload.Append(buffer.NewViewWithData(rest[2*third:]))
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: 64, Payload: payload})
	copy(pkt.NetworkHeader().Push(20), b[:20])
	return pkt
}

// gsoTest describes a TCP super-packet as the stack hands it to a link
// that advertises host GSO.
type gsoTest struct {
	v6      bool
	payload []byte
	mss     int
	flags   header.TCPFlags
}

const (
	gsoSeq  = 1000
	gsoIPID = 0xfffe // wraps while segmenting
)

// tcpOptions is a timestamp option padded to 12 bytes, as gVisor sends it.
var tcpOptions = []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}

// packet builds the super-packet: headers pushed into the packet buffer,
// the payload in three views, a partial (pseudo-header) TCP checksum.
func (g gsoTest) packet() *stack.PacketBuffer {
	var payload buffer.Buffer
	third := len(g.payload) / 3
	for _, part := range [][]byte{g.payload[:third], g.payload[third : 2*third], g.payload[2*third:]} {
		if len(part) > 0 {
			payload.Append(buffer.NewViewWithData(part))
		}
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: maxHeaderSize, Payload: payload})
	tcpLen := header.TCPMinimumSize + len(tcpOptions)
	tcp := header.TCP(pkt.TransportHeader().Push(tcpLen))
	tcp.Encode(&header.TCPFields{
		SrcPort:    4000,
		DstPort:    80,
		SeqNum:     gsoSeq,
		AckNum:     77,
		DataOffset: uint8(tcpLen),
		Flags:      g.flags,
		WindowSize: 512,
	})
	copy(tcp[header.TCPMinimumSize:], tcpOptions)
	src, dst := linkLocal4, linkPeer4
	if g.v6 {
		src, dst = linkLocal6, linkPeer6
	}
	srcAddr, dstAddr := tcpip.AddrFromSlice(src.AsSlice()), tcpip.AddrFromSlice(dst.AsSlice())
	tcp.SetChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, srcAddr, dstAddr, uint16(tcpLen+len(g.payload))))
	gso := stack.GSO{NeedsCsum: true, CsumOffset: header.TCPChecksumOffset, MSS: uint16(g.mss), MaxSize: gsoMaxSize}
	if g.v6 {
		ip := header.IPv6(pkt.NetworkHeader().Push(header.IPv6MinimumSize))
		ip.Encode(&header.IPv6Fields{
			PayloadLength:     uint16(tcpLen + len(g.payload)),
			TransportProtocol: header.TCPProtocolNumber,
			HopLimit:          64,
			SrcAddr:           srcAddr,
			DstAddr:           dstAddr,
		})
		gso.Type, gso.L3HdrLen = stack.GSOTCPv6, header.IPv6MinimumSize
		pkt.NetworkProtocolNumber = header.IPv6ProtocolNumber
	} else {
		ip := header.IPv4(pkt.NetworkHeader().Push(header.IPv4MinimumSize))
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(pkt.Size()),
			ID:          gsoIPID,
			Flags:       header.IPv4FlagDontFragment,
			TTL:         64,
			Protocol:    uint8(header.TCPProtocolNumber),
			SrcAddr:     srcAddr,
			DstAddr:     dstAddr,
		})
		ip.SetChecksum(^ip.CalculateChecksum())
		gso.Type, gso.L3HdrLen = stack.GSOTCPv4, header.IPv4MinimumSize
		pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
	}
	pkt.TransportProtocolNumber = header.TCPProtocolNumber
	pkt.GSOOptions = gso
	return pkt
}

// checkSegments verifies that segs are the super-packet g cut into
// segments: valid IP headers, valid TCP checksums, consecutive sequence
// numbers, first- and last-segment flags, and the payload in order.
func (g gsoTest) checkSegments(t *testing.T, segs [][]byte) {
	t.Helper()
	wantSegs := max(1, (len(g.payload)+g.mss-1)/g.mss)
	if len(segs) != wantSegs {
		t.Fatalf("got %d segments, want %d", len(segs), wantSegs)
	}
	var got []byte
	for i, seg := range segs {
		var src, dst tcpip.Address
		var tcp header.TCP
		if g.v6 {
			ip := header.IPv6(seg)
			if !ip.IsValid(len(seg)) || int(ip.PayloadLength()) != len(seg)-header.IPv6MinimumSize {
				t.Fatalf("segment %d: bad IPv6 header (payload length %d, size %d)", i, ip.PayloadLength(), len(seg))
			}
			src, dst, tcp = ip.SourceAddress(), ip.DestinationAddress(), header.TCP(ip.Payload())
		} else {
			ip := header.IPv4(seg)
			if !ip.IsValid(len(seg)) || !ip.IsChecksumValid() || int(ip.TotalLength()) != len(seg) {
				t.Fatalf("segment %d: bad IPv4 header (total length %d, size %d)", i, ip.TotalLength(), len(seg))
			}
			if want := uint16(gsoIPID + i); ip.ID() != want {
				t.Errorf("segment %d: IP ID %#x, want %#x", i, ip.ID(), want)
			}
			src, dst, tcp = ip.SourceAddress(), ip.DestinationAddress(), header.TCP(ip.Payload())
		}
		payload := tcp.Payload()
		if len(payload) > g.mss {
			t.Errorf("segment %d: %d payload bytes, more than the MSS %d", i, len(payload), g.mss)
		}
		if !tcp.IsChecksumValid(src, dst, checksum.Checksum(payload, 0), uint16(len(payload))) {
			t.Errorf("segment %d: bad TCP checksum %#x", i, tcp.Checksum())
		}
		if want := uint32(gsoSeq + i*g.mss); tcp.SequenceNumber() != want {
			t.Errorf("segment %d: seq %d, want %d", i, tcp.SequenceNumber(), want)
		}
		wantFlags := g.flags
		if i > 0 {
			wantFlags &^= header.TCPFlagCwr
		}
		if i < len(segs)-1 {
			wantFlags &^= header.TCPFlagFin | header.TCPFlagPsh
		}
		if tcp.Flags() != wantFlags {
			t.Errorf("segment %d: flags %v, want %v", i, tcp.Flags(), wantFlags)
		}
		if diff := cmp.Diff(tcpOptions, []byte(tcp.Options())); diff != "" {
			t.Errorf("segment %d: TCP options (-want +got):\n%s", i, diff)
		}
		got = append(got, payload...)
	}
	if !bytes.Equal(got, g.payload) {
		t.Errorf("reassembled payload differs: got %d bytes, want %d", len(got), len(g.payload))
	}
}

func patterned(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

// TestWritePacketSegments cuts TCP super-packets of boundary sizes into
// segments in one call, for both families.
func TestWritePacketSegments(t *testing.T) {
	const mss = 1368
	all := header.TCPFlagAck | header.TCPFlagPsh | header.TCPFlagFin | header.TCPFlagCwr
	sizes := []struct {
		name string
		n    int
	}{
		{"empty", 0},
		{"one byte", 1},
		{"mss-1", mss - 1},
		{"mss", mss},
		{"mss+1", mss + 1},
		{"two mss", 2 * mss},
		{"largest", 65535 - header.IPv6MinimumSize - header.TCPMinimumSize - len(tcpOptions)},
	}
	for _, v6 := range []bool{false, true} {
		for _, size := range sizes {
			name := fmt.Sprintf("v4/%s", size.name)
			if v6 {
				name = fmt.Sprintf("v6/%s", size.name)
			}
			t.Run(name, func(t *testing.T) {
				g := gsoTest{v6: v6, payload: patterned(size.n), mss: mss, flags: all}
				pkt := g.packet()
				defer pkt.DecRef()
				const offset = 16
				bufs := make([][]byte, 64)
				for i := range bufs {
					bufs[i] = make([]byte, offset+1500)
				}
				sizes := make([]int, len(bufs))
				k, next, ok := writePacket(bufs, sizes, offset, pkt, 0)
				if !ok || next != 0 {
					t.Fatalf("writePacket = %d, %d, %v; want next 0 and ok", k, next, ok)
				}
				var segs [][]byte
				for i := range k {
					segs = append(segs, bufs[i][offset:offset+sizes[i]])
				}
				g.checkSegments(t, segs)
			})
		}
	}
}

// TestReadCarriesSuperPacket reads a queued super-packet and a small
// packet behind it through buffers too few for the super-packet: each
// Read continues where the previous one stopped, and the small packet
// comes last.
func TestReadCarriesSuperPacket(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, nbufs := range []int{1, 3, 7} {
			t.Run(fmt.Sprintf("v6=%v/bufs=%d", v6, nbufs), func(t *testing.T) {
				e := newEndpoint(1420)
				defer e.closeQueue()
				g := gsoTest{v6: v6, payload: patterned(20*1000 + 11), mss: 1000, flags: header.TCPFlagAck | header.TCPFlagPsh}
				super := g.packet()
				want := echoRequest(t, linkLocal4, linkPeer4, 9, 0)
				small := newTestPacket(want)
				var l stack.PacketBufferList
				l.PushBack(super)
				l.PushBack(small)
				if n, err := e.WritePackets(l); n != 2 || err != nil {
					t.Fatalf("WritePackets = %d, %v; want 2, nil", n, err)
				}
				l.DecRef()
				bufs := make([][]byte, nbufs)
				for i := range bufs {
					bufs[i] = make([]byte, 1500)
				}
				sizes := make([]int, nbufs)
				var segs [][]byte
				var last []byte
				for reads := 0; last == nil && reads < 100; reads++ {
					k, err := e.readBatch(bufs, sizes, 0)
					if err != nil {
						t.Fatal(err)
					}
					if k != nbufs && len(segs)+k <= 21 {
						t.Errorf("Read %d returned %d packets with more queued, want %d", reads, k, nbufs)
					}
					for i := range k {
						pkt := bytes.Clone(bufs[i][:sizes[i]])
						if len(segs) < 21 {
							segs = append(segs, pkt)
						} else {
							last = pkt
						}
					}
				}
				g.checkSegments(t, segs)
				if diff := cmp.Diff(want, last); diff != "" {
					t.Errorf("packet queued behind the super-packet (-want +got):\n%s", diff)
				}
				if d := e.dropped.Load(); d != 0 {
					t.Errorf("dropped = %d, want 0", d)
				}
			})
		}
	}
}

// TestWritePacketSmallBuffer drops a super-packet whose segments do not
// fit the engine's buffers.
func TestWritePacketSmallBuffer(t *testing.T) {
	g := gsoTest{payload: patterned(3000), mss: 1400}
	pkt := g.packet()
	defer pkt.DecRef()
	bufs := [][]byte{make([]byte, 1000), make([]byte, 1000)}
	if _, _, ok := writePacket(bufs, make([]int, 2), 0, pkt, 0); ok {
		t.Error("writePacket into short buffers succeeded")
	}
}

// TestWritePacketHandshakeSegment passes the segments a TCP endpoint
// sends during its handshake besides the SYN: GSO options but MSS 0 (the
// sender that sets the MSS does not exist yet). They have no payload and
// go as one segment with a complete checksum; the RST with which a
// SYN-SENT answers a challenge ACK is one of them, and dropping it left
// such a dial hanging (TestDialPortHeldByPeer). A payload with MSS 0
// has no segment size to be cut to and is dropped.
func TestWritePacketHandshakeSegment(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags header.TCPFlags
	}{
		{"rst", header.TCPFlagRst},
		{"ack", header.TCPFlagAck},
		{"rst-ack", header.TCPFlagRst | header.TCPFlagAck},
	} {
		for _, v6 := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/v6=%v", tc.name, v6), func(t *testing.T) {
				g := gsoTest{v6: v6, flags: tc.flags}
				pkt := g.packet()
				defer pkt.DecRef()
				bufs := [][]byte{make([]byte, 1500), make([]byte, 1500)}
				sizes := make([]int, len(bufs))
				k, next, ok := writePacket(bufs, sizes, 0, pkt, 0)
				if k != 1 || next != 0 || !ok {
					t.Fatalf("writePacket = %d, %d, %v; want 1, 0, true", k, next, ok)
				}
				g.mss = 1 // checkSegments' segment count for an empty payload
				g.checkSegments(t, [][]byte{bufs[0][:sizes[0]]})
			})
		}
	}
	t.Run("payload", func(t *testing.T) {
		g := gsoTest{payload: patterned(100), flags: header.TCPFlagAck}
		pkt := g.packet()
		defer pkt.DecRef()
		if k, _, ok := writePacket([][]byte{make([]byte, 1500)}, make([]int, 1), 0, pkt, 0); ok || k != 0 {
			t.Errorf("writePacket = %d, %v; want 0, false for a payload with MSS 0", k, ok)
		}
	})
}

// recordingDispatcher records the sizes of the packets the link delivers.
type recordingDispatcher struct{ sizes []int }

func (d *recordingDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	d.sizes = append(d.sizes, pkt.Data().Size())
}

func (*recordingDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// TestDeliverCoalesces checks GRO on the inbound path: consecutive
// segments of one flow in one Write reach the stack as one packet.
func TestDeliverCoalesces(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			g := gsoTest{v6: v6, payload: patterned(4 * 1000), mss: 1000, flags: header.TCPFlagAck}
			pkt := g.packet()
			defer pkt.DecRef()
			bufs := make([][]byte, 4)
			for i := range bufs {
				bufs[i] = make([]byte, 1500)
			}
			sizes := make([]int, 4)
			if k, _, ok := writePacket(bufs, sizes, 0, pkt, 0); k != 4 || !ok {
				t.Fatalf("writePacket = %d, %v; want 4 segments", k, ok)
			}
			for i := range bufs {
				bufs[i] = bufs[i][:sizes[i]]
			}
			e := newEndpoint(1420)
			defer e.closeQueue()
			var d recordingDispatcher
			e.Attach(&d)
			if n, err := e.deliverBatch(bufs, 0); n != 4 || err != nil {
				t.Fatalf("deliverBatch = %d, %v; want 4, nil", n, err)
			}
			hdr := sizes[0] - 1000
			if diff := cmp.Diff([]int{hdr + 4000}, d.sizes); diff != "" {
				t.Errorf("delivered packet sizes (-want +got):\n%s", diff)
			}
		})
	}
}

// TestMaxTCPBuffer checks that Options.MaxTCPBuffer caps both TCP buffer
// ranges of the stack.
func TestMaxTCPBuffer(t *testing.T) {
	const limit = 256 << 10
	n := &Net{ep: newEndpoint(1420), done: make(chan struct{}), maxTCPBuffer: limit}
	st, err := n.newStack([]netip.Prefix{netip.PrefixFrom(linkLocal4, 24)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		st.Close()
		st.Wait()
	}()
	var rcv tcpip.TCPReceiveBufferSizeRangeOption
	if terr := st.TransportProtocolOption(tcp.ProtocolNumber, &rcv); terr != nil {
		t.Fatal(terr)
	}
	var snd tcpip.TCPSendBufferSizeRangeOption
	if terr := st.TransportProtocolOption(tcp.ProtocolNumber, &snd); terr != nil {
		t.Fatal(terr)
	}
	want := []int{tcp.MinBufferSize, limit, limit}
	if diff := cmp.Diff(want, []int{rcv.Min, rcv.Default, rcv.Max}); diff != "" {
		t.Errorf("receive buffer range (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, []int{snd.Min, snd.Default, snd.Max}); diff != "" {
		t.Errorf("send buffer range (-want +got):\n%s", diff)
	}
}

// TestBadPerformanceOptions checks that Open rejects out-of-range
// BatchSize and MaxTCPBuffer values before starting anything.
func TestBadPerformanceOptions(t *testing.T) {
	cfg, _ := pairConfigs(t, "", "")
	tests := []struct {
		name string
		opts Options
	}{
		{"negative batch", Options{BatchSize: -1}},
		{"negative buffer", Options{MaxTCPBuffer: -1}},
		{"tiny buffer", Options{MaxTCPBuffer: 1000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := Open(context.Background(), cfg, &tt.opts)
			if err == nil {
				n.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.HasPrefix(err.Error(), "netstack: open: bad ") {
				t.Errorf("error %q does not name the bad option", err)
			}
		})
	}
}

// TestBatchSizeOption checks the batch the tun.Device reports.
func TestBatchSizeOption(t *testing.T) {
	tests := []struct {
		name       string
		batch      int
		wantDevice int
	}{
		{"default", 0, defaultBatchSize},
		{"small", 4, 4},
		{"capped", 1000, maxBatchSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _ := pairConfigs(t, "", "")
			// A loopback socket: the test sends nothing, but binds no more.
			bind := udpbind.New(&udpbind.Options{BatchSize: tt.batch, ListenAddr: netip.MustParseAddr("127.0.0.1")})
			n, err := Open(testContext(t, 10*time.Second), cfg, &Options{BatchSize: tt.batch, Bind: bind})
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			if got := n.ep.batch; got != tt.wantDevice {
				t.Errorf("tun.Device batch = %d, want %d", got, tt.wantDevice)
			}
		})
	}
}
