package netstack

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wgkit/wgkit/internal/memnet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// The tests in this file hold the memory bounds the package documents
// (Options, "Memory" in the package doc): closed connections release
// their state after tcpTimeWait, and a burst of dials to a listener that
// never accepts costs what the engine's queues bound, not more.

// heapAfterGC returns the live heap in bytes after a full collection.
func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// heapPeak samples the heap in use every millisecond until stop is closed
// and returns the highest sample.
func heapPeak(stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		var peak uint64
		var ms runtime.MemStats
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			select {
			case <-stop:
				out <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

const mib = 1 << 20

// TestTimeWaitMemoryReleased opens and closes connections as fast as it
// can and checks that their TIME_WAIT state is gone tcpTimeWait later.
// With gVisor's 60 s TIME_WAIT every closed connection held 3.5 to 5.6
// KiB for a minute: 238 MiB at 1100 connections per second.
func TestTimeWaitMemoryReleased(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out TIME_WAIT (6 s); skipped with -short")
	}
	conns := 3000
	if raceEnabled {
		// The heap figures are the plain run's to check; the race run
		// keeps the churn short. (2 of 3000 dials that waited out the
		// deadline here under -race met a server connection stranded
		// in FIN_WAIT_2, whose challenge ACKs the link did not let the
		// dial answer: see tcpFinWait2 and TestDialPortHeldByPeer.)
		conns = 500
	}
	a, b := openPair(t, nil)
	ctx := testContext(t, 90*time.Second)
	ln, err := a.Listen("tcp", ":9300")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.Read(make([]byte, 1))
				c.Close()
			}()
		}
	}()
	addr := netip.AddrPortFrom(addrA4, 9300).String()
	base := heapAfterGC()
	start := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr atomic.Pointer[error]
	next := make(chan struct{})
	for range 8 {
		wg.Go(func() {
			for range next {
				c, err := b.DialContext(ctx, "tcp", addr)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					continue
				}
				// The dialer writes and closes first, so its side of
				// every connection goes through TIME_WAIT.
				c.Write([]byte{1})
				c.Close()
			}
		})
	}
	for range conns {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	churn := time.Since(start)
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d dials failed, the first with %v", n, conns, *firstErr.Load())
	}
	held := heapAfterGC()
	time.Sleep(tcpTimeWait + time.Second)
	after := heapAfterGC()
	t.Logf("%d connections in %v: heap %.1f MiB before, %.1f MiB just after, %.1f MiB %v later",
		conns, churn.Round(time.Millisecond), float64(base)/mib, float64(held)/mib, float64(after)/mib, tcpTimeWait+time.Second)
	// 3000 connections in TIME_WAIT hold 10 to 17 MiB; once they expire
	// the heap is back near where it started. 4 MiB of margin covers the
	// pools and caches the churn grew.
	if after > base+4*mib {
		t.Errorf("heap %.1f MiB after TIME_WAIT expired, want at most %.1f (the start plus 4 MiB)", float64(after)/mib, float64(base+4*mib)/mib)
	}
}

// TestDialBurstMemory dials a listener that never accepts 5000 times at
// once and checks the heap's peak: 148 to 200 MiB, 83% of it in
// wireguard-go's 64 KiB message buffers (SYNs and SYN-ACKs queued in the
// engine on both sides), the rest gVisor endpoints and port
// reservations. MaxHalfOpenDials bounds it: with at most 256 dials in
// flight the peak was near 45 MiB (WGKIT_DIAL_CONCURRENCY=n limits the
// test's own dials further, to measure other caps).
func TestDialBurstMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("5000 dials waiting out a 3 s context; skipped with -short")
	}
	const dials = 5000
	a, b := openPair(t, nil)
	ln, err := a.Listen("tcp", ":9301")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := netip.AddrPortFrom(addrA4, 9301).String()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	base := heapAfterGC()
	stop := make(chan struct{})
	peak := heapPeak(stop)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	sem := make(chan struct{}, dials)
	if s := os.Getenv("WGKIT_DIAL_CONCURRENCY"); s != "" {
		n, _ := strconv.Atoi(s)
		sem = make(chan struct{}, n)
	}
	for range dials {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			c, err := b.DialContext(ctx, "tcp", addr)
			if err == nil {
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		})
	}
	if p := os.Getenv("WGKIT_HEAP_PROFILE"); p != "" {
		time.Sleep(300 * time.Millisecond)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		runtime.GC()
		pprof.Lookup("heap").WriteTo(f, 0)
		f.Close()
	}
	wg.Wait()
	close(stop)
	p := <-peak
	for _, c := range conns {
		c.Close()
	}
	t.Logf("%d dials (%d connected): heap %.1f MiB before, peak %.1f MiB", dials, len(conns), float64(base)/mib, float64(p)/mib)
	if p > base+dialBurstCeiling {
		t.Errorf("heap peaked %.1f MiB above the start, want at most %d MiB", float64(p-base)/mib, dialBurstCeiling/mib)
	}
}

// dialBurstCeiling is well above the 45 to 51 MiB measured with the cap
// (a loaded machine collects later) and far below the 320 MiB without it.
const dialBurstCeiling = 96 * mib

// TestFinWait2Released closes a connection from the server's side after
// the client's FIN (CLOSE_WAIT, then LAST_ACK) while the client's ACKs
// are lost, so that the server retransmits its FIN. gVisor then moves
// the connection to FIN_WAIT_1 and, with the ACK, to FIN_WAIT_2, where
// it waits for the FIN it has already had; it used to stay there 60 s
// (gVisor's FIN_WAIT_2 timeout), holding its memory and its four-tuple.
// With tcpFinWait2 it is gone within that, whatever state gVisor leaves
// it in.
func TestFinWait2Released(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out FIN_WAIT_2 (5 s); skipped with -short")
	}
	t.Parallel() // it mostly sleeps
	ctx := testContext(t, 30*time.Second)
	s := openServerTunnel(t, ctx)
	b := s.openClient(t, ctx, 2)
	client, err := b.DialContext(ctx, "tcp", netip.AddrPortFrom(addrA4, 80).String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server := s.accept(t)
	port := uint16(client.LocalAddr().(*net.TCPAddr).Port)
	if err := client.(*tcpConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := server.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("server read %v, want io.EOF", err)
	}
	// The client's ACKs of the server's FIN are lost for a while: the
	// server resends its FIN (its RTO is 20 ms to 1 s).
	if err := s.sw.SetLinkFaults(2, 1, &memnet.Faults{Loss: 1}); err != nil {
		t.Fatal(err)
	}
	server.Close()
	time.Sleep(300 * time.Millisecond)
	if err := s.sw.SetLinkFaults(2, 1, nil); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	var states []string
	for {
		st := tcpState(s.a, port)
		if len(states) == 0 || states[len(states)-1] != st {
			states = append(states, st)
		}
		if st == "" {
			break
		}
		if time.Since(healed) > tcpFinWait2+2*time.Second {
			t.Fatalf("the server's connection is still held %v after the path healed; its states: %v", time.Since(healed).Round(time.Millisecond), states)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("server connection gone %v after the path healed; its states: %v", time.Since(healed).Round(100*time.Millisecond), states[:len(states)-1])
}

// tcpState returns the state of n's TCP endpoint whose remote port is
// port, or "" if it has none.
func tcpState(n *Net, port uint16) string {
	for _, ep := range n.stack.RegisteredEndpoints() {
		te, ok := ep.(*tcp.Endpoint)
		if !ok {
			continue
		}
		if info, ok := te.Info().(*stack.TransportEndpointInfo); ok && info.ID.RemotePort == port {
			return tcp.EndpointState(te.State()).String()
		}
	}
	return ""
}
