package netstack

import (
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
)

const (
	// maxInflightPackets bounds the data packets between the Bind and the
	// stack, that is inside the receiving engine: received, not yet
	// decrypted or decrypted and queued for the tun.Device. The engine
	// holds each in a 64 KiB buffer and queues up to 1024 batches of them
	// (wireguard-go's QueueInboundSize, a process-wide constant), so
	// without a bound a receiver that falls behind keeps up to a GiB of
	// them: TCP fills that queue with its window before it sees a loss,
	// and an unpaced UDP sender fills it outright. With the bound the
	// backlog waits in the kernel's socket buffer, which counts its real
	// size, and what exceeds that is lost there as on any link, so TCP
	// backs off. 128 packets are 8 MiB of engine buffers. In the
	// benchmarks a bound of 256 cut the peak heap of a TCP bulk stream
	// from 180 to 77 MiB (and its CPU per byte by a fifth) and of an
	// unpaced UDP flow from 1.7 GiB to 139 MiB, with no loss of
	// throughput; 128 on both sides (with maxOutflightPackets) brings
	// the stream to 28 MiB (see BENCHMARKS.md).
	maxInflightPackets = 128

	// maxOutflightPackets bounds the data packets between the tun.Device
	// and the Bind on the sending side: read from the stack, not yet
	// encrypted and handed to the Bind's Send. The engine holds each in a
	// 64 KiB buffer and queues up to 1024 batches of them (wireguard-go's
	// QueueOutboundSize), so without a bound a TCP sender fills the
	// engine with its whole window, one MTU-sized segment per 64 KiB
	// buffer: a 4 MiB send buffer is up to 190 MiB of engine buffers.
	// With the bound the tun.Device's Read waits, the link's queue holds
	// the stack's own packets (references to what TCP keeps for
	// retransmission anyway), and a full queue drops as a NIC's would.
	// 128 packets are 8 MiB of engine buffers. In the benchmarks a bound
	// of 256 cut the peak heap of a TCP bulk stream from 127 to 45 MiB,
	// of 4 streams from 240 to 56, and 128 on both sides to 28 and 40,
	// with no loss of throughput (see BENCHMARKS.md). Packets the engine
	// drops after Read counted them (no peer's AllowedIPs cover the
	// destination, a handshake's staged queue overflowed) stay counted
	// until a Read has waited inflightLeakTimeout with nothing sent; while
	// other packets flow they narrow the bound by their number.
	maxOutflightPackets = 128

	// inflightLeakTimeout is how long a receive waits for the stack to
	// take a packet before it concludes that the packets it counts were
	// dropped inside the engine (failed decryption, replays, a source
	// outside the peer's AllowedIPs: the engine drops them without telling
	// anyone) and starts counting afresh. So lost counts can cost a pause
	// of this length, never a wedge.
	inflightLeakTimeout = 50 * time.Millisecond
)

// inflight counts the data packets inside the receiving engine (see
// maxInflightPackets). The Bind's receive functions acquire a count per
// data packet they return, waiting while the bound is reached; the link
// releases one per packet the engine delivers. It is safe for concurrent
// use.
type inflight struct {
	max     int // the bound; set by newInflight
	mu      sync.Mutex
	used    int           // guarded by mu
	counted int           // guarded by mu; data packets counted in all, for tests
	stop    chan struct{} // guarded by mu; closed when the Bind closes, made anew by Open
	// wake has capacity one and is signalled (without blocking) by
	// release; a waiting acquire checks again after it.
	wake chan struct{}
}

func newInflight(bound int) *inflight {
	return &inflight{max: bound, stop: make(chan struct{}), wake: make(chan struct{}, 1)}
}

// acquire counts n data packets, waiting while that would exceed
// the bound, until the Bind closes, or until no packet has been
// delivered for inflightLeakTimeout. timer is the caller's own, stopped.
func (f *inflight) acquire(n int, timer *time.Timer) {
	if n == 0 {
		return
	}
	for {
		f.mu.Lock()
		// A batch larger than the bound goes through alone.
		if f.used == 0 || f.used+n <= f.max {
			f.used += n
			f.counted += n
			f.mu.Unlock()
			return
		}
		stop := f.stop
		f.mu.Unlock()
		timer.Reset(inflightLeakTimeout)
		select {
		case <-f.wake:
			timer.Stop()
		case <-stop:
			timer.Stop()
			return
		case <-timer.C:
			f.mu.Lock()
			f.used = 0
			f.mu.Unlock()
		}
	}
}

// release uncounts n packets the engine delivered.
func (f *inflight) release(n int) {
	if n == 0 {
		return
	}
	f.mu.Lock()
	f.used = max(0, f.used-n)
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// open starts counting afresh for a newly opened Bind.
func (f *inflight) open() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.used = 0
	if closed(f.stop) {
		f.stop = make(chan struct{})
	}
}

// close ends waiting acquires, so that the engine's receive goroutines
// can return and exit.
func (f *inflight) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !closed(f.stop) {
		close(f.stop)
	}
}

// inflightBind is a Bind whose receive functions count data packets in
// an inflight and wait for it, and whose Send uncounts the data packets
// the tun.Device's Read counted in another. The Net wraps its default Bind in one; a
// Bind of the caller's is left as it is.
type inflightBind struct {
	conn.Bind
	f   *inflight // the receiving side's count
	out *inflight // the sending side's count
}

// Open implements conn.Bind.
func (b inflightBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := b.Bind.Open(port)
	if err != nil {
		return fns, actual, err
	}
	b.f.open()
	b.out.open()
	wrapped := make([]conn.ReceiveFunc, len(fns))
	for i, fn := range fns {
		// Each receive function runs on one goroutine of the engine, so
		// it can own a timer.
		timer := time.NewTimer(time.Hour)
		timer.Stop()
		wrapped[i] = func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
			k, err := fn(bufs, sizes, eps)
			data := 0
			for j := range k {
				if isData(bufs[j][:sizes[j]]) {
					data++
				}
			}
			b.f.acquire(data, timer)
			return k, err
		}
	}
	return wrapped, actual, nil
}

// Send implements conn.Bind, releasing the data packets of bufs from
// out, the sending side's count (see maxOutflightPackets).
func (b inflightBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	err := b.Bind.Send(bufs, ep)
	data := 0
	for _, buf := range bufs {
		if isData(buf) {
			data++
		}
	}
	b.out.release(data)
	return err
}

// isData reports whether the WireGuard message msg carries a packet
// from or for the stack: a transport message longer than a keepalive;
// handshakes and keepalives do not.
func isData(msg []byte) bool {
	return len(msg) > device.MessageKeepaliveSize && msg[0] == device.MessageTransportType
}

// Close implements conn.Bind. It ends waiting receives and tun.Device
// Reads first, so that the engine's goroutines can exit.
func (b inflightBind) Close() error {
	b.f.close()
	b.out.close()
	return b.Bind.Close()
}
