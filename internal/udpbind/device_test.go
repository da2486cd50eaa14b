package udpbind_test

import (
	"bytes"
	"errors"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/wgkit/wgkit/internal/udpbind"
	"github.com/wgkit/wgkit/wg"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// peer is one device of a pair on a channel TUN.
type peer struct {
	key  wg.Key
	addr netip.Addr
	tun  *tuntest.ChannelTUN
	dev  *wg.Device
}

func newKey(t testing.TB) wg.Key {
	t.Helper()
	k, err := wg.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newPair starts two devices whose Binds newBind makes; a knows b's
// endpoint at host:port, b learns a's from the handshake.
func newPair(t testing.TB, host netip.Addr, newBind func() conn.Bind) (a, b *peer) {
	t.Helper()
	a = &peer{key: newKey(t), addr: netip.MustParseAddr("10.9.0.1"), tun: tuntest.NewChannelTUN()}
	b = &peer{key: newKey(t), addr: netip.MustParseAddr("10.9.0.2"), tun: tuntest.NewChannelTUN()}
	var err error
	b.dev, err = wg.NewDevice(b.tun.TUN(), &wg.Config{
		Interface: wg.Interface{PrivateKey: b.key},
		Peers: []wg.Peer{{
			PublicKey:  a.key.PublicKey(),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(a.addr, 32)},
		}},
	}, &wg.DeviceOptions{Bind: newBind()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.dev.Close() })
	a.dev, err = wg.NewDevice(a.tun.TUN(), &wg.Config{
		Interface: wg.Interface{PrivateKey: a.key},
		Peers: []wg.Peer{{
			PublicKey:  b.key.PublicKey(),
			Endpoint:   netip.AddrPortFrom(host, uint16(b.dev.ListenPort())).String(),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(b.addr, 32)},
		}},
	}, &wg.DeviceOptions{Bind: newBind()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.dev.Close() })
	return a, b
}

// ping writes an ICMP echo from -> to into from's TUN and fails the test
// unless it comes out of to's TUN within timeout.
func ping(t testing.TB, from, to *peer, timeout time.Duration) {
	t.Helper()
	pkt := tuntest.Ping(to.addr, from.addr)
	deadline := time.After(timeout)
	select {
	case from.tun.Outbound <- pkt:
	case <-deadline:
		t.Fatalf("%v: engine did not read from its TUN", from.addr)
	}
	select {
	case got := <-to.tun.Inbound:
		if !bytes.Equal(got, pkt) {
			t.Fatalf("%v received % x, want % x", to.addr, got, pkt)
		}
	case <-deadline:
		t.Fatalf("%v -> %v: ping not delivered in %v", from.addr, to.addr, timeout)
	}
}

func TestDevicePair(t *testing.T) {
	tests := []struct {
		name   string
		listen netip.Addr
		host   netip.Addr
	}{
		{name: "dual-stack over v4", host: netip.MustParseAddr("127.0.0.1")},
		{name: "dual-stack over v6", host: netip.MustParseAddr("::1")},
		{name: "v4 only", listen: netip.MustParseAddr("127.0.0.1"), host: netip.MustParseAddr("127.0.0.1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := newPair(t, tt.host, func() conn.Bind {
				return udpbind.New(&udpbind.Options{ListenAddr: tt.listen})
			})
			for range 3 {
				ping(t, a, b, 5*time.Second)
				ping(t, b, a, 5*time.Second)
			}
			// b learned a's endpoint, unmapped, from the handshake.
			want := netip.AddrPortFrom(tt.host, uint16(a.dev.ListenPort()))
			if ps := b.dev.Peers(); len(ps) != 1 || ps[0].Endpoint != want {
				t.Errorf("b.Peers() = %+v, want one peer at %v", ps, want)
			}
		})
	}
}

// heapInUse returns the live heap after garbage collection.
func heapInUse() uint64 {
	var ms runtime.MemStats
	for range 2 {
		runtime.GC()
	}
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestDeviceHeap reports the heap a pair of devices holds once they have
// exchanged a packet, on this Bind and on conn.NewDefaultBind, and checks
// that this Bind's is smaller.
func TestDeviceHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("measures the heap of two devices; skipped in -short")
	}
	lo := netip.MustParseAddr("127.0.0.1")
	measure := func(name string, newBind func() conn.Bind) uint64 {
		before := heapInUse()
		var held uint64
		t.Run(name, func(t *testing.T) {
			a, b := newPair(t, lo, newBind)
			ping(t, a, b, 5*time.Second)
			ping(t, b, a, 5*time.Second)
			if after := heapInUse(); after > before {
				held = (after - before) / 2
			}
		})
		return held
	}
	stock := measure("impl=stock", conn.NewDefaultBind)
	ours := measure("impl=udpbind", func() conn.Bind { return udpbind.New(nil) })
	t.Logf("heap per device: stock %.1f MiB, udpbind %.1f MiB", float64(stock)/(1<<20), float64(ours)/(1<<20))
	if runtime.GOOS == "linux" && ours >= stock {
		t.Errorf("udpbind device holds %d bytes, stock %d: want less", ours, stock)
	}
}

// TestDeviceBurst pushes a burst of packets through a device pair, so
// that the engine hands the Bind batches (and GSO/GRO see runs).
func TestDeviceBurst(t *testing.T) {
	a, b := newPair(t, netip.MustParseAddr("127.0.0.1"), func() conn.Bind { return udpbind.New(nil) })
	ping(t, a, b, 5*time.Second) // handshake
	const n = 300
	want := make(map[string]bool, n)
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			pkt := tuntest.Ping(b.addr, a.addr)
			pkt[len(pkt)-2], pkt[len(pkt)-1] = byte(i>>8), byte(i) // distinct payloads
			select {
			case a.tun.Outbound <- pkt:
			case <-time.After(5 * time.Second):
				errc <- errTimeout
				return
			}
		}
		errc <- nil
	}()
	for i := range n {
		pkt := tuntest.Ping(b.addr, a.addr)
		pkt[len(pkt)-2], pkt[len(pkt)-1] = byte(i>>8), byte(i)
		want[string(pkt)] = true
	}
	deadline := time.After(10 * time.Second)
	for got := 0; got < n; got++ {
		select {
		case pkt := <-b.tun.Inbound:
			if !want[string(pkt)] {
				t.Fatalf("unexpected or repeated packet % x", pkt)
			}
			delete(want, string(pkt))
		case <-deadline:
			t.Fatalf("received %d of %d packets", got, n)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

var errTimeout = errors.New("engine did not read from its TUN")

// TestDeviceRebind changes a device's listen port at run time, which makes
// the engine close its Bind and open it again on the new port.
func TestDeviceRebind(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	a, b := newPair(t, lo, func() conn.Bind { return udpbind.New(nil) })
	ping(t, a, b, 5*time.Second)

	// A port free a moment ago; the engine fails loudly if it is not.
	probe := udpbind.New(&udpbind.Options{ListenAddr: lo})
	_, port, err := probe.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	probe.Close()
	cfg := b.dev.Config()
	cfg.Interface.ListenPort = int(port)
	if err := b.dev.Reconfigure(cfg); err != nil {
		t.Fatalf("Reconfigure to port %d: %v", port, err)
	}
	if got := b.dev.ListenPort(); got != int(port) {
		t.Fatalf("ListenPort() = %d after Reconfigure, want %d", got, port)
	}
	acfg := a.dev.Config()
	acfg.Peers[0].Endpoint = netip.AddrPortFrom(lo, port).String()
	if err := a.dev.SetPeer(acfg.Peers[0]); err != nil {
		t.Fatal(err)
	}
	ping(t, a, b, 5*time.Second)
	ping(t, b, a, 5*time.Second)
}
