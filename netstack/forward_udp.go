package netstack

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// maxUDPDatagram is the largest UDP payload a flow moves; larger ones
// cannot exist in IPv4 or (without jumbograms) IPv6.
const maxUDPDatagram = 65535

// udpBufs pools the datagram buffers of UDP flows; each direction of a
// flow holds one while it runs.
var udpBufs = sync.Pool{New: func() any { b := make([]byte, maxUDPDatagram); return &b }}

// udpRequest is the stack's handler of UDP datagrams no endpoint claims,
// called on the packet path: it opens a flow for (src, dst), a connected
// endpoint that receives this and every later datagram of the flow, and
// leaves the rest to udpFlow in its own goroutine.
func (f *forwarder) udpRequest(r *udp.ForwarderRequest) {
	f.mu.Lock()
	ok := f.admitFlowLocked()
	f.mu.Unlock()
	if !ok {
		return
	}
	wq := new(waiter.Queue)
	ep, terr := r.CreateEndpoint(wq)
	if terr != nil {
		f.endFlow()
		return
	}
	id := r.ID()
	src, dst := addrPortOf(id.RemoteAddress, id.RemotePort), addrPortOf(id.LocalAddress, id.LocalPort)
	go f.udpFlow(gonet.NewUDPConn(wq, ep), src, dst)
}

// udpFlow checks and dials a UDP flow's upstream and moves datagrams both
// ways until neither way has seen one for UDPIdleTimeout.
func (f *forwarder) udpFlow(down *gonet.UDPConn, src, dst netip.AddrPort) {
	defer f.endFlow()
	if !f.track(down) {
		return
	}
	defer f.untrack(down)
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
	if !f.track(up) {
		return
	}
	defer f.untrack(up)
	f.udpOpen.Add(1)
	defer f.udpOpen.Add(-1)

	var last atomic.Int64 // time of the last datagram either way, Unix ns
	last.Store(time.Now().UnixNano())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.udpCopy(down, up, &last)
	}()
	f.udpCopy(up, down, &last)
	<-done
}

// udpCopy moves datagrams from src to dst until an error, or until no
// datagram went either way for the idle timeout; then it closes both, so
// the other direction ends too.
func (f *forwarder) udpCopy(dst, src net.Conn, last *atomic.Int64) {
	defer dst.Close()
	defer src.Close()
	bp := udpBufs.Get().(*[]byte)
	defer udpBufs.Put(bp)
	buf := *bp
	for {
		idleUntil := time.Unix(0, last.Load()).Add(f.idle)
		if !time.Now().Before(idleUntil) {
			return
		}
		src.SetReadDeadline(idleUntil)
		n, err := src.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue // the loop checks whether the other way was busy
			}
			return
		}
		last.Store(time.Now().UnixNano())
		// A datagram that cannot be sent (an unreachable upstream, a full
		// buffer) is lost, as on any router; the flow goes on.
		dst.Write(buf[:n])
	}
}
