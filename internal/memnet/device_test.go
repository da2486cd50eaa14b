package memnet

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/wgkit/wgkit/wg"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

type testDevice struct {
	dev  *wg.Device
	tun  *tuntest.ChannelTUN
	bind *Bind
	ip   netip.Addr
}

// devicePair runs two WireGuard devices on channel TUNs, connected through s.
func devicePair(t *testing.T, s *Switch) [2]*testDevice {
	t.Helper()
	var keys [2]wg.Key
	var devs [2]*testDevice
	for i := range devs {
		k, err := wg.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
		addr, err := s.NewAddr()
		if err != nil {
			t.Fatal(err)
		}
		devs[i] = &testDevice{
			tun:  tuntest.NewChannelTUN(),
			bind: s.NewBind(i, addr),
			ip:   netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}),
		}
	}
	for i, d := range devs {
		o := devs[1-i]
		cfg := &wg.Config{
			Interface: wg.Interface{PrivateKey: keys[i]},
			Peers: []wg.Peer{{
				PublicKey:  keys[1-i].PublicKey(),
				Endpoint:   o.bind.Addr().String(),
				AllowedIPs: []netip.Prefix{netip.PrefixFrom(o.ip, 32)},
			}},
		}
		dev, err := wg.NewDevice(d.tun.TUN(), cfg, &wg.DeviceOptions{Bind: d.bind})
		if err != nil {
			t.Fatal(err)
		}
		d.dev = dev
		t.Cleanup(func() { dev.Close() })
	}
	return devs
}

// ping sends an ICMP echo from a to b through the tunnel and reports whether
// it came out of b's TUN within wait.
func ping(t *testing.T, a, b *testDevice, wait time.Duration) bool {
	t.Helper()
	p := tuntest.Ping(b.ip, a.ip)
	select {
	case a.tun.Outbound <- p:
	case <-time.After(wait):
		t.Fatal("TUN did not take the packet")
	}
	deadline := time.After(wait)
	for {
		select {
		case got := <-b.tun.Inbound:
			if bytes.Equal(got, p) {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

func TestDevicePing(t *testing.T) {
	s := NewSwitch(&Options{Seed: 1})
	defer s.Close()
	d := devicePair(t, s)
	if !ping(t, d[0], d[1], 10*time.Second) {
		t.Fatal("0 -> 1: no ping through the tunnel")
	}
	if !ping(t, d[1], d[0], 5*time.Second) {
		t.Fatal("1 -> 0: no ping through the tunnel")
	}
}

func TestDevicePartitionAndRoam(t *testing.T) {
	s := NewSwitch(&Options{Seed: 1})
	defer s.Close()
	d := devicePair(t, s)
	if !ping(t, d[0], d[1], 10*time.Second) {
		t.Fatal("no ping before the partition")
	}

	s.Partition(0, 1)
	if ping(t, d[0], d[1], 200*time.Millisecond) {
		t.Fatal("ping crossed a partition")
	}
	s.Heal(0, 1)
	if !ping(t, d[0], d[1], 5*time.Second) {
		t.Fatal("no ping after heal")
	}

	// Node 0 moves; node 1 still sends to the old address until it hears
	// from node 0, then follows it (WireGuard roaming).
	addr, err := s.NewAddr()
	if err != nil {
		t.Fatal(err)
	}
	if err := d[0].bind.Move(addr); err != nil {
		t.Fatal(err)
	}
	if ping(t, d[1], d[0], 200*time.Millisecond) {
		t.Fatal("ping reached the old address")
	}
	if !ping(t, d[0], d[1], 5*time.Second) {
		t.Fatal("no ping from the new address")
	}
	if got := d[1].dev.Peers()[0].Endpoint; got != addr {
		t.Errorf("peer endpoint after roaming = %v, want %v", got, addr)
	}
	if !ping(t, d[1], d[0], 5*time.Second) {
		t.Fatal("no ping to the new address")
	}
}
