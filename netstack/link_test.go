package netstack

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
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
func newLinkTest(t *testing.T) (*Net, *tunDevice) {
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
	dev := newTUNDevice(n.ep, 1420, "test")
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
	const count = batchSize + 8
	var in [][]byte
	for i := range count {
		in = append(in, echoRequest(t, linkPeer4, linkLocal4, i, 0))
	}
	if k, err := dev.Write(in, 0); err != nil || k != count {
		t.Fatalf("Write = %d, %v; want %d, nil", k, err, count)
	}
	bufs := make([][]byte, 2*batchSize)
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
	// returns a full batch (BatchSize caps it, not len(bufs)).
	if gotBatches[0] != batchSize {
		t.Errorf("first Read returned %d packets, want %d (batches %v)", gotBatches[0], batchSize, gotBatches)
	}
	if dev.BatchSize() != batchSize || batchSize < 2 {
		t.Errorf("BatchSize() = %d, want %d > 1", dev.BatchSize(), batchSize)
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
