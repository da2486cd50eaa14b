package udpbind

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// BenchmarkBind streams 1420-byte datagrams (a full WireGuard packet at
// the default MTU) over loopback from one Bind to another, batched as the
// engine would, and reports packets/s. impl=stock is conn.NewDefaultBind
// (batch 128, which reads and sends the sticky source); impl=udpbind
// uses the defaults (batch 16); offload=off turns off GSO and GRO on both
// sides, offload=rx on the sender only, so that the receiver reads
// datagrams one by one with GRO on; sticky turns StickySource on on both
// sides and sends from 127.0.0.1, as the tun backend does.
func BenchmarkBind(b *testing.B) {
	udpbind := func(off bool, batch int, sticky bool) func() conn.Bind {
		return func() conn.Bind { return New(&Options{DisableOffload: off, BatchSize: batch, StickySource: sticky}) }
	}
	impls := []struct {
		name         string
		newRx, newTx func() conn.Bind
		sticky       bool
	}{
		{"impl=stock", conn.NewDefaultBind, conn.NewDefaultBind, false},
		{"impl=udpbind", udpbind(false, 0, false), udpbind(false, 0, false), false},
		{"impl=udpbind/batch=128", udpbind(false, 128, false), udpbind(false, 128, false), false},
		{"impl=udpbind/batch=128/sticky", udpbind(false, 128, true), udpbind(false, 128, true), true},
		{"impl=udpbind/offload=off", udpbind(true, 0, false), udpbind(true, 0, false), false},
		{"impl=udpbind/offload=off/sticky", udpbind(true, 0, true), udpbind(true, 0, true), true},
		{"impl=udpbind/offload=rx", udpbind(false, 0, false), udpbind(true, 0, false), false},
	}
	for _, impl := range impls {
		b.Run(impl.name, func(b *testing.B) { benchStream(b, impl.newRx, impl.newTx, impl.sticky) })
	}
}

func benchStream(b *testing.B, newRx, newTx func() conn.Bind, sticky bool) {
	const (
		size    = 1420
		window  = 512 // datagrams in flight, well within the socket buffer
		timeout = 5 * time.Second
	)
	rx, tx := newRx(), newTx()
	fns, port, err := rx.Open(0)
	if err != nil {
		b.Fatal(err)
	}
	defer rx.Close()
	if _, _, err := tx.Open(0); err != nil {
		b.Fatal(err)
	}
	defer tx.Close()
	ep, err := tx.ParseEndpoint(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port).String())
	if err != nil {
		b.Fatal(err)
	}
	if sticky {
		ep.(*Endpoint).src = netip.MustParseAddr("127.0.0.1")
	}

	credits := make(chan struct{}, window)
	done := make(chan struct{})
	var received atomic.Int64
	var wg sync.WaitGroup
	for _, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bufs, sizes, eps := recvBuffers(rx.BatchSize(), 1<<16)
			for {
				n, err := fn(bufs, sizes, eps)
				if err != nil {
					if !errors.Is(err, net.ErrClosed) {
						b.Error(err)
					}
					return
				}
				for _, sz := range sizes[:n] {
					if sz == 0 {
						continue
					}
					<-credits
					if received.Add(1) == int64(b.N) {
						close(done)
					}
				}
			}
		}()
	}
	defer wg.Wait()
	defer rx.Close()

	batch := tx.BatchSize()
	bufs := make([][]byte, batch)
	for i := range bufs {
		// Like the engine's: a packet at the start of a 64 KiB buffer,
		// which conn.NewDefaultBind needs to coalesce for GSO.
		bufs[i] = make([]byte, size, 1<<16)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	b.SetBytes(size)
	b.ResetTimer()
	for sent := 0; sent < b.N; {
		k := min(batch, b.N-sent)
		for range k {
			select {
			case credits <- struct{}{}:
				continue
			default:
			}
			timer.Reset(timeout)
			select {
			case credits <- struct{}{}:
				timer.Stop()
			case <-timer.C:
				b.Fatalf("no credit in %v: %d of %d datagrams lost", timeout, sent-int(received.Load()), sent)
			}
		}
		if err := tx.Send(bufs[:k], ep); err != nil {
			b.Fatal(err)
		}
		sent += k
	}
	select {
	case <-done:
	case <-time.After(timeout):
		b.Fatalf("received %d of %d datagrams", received.Load(), b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "packets/s")
}
