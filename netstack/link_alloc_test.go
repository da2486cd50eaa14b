package netstack

import (
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// These tests hold the data path to its promise of no allocation per
// packet in steady state: cutting a super-packet into the engine's
// buffers, and handing a batch from the engine to the stack.

// TestWritePacketAllocs cuts a 64 KiB TCP super-packet into segments.
func TestWritePacketAllocs(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		g := gsoTest{v6: v6, payload: patterned(60000), mss: 1368, flags: header.TCPFlagAck}
		pkt := g.packet()
		defer pkt.DecRef()
		bufs := make([][]byte, 64)
		for i := range bufs {
			bufs[i] = make([]byte, 16+1500)
		}
		sizes := make([]int, len(bufs))
		allocs := testing.AllocsPerRun(100, func() {
			if _, _, ok := writePacket(bufs, sizes, 16, pkt, 0); !ok {
				t.Fatal("writePacket failed")
			}
		})
		if allocs != 0 {
			t.Errorf("v6=%v: writePacket made %v allocations per super-packet, want 0", v6, allocs)
		}
	}
}

// releasingDispatcher drops what the link delivers, as a stack that has
// consumed the packets would.
type releasingDispatcher struct{ n int }

func (d *releasingDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	d.n++
}

func (*releasingDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// TestDeliverBatchAllocs hands batches of 16 TCP segments to the link's
// inbound path. The link makes one stack.PacketBuffer per coalesced packet
// from gVisor's pools; in steady state that costs no allocation.
func TestDeliverBatchAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items, so gVisor's buffer pools allocate")
	}
	g := gsoTest{payload: patterned(16 * 1000), mss: 1000, flags: header.TCPFlagAck}
	pkt := g.packet()
	defer pkt.DecRef()
	bufs := make([][]byte, 16)
	for i := range bufs {
		bufs[i] = make([]byte, 1500)
	}
	sizes := make([]int, 16)
	if k, _, ok := writePacket(bufs, sizes, 0, pkt, 0); k != 16 || !ok {
		t.Fatalf("writePacket = %d, %v; want 16 segments", k, ok)
	}
	for i := range bufs {
		bufs[i] = bufs[i][:sizes[i]]
	}
	e := newEndpoint(1420)
	defer e.closeQueue()
	var d releasingDispatcher
	e.Attach(&d)
	allocs := testing.AllocsPerRun(200, func() {
		if n, err := e.deliverBatch(bufs, 0); n != 16 || err != nil {
			t.Fatalf("deliverBatch = %d, %v", n, err)
		}
	})
	if d.n == 0 {
		t.Fatal("nothing was delivered")
	}
	// Per batch, not per packet: a batch of 16 packets must stay below one
	// allocation per packet even counting the rare pool refill.
	if allocs >= 1 {
		t.Errorf("deliverBatch made %v allocations per batch of 16, want fewer than 1", allocs)
	}
}
