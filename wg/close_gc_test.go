package wg

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// TestCloseReleasesMemory checks that a closed device with peers can be
// garbage collected, engine included. wireguard-go's per-peer queues
// carry finalizers bound to the engine, so a reference from the engine
// back to what holds its peers (the watcher, through the engine's
// logger) made a cycle that was never collected: every closed device
// kept about 23 KB per peer.
func TestCloseReleasesMemory(t *testing.T) {
	checkLeaks(t)
	cfg := &Config{Interface: Interface{PrivateKey: mustKey(t)}}
	for i := range 20 {
		cfg.Peers = append(cfg.Peers, Peer{
			PublicKey:  mustKey(t).PublicKey(),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 9, 0, byte(i)}), 32)},
		})
	}
	d, err := NewDevice(tuntest.NewChannelTUN().TUN(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	collected := make(chan string, 2)
	runtime.AddCleanup(d, func(s string) { collected <- s }, "Device")
	runtime.AddCleanup(d.wgo.dev, func(s string) { collected <- s }, "the engine")
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = nil
	want := map[string]bool{"Device": true, "the engine": true}
	deadline := time.Now().Add(10 * time.Second)
	for len(want) > 0 && time.Now().Before(deadline) {
		runtime.GC() // the queues' finalizers run in one cycle, the engine goes in a later one
		select {
		case s := <-collected:
			delete(want, s)
		case <-time.After(20 * time.Millisecond):
		}
	}
	for s := range want {
		t.Errorf("%s not garbage collected within 10 s of Close", s)
	}
}
