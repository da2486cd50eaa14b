package benchmarks

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/wgkit/wgkit/netstack"
)

// The router-mode benchmarks run a router tunnel (netstack.Options.Forward)
// and a peer tunnel over loopback UDP. The peer routes TEST-NET-2
// (198.51.100.0/24) through the router; forwardDst exists only inside the
// tunnel: the router's Dial maps it to a service on 127.0.0.1, and never
// dials it on the host.
var forwardDst = netip.MustParseAddr("198.51.100.1")

// openForwardPair opens the router (with fo) and the peer.
func openForwardPair(tb testing.TB, fo *netstack.ForwardOptions) (router, peer *netstack.Net) {
	tb.Helper()
	k := newKeys(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	router, err := netstack.Open(ctx, serverConfig(k), &netstack.Options{Forward: fo})
	mustNoErr(tb, err, "open the router")
	tb.Cleanup(func() { router.Close() })
	ccfg := clientConfig(k, router.Device().ListenPort())
	ccfg.Peers[0].AllowedIPs = append(ccfg.Peers[0].AllowedIPs, netip.PrefixFrom(forwardDst, 24).Masked())
	peer, err = netstack.Open(ctx, ccfg, nil)
	mustNoErr(tb, err, "open the peer")
	tb.Cleanup(func() { peer.Close() })
	return router, peer
}

// toLoopback is a ForwardOptions.Dial that sends every flow to the
// loopback address with the destination's port.
func toLoopback(ctx context.Context, network string, _, dst netip.AddrPort) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, netip.AddrPortFrom(loopback, dst.Port()).String())
}

// forwardModes are the two ends a peer's connection can have: the
// router tunnel itself (mode=direct: the router's own listener, the
// baseline) or a host service the router forwards to (mode=forward).
type forwardMode struct {
	name string
	// listen returns a listener on router's side and the address the
	// peer dials to reach it.
	listen func(tb testing.TB, router *netstack.Net) (net.Listener, netip.AddrPort)
}

var forwardModes = []forwardMode{
	{"direct", func(tb testing.TB, router *netstack.Net) (net.Listener, netip.AddrPort) {
		l, err := router.Listen("tcp", netip.AddrPortFrom(serverAddr, benchPort).String())
		mustNoErr(tb, err, "listen on the router tunnel")
		return l, netip.AddrPortFrom(serverAddr, benchPort)
	}},
	{"forward", func(tb testing.TB, _ *netstack.Net) (net.Listener, netip.AddrPort) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		mustNoErr(tb, err, "listen on loopback")
		return l, netip.AddrPortFrom(forwardDst, uint16(l.Addr().(*net.TCPAddr).Port))
	}},
}

var benchForward = &netstack.ForwardOptions{
	Dial:     toLoopback,
	Allow:    func(string, netip.AddrPort, netip.AddrPort) bool { return true },
	MaxFlows: 1 << 16,
}

// BenchmarkForwardTCPThroughput moves bulk TCP data from the peer through
// the router to a host service on loopback (mode=forward), against the
// same transfer ending at the router tunnel's own listener (mode=direct).
// The goal is forward at 0.7x of direct or better. It reports Mbit/s and
// CPU seconds per GB (whole process).
func BenchmarkForwardTCPThroughput(b *testing.B) {
	for _, m := range forwardModes {
		b.Run("mode="+m.name, func(b *testing.B) {
			router, peer := openForwardPair(b, benchForward)
			l, addr := m.listen(b, router)
			per := (int64(b.N)*opBytes + chunk - 1) / chunk * chunk
			stop := sinkServer(l, warmBytes+per)
			defer stop()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			c, err := peer.DialContext(ctx, "tcp", addr.String())
			cancel()
			mustNoErr(b, err, "dial")
			defer c.Close()
			buf := randomBytes(chunk)
			send := func(n int64) {
				for sent := int64(0); sent < n; sent += chunk {
					_, err := c.Write(buf)
					mustNoErr(b, err, "write")
				}
			}
			send(warmBytes)
			b.SetBytes(opBytes)
			b.ReportAllocs()
			cpu0 := cpuTime(b)
			b.ResetTimer()
			start := time.Now()
			send(per)
			_, err = io.ReadFull(c, make([]byte, 1))
			mustNoErr(b, err, "read the sink's acknowledgement")
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(per)*8/1e6/elapsed.Seconds(), "Mbit/s")
			if cpu := cpuTime(b) - cpu0; cpu > 0 {
				b.ReportMetric(cpu.Seconds()/(float64(per)/1e9), "cpu-s/GB")
			}
		})
	}
}

// BenchmarkForwardTCPSetup opens one TCP connection per iteration from the
// peer, exchanges one byte with an echo service and closes it: through the
// router to loopback (mode=forward) or to the router tunnel
// (mode=direct). It reports flows/s.
func BenchmarkForwardTCPSetup(b *testing.B) {
	for _, m := range forwardModes {
		b.Run("mode="+m.name, func(b *testing.B) {
			router, peer := openForwardPair(b, benchForward)
			l, addr := m.listen(b, router)
			stop := echoServer(l)
			defer stop()
			one := make([]byte, 1)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				c, err := peer.DialContext(ctx, "tcp", addr.String())
				cancel()
				mustNoErr(b, err, "dial")
				_, err = c.Write(one)
				if err == nil {
					_, err = io.ReadFull(c, one)
				}
				c.Close()
				mustNoErr(b, err, "echo")
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "flows/s")
		})
	}
}

// BenchmarkForwardIdleHeap opens b.N idle flows from the peer and reports
// the live heap they add per flow (heap-B/flow, whole process: the
// peer's conn, the router's state and the service's conn): TCP
// connections to the router tunnel (tcp-direct, the baseline) or through
// it to loopback (tcp-forward), and UDP flows through it to a loopback
// echo service (udp-forward). Run it with a fixed count, e.g.
// -benchtime 500x.
func BenchmarkForwardIdleHeap(b *testing.B) {
	for _, m := range forwardModes {
		b.Run("flow=tcp-"+m.name, func(b *testing.B) {
			router, peer := openForwardPair(b, benchForward)
			l, addr := m.listen(b, router)
			stop := serve(l, func(c net.Conn) { io.Copy(io.Discard, c) })
			defer stop()
			before := heapInUse()
			conns := make([]net.Conn, 0, b.N)
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			b.ResetTimer()
			for range b.N {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				c, err := peer.DialContext(ctx, "tcp", addr.String())
				cancel()
				mustNoErr(b, err, "dial")
				conns = append(conns, c)
			}
			b.StopTimer()
			if m.name == "forward" {
				waitStats(b, router, func(s netstack.ForwardStats) bool { return s.TCPFlows == b.N })
			}
			b.ReportMetric(float64(int64(heapInUse())-int64(before))/float64(b.N), "heap-B/flow")
		})
	}
	b.Run("flow=udp-forward", func(b *testing.B) {
		router, peer := openForwardPair(b, benchForward)
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		mustNoErr(b, err, "listen")
		defer pc.Close()
		go func() {
			buf := make([]byte, 2048)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo(buf[:n], from)
			}
		}()
		addr := netip.AddrPortFrom(forwardDst, uint16(pc.LocalAddr().(*net.UDPAddr).Port))
		before := heapInUse()
		conns := make([]net.Conn, 0, b.N)
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		buf := make([]byte, 16)
		b.ResetTimer()
		for range b.N {
			c, err := peer.DialContext(context.Background(), "udp", addr.String())
			mustNoErr(b, err, "dial")
			conns = append(conns, c)
			for try := 0; ; try++ {
				c.Write([]byte("x"))
				c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				if _, err := c.Read(buf); err == nil {
					break
				}
				if try == 10 {
					b.Fatal("no UDP echo through the router")
				}
			}
		}
		b.StopTimer()
		waitStats(b, router, func(s netstack.ForwardStats) bool { return s.UDPFlows == b.N })
		b.ReportMetric(float64(int64(heapInUse())-int64(before))/float64(b.N), "heap-B/flow")
	})
}

// waitStats waits up to 10 seconds for the router's stats to satisfy ok.
func waitStats(tb testing.TB, router *netstack.Net, ok func(netstack.ForwardStats) bool) {
	tb.Helper()
	end := time.Now().Add(10 * time.Second)
	for !ok(router.ForwardStats()) {
		if time.Now().After(end) {
			tb.Fatalf("router stats %+v after 10s", router.ForwardStats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
