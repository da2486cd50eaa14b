package wgtest

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// BenchmarkNetworkStart measures the start-up time and the heap a Network
// keeps per peer (HeapAlloc after a GC, running network minus the empty
// heap before it). Use -benchtime=Nx with a small N: every iteration
// starts and stops a whole network.
func BenchmarkNetworkStart(b *testing.B) {
	for _, tc := range []struct {
		topo Topology
		n    int
	}{
		{HubAndSpoke, 10},
		{HubAndSpoke, 100},
		{FullMesh, 10},
	} {
		b.Run(fmt.Sprintf("topology=%v/peers=%d", tc.topo, tc.n), func(b *testing.B) {
			var elapsed time.Duration
			var heap float64
			var before, after runtime.MemStats
			for range b.N {
				b.StopTimer()
				// Two GCs: the first moves sync.Pool contents (wireguard-go's
				// buffers of the previous iteration) to the victim cache,
				// the second frees them, so they do not hide in the baseline.
				runtime.GC()
				runtime.GC()
				runtime.ReadMemStats(&before)
				b.StartTimer()
				start := time.Now()
				nw, err := newNetwork(b, tc.n, &NetworkOptions{Topology: tc.topo, NoLeakCheck: true})
				elapsed += time.Since(start)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				heap += float64(after.HeapAlloc) - float64(before.HeapAlloc)
				if err := nw.Close(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			peers := float64(b.N * tc.n)
			b.ReportMetric(heap/peers, "bytes/peer")
			b.ReportMetric(float64(elapsed.Nanoseconds())/peers, "ns/peer")
		})
	}
}
