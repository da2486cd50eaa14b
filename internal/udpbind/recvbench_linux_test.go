package udpbind

import (
	"fmt"
	"net/netip"
	"testing"
)

// BenchmarkReceive measures the receive side alone: each round queues a
// burst of 1420-byte datagrams in the socket, then drains it with
// 16-buffer receive calls. sent=gso sends runs the kernel hands a GRO
// socket as coalesced reads; sent=plain sends them one by one.
func BenchmarkReceive(b *testing.B) {
	for _, gro := range []bool{true, false} {
		for _, gso := range []bool{true, false} {
			sent := map[bool]string{true: "gso", false: "plain"}[gso]
			b.Run(fmt.Sprintf("gro=%v/sent=%s", gro, sent), func(b *testing.B) {
				benchReceive(b, gro, gso)
			})
		}
	}
}

func benchReceive(b *testing.B, gro, gso bool) {
	const burst, batch = 1024, 16
	_, rfns, rport := openBind(b, &Options{ListenAddr: lo4, DisableOffload: !gro, BatchSize: batch}, false, 0)
	sb, _, _ := openBind(b, &Options{ListenAddr: lo4, DisableOffload: !gso, BatchSize: batch}, false, 0)
	ep := &Endpoint{ap: netip.AddrPortFrom(lo4, rport)}
	out := payloads(batch, 1420)
	bufs, sizes, eps := recvBuffers(batch, 1<<16)
	fn := rfns[0]
	calls := 0
	b.ResetTimer()
	for done := 0; done < b.N; {
		b.StopTimer()
		k := min(burst, b.N-done)
		for i := 0; i < k; i += batch {
			if err := sb.Send(out[:min(batch, k-i)], ep); err != nil {
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
