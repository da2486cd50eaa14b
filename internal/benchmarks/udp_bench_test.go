package benchmarks

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// udpTunnel is a tunnel that also carries UDP sockets.
type udpTunnel interface {
	listenUDP(addr netip.AddrPort) (net.PacketConn, error)
	dialUDP(ctx context.Context, addr netip.AddrPort) (net.Conn, error)
}

func (s *stockTunnel) listenUDP(addr netip.AddrPort) (net.PacketConn, error) {
	return s.tnet.ListenUDPAddrPort(addr)
}

func (s *stockTunnel) dialUDP(_ context.Context, addr netip.AddrPort) (net.Conn, error) {
	return s.tnet.DialUDPAddrPort(netip.AddrPort{}, addr)
}

func (w wgkitTunnel) listenUDP(addr netip.AddrPort) (net.PacketConn, error) {
	return w.n.ListenPacket("udp", addr.String())
}

func (w wgkitTunnel) dialUDP(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	return w.n.DialContext(ctx, "udp", addr.String())
}

const (
	// datagramSize is QUIC's usual datagram payload.
	datagramSize = 1200
	// datagramsPerOp is what one iteration sends: 60 MB, far more than
	// any buffer on the way holds, so that the figures are the steady
	// state's.
	datagramsPerOp = 50000
	// quicReadBuffer is the receive buffer quic-go asks for with
	// SetReadBuffer on any conn that has the method.
	quicReadBuffer = 7 << 20
)

// BenchmarkNetstackUDPUnpaced sends 1200-byte datagrams from the client
// tunnel to the server tunnel as fast as Write returns, one flow, and
// counts what a reader on the server receives. It reports what arrived
// per second from the first Write to the last arrival (delivered-Mbit/s),
// what Write accepted per second (accepted-Mbit/s), the share of accepted
// datagrams that never arrived (lost-%), wherever they were lost: in
// either engine, either stack, the loopback sockets between, or the
// receiving socket's buffer; and the peak heap during the transfer
// (peak-heap-B, both tunnels). A Write that fails with ENOBUFS counts as
// neither accepted nor lost (enobufs-%, of all Write calls): that is a
// kernel's way of pushing back, and the sender goes on.
//
// The receiver does what quic-go does with a socket: if the conn has a
// SetReadBuffer method it asks for 7 MiB (wgkit's conns have it, stock's
// gonet conns do not). Two variants of wgkit show what the buffers are
// worth: impl=wgkit-rcvbuf212k keeps the default receive buffer (212
// KiB), impl=wgkit-sndbuf212k gives the sender gVisor's default send
// buffer (212 KiB) instead of wgkit's 16 KiB.
func BenchmarkNetstackUDPUnpaced(b *testing.B) {
	type bufferSetter interface {
		SetReadBuffer(int) error
		SetWriteBuffer(int) error
	}
	quic := func(pc net.PacketConn, _ net.Conn) error {
		if rb, ok := pc.(bufferSetter); ok {
			return rb.SetReadBuffer(quicReadBuffer)
		}
		return nil
	}
	cases := []struct {
		name string
		im   impl
		tune func(pc net.PacketConn, c net.Conn) error
	}{
		{"stock", impls[0], quic},
		{"wgkit", impls[1], quic},
		{"wgkit-rcvbuf212k", impls[1], func(net.PacketConn, net.Conn) error { return nil }},
		{"wgkit-sndbuf212k", impls[1], func(pc net.PacketConn, c net.Conn) error {
			if err := quic(pc, c); err != nil {
				return err
			}
			return c.(bufferSetter).SetWriteBuffer(212 << 10)
		}},
	}
	for _, tc := range cases {
		b.Run("impl="+tc.name, func(b *testing.B) { benchUDPUnpaced(b, tc.im, tc.tune) })
	}
}

func benchUDPUnpaced(b *testing.B, im impl, tune func(net.PacketConn, net.Conn) error) {
	server, client := openPair(b, im)
	pc, err := server.(udpTunnel).listenUDP(netip.AddrPortFrom(serverAddr, benchPort))
	mustNoErr(b, err, "listen")
	defer pc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.(udpTunnel).dialUDP(ctx, netip.AddrPortFrom(serverAddr, benchPort))
	mustNoErr(b, err, "dial")
	defer c.Close()
	mustNoErr(b, tune(pc, c), "set the buffers")

	// Each datagram starts with its round; the reader counts the
	// current round's only, so that stragglers of the warm-up or of
	// an earlier round do not count.
	var round, got atomic.Uint64
	var last atomic.Int64 // UnixNano of the last counted arrival
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 2048)
		for {
			k, err := pc.(net.Conn).Read(buf)
			if err != nil {
				return
			}
			if k >= 8 && binary.BigEndian.Uint64(buf) == round.Load() {
				got.Add(1)
				last.Store(time.Now().UnixNano())
			}
		}
	}()
	defer func() { pc.Close(); <-readDone }()

	msg := make([]byte, datagramSize)
	// Warm up: the handshake, then a burst, until one arrives.
	round.Store(1)
	binary.BigEndian.PutUint64(msg, 1)
	deadline := time.Now().Add(20 * time.Second)
	for got.Load() == 0 {
		if time.Now().After(deadline) {
			b.Fatal("no datagram came through the tunnel in 20 s")
		}
		c.Write(msg)
		time.Sleep(5 * time.Millisecond)
	}

	var accepted, enobufs, sent, received uint64
	var elapsed time.Duration
	var sendTime time.Duration
	sampler := startHeapSampler()
	b.SetBytes(datagramsPerOp * datagramSize)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := uint64(i + 2)
		round.Store(r)
		got.Store(0)
		binary.BigEndian.PutUint64(msg, r)
		start := time.Now()
		acc := uint64(0)
		for range datagramsPerOp {
			_, err := c.Write(msg)
			switch {
			case err == nil:
				acc++
			case isENOBUFS(err):
				enobufs++
			default:
				b.Fatal(err)
			}
		}
		sendTime += time.Since(start)
		// Wait until nothing more arrives for 200 ms.
		for n := got.Load(); ; {
			time.Sleep(200 * time.Millisecond)
			m := got.Load()
			if m == n || m >= acc {
				break
			}
			n = m
		}
		g := got.Load()
		if g > 0 {
			elapsed += time.Duration(last.Load() - start.UnixNano())
		}
		accepted += acc
		sent += datagramsPerOp
		received += g
	}
	b.StopTimer()
	peak := sampler.stop()
	if elapsed <= 0 || accepted == 0 {
		b.Fatalf("nothing arrived: %d accepted, %d received", accepted, received)
	}
	b.ReportMetric(float64(received*datagramSize*8)/1e6/elapsed.Seconds(), "delivered-Mbit/s")
	b.ReportMetric(float64(accepted*datagramSize*8)/1e6/sendTime.Seconds(), "accepted-Mbit/s")
	b.ReportMetric(100*(1-float64(received)/float64(accepted)), "lost-%")
	b.ReportMetric(100*float64(enobufs)/float64(sent), "enobufs-%")
	b.ReportMetric(float64(peak), "peak-heap-B")
}

// isENOBUFS reports whether err says the send queue was full, as wgkit
// reports it (an errno) or as stock's gonet does (the gVisor error text).
func isENOBUFS(err error) bool {
	if errors.Is(err, syscall.ENOBUFS) {
		return true
	}
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Err != nil && oe.Err.Error() == "no buffer space available"
}
