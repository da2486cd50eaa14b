package netstack

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// fakeTCPPeer answers a link-test Net's TCP packets as the far end of
// its connections would, without a stack of its own and without
// allocating, so that what an accept or a dial allocates is the Net's
// alone: it answers a SYN with a SYN-ACK, a SYN-ACK with an ACK (after
// connect sent the SYN), and a FIN with a reset, so that a closed
// connection leaves nothing behind (no TIME-WAIT).
type fakeTCPPeer struct {
	dev    *tunDevice
	local  netip.Addr // the Net's address
	peer   netip.Addr // the peer's address, linkPeer4
	resets atomic.Int64

	mu  sync.Mutex // the test and run send
	out []byte     // guarded by mu; the packet being sent
}

func newFakeTCPPeer(dev *tunDevice) *fakeTCPPeer {
	return &fakeTCPPeer{dev: dev, local: linkLocal4, peer: linkPeer4, out: make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize)}
}

// send writes a TCP segment without payload from sport to the Net's
// dport. Checksums are left out: the link does not check them.
func (p *fakeTCPPeer) send(sport, dport uint16, seq, ack uint32, flags header.TCPFlags) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ip := header.IPv4(p.out)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(p.out)),
		TTL:         64,
		Protocol:    uint8(header.TCPProtocolNumber),
		SrcAddr:     tcpip.AddrFrom4(p.peer.As4()),
		DstAddr:     tcpip.AddrFrom4(p.local.As4()),
	})
	header.TCP(p.out[header.IPv4MinimumSize:]).Encode(&header.TCPFields{
		SrcPort:    sport,
		DstPort:    dport,
		SeqNum:     seq,
		AckNum:     ack,
		DataOffset: header.TCPMinimumSize,
		Flags:      flags,
		WindowSize: 65535,
	})
	bufs := [1][]byte{p.out}
	p.dev.Write(bufs[:], 0)
}

// run answers the Net's packets until the device closes.
func (p *fakeTCPPeer) run() {
	bufs, sizes := [1][]byte{make([]byte, 1500)}, [1]int{}
	const isn = 1 << 20
	for {
		if _, err := p.dev.Read(bufs[:], sizes[:], 0); err != nil {
			return
		}
		pkt := bufs[0][:sizes[0]]
		if header.IPVersion(pkt) != header.IPv4Version || header.IPv4(pkt).Protocol() != uint8(header.TCPProtocolNumber) {
			continue
		}
		tcp := header.TCP(pkt[header.IPv4(pkt).HeaderLength():])
		sport, dport, seq, flags := tcp.DestinationPort(), tcp.SourcePort(), tcp.SequenceNumber(), tcp.Flags()
		switch {
		case flags.Contains(header.TCPFlagSyn | header.TCPFlagAck): // the Net accepts
			p.send(sport, dport, isn+1, seq+1, header.TCPFlagAck)
		case flags.Contains(header.TCPFlagSyn): // the Net dials
			p.send(sport, dport, isn, seq+1, header.TCPFlagSyn|header.TCPFlagAck)
		case flags.Contains(header.TCPFlagFin):
			p.send(sport, dport, tcp.AckNumber(), 0, header.TCPFlagRst)
			p.resets.Add(1)
		}
	}
}

// connAllocs returns the allocations and bytes per connection of n
// conns made by connect after a warm-up, each closed before the next,
// counted until the peer has reset them all.
func connAllocs(t *testing.T, p *fakeTCPPeer, connect func(i int) net.Conn) (allocs, bytes float64) {
	t.Helper()
	const warm, n = 20, 200
	i := 0
	cycle := func() {
		c := connect(i)
		i++
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	waitResets := func(want int64) {
		for deadline := time.Now().Add(10 * time.Second); p.resets.Load() < want; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the peer reset %d connections, want %d", p.resets.Load(), want)
			}
		}
	}
	for range warm {
		cycle()
	}
	waitResets(int64(i))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		cycle()
	}
	waitResets(int64(i))
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / n, float64(after.TotalAlloc-before.TotalAlloc) / n
}

// TestTCPAcceptAllocs holds the listener to allocating no more for an
// accepted connection than a dial allocates for its own: the Net's whole
// share of each, from the first SYN to the conn returned, closed and
// reset, against a fake peer that allocates nothing. The dial is counted
// from dialTCP, past DialContext's parsing of the address, so the
// comparison favours the dial.
func TestTCPAcceptAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items, so gVisor's buffer pools allocate")
	}
	n, dev := newLinkTest(t)
	n.dialSlots = make(chan struct{}, 1)
	n.listeners = make(map[*tcpListener]struct{})
	p := newFakeTCPPeer(dev)
	go p.run()

	l, err := n.Listen("tcp", netip.AddrPortFrom(linkLocal4, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	lport := uint16(l.Addr().(*net.TCPAddr).Port)
	accepted := func(i int) net.Conn {
		// A new source port each time: the peer's first SYN.
		p.send(uint16(20000+i), lport, 1<<20-1, 0, header.TCPFlagSyn)
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	dialed := func(int) net.Conn {
		c, err := n.dialTCP(context.Background(), netip.AddrPortFrom(linkPeer4, 80))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	acceptAllocs, acceptBytes := connAllocs(t, p, accepted)
	dialAllocs, dialBytes := connAllocs(t, p, dialed)
	t.Logf("per connection: accept %.1f allocations, %.0f bytes; dial %.1f allocations, %.0f bytes", acceptAllocs, acceptBytes, dialAllocs, dialBytes)
	if acceptAllocs > dialAllocs {
		t.Errorf("an accepted connection made %.1f allocations, a dialed one %.1f: want no more", acceptAllocs, dialAllocs)
	}
}
