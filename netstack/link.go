package netstack

import (
	"os"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// This file holds the link layer between the gVisor stack and the
// wireguard-go engine. Packets travel two ways:
//
//   - outbound (stack -> WireGuard): the stack calls WritePackets, which
//     appends references to a bounded FIFO queue; the engine's single TUN
//     reader goroutine calls readBatch, which drains up to one batch from
//     the queue per call, copying each packet into the engine's buffer.
//   - inbound (WireGuard -> stack): the engine calls deliverBatch with a
//     batch of decrypted packets, each handed to the stack's dispatcher.
//
// The performance pass is expected to change only this file: GSO on the
// outbound path (advertise stack.GSOEndpoint and split in readBatch, or
// let the engine's offset-aware writes take super-packets), GRO on the
// inbound path (coalesce in deliverBatch), and the queue size.

const (
	// batchSize is the tun.Device batch size: the most packets one Read or
	// Write call moves. wireguard-go keeps batchSize message buffers
	// (about 64 KiB each) per TUN reader goroutine, so this trades idle
	// memory (32 x 64 KiB = 2 MiB per device) against per-call overhead.
	batchSize = 32

	// maxQueuedPackets bounds the outbound queue. When the engine falls
	// behind, further packets are dropped as a full NIC queue would drop
	// them, and TCP backs off. The queue holds only references, so an idle
	// endpoint holds no packet memory.
	maxQueuedPackets = 1024
)

// endpoint is wgkit's gVisor link endpoint (stack.LinkEndpoint) for a
// point-to-point IP link without link-layer headers. It is safe for
// concurrent use: the stack writes from many goroutines while the engine
// reads from one and writes from several.
type endpoint struct {
	mtu atomic.Uint32

	// dropped counts outbound packets dropped because the queue was full
	// or a packet did not fit the reader's buffer, and inbound packets that
	// were not IPv4 or IPv6.
	dropped atomic.Uint64

	mu         sync.Mutex
	dispatcher stack.NetworkDispatcher // guarded by mu
	onClose    func()                  // guarded by mu

	qmu    sync.Mutex
	queue  []*stack.PacketBuffer // guarded by qmu; FIFO, each holds one reference
	closed bool                  // guarded by qmu
	// ready has capacity one and is signalled (without blocking) when the
	// queue becomes non-empty or the endpoint closes; the reader waits on
	// it only after finding the queue empty, so no wake-up is lost.
	ready chan struct{}
}

var _ stack.LinkEndpoint = (*endpoint)(nil)

func newEndpoint(mtu uint32) *endpoint {
	e := &endpoint{ready: make(chan struct{}, 1)}
	e.mtu.Store(mtu)
	return e
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
	e.qmu.Lock()
	if e.closed {
		e.qmu.Unlock()
		return 0, &tcpip.ErrClosedForSend{}
	}
	n := 0
	for _, pkt := range pkts.AsSlice() {
		if len(e.queue) >= maxQueuedPackets {
			break
		}
		pkt.IncRef()
		e.queue = append(e.queue, pkt)
		n++
	}
	e.qmu.Unlock()
	if d := pkts.Len() - n; d > 0 {
		e.dropped.Add(uint64(d))
	}
	if n > 0 {
		e.signal()
	}
	// Like gVisor's channel endpoint, drop what does not fit silently (the
	// stack ignores the count): TCP recovers by retransmitting, and UDP
	// senders are not told about drops on a real link either.
	return n, nil
}

// readBatch blocks until at least one outbound packet is queued, then
// copies up to len(bufs) packets into bufs[i][offset:], setting sizes[i].
// After close it returns os.ErrClosed, the error wireguard-go's TUN reader
// stops on.
func (e *endpoint) readBatch(bufs [][]byte, sizes []int, offset int) (int, error) {
	var batch [batchSize]*stack.PacketBuffer
	for {
		e.qmu.Lock()
		if len(e.queue) > 0 {
			take := min(len(e.queue), len(bufs), len(batch))
			copy(batch[:], e.queue[:take])
			rest := copy(e.queue, e.queue[take:])
			clear(e.queue[rest:])
			e.queue = e.queue[:rest]
			if rest > 0 {
				// Another reader (there is normally only one) may take the rest.
				e.signal()
			}
			e.qmu.Unlock()
			n := 0
			for _, pkt := range batch[:take] {
				if size, ok := copyPacket(bufs[n][offset:], pkt); ok {
					sizes[n] = size
					n++
				} else {
					e.dropped.Add(1)
				}
				pkt.DecRef()
			}
			if n == 0 {
				continue
			}
			return n, nil
		}
		if e.closed {
			e.qmu.Unlock()
			return 0, os.ErrClosed
		}
		e.qmu.Unlock()
		<-e.ready
	}
}

// copyPacket copies the whole packet (headers and payload) into dst. It
// reports false if dst is too small.
func copyPacket(dst []byte, pkt *stack.PacketBuffer) (int, bool) {
	size := pkt.Size()
	if size > len(dst) {
		return 0, false
	}
	views, off := pkt.AsViewList()
	n := 0
	for v := views.Front(); v != nil && n < size; v = v.Next() {
		s := v.AsSlice()
		if off >= len(s) {
			off -= len(s)
			continue
		}
		n += copy(dst[n:size], s[off:])
		off = 0
	}
	return n, true
}

// deliverBatch hands the IP packets bufs[i][offset:] to the stack. Empty
// buffers and packets that are neither IPv4 nor IPv6 are dropped. After
// close it returns os.ErrClosed.
func (e *endpoint) deliverBatch(bufs [][]byte, offset int) (int, error) {
	e.mu.Lock()
	d := e.dispatcher
	e.mu.Unlock()
	if d == nil || e.isClosed() {
		return 0, os.ErrClosed
	}
	for _, b := range bufs {
		pkt := b[offset:]
		if len(pkt) == 0 {
			continue
		}
		var proto tcpip.NetworkProtocolNumber
		switch header.IPVersion(pkt) {
		case header.IPv4Version:
			proto = header.IPv4ProtocolNumber
		case header.IPv6Version:
			proto = header.IPv6ProtocolNumber
		default:
			e.dropped.Add(1)
			continue
		}
		// MakeWithData copies: the engine reuses bufs after we return.
		pkb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
		d.DeliverNetworkPacket(proto, pkb)
		pkb.DecRef()
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
	e.qmu.Unlock()
	for _, pkt := range q {
		pkt.DecRef()
	}
	// Closed is sticky, so one signal wakes the reader for good.
	e.signal()
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

// Capabilities implements stack.NetworkLinkEndpoint.
func (*endpoint) Capabilities() stack.LinkEndpointCapabilities { return stack.CapabilityNone }

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
