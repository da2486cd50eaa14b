package netstack

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// maxUDPDatagram is the largest UDP payload a flow moves; larger ones
// cannot exist in IPv4 or (without jumbograms) IPv6.
const maxUDPDatagram = 65535

// udpBufs pools the datagram buffers of UDP flows. A flow takes one only
// while it moves a datagram, so an idle flow holds none (except the
// upstream side of a Dial conn that offers no readiness wait, see
// upstreamReader).
var udpBufs = sync.Pool{New: func() any { b := make([]byte, maxUDPDatagram); return &b }}

// udpRequest is the stack's handler of UDP datagrams no endpoint claims,
// called on the packet path: it opens a flow for (src, dst), a connected
// endpoint that receives this and every later datagram of the flow, and
// leaves the rest to udpFlow in its own goroutine.
func (f *forwarder) udpRequest(r *udp.ForwarderRequest) {
	id := r.ID()
	dst := addrPortOf(id.LocalAddress, id.LocalPort)
	if slices.Contains(f.n.addrs, dst.Addr()) {
		return // a closed port of the tunnel's own: dropped
	}
	f.mu.Lock()
	ok := f.admitFlowLocked()
	f.mu.Unlock()
	if !ok {
		return
	}
	fl := &udpFlow{f: f, wq: new(waiter.Queue), stop: make(chan struct{})}
	ep, terr := r.CreateEndpoint(fl.wq)
	if terr != nil {
		f.endFlow()
		return
	}
	fl.ep = ep
	fl.last.Store(time.Now().UnixNano())
	go fl.run(addrPortOf(id.RemoteAddress, id.RemotePort), dst)
}

// udpFlow is one forwarded UDP flow: the stack's endpoint for the peer's
// side, the Dial conn for the destination's.
type udpFlow struct {
	f    *forwarder
	ep   tcpip.Endpoint
	wq   *waiter.Queue
	up   net.Conn
	last atomic.Int64 // time of the last datagram either way, Unix ns

	stop chan struct{} // closed by Close: both directions end

	mu     sync.Mutex
	closed bool // guarded by mu
}

// Close ends the flow; it is idempotent.
func (fl *udpFlow) Close() error {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.closed {
		return nil
	}
	fl.closed = true
	close(fl.stop)
	fl.ep.Close()
	if fl.up != nil {
		fl.up.Close()
	}
	return nil
}

// setUp makes up the flow's upstream, for Close to close; if Close ran
// already, it closes up and reports false.
func (fl *udpFlow) setUp(up net.Conn) bool {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.closed {
		up.Close()
		return false
	}
	fl.up = up
	return true
}

// idleUntil is when the flow expires unless a datagram moves.
func (fl *udpFlow) idleUntil() time.Time {
	return time.Unix(0, fl.last.Load()).Add(fl.f.idle)
}

// run checks and dials the flow's upstream and moves datagrams both ways
// until neither way has seen one for UDPIdleTimeout.
func (fl *udpFlow) run(src, dst netip.AddrPort) {
	f := fl.f
	defer f.endFlow()
	if !f.track(fl) {
		return
	}
	defer f.untrack(fl)
	if f.verdict("udp", src, dst) != "" {
		return
	}
	ctx, cancel := context.WithTimeout(f.ctx, f.timeout)
	up, err := f.dial(ctx, "udp", src, dst)
	cancel()
	if err != nil {
		f.dialErrors.Add(1)
		f.n.log.Debug("netstack: forward: dial failed", "src", src, "dst", dst, "err", err)
		return
	}
	if !fl.setUp(up) {
		return // shut down meanwhile
	}
	f.udpOpen.Add(1)
	defer f.udpOpen.Add(-1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		fl.upToDown()
	}()
	fl.downToUp()
	<-done
}

// downToUp moves the peer's datagrams to the upstream; it ends (and ends
// the flow) on an error or when the flow is idle.
func (fl *udpFlow) downToUp() {
	defer fl.Close()
	entry, ready := waiter.NewChannelEntry(waiter.ReadableEvents)
	fl.wq.EventRegister(&entry)
	defer fl.wq.EventUnregister(&entry)
	timer := time.NewTimer(fl.f.idle)
	defer timer.Stop()
	for {
		bp := udpBufs.Get().(*[]byte)
		w := tcpip.SliceWriter(*bp)
		res, terr := fl.ep.Read(&w, tcpip.ReadOptions{})
		if terr == nil {
			fl.last.Store(time.Now().UnixNano())
			// A datagram that cannot be sent is lost, as on any router.
			fl.up.Write((*bp)[:res.Count])
			udpBufs.Put(bp)
			continue
		}
		udpBufs.Put(bp)
		if _, ok := terr.(*tcpip.ErrWouldBlock); !ok {
			return
		}
		until := fl.idleUntil()
		if !time.Now().Before(until) {
			return
		}
		timer.Reset(time.Until(until))
		select {
		case <-ready:
		case <-timer.C:
		case <-fl.stop:
			return
		}
	}
}

// upToDown moves the upstream's datagrams to the peer; it ends (and ends
// the flow) on an error or when the flow is idle.
func (fl *udpFlow) upToDown() {
	defer fl.Close()
	read := upstreamReader(fl.up)
	var held *[]byte // read's buffer when it needs one of its own
	if read == nil {
		held = udpBufs.Get().(*[]byte)
		defer udpBufs.Put(held)
		read = func() (*[]byte, int, error) {
			n, err := fl.up.Read(*held)
			return held, n, err
		}
	}
	var r bytes.Reader
	for {
		fl.up.SetReadDeadline(fl.idleUntil())
		bp, n, err := read()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && time.Now().Before(fl.idleUntil()) {
				continue // the other way was busy
			}
			return
		}
		fl.last.Store(time.Now().UnixNano())
		r.Reset((*bp)[:n])
		fl.ep.Write(&r, tcpip.WriteOptions{})
		if bp != held {
			udpBufs.Put(bp)
		}
	}
}
