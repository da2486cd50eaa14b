package wg

import (
	"fmt"
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// BenchmarkWatchPoll measures one read of the engine's state by the
// watcher, which it makes every second and after handshakes (paced to a
// tenth of the time between polls).
func BenchmarkWatchPoll(b *testing.B) {
	for _, n := range []int{1, 100, 5000} {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			sw := newSwitch(b)
			addr, err := sw.NewAddr()
			if err != nil {
				b.Fatal(err)
			}
			cfg := &Config{Interface: Interface{PrivateKey: mustKey(b)}}
			for i := range n {
				cfg.Peers = append(cfg.Peers, Peer{
					PublicKey:  mustKey(b).PublicKey(),
					AllowedIPs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)},
				})
			}
			d, err := NewDevice(tuntest.NewChannelTUN().TUN(), cfg, &DeviceOptions{Bind: sw.NewBind(0, addr)})
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			b.ResetTimer()
			for range b.N {
				d.watch.poll()
			}
		})
	}
}
