package netstack

import (
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
)

// This file holds the link layer between the gVisor stack and the
// wireguard-go engine. Packets travel two ways:
//
//   - outbound (stack -> WireGuard): the stack calls WritePackets, which
//     appends references to a bounded FIFO queue; the engine's TUN reader
//     goroutine calls readBatch, which copies queued packets into the
//     engine's buffers, as many as fit. TCP hands the link super-packets
//     of up to gsoMaxSize bytes (we advertise host GSO), which readBatch
//     cuts into MTU-sized segments with their own IP and TCP headers and
//     checksums; a super-packet that does not fit the engine's buffers is
//     continued by the next Read.
//   - inbound (WireGuard -> stack): the engine calls deliverBatch with a
//     batch of decrypted packets; runs of consecutive TCP segments of one
//     flow are copied into one packet (coalesce.go), the rest one by one,
//     and all go through gVisor's GRO (which merges what is left of a
//     flow in the batch) and then to the stack's dispatcher.
//
// Per packet, the stack does the same work whatever the packet's size, so
// moving fewer, larger packets through it is what makes the link fast.

const (
	// defaultBatchSize is the default tun.Device batch size (see
	// Options.BatchSize): the most packets one Read or Write call moves,
	// and the default batch of the UDP Bind. wireguard-go keeps
	// max(tun batch, Bind batch) message buffers of 64 KiB for its TUN
	// reader and for each Bind receive goroutine, so with udpbind's one
	// dual-stack socket an idle device holds 2 x 16 x 64 KiB = 2 MiB of
	// them. Read fills as many buffers as the engine passes.
	defaultBatchSize = 16

	// maxBatchSize is the largest batch Options.BatchSize may ask for:
	// conn.IdealBatchSize, the most wireguard-go's own Binds use.
	maxBatchSize = 128

	// maxQueuedPackets bounds the outbound queue. When the engine falls
	// behind, further packets are dropped as a full NIC queue would drop
	// them, and TCP backs off; UDP packets are refused with
	// ErrNoBufferSpace instead, and the UDP conn's Write waits for room
	// (see endpoint.room). The queue holds only references, so an idle
	// endpoint holds no packet memory.
	maxQueuedPackets = 1024

	// gsoMaxSize is the largest TCP super-packet the stack hands the link:
	// 64 KiB, as for Linux TSO. The stack keeps the IP packet within
	// 65535 bytes.
	gsoMaxSize = 1 << 16

	// maxHeaderSize is the largest IP plus TCP header readBatch cuts
	// super-packets for: 60 bytes of IPv4 (or IPv6 with extension headers)
	// and 60 of TCP. gVisor sends nothing larger.
	maxHeaderSize = 128
)

// endpoint is wgkit's gVisor link endpoint (stack.LinkEndpoint) for a
// point-to-point IP link without link-layer headers. It is safe for
// concurrent use: the stack writes from many goroutines while the engine
// reads from one and writes from several.
type endpoint struct {
	mtu atomic.Uint32

	// batch is the tun.Device batch size; set before the device starts.
	batch int

	// capture, if not nil, records the packets passed in both directions
	// (Options.Capture); set before the stack is built and start called.
	capture *capture

	// dropped counts outbound packets dropped (or, for UDP, refused)
	// because the queue was full or a packet did not fit the reader's
	// buffer, and inbound packets that were not IPv4 or IPv6.
	dropped atomic.Uint64

	mu         sync.Mutex
	dispatcher stack.NetworkDispatcher // guarded by mu
	onClose    func()                  // guarded by mu

	qmu   sync.Mutex
	queue []*stack.PacketBuffer // guarded by qmu; FIFO, each holds one reference
	// headOff is how many payload bytes of the TCP super-packet queue[0]
	// earlier Reads have already sent as segments.
	headOff int  // guarded by qmu
	closed  bool // guarded by qmu
	// ready has capacity one and is signalled (without blocking) when the
	// queue becomes non-empty or the endpoint closes; the reader waits on
	// it only after finding the queue empty, so no wake-up is lost.
	ready chan struct{}
	// roomCh, when not nil, is closed (and cleared) when readBatch takes
	// packets off the queue or the endpoint closes; writers refused by a
	// full queue wait on it (see room).
	roomCh chan struct{} // guarded by qmu

	// rmu serializes readers, so that queue[0] and headOff stay theirs
	// between taking packets and consuming them.
	rmu   sync.Mutex
	taken [64]*stack.PacketBuffer // guarded by rmu; packets being copied

	// inbound, if set, sees each inbound packet before the stack and
	// reports whether it took it (router mode, forward_icmp.go). Set
	// before start (the engine may run already: see started).
	inbound func(pkt []byte) bool

	// udpConns takes inbound datagrams for the Net's UDP conns before
	// the stack (udpfast.go).
	udpConns udpDemux

	// started, if not nil, holds deliverBatch back until start or
	// closeQueue closes it: Open brings the engine up before it builds
	// the stack. Set by hold before the device starts.
	started   chan struct{}
	startOnce sync.Once

	// gmu serializes deliveries: the engine writes from one goroutine per
	// peer, and GRO state is per NIC.
	gmu sync.Mutex
	gro gro.GRO // guarded by gmu
	// reorder holds TCP segments that arrived above a hole in their
	// flow for a moment (reorder.go).
	reorder reorderer // guarded by gmu

	// inflight counts the data packets inside the receiving engine, for
	// the Net's default Bind (see maxInflightPackets); deliverBatch
	// releases them.
	inflight *inflight

	// outflight, if not nil, counts the data packets inside the sending
	// engine (see maxOutflightPackets): the tun.Device's Read counts what
	// it returns, the Net's default Bind uncounts what it sends. Set
	// before the device starts.
	outflight *inflight
}

var (
	_ stack.LinkEndpoint = (*endpoint)(nil)
	_ stack.GSOEndpoint  = (*endpoint)(nil)
)

func newEndpoint(mtu uint32) *endpoint {
	e := &endpoint{ready: make(chan struct{}, 1), batch: defaultBatchSize, inflight: newInflight(maxInflightPackets)}
	e.mtu.Store(mtu)
	e.gro.Init(true)
	e.reorder.hold = reorderHold
	return e
}

// hold makes deliverBatch wait for start, for an endpoint whose engine
// runs before its stack is attached and set up. Call it before the
// device starts.
func (e *endpoint) hold() { e.started = make(chan struct{}) }

// start ends hold: deliverBatch hands packets to the stack from now on.
// It is idempotent, and a no-op without hold.
func (e *endpoint) start() {
	e.startOnce.Do(func() {
		if e.started != nil {
			close(e.started)
		}
	})
}

func (e *endpoint) signal() {
	select {
	case e.ready <- struct{}{}:
	default:
	}
}

// WritePackets implements stack.LinkWriter. It queues the packets for the
// engine and never blocks.
func (e *endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	return e.enqueue(pkts.AsSlice())
}

// enqueue queues pkts for the engine, taking a reference to each. What
// does not fit is dropped; if nothing fit and the packets are UDP,
// enqueue returns ErrNoBufferSpace.
func (e *endpoint) enqueue(pkts []*stack.PacketBuffer) (int, tcpip.Error) {
	e.qmu.Lock()
	if e.closed {
		e.qmu.Unlock()
		return 0, &tcpip.ErrClosedForSend{}
	}
	n := 0
	for _, pkt := range pkts {
		if len(e.queue) >= maxQueuedPackets {
			break
		}
		pkt.IncRef()
		e.queue = append(e.queue, pkt)
		n++
	}
	e.qmu.Unlock()
	if d := len(pkts) - n; d > 0 {
		e.dropped.Add(uint64(d))
	}
	if n > 0 {
		e.signal()
	}
	if n == 0 && len(pkts) > 0 && pkts[0].TransportProtocolNumber == header.UDPProtocolNumber {
		// The stack passes this on to the writer: a UDP conn waits for
		// room and tries again. Other packets are dropped silently, as
		// before: TCP recovers by retransmitting (an error would change
		// when it arms its retransmission timer), ICMP is best effort.
		return 0, &tcpip.ErrNoBufferSpace{}
	}
	return n, nil
}

// room returns a channel that is closed once readBatch has taken packets
// off the queue, or the endpoint has closed, after the call. A writer
// refused with ErrNoBufferSpace calls room, tries once more, and waits on
// the channel if it is refused again, so no wake-up is lost. The channel
// is made only while the queue is full and someone waits.
func (e *endpoint) room() <-chan struct{} {
	e.qmu.Lock()
	defer e.qmu.Unlock()
	if e.closed {
		c := make(chan struct{})
		close(c)
		return c
	}
	if e.roomCh == nil {
		e.roomCh = make(chan struct{})
	}
	return e.roomCh
}

// wakeRoomLocked wakes the writers waiting in room. e.qmu is held.
func (e *endpoint) wakeRoomLocked() {
	if e.roomCh != nil {
		close(e.roomCh)
		e.roomCh = nil
	}
}

// qdisc is the NIC's queueing discipline (stack.NICOptions.QDisc): it
// queues each packet on the endpoint directly. Without it the stack wraps
// every packet in a PacketBufferList, one allocation per packet.
type qdisc struct{ e *endpoint }

var _ stack.QueueingDiscipline = qdisc{}

// WritePacket implements stack.QueueingDiscipline.
func (q qdisc) WritePacket(pkt *stack.PacketBuffer) tcpip.Error {
	one := [1]*stack.PacketBuffer{pkt}
	_, err := q.e.enqueue(one[:])
	return err
}

// Close implements stack.QueueingDiscipline; the endpoint's Close stops
// the queue.
func (qdisc) Close() {}

// readBatch blocks until at least one outbound packet is queued, then
// copies packets (TCP super-packets cut into segments) into bufs[i][offset:]
// while they fit, setting sizes[i]. After close it returns os.ErrClosed,
// the error wireguard-go's TUN reader stops on.
func (e *endpoint) readBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	e.rmu.Lock()
	defer e.rmu.Unlock()
	n := 0
	for n < len(bufs) {
		e.qmu.Lock()
		for len(e.queue) == 0 {
			closed := e.closed
			e.qmu.Unlock()
			if n > 0 {
				return n, nil
			}
			if closed {
				return 0, os.ErrClosed
			}
			<-e.ready
			e.qmu.Lock()
		}
		// Each packet fills at least one buffer, so taking no more than
		// there are buffers left keeps the rest queued. The references
		// taken keep the packets alive if closeQueue runs meanwhile.
		take := min(len(e.queue), len(bufs)-n, len(e.taken))
		for i := range take {
			e.taken[i] = e.queue[i].IncRef()
		}
		off := e.headOff
		e.qmu.Unlock()

		done := 0
		for _, pkt := range e.taken[:take] {
			if n == len(bufs) {
				break // the rest stays queued
			}
			k, next, ok := writePacket(bufs[n:], sizes[n:], offset, pkt, off)
			if e.capture != nil {
				e.captureOut(bufs[n:n+k], sizes[n:n+k], offset)
			}
			n += k
			if !ok {
				e.dropped.Add(1)
				next = 0
			}
			off = next
			if next != 0 {
				break // out of buffers inside a super-packet
			}
			done++
		}
		for i := range take {
			e.taken[i].DecRef()
			e.taken[i] = nil
		}

		e.qmu.Lock()
		if !e.closed {
			for _, pkt := range e.queue[:done] {
				pkt.DecRef()
			}
			rest := copy(e.queue, e.queue[done:])
			clear(e.queue[rest:])
			e.queue = e.queue[:rest]
			e.headOff = off
			if done > 0 {
				e.wakeRoomLocked()
			}
		}
		e.qmu.Unlock()
	}
	return n, nil
}

// writePacket copies pkt into bufs[i][offset:], setting sizes[i], and
// returns how many buffers it filled. A TCP super-packet (GSO) is cut into
// segments of at most MSS payload bytes, starting at payload offset off;
// if bufs run out first, next is the payload offset to continue at, else
// next is 0. ok is false if pkt was dropped because a buffer was too
// small or its headers could not be parsed.
//
// A TCP endpoint's segments carry GSO options from its connect on, but
// the MSS in them only from the end of the handshake: what an endpoint
// sends during its handshake besides the SYN (the RST with which a
// dialling SYN-SENT answers a stray ACK, the ACK and RST of a SYN-RCVD)
// has MSS 0. Such a segment has no payload and goes as one segment, its
// checksum completed as a cut segment's is: dropping it left a dial whose
// source port matched a connection the peer still held retransmitting
// its SYN until its deadline, as the peer's challenge ACKs were never
// answered. A payload with MSS 0 (gVisor sends none) is dropped.
func writePacket(bufs [][]byte, sizes []int, offset int, pkt *stack.PacketBuffer, off int) (k, next int, ok bool) {
	gso := pkt.GSOOptions
	if gso.Type != stack.GSOTCPv4 && gso.Type != stack.GSOTCPv6 {
		size, ok := copyPacket(bufs[0][offset:], pkt)
		if !ok {
			return 0, 0, false
		}
		sizes[0] = size
		return 1, 0, true
	}
	ipLen := len(pkt.NetworkHeader().Slice())
	tcpLen := len(pkt.TransportHeader().Slice())
	hdrLen := ipLen + tcpLen
	if hdrLen > maxHeaderSize || tcpLen < header.TCPMinimumSize {
		return 0, 0, false
	}
	payload := pkt.Size() - hdrLen
	mss := int(gso.MSS)
	if mss == 0 {
		if payload > 0 {
			return 0, 0, false
		}
		mss = 1 // one empty segment; finishSegment divides by it
	}
	r := newPacketReader(pkt)
	var hdr [maxHeaderSize]byte
	if r.readAt(hdr[:hdrLen], 0) != hdrLen {
		return 0, 0, false
	}
	for k < len(bufs) {
		seg := min(mss, payload-off)
		dst := bufs[k][offset:]
		if hdrLen+seg > len(dst) {
			return k, 0, false
		}
		copy(dst, hdr[:hdrLen])
		r.readAt(dst[hdrLen:hdrLen+seg], hdrLen+off)
		finishSegment(dst[:hdrLen+seg], ipLen, off, mss, off+seg == payload)
		sizes[k] = hdrLen + seg
		k++
		off += seg
		if off >= payload {
			return k, 0, true
		}
	}
	return k, off, true
}

// captureOut records the packets readBatch wrote: what goes to the
// engine, TCP super-packets already cut into segments.
func (e *endpoint) captureOut(bufs [][]byte, sizes []int, offset int) {
	for i, b := range bufs {
		e.capture.record(b[offset : offset+sizes[i]])
	}
}

// finishSegment fixes the headers of one segment cut from a TCP
// super-packet: pkt holds the super-packet's IP and TCP headers (ipLen
// bytes of IP) followed by the payload bytes that started at payload
// offset off, a multiple of mss. It sets the IP length (and, for IPv4, an ID advanced per
// segment and the header checksum), the sequence number, the flags that
// belong to the first or last segment only, and the full TCP checksum:
// the peer may be a kernel that checks it.
func finishSegment(pkt []byte, ipLen, off, mss int, last bool) {
	tcp := header.TCP(pkt[ipLen:])
	var src, dst tcpip.Address
	if header.IPVersion(pkt) == header.IPv4Version {
		ip := header.IPv4(pkt)
		ip.SetTotalLength(uint16(len(pkt)))
		// Like Linux, advance the ID per segment.
		ip.SetID(ip.ID() + uint16(off/mss))
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
	} else {
		ip := header.IPv6(pkt)
		ip.SetPayloadLength(uint16(len(pkt) - header.IPv6MinimumSize))
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
	}
	tcp.SetSequenceNumber(tcp.SequenceNumber() + uint32(off))
	flags := tcp.Flags()
	if off > 0 {
		flags &^= header.TCPFlagCwr
	}
	if !last {
		flags &^= header.TCPFlagFin | header.TCPFlagPsh
	}
	tcp.SetFlags(uint8(flags))
	tcp.SetChecksum(0)
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(tcp)))
	tcp.SetChecksum(^checksum.Checksum(tcp, xsum))
}

// packetReader reads a packet's bytes (headers and payload) at offsets.
type packetReader struct {
	views buffer.ViewList
	first int // offset of the packet in the first view
}

func newPacketReader(pkt *stack.PacketBuffer) packetReader {
	views, off := pkt.AsViewList()
	return packetReader{views: views, first: off}
}

// readAt copies the packet's bytes from pos into dst and returns how many
// it copied: fewer than len(dst) only at the end of the packet.
func (r *packetReader) readAt(dst []byte, pos int) int {
	pos += r.first
	n := 0
	for v := r.views.Front(); v != nil && n < len(dst); v = v.Next() {
		s := v.AsSlice()
		if pos >= len(s) {
			pos -= len(s)
			continue
		}
		n += copy(dst[n:], s[pos:])
		pos = 0
	}
	return n
}

// copyPacket copies the whole packet (headers and payload) into dst. It
// reports false if dst is too small.
func copyPacket(dst []byte, pkt *stack.PacketBuffer) (int, bool) {
	size := pkt.Size()
	if size > len(dst) {
		return 0, false
	}
	r := newPacketReader(pkt)
	return r.readAt(dst[:size], 0), true
}

// deliverBatch hands the IP packets bufs[i][offset:] to the stack,
// through GRO: consecutive TCP segments of one flow are merged, so the
// stack processes one packet where the peer sent several. Empty buffers
// and packets that are neither IPv4 nor IPv6 are dropped. After hold it
// waits for start. After close it returns os.ErrClosed.
func (e *endpoint) deliverBatch(bufs [][]byte, offset int) (int, error) {
	if e.started != nil {
		<-e.started // until Open has built the stack, or the endpoint closes
	}
	e.mu.Lock()
	d := e.dispatcher
	e.mu.Unlock()
	if d == nil || e.isClosed() {
		return 0, os.ErrClosed
	}
	e.gmu.Lock()
	defer e.gmu.Unlock()
	e.gro.Dispatcher = d
	// Router mode forwards flows that are not ours: it leaves their
	// order to their ends.
	reorder := e.reorder.hold > 0 && e.inbound == nil
	if reorder && e.reorder.armed {
		e.expireHolds(time.Now()) // the timer may be late
	}
	udpSeen := false // a UDP packet is in the batch (IPv6: without extension headers)
	delivered := 0
	defer func() { e.inflight.release(delivered) }()
	for i := 0; i < len(bufs); i++ {
		pkt := bufs[i][offset:]
		if len(pkt) == 0 {
			continue
		}
		delivered++
		if e.capture != nil {
			e.capture.record(pkt) // as it came, before GRO merges it
		}
		var proto tcpip.NetworkProtocolNumber
		switch header.IPVersion(pkt) {
		case header.IPv4Version:
			proto = header.IPv4ProtocolNumber
			udpSeen = udpSeen || len(pkt) > 9 && pkt[9] == uint8(header.UDPProtocolNumber)
		case header.IPv6Version:
			proto = header.IPv6ProtocolNumber
			udpSeen = udpSeen || len(pkt) > 6 && pkt[6] == uint8(header.UDPProtocolNumber)
		default:
			e.dropped.Add(1)
			continue
		}
		if e.inbound != nil && e.inbound(pkt) {
			continue
		}
		if e.udpConns.deliver(pkt) {
			continue
		}
		// Both paths copy: the engine reuses bufs after we return. A run
		// of TCP segments of one flow is copied into one packet
		// (coalesce.go), except in router mode, where inbound must see
		// each packet.
		var pkb *stack.PacketBuffer
		f, data := parseMergeable(pkt)
		if data && e.inbound == nil {
			if j := runEnd(bufs, i, offset, f); j > i+1 {
				pkb = mergeRun(bufs[i:j], offset, f)
				for _, b := range bufs[i+1 : j] {
					delivered++
					if e.capture != nil {
						e.capture.record(b[offset:])
					}
				}
				i = j - 1
			}
		}
		if pkb == nil {
			pkb = stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
		}
		pkb.NetworkProtocolNumber = proto
		// See Capabilities: WireGuard has authenticated every byte.
		pkb.RXChecksumValidated = true
		if reorder {
			if k, tcpOff, tcp := tcpFlow(pkt); tcp && data {
				seq := header.TCP(pkt[tcpOff:]).SequenceNumber()
				e.reorderSegment(pkb, k, seq, seq+uint32(pkb.Size()-f.ipLen-f.tcpLen))
				pkb.DecRef()
				continue
			} else if tcp {
				e.reorderControl(k, header.TCP(pkt[tcpOff:]).Flags())
			}
		}
		e.gro.Enqueue(pkb)
		pkb.DecRef()
	}
	// GRO holds packets only within one batch: a flow's last segment must
	// not wait for a next batch that may never come.
	e.gro.Flush()
	if udpSeen {
		// Let the UDP readers this batch woke run now: a woken goroutine
		// is next on this P, but the engine would go on delivering and
		// decrypting for up to a time slice first, while the socket's
		// receive buffer overflows (an unpaced flow with the default
		// buffer lost 87 % of its datagrams without this, 21 % with it;
		// see BENCHMARKS.md). Not for TCP, whose window paces the sender
		// anyway: there the yield cost 30-60 % more CPU per byte.
		runtime.Gosched()
	}
	return len(bufs), nil
}

func (e *endpoint) isClosed() bool {
	e.qmu.Lock()
	defer e.qmu.Unlock()
	return e.closed
}

// closeQueue stops both directions: queued packets are released, later
// writes fail, and a blocked readBatch returns os.ErrClosed. It is
// idempotent and reports whether this call closed the endpoint.
func (e *endpoint) closeQueue() bool {
	e.qmu.Lock()
	if e.closed {
		e.qmu.Unlock()
		return false
	}
	e.closed = true
	q := e.queue
	e.queue = nil
	e.wakeRoomLocked()
	e.qmu.Unlock()
	for _, pkt := range q {
		pkt.DecRef()
	}
	e.closeReorder()
	// Closed is sticky, so one signal wakes the reader for good.
	e.signal()
	e.start() // a deliverBatch waiting for the stack fails now
	return true
}

// MTU implements stack.NetworkLinkEndpoint.
func (e *endpoint) MTU() uint32 { return e.mtu.Load() }

// SetMTU implements stack.NetworkLinkEndpoint.
func (e *endpoint) SetMTU(mtu uint32) { e.mtu.Store(mtu) }

// MaxHeaderLength implements stack.NetworkLinkEndpoint: IP packets carry no
// link-layer header.
func (*endpoint) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.NetworkLinkEndpoint: a WireGuard link has no
// link-layer address.
func (*endpoint) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress implements stack.NetworkLinkEndpoint; it is a no-op.
func (*endpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.NetworkLinkEndpoint. Receive checksums
// need no check: every inbound packet was decrypted by WireGuard, whose
// Poly1305 tag authenticates each byte of it, so corruption on the way is
// already ruled out far more strongly than by a 16-bit sum (and a peer
// that sends a wrong checksum on purpose gains nothing: it could as well
// send any other valid packet). Transmit checksums are computed, by the
// stack or by readBatch for TCP super-packets, since the peer may be a
// kernel that checks them.
func (*endpoint) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload
}

// GSOMaxSize implements stack.GSOEndpoint.
func (*endpoint) GSOMaxSize() uint32 { return gsoMaxSize }

// SupportedGSO implements stack.GSOEndpoint: TCP hands the link
// super-packets with partial checksums, as to a NIC with TSO, and
// readBatch segments them.
func (*endpoint) SupportedGSO() stack.SupportedGSO { return stack.HostGSOSupported }

// Attach implements stack.NetworkLinkEndpoint.
func (e *endpoint) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.dispatcher = d
}

// IsAttached implements stack.NetworkLinkEndpoint.
func (e *endpoint) IsAttached() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dispatcher != nil
}

// Wait implements stack.NetworkLinkEndpoint; the endpoint has no goroutines.
func (*endpoint) Wait() {}

// ARPHardwareType implements stack.NetworkLinkEndpoint.
func (*endpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.NetworkLinkEndpoint; there is no link header.
func (*endpoint) AddHeader(*stack.PacketBuffer) {}

// ParseHeader implements stack.NetworkLinkEndpoint; there is no link header.
func (*endpoint) ParseHeader(*stack.PacketBuffer) bool { return true }

// Close implements stack.NetworkLinkEndpoint; the stack calls it when the
// NIC is removed.
func (e *endpoint) Close() {
	e.mu.Lock()
	onClose := e.onClose
	e.onClose = nil
	e.mu.Unlock()
	if onClose != nil {
		onClose()
	}
	e.closeQueue()
}

// SetOnCloseAction implements stack.NetworkLinkEndpoint.
func (e *endpoint) SetOnCloseAction(f func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.onClose = f
}
