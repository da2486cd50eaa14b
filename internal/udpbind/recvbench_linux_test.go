package udpbind

import (
	"fmt"
	"net/netip"
	"testing"
)

// BenchmarkReceive measures the receive side alone: each round queues a
// burst of 1420-byte datagrams in the socket, then drains it with
// 16-buffer receive calls. sent=gso sends runs of 16 that the kernel
// hands a GRO socket as coalesced reads, sent=gso40 runs of 40 (more
// than the receiver's buffers, as from a peer with a larger batch or a
// NIC that coalesces); sent=plain sends them one by one.
func BenchmarkReceive(b *testing.B) {
	for _, gro := range []bool{true, false} {
		for _, sent := range []struct {
			name string
			run  int // datagrams per send; 0: one by one, without GSO
		}{{"gso", 16}, {"gso40", 40}, {"plain", 0}} {
			b.Run(fmt.Sprintf("gro=%v/sent=%s", gro, sent.name), func(b *testing.B) {
				benchReceive(b, gro, sent.run)
			})
		}
	}
}

func benchReceive(b *testing.B, gro bool, run int) {
	const burst, batch = 1024, 16
	_, rfns, rport := openBind(b, &Options{ListenAddr: lo4, DisableOffload: !gro, BatchSize: batch}, false, 0)
	sb, _, _ := openBind(b, &Options{ListenAddr: lo4, DisableOffload: run == 0, BatchSize: 128}, false, 0)
	ep := &Endpoint{ap: netip.AddrPortFrom(lo4, rport)}
	send := max(run, batch)
	out := payloads(send, 1420)
	bufs, sizes, eps := recvBuffers(batch, 1<<16)
	fn := rfns[0]
	calls := 0
	b.ResetTimer()
	for done := 0; done < b.N; {
		b.StopTimer()
		k := min(burst, b.N-done)
		for i := 0; i < k; i += send {
			if err := sb.Send(out[:min(send, k-i)], ep); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		for got := 0; got < k; {
			n, err := fn(bufs, sizes, eps)
			if err != nil {
				b.Fatal(err)
			}
			got += n
			calls++
		}
		done += k
	}
	b.ReportMetric(float64(b.N)/float64(calls), "datagrams/call")
}
