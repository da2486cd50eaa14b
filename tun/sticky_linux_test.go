//go:build linux

package tun

import (
	"net/netip"
	"testing"

	"github.com/wgkit/wgkit/wg"
)

// TestDefaultBindStickySource opens a kernel TUN interface with
// wireguard-go on a host with two addresses in one subnet, and a netstack
// peer that writes to the second: with the default Bind, the interface's
// replies must leave from that address, so the peer's endpoint does not
// roam to the first (which the routing table picks, as it does with a
// Bind of the caller's without a sticky source: that Bind is used). The
// interface has no endpoint for its peer, so it only ever replies.
func TestDefaultBindStickySource(t *testing.T) {
	requireRoot(t)
	second := netip.MustParsePrefix("192.168.241.3/24")
	tests := []struct {
		name      string
		plainBind bool
		want      netip.Addr // where the netstack side sees its peer
	}{
		{name: "default Bind", want: second.Addr()},
		{name: "caller's Bind without sticky source", plainBind: true, want: outerB.Addr()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nsA, nsB := newNetnsPair(t)
			run(t, "ip", "-n", nsB, "addr", "add", second.String(), "dev", "veth-b")
			cfgA, cfgB := pairConfigs(t, netip.MustParsePrefix("10.77.0.0/24"))
			cfgA.Peers[0].Endpoint = netip.AddrPortFrom(second.Addr(), 51821).String()
			cfgB.Peers[0].Endpoint = ""
			b := mustOpen(t, nsB, cfgB, &helperOptions{Name: ifName(t), Engine: EngineUserspace, PlainBind: tt.plainBind})
			a, r := startHelper(t, nsA, "netstack", cfgA, nil)
			if !r.OK {
				t.Fatalf("netstack.Open in %s: %s", nsA, r.Err)
			}
			a.must("ping "+innerB.Addr().String(), nil)
			var addr string
			b.must("listen "+netip.AddrPortFrom(innerB.Addr(), 0).String(), &addr)
			a.must("dial "+addr, nil)

			var peers []wg.PeerStatus
			a.must("peers", &peers)
			if want := netip.AddrPortFrom(tt.want, 51821); len(peers) != 1 || peers[0].Endpoint != want {
				t.Errorf("netstack side peers = %+v, want one at %v", peers, want)
			}
			b.must("peers", &peers)
			if want := netip.AddrPortFrom(outerA.Addr(), 51820); len(peers) != 1 || peers[0].Endpoint != want {
				t.Errorf("tun side peers = %+v, want one at %v", peers, want)
			}
			a.close()
			b.close()
		})
	}
}
