package benchmarks

import (
	"context"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/wgkit/wgkit/netstack"
	"github.com/wgkit/wgkit/wg"
)

const benchPort = 5001

// BenchmarkNetstackTCPThroughput moves bulk TCP data from the client tunnel
// to the server tunnel over loopback UDP, with 1 and 4 streams. It reports
// Mbit/s, CPU seconds per GB (user plus system, whole process), the peak
// heap during the transfer (peak-heap-B, sampled; it includes garbage not
// yet collected) and the live heap right after it with the connections
// still open (heap-B, after two collections). Both heap figures cover the
// whole process, that is both tunnels of the pair.
//
// Besides impl=stock and impl=wgkit (default options) it runs
// impl=wgkit-tcpbuf256k, wgkit with netstack.Options.MaxTCPBuffer set to
// 256 KiB, to measure what that memory cap costs in throughput.
func BenchmarkNetstackTCPThroughput(b *testing.B) {
	all := append(slices.Clip(impls), impl{"wgkit-tcpbuf256k", openWgkitWith(&netstack.Options{MaxTCPBuffer: 256 << 10})})
	for _, streams := range []int{1, 4} {
		b.Run("streams="+strconv.Itoa(streams), func(b *testing.B) {
			for _, im := range all {
				b.Run("impl="+im.name, func(b *testing.B) { benchThroughput(b, im, streams) })
			}
		})
	}
}

// openWgkitWith returns an impl's open function for wgkit with opts.
func openWgkitWith(opts *netstack.Options) func(testing.TB, *wg.Config) tunnel {
	return func(tb testing.TB, cfg *wg.Config) tunnel {
		tb.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		o := *opts
		n, err := netstack.Open(ctx, cfg, &o)
		mustNoErr(tb, err, "wgkit: open")
		return wgkitTunnel{n}
	}
}

const (
	// chunk is the size of one Write.
	chunk = 128 << 10
	// opBytes is what one benchmark iteration moves, split over the
	// streams: large enough that -benchtime 3x measures the steady state
	// rather than TCP slow start.
	opBytes = 8 << 20
	// warmBytes is sent on each stream before the timer starts, so that
	// the congestion window has opened.
	warmBytes = 2 << 20
)

func benchThroughput(b *testing.B, im impl, streams int) {
	server, client := openPair(b, im)
	benchStreams(b, server, streams, func() (net.Conn, error) { return dialServer(b, client, benchPort), nil })
}

// benchStreams runs the bulk transfer of BenchmarkNetstackTCPThroughput
// over streams conns from dial to a sink in server: each stream carries
// its share of b.N operations of opBytes, in whole chunks, after
// warmBytes of warm-up. It reports Mbit/s, CPU seconds per GB (user plus
// system, whole process), the peak and final heap, and allocations.
func benchStreams(b *testing.B, server tunnel, streams int, dial func() (net.Conn, error)) {
	l, err := server.listen(netip.AddrPortFrom(serverAddr, benchPort))
	mustNoErr(b, err, "listen")
	per := (int64(b.N)*opBytes/int64(streams) + chunk - 1) / chunk * chunk
	stop := sinkServer(l, warmBytes+per)
	defer stop()
	buf := randomBytes(chunk)
	send := func(c net.Conn, n int64) error {
		for sent := int64(0); sent < n; sent += chunk {
			if _, err := c.Write(buf); err != nil {
				return err
			}
		}
		return nil
	}
	conns := make([]net.Conn, streams)
	for i := range conns {
		c, err := dial()
		mustNoErr(b, err, "dial")
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Minute))
		conns[i] = c
		mustNoErr(b, send(c, warmBytes), "warm up")
	}
	sampler := startHeapSampler()
	b.SetBytes(opBytes)
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for _, c := range conns {
		wg.Add(1)
		go func(c net.Conn) {
			defer wg.Done()
			if err := send(c, per); err != nil {
				errs <- err
				return
			}
			ack := make([]byte, 1)
			if _, err := io.ReadFull(c, ack); err != nil {
				errs <- err
			}
		}(c)
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	peak := sampler.stop()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	total := float64(per) * float64(streams)
	b.ReportMetric(total*8/1e6/elapsed.Seconds(), "Mbit/s")
	if cpu := cpuTime(b) - cpu0; cpu > 0 {
		b.ReportMetric(cpu.Seconds()/(total/1e9), "cpu-s/GB")
	}
	b.ReportMetric(float64(peak), "peak-heap-B")
	b.ReportMetric(float64(heapInUse()), "heap-B")
}

// BenchmarkNetstackTCPRoundTrip measures one-byte TCP round trips through
// an established tunnel. One iteration is roundTrips round trips, so that
// -benchtime 3x still averages over many; ns/roundtrip is the figure.
func BenchmarkNetstackTCPRoundTrip(b *testing.B) {
	const roundTrips = 200
	forEachImpl(b, func(b *testing.B, im impl) {
		server, client := openPair(b, im)
		l, err := server.listen(netip.AddrPortFrom(serverAddr, benchPort))
		mustNoErr(b, err, "listen")
		stop := echoServer(l)
		defer stop()
		c := dialServer(b, client, benchPort)
		defer c.Close()
		one := []byte{42}
		got := make([]byte, 1)
		roundTrip := func() {
			if _, err := c.Write(one); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, got); err != nil {
				b.Fatal(err)
			}
		}
		for range roundTrips {
			roundTrip() // warm up
		}
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < b.N; i++ {
			for range roundTrips {
				roundTrip()
			}
		}
		b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N*roundTrips), "ns/roundtrip")
	})
}

// BenchmarkNetstackFirstByte measures the time from opening a new client
// tunnel to the first byte echoed back through it: tunnel set-up, the
// WireGuard handshake, the TCP handshake and one round trip.
func BenchmarkNetstackFirstByte(b *testing.B) {
	forEachImpl(b, firstByte)
}

// firstByte is BenchmarkNetstackFirstByte's loop for im.
func firstByte(b *testing.B, im impl) {
	k := newKeys(b)
	server := im.open(b, serverConfig(k))
	defer server.close()
	l, err := server.listen(netip.AddrPortFrom(serverAddr, benchPort))
	mustNoErr(b, err, "listen")
	stop := echoServer(l)
	defer stop()
	cfg := clientConfig(k, server.listenPort())
	got := make([]byte, 1)
	times := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		client := im.open(b, cfg)
		c := echoOnce(b, client, got)
		times = append(times, time.Since(start))
		b.StopTimer()
		closeBoth(c)
		// The next client reuses the key, and WireGuard rejects an
		// initiation whose timestamp is not later than the last one;
		// timestamps are rounded down to 2^24 ns to hide timing, so a
		// new handshake within ~17 ms would be dropped as a replay
		// and retried only after REKEY_TIMEOUT (5 s). The pause also
		// lets the client's last ACK leave before its tunnel closes.
		time.Sleep(40 * time.Millisecond)
		client.close()
		b.StartTimer()
	}
	// On a shared machine a few iterations in a hundred wait 10 to
	// 100 ms for a CPU, which moves the mean (ns/op) more than any
	// change to the path; the median shows the path.
	reportMedian(b, times)
}

// echoOnce dials the echo server at benchPort through client (20 s at
// most), sends one byte and reads it back into got.
func echoOnce(b *testing.B, client tunnel, got []byte) net.Conn {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	c, err := client.dial(ctx, netip.AddrPortFrom(serverAddr, benchPort))
	cancel()
	if err != nil {
		b.Fatal(err)
	}
	if _, err := c.Write([]byte{1}); err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(c, got); err != nil {
		b.Fatal(err)
	}
	return c
}

// closeBoth closes c in both directions and waits (at most 2 s) for the
// peer's FIN, so that the server's side of the connection is gone before
// the client's tunnel closes. A server connection whose client vanished
// stays open (the server's heap grew with every iteration) and keeps its
// 4-tuple: a later client stack (same address) that picks the same
// ephemeral port meets a challenge ACK and has to reset that connection
// first (netstack's TestDialPortHeldByPeer), which would time the reset
// rather than the path.
func closeBoth(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		io.Copy(io.Discard, c)
	}
	c.Close()
}

// BenchmarkNetstackIdleHeap reports the heap that one idle tunnel holds:
// opened, up, with one peer, and no traffic.
func BenchmarkNetstackIdleHeap(b *testing.B) {
	const n = 8
	forEachImpl(b, func(b *testing.B, im impl) {
		for i := 0; i < b.N; i++ {
			before := heapInUse()
			ts := make([]tunnel, n)
			for j := range ts {
				ts[j] = im.open(b, serverConfig(newKeys(b)))
			}
			// Let start-up goroutines settle before measuring.
			time.Sleep(100 * time.Millisecond)
			after := heapInUse()
			for _, t := range ts {
				t.close()
			}
			b.ReportMetric(float64(int64(after)-int64(before))/n, "heap-B/tunnel")
		}
	})
}
