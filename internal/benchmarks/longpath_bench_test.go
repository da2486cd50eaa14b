package benchmarks

import (
	"context"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/wgkit/wgkit/internal/memnet"
	"github.com/wgkit/wgkit/netstack"
	"github.com/wgkit/wgkit/wg"
)

// Long paths: one TCP stream through two tunnels whose WireGuard
// datagrams cross an in-memory switch (internal/memnet) that delays each
// one by half the round trip, so that the round trip is what a 50 or
// 100 ms Internet path gives. Both implementations get the same Bind;
// wgkit runs with default options and with Options.MaxTCPBuffer set,
// which is where that cap costs: one connection moves at most its
// buffer per round trip.

const (
	// longOpBytes is what one iteration moves: a few round trips' worth
	// of the default window, so that a sample takes about a second.
	longOpBytes = 4 << 20
	// longWarmBytes opens the congestion window before the timer starts.
	longWarmBytes = 2 << 20
	// longBatch is the switch's Bind batch for both implementations.
	longBatch = 16
	// longQueue is each Bind's receive queue in datagrams: room for the
	// largest window in flight (4 MiB), so that the switch drops nothing.
	longQueue = 4096
)

// bindImpl opens tunnels of one implementation on a given Bind.
type bindImpl struct {
	name string
	open func(tb testing.TB, cfg *wg.Config, bind conn.Bind) tunnel
}

// BenchmarkNetstackLongPath moves one bulk TCP stream from the client
// tunnel to the server tunnel over a path with a 50 ms and a 100 ms round
// trip (no loss). It reports Mbit/s and the peak heap (both tunnels, see
// BenchmarkNetstackTCPThroughput). impl=wgkit has default options;
// impl=wgkit-tcpbuf1m and impl=wgkit-tcpbuf256k set
// netstack.Options.MaxTCPBuffer to 1 MiB and 256 KiB.
func BenchmarkNetstackLongPath(b *testing.B) {
	impls := []bindImpl{
		{"stock", openStockOn},
		{"wgkit", openWgkitOn(nil)},
		{"wgkit-tcpbuf1m", openWgkitOn(&netstack.Options{MaxTCPBuffer: 1 << 20})},
		{"wgkit-tcpbuf256k", openWgkitOn(&netstack.Options{MaxTCPBuffer: 256 << 10})},
	}
	for _, rtt := range []time.Duration{50 * time.Millisecond, 100 * time.Millisecond} {
		b.Run("rtt="+strconv.Itoa(int(rtt.Milliseconds()))+"ms", func(b *testing.B) {
			for _, im := range impls {
				b.Run("impl="+im.name, func(b *testing.B) { benchLongPath(b, im, rtt) })
			}
		})
	}
}

func benchLongPath(b *testing.B, im bindImpl, rtt time.Duration) {
	sw := memnet.NewSwitch(&memnet.Options{BatchSize: longBatch, QueueLen: longQueue})
	defer sw.Close()
	if err := sw.SetFaults(memnet.Faults{Delay: rtt / 2}); err != nil {
		b.Fatal(err)
	}
	serverEP, err := sw.NewAddr()
	mustNoErr(b, err, "switch address")
	clientEP, err := sw.NewAddr()
	mustNoErr(b, err, "switch address")
	k := newKeys(b)
	server := im.open(b, serverConfig(k), sw.NewBind(0, serverEP))
	defer server.close()
	ccfg := clientConfig(k, 0)
	ccfg.Peers[0].Endpoint = serverEP.String()
	client := im.open(b, ccfg, sw.NewBind(1, clientEP))
	defer client.close()

	l, err := server.listen(netip.AddrPortFrom(serverAddr, benchPort))
	mustNoErr(b, err, "listen")
	per := (int64(b.N)*longOpBytes + chunk - 1) / chunk * chunk
	stop := sinkServer(l, longWarmBytes+per)
	defer stop()
	c := dialServer(b, client, benchPort)
	defer c.Close()
	buf := randomBytes(chunk)
	send := func(n int64) {
		for sent := int64(0); sent < n; sent += chunk {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
	}
	send(longWarmBytes)
	sampler := startHeapSampler()
	b.SetBytes(longOpBytes)
	b.ResetTimer()
	start := time.Now()
	send(per)
	ack := make([]byte, 1)
	if _, err := c.Read(ack); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	peak := sampler.stop()
	b.ReportMetric(float64(per)*8/1e6/elapsed.Seconds(), "Mbit/s")
	b.ReportMetric(float64(peak), "peak-heap-B")
}

// openWgkitOn returns a bindImpl's open function for wgkit with opts
// (nil: defaults) and the given Bind.
func openWgkitOn(opts *netstack.Options) func(testing.TB, *wg.Config, conn.Bind) tunnel {
	return func(tb testing.TB, cfg *wg.Config, bind conn.Bind) tunnel {
		tb.Helper()
		var o netstack.Options
		if opts != nil {
			o = *opts
		}
		o.Bind = bind
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		n, err := netstack.Open(ctx, cfg, &o)
		mustNoErr(tb, err, "wgkit: open")
		return wgkitTunnel{n}
	}
}
