package netstack

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// bytesDispatcher records the packets the link delivers, whole.
type bytesDispatcher struct{ pkts [][]byte }

func (d *bytesDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	d.pkts = append(d.pkts, pkt.Data().AsRange().ToSlice())
}

func (*bytesDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// segmentsOf cuts the super-packet g into segments as readBatch does.
func segmentsOf(t *testing.T, g gsoTest) [][]byte {
	t.Helper()
	pkt := g.packet()
	defer pkt.DecRef()
	n := max(1, (len(g.payload)+g.mss-1)/g.mss)
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, 1500)
	}
	sizes := make([]int, n)
	if k, _, ok := writePacket(bufs, sizes, 0, pkt, 0); k != n || !ok {
		t.Fatalf("writePacket = %d, %v; want %d segments", k, ok, n)
	}
	for i := range bufs {
		bufs[i] = bufs[i][:sizes[i]]
	}
	return bufs
}

// TestDeliverMergesRuns hands the link batches of TCP segments and checks
// which reach the stack merged, and that a merged packet has valid
// headers and carries its segments' payloads in order. gVisor's GRO, which
// runs after the link's own merging and is looser (it ignores the window,
// merges a FIN and leaves the IPv4 checksum stale), is off here, so that
// what arrives is the link's doing; TestDeliverCoalesces covers both.
func TestDeliverMergesRuns(t *testing.T) {
	const mss = 1000
	tcpOff := func(seg []byte) int {
		if header.IPVersion(seg) == header.IPv4Version {
			return header.IPv4MinimumSize
		}
		return header.IPv6MinimumSize
	}
	tests := []struct {
		name    string
		payload int
		flags   header.TCPFlags
		edit    func(segs [][]byte) [][]byte // nil: the segments as cut
		want    []int                        // payload bytes of each delivered packet
	}{
		{name: "run", payload: 4 * mss, flags: header.TCPFlagAck, want: []int{4 * mss}},
		{name: "short last", payload: 3*mss + 10, flags: header.TCPFlagAck | header.TCPFlagPsh, want: []int{3*mss + 10}},
		{name: "one segment", payload: mss, flags: header.TCPFlagAck, want: []int{mss}},
		{
			name: "PSH ends the run", payload: 4 * mss, flags: header.TCPFlagAck,
			edit: func(s [][]byte) [][]byte {
				s[1][tcpOff(s[1])+13] |= uint8(header.TCPFlagPsh)
				return s
			},
			want: []int{2 * mss, 2 * mss},
		},
		{
			name: "gap in sequence", payload: 4 * mss, flags: header.TCPFlagAck,
			edit: func(s [][]byte) [][]byte { return append(s[:2:2], s[3]) },
			want: []int{2 * mss, mss},
		},
		{
			name: "other ACK number", payload: 4 * mss, flags: header.TCPFlagAck,
			edit: func(s [][]byte) [][]byte {
				ack := s[2][tcpOff(s[2])+8:]
				binary.BigEndian.PutUint32(ack, binary.BigEndian.Uint32(ack)+1)
				return s
			},
			want: []int{2 * mss, mss, mss},
		},
		{
			name: "other window", payload: 4 * mss, flags: header.TCPFlagAck,
			edit: func(s [][]byte) [][]byte {
				s[3][tcpOff(s[3])+15]++
				return s
			},
			want: []int{3 * mss, mss},
		},
		{
			name: "other options", payload: 3 * mss, flags: header.TCPFlagAck,
			edit: func(s [][]byte) [][]byte {
				s[1][tcpOff(s[1])+header.TCPMinimumSize+5]++ // the timestamp value
				return s
			},
			want: []int{mss, mss, mss},
		},
		{
			// Segments of another flow in between: the link merges only
			// neighbours (gVisor's GRO would merge the rest of the flow).
			name: "interleaved flow", payload: 4 * mss, flags: header.TCPFlagAck,
			edit: func(s [][]byte) [][]byte {
				other := bytes.Clone(s[0])
				other[tcpOff(other)+1]++ // the source port
				return [][]byte{s[0], s[1], other, s[2], s[3]}
			},
			want: []int{2 * mss, mss, 2 * mss},
		},
		{name: "FIN is not merged", payload: 2 * mss, flags: header.TCPFlagAck | header.TCPFlagFin, want: []int{mss, mss}},
	}
	for _, v6 := range []bool{false, true} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("v6=%v/%s", v6, tt.name), func(t *testing.T) {
				g := gsoTest{v6: v6, payload: patterned(tt.payload), mss: mss, flags: tt.flags}
				segs := segmentsOf(t, g)
				if tt.edit != nil {
					segs = tt.edit(segs)
				}
				e := newEndpoint(1420)
				defer e.closeQueue()
				e.gro.Init(false)
				e.reorder.hold = 0 // the gap would be held: TestReorder* cover that
				var d bytesDispatcher
				e.Attach(&d)
				if n, err := e.deliverBatch(segs, 0); n != len(segs) || err != nil {
					t.Fatalf("deliverBatch = %d, %v; want %d, nil", n, err, len(segs))
				}
				var got []int
				for _, p := range d.pkts {
					got = append(got, checkDelivered(t, p))
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("payload bytes per delivered packet (-want +got):\n%s", diff)
				}
			})
		}
	}
}

// checkDelivered checks the IP and TCP headers of a delivered packet
// against its size and that its payload is the patterned bytes from its
// sequence number on; it returns the payload size.
func checkDelivered(t *testing.T, p []byte) int {
	t.Helper()
	var tcp header.TCP
	if header.IPVersion(p) == header.IPv4Version {
		ip := header.IPv4(p)
		if !ip.IsValid(len(p)) || int(ip.TotalLength()) != len(p) || !ip.IsChecksumValid() {
			t.Fatalf("bad IPv4 header: total length %d, size %d", ip.TotalLength(), len(p))
		}
		tcp = header.TCP(ip.Payload())
	} else {
		ip := header.IPv6(p)
		if !ip.IsValid(len(p)) || int(ip.PayloadLength())+header.IPv6MinimumSize != len(p) {
			t.Fatalf("bad IPv6 header: payload length %d, size %d", ip.PayloadLength(), len(p))
		}
		tcp = header.TCP(ip.Payload())
	}
	payload := tcp.Payload()
	if tcp.SourcePort() == 4000 { // not the interleaved flow, whose bytes are copies
		off := int(tcp.SequenceNumber() - gsoSeq)
		if want := patterned(off + len(payload))[off:]; !bytes.Equal(payload, want) {
			t.Errorf("seq %d: payload of %d bytes is not the stream's bytes from there", tcp.SequenceNumber(), len(payload))
		}
	}
	return len(payload)
}

// TestDeliverMergedFlags checks the flags of a merged packet: the first
// segment's, with PSH if the last segment had it.
func TestDeliverMergedFlags(t *testing.T) {
	g := gsoTest{payload: patterned(3 * 1000), mss: 1000, flags: header.TCPFlagAck | header.TCPFlagPsh}
	segs := segmentsOf(t, g)
	e := newEndpoint(1420)
	defer e.closeQueue()
	var d bytesDispatcher
	e.Attach(&d)
	if _, err := e.deliverBatch(segs, 0); err != nil {
		t.Fatal(err)
	}
	if len(d.pkts) != 1 {
		t.Fatalf("delivered %d packets, want 1", len(d.pkts))
	}
	tcp := header.TCP(header.IPv4(d.pkts[0]).Payload())
	if want := header.TCPFlagAck | header.TCPFlagPsh; tcp.Flags() != want {
		t.Errorf("flags %v, want %v", tcp.Flags(), want)
	}
	if tcp.SequenceNumber() != gsoSeq {
		t.Errorf("seq %d, want %d", tcp.SequenceNumber(), gsoSeq)
	}
}
