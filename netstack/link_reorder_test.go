package netstack

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// seg names a TCP segment the reorder tests send or expect: its source
// port (the flow), first sequence number and payload length.
type seg struct {
	Port uint16
	Seq  uint32
	N    int
}

func (s seg) String() string { return fmt.Sprintf("%d:%d+%d", s.Port, s.Seq, s.N) }

// segDispatcher records the TCP segments the link delivers; the
// reorderer's timer delivers from its own goroutine.
type segDispatcher struct {
	mu   sync.Mutex
	segs []seg
}

func (d *segDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	b := pkt.Data().AsRange().ToSlice()
	_, off, ok := tcpFlow(b)
	if !ok {
		return
	}
	tcp := header.TCP(b[off:])
	d.mu.Lock()
	defer d.mu.Unlock()
	d.segs = append(d.segs, seg{tcp.SourcePort(), tcp.SequenceNumber(), len(b) - off - int(tcp.DataOffset())})
}

func (*segDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

func (d *segDispatcher) got() []seg {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]seg(nil), d.segs...)
}

// wait returns the segments delivered once there are n, or after 2 s.
func (d *segDispatcher) wait(n int) []seg {
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if s := d.got(); len(s) >= n {
			return s
		}
	}
	return d.got()
}

// dataSegment returns a TCP segment from linkPeer (port s.Port) to
// linkLocal port 80 with s.N payload bytes at sequence number s.Seq and
// the given flags (ACK always).
func dataSegment(v6 bool, s seg, flags header.TCPFlags) []byte {
	src, dst := linkPeer4, linkLocal4
	if v6 {
		src, dst = linkPeer6, linkLocal6
	}
	tcp := make([]byte, header.TCPMinimumSize+s.N)
	header.TCP(tcp).Encode(&header.TCPFields{
		SrcPort:    s.Port,
		DstPort:    80,
		SeqNum:     s.Seq,
		AckNum:     1,
		DataOffset: header.TCPMinimumSize,
		Flags:      flags | header.TCPFlagAck,
		WindowSize: 65535,
	})
	return l4Packet(src, dst, header.TCPProtocolNumber, tcp)
}

// newReorderTest returns an endpoint with GRO off (so that each segment
// reaches the dispatcher as sent) and a hold of exactly hold.
func newReorderTest(t *testing.T, hold time.Duration) (*endpoint, *segDispatcher) {
	t.Helper()
	e := newEndpoint(1420)
	t.Cleanup(func() { e.closeQueue() })
	e.gro.Init(false)
	e.reorder.hold = hold
	d := &segDispatcher{}
	e.Attach(d)
	return e, d
}

// deliver hands the link one batch of segments of the flows in segs.
func deliver(t *testing.T, e *endpoint, v6 bool, segs ...seg) {
	t.Helper()
	bufs := make([][]byte, len(segs))
	for i, s := range segs {
		bufs[i] = dataSegment(v6, s, 0)
	}
	if n, err := e.deliverBatch(bufs, 0); n != len(bufs) || err != nil {
		t.Fatalf("deliverBatch = %d, %v; want %d, nil", n, err, len(bufs))
	}
}

// TestReorderInOrder checks what the reorderer must leave alone: a flow
// in order, retransmissions of bytes already delivered, and the
// segments of other flows while one flow waits for a hole.
func TestReorderInOrder(t *testing.T) {
	const hold = time.Hour  // only a filled hole releases anything here
	const a, b = 1000, 2000 // source ports: two flows
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			e, d := newReorderTest(t, hold)
			deliver(t, e, v6, seg{a, 1, 100}, seg{a, 101, 100})
			deliver(t, e, v6, seg{a, 101, 100}) // a retransmission
			deliver(t, e, v6, seg{a, 301, 100}) // above a hole: held
			deliver(t, e, v6, seg{b, 5, 10})
			deliver(t, e, v6, seg{b, 15, 10}, seg{b, 25, 10})
			// Runs in one batch are merged (coalesce.go), as before.
			want := []seg{{a, 1, 200}, {a, 101, 100}, {b, 5, 10}, {b, 15, 20}}
			if diff := cmp.Diff(want, d.got()); diff != "" {
				t.Errorf("delivered (-want +got):\n%s", diff)
			}
		})
	}
}

// TestReorderFillsHoles hands the link a flow's segments out of order,
// one per batch and within one batch, and checks that the stack gets
// them in sequence order as soon as each hole fills, across the wrap of
// the sequence space, with another flow's segments passing meanwhile.
func TestReorderFillsHoles(t *testing.T) {
	const hold = time.Hour
	const a, b = 1000, 2000
	for _, base := range []uint32{1, 1<<32 - 150} { // the second wraps
		at := func(i int) uint32 { return base + uint32(i)*100 }
		for _, v6 := range []bool{false, true} {
			t.Run(fmt.Sprintf("base=%d/v6=%v", base, v6), func(t *testing.T) {
				e, d := newReorderTest(t, hold)
				deliver(t, e, v6, seg{a, at(0), 100})
				deliver(t, e, v6, seg{a, at(2), 100})
				deliver(t, e, v6, seg{a, at(3), 100})
				deliver(t, e, v6, seg{b, 7, 10})
				if diff := cmp.Diff([]seg{{a, at(0), 100}, {b, 7, 10}}, d.got()); diff != "" {
					t.Fatalf("before the hole filled (-want +got):\n%s", diff)
				}
				deliver(t, e, v6, seg{a, at(1), 100})
				// In one batch: 5 before 4, and another flow in between.
				deliver(t, e, v6, seg{a, at(5), 100}, seg{b, 17, 10}, seg{a, at(4), 100}, seg{a, at(6), 100})
				want := []seg{
					{a, at(0), 100}, {b, 7, 10},
					{a, at(1), 100}, {a, at(2), 100}, {a, at(3), 100},
					{b, 17, 10}, {a, at(4), 100}, {a, at(5), 100}, {a, at(6), 100},
				}
				if diff := cmp.Diff(want, d.got()); diff != "" {
					t.Errorf("delivered (-want +got):\n%s", diff)
				}
			})
		}
	}
}

// TestReorderDeadline checks that a hole that does not fill is taken for
// a loss: the held segments reach the stack, in order, once the hold is
// over, even if nothing else arrives, and each on its own with GRO on
// (the receiver must answer each with a duplicate ACK); the lost segment
// then passes at once.
func TestReorderDeadline(t *testing.T) {
	const hold = 100 * time.Millisecond // long enough that a loaded machine does not expire it early
	const a = 1000
	e, d := newReorderTest(t, hold)
	e.gro.Init(true)
	deliver(t, e, false, seg{a, 1, 100})
	start := time.Now()
	deliver(t, e, false, seg{a, 301, 100})
	deliver(t, e, false, seg{a, 201, 100})
	deliver(t, e, false, seg{a, 401, 100})
	if got := d.got(); len(got) != 1 {
		t.Fatalf("delivered %v before the deadline, want only the first segment", got)
	}
	got := d.wait(4)
	if waited := time.Since(start); waited < hold {
		t.Errorf("held segments delivered after %v, before the hold of %v", waited, hold)
	}
	want := []seg{{a, 1, 100}, {a, 201, 100}, {a, 301, 100}, {a, 401, 100}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("delivered (-want +got):\n%s", diff)
	}
	deliver(t, e, false, seg{a, 101, 100}) // the retransmission
	deliver(t, e, false, seg{a, 501, 100})
	want = append(want, seg{a, 101, 100}, seg{a, 501, 100})
	if diff := cmp.Diff(want, d.got()); diff != "" {
		t.Errorf("after the deadline (-want +got):\n%s", diff)
	}
}

// TestReorderControl checks that a FIN, RST or SYN does not overtake the
// segments held before it, and that the packets the reorderer does not
// track (pure ACKs, UDP, other flows) pass while a flow waits.
func TestReorderControl(t *testing.T) {
	const a = 1000
	for _, flag := range []header.TCPFlags{header.TCPFlagFin, header.TCPFlagRst, header.TCPFlagSyn} {
		t.Run(flag.String(), func(t *testing.T) {
			e, d := newReorderTest(t, time.Hour)
			deliver(t, e, false, seg{a, 1, 100}, seg{a, 201, 100})
			others := [][]byte{
				dataSegment(false, seg{a, 1, 0}, 0), // a pure ACK
				udpPacket(linkPeer4, linkLocal4, 53, []byte("x")),
			}
			if _, err := e.deliverBatch(others, 0); err != nil {
				t.Fatal(err)
			}
			if got := d.got(); len(got) != 2 || got[1].N != 0 {
				t.Fatalf("delivered %v, want the first segment and the pure ACK", got)
			}
			if _, err := e.deliverBatch([][]byte{dataSegment(false, seg{a, 301, 0}, flag)}, 0); err != nil {
				t.Fatal(err)
			}
			want := []seg{{a, 1, 100}, {a, 1, 0}, {a, 201, 100}, {a, 301, 0}}
			if diff := cmp.Diff(want, d.got()); diff != "" {
				t.Errorf("delivered (-want +got):\n%s", diff)
			}
		})
	}
}

// TestReorderBounds checks the reorderer's limits: a flow holds at most
// reorderPerFlow segments and reorderMaxBytes of payload, a segment far above the hole is not held,
// at most reorderFlows flows are tracked (the oldest gives way, its held
// segments delivered), router mode holds nothing, and Close releases
// what is held so that nothing is delivered after it.
func TestReorderBounds(t *testing.T) {
	const a = 1000
	t.Run("per flow", func(t *testing.T) {
		e, d := newReorderTest(t, time.Hour)
		deliver(t, e, false, seg{a, 1, 10})
		for i := range reorderPerFlow {
			deliver(t, e, false, seg{a, 21 + uint32(i)*10, 10})
		}
		if got := d.got(); len(got) != 1 {
			t.Fatalf("%d segments delivered with %d held, want 1", len(got), reorderPerFlow)
		}
		deliver(t, e, false, seg{a, 21 + reorderPerFlow*10, 10})
		if got := d.got(); len(got) != reorderPerFlow+2 {
			t.Errorf("%d segments delivered after the flow's hold was full, want all %d", len(got), reorderPerFlow+2)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		e, d := newReorderTest(t, time.Hour)
		const n = 60000 // a merged run's size
		deliver(t, e, false, seg{a, 1, 10})
		for i := range reorderMaxBytes / n {
			deliver(t, e, false, seg{a, 21 + uint32(i)*n, n})
		}
		if got := d.got(); len(got) != 1 {
			t.Fatalf("%d segments delivered with %d bytes held, want 1", len(got), reorderMaxBytes/n*n)
		}
		deliver(t, e, false, seg{a, 21 + reorderMaxBytes/n*n, n})
		if got := d.got(); len(got) != reorderMaxBytes/n+2 {
			t.Errorf("%d segments delivered after the flow's hold was full, want all %d", len(got), reorderMaxBytes/n+2)
		}
	})
	t.Run("gap", func(t *testing.T) {
		e, d := newReorderTest(t, time.Hour)
		deliver(t, e, false, seg{a, 1, 10}, seg{a, 11 + reorderMaxGap + 1, 10})
		if got := d.got(); len(got) != 2 {
			t.Errorf("delivered %v, want both: the hole is larger than reorderMaxGap", got)
		}
	})
	t.Run("flows", func(t *testing.T) {
		e, d := newReorderTest(t, time.Hour)
		for i := range reorderFlows + 1 {
			p := uint16(a + i)
			deliver(t, e, false, seg{p, 1, 10}, seg{p, 21, 10}) // each holds one
		}
		// Each flow's first segment; when the last flow comes, the
		// first gives way and its held segment goes to the stack.
		var want []seg
		for i := range reorderFlows {
			want = append(want, seg{uint16(a + i), 1, 10})
		}
		want = append(want, seg{a, 21, 10}, seg{a + reorderFlows, 1, 10})
		if diff := cmp.Diff(want, d.got()); diff != "" {
			t.Errorf("delivered (-want +got):\n%s", diff)
		}
	})
	t.Run("router mode", func(t *testing.T) {
		e, d := newReorderTest(t, time.Hour)
		e.inbound = func([]byte) bool { return false }
		deliver(t, e, false, seg{a, 1, 10}, seg{a, 21, 10})
		if got := d.got(); len(got) != 2 {
			t.Errorf("delivered %v in router mode, want both", got)
		}
	})
	t.Run("close", func(t *testing.T) {
		e, d := newReorderTest(t, time.Hour)
		deliver(t, e, false, seg{a, 1, 10}, seg{a, 21, 10})
		e.closeQueue()
		e.reorderExpired() // as if the timer fired after close
		if got := d.got(); len(got) != 1 {
			t.Errorf("delivered %v, want only the first segment: close drops what is held", got)
		}
		e.gmu.Lock()
		defer e.gmu.Unlock()
		if e.reorder.holding() || e.reorder.armed {
			t.Error("segments still held, or the timer armed, after close")
		}
	})
}

// TestReorderSeqBefore checks the serial-number comparison at the wrap.
func TestReorderSeqBefore(t *testing.T) {
	for _, tt := range []struct {
		a, b uint32
		want bool
	}{
		{1, 2, true}, {2, 1, false}, {1, 1, false},
		{1<<32 - 1, 0, true}, {0, 1<<32 - 1, false},
		{1<<32 - 100, 50, true}, {50, 1<<32 - 100, false},
		{0, 1<<31 - 1, true}, {1<<31 - 1, 0, false},
	} {
		if got := seqBefore(tt.a, tt.b); got != tt.want {
			t.Errorf("seqBefore(%d, %d) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}
