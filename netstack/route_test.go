package netstack

import (
	"net/netip"
	"testing"

	"github.com/wgkit/wgkit/wg"
)

// TestCheckRouteManyPeers checks that the route check every dial and ping
// makes costs no allocation with 200 peers, routed or not: it must not format and parse
// the engine's state (Device.Peers) per call.
func TestCheckRouteManyPeers(t *testing.T) {
	a, _ := openPair(t, func(a, _ *wg.Config) {
		for i := range 200 {
			k, err := wg.GeneratePrivateKey()
			if err != nil {
				t.Fatal(err)
			}
			a.Peers = append(a.Peers, wg.Peer{
				PublicKey:  k.PublicKey(),
				AllowedIPs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 77, byte(i >> 8), byte(i)}), 32)},
			})
		}
	})
	tests := []struct {
		name   string
		ip     netip.Addr
		routed bool
	}{
		{"first peer", addrB4, true},
		{"last extra peer", netip.MustParseAddr("10.77.0.199"), true},
		{"own address", addrA6, true},
		{"nobody", netip.MustParseAddr("10.78.0.1"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := a.checkRoute(tt.ip); (err == nil) != tt.routed {
				t.Fatalf("checkRoute(%v) = %v, want routed %v", tt.ip, err, tt.routed)
			}
			// Refused destinations get the bare ErrNoRoute (the callers'
			// errors name them), so they cost nothing either.
			if n := testing.AllocsPerRun(50, func() { a.checkRoute(tt.ip) }); n != 0 {
				t.Errorf("checkRoute(%v) allocates %v times per call, want 0", tt.ip, n)
			}
		})
	}
}
