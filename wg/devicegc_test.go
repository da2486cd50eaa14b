package wg

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// TestClosedDevicesAreFreed opens and closes devices with a peer and
// checks the garbage collector frees them. wireguard-go gives each
// peer's queues a finalizer that holds the engine; anything of the
// Device that the engine reaches (its logger reaches the watcher) and
// that holds a peer closes a loop through a finalizer, which is never
// freed: every closed device then stayed in memory, about 110 KB each
// (a soak of 1000 tunnels grew the heap by 165 MiB).
func TestClosedDevicesAreFreed(t *testing.T) {
	const n = 40
	var freed atomic.Int64
	for range n {
		priv, peer := mustKey(t), mustKey(t)
		cfg := &Config{
			Interface: Interface{PrivateKey: priv},
			Peers:     []Peer{{PublicKey: peer.PublicKey(), Endpoint: "127.0.0.1:9"}},
		}
		d, err := NewDevice(tuntest.NewChannelTUN().TUN(), cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		runtime.AddCleanup(d, func(*atomic.Int64) { freed.Add(1) }, &freed)
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// The engine's queue finalizers run in one collection, the device
	// goes in a later one.
	deadline := time.Now().Add(5 * time.Second)
	for freed.Load() < n-2 && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if got := freed.Load(); got < n-2 {
		t.Errorf("%d of %d closed devices were freed, want at least %d", got, n, n-2)
	}
}
