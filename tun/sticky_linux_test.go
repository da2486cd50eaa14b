//go:build linux

package tun

import (
	"net/netip"
	"testing"

	"github.com/wgkit/wgkit/wg"
)

// TestDefaultBindStickySource opens a kernel TUN interface with
// wireguard-go and the default Bind on a host with two addresses in one
// subnet, and a netstack peer that writes to the second: the interface's
// replies must leave from that address (the routing table would pick the
// first), so the peer's endpoint does not roam to the first. The
// interface has no endpoint for its peer, so it only ever replies.
func TestDefaultBindStickySource(t *testing.T) {
	requireRoot(t)
	nsA, nsB := newNetnsPair(t)
	second := netip.MustParsePrefix("192.168.241.3/24")
	run(t, "ip", "-n", nsB, "addr", "add", second.String(), "dev", "veth-b")
	cfgA, cfgB := pairConfigs(t, netip.MustParsePrefix("10.77.0.0/24"))
	cfgA.Peers[0].Endpoint = netip.AddrPortFrom(second.Addr(), 51821).String()
	cfgB.Peers[0].Endpoint = ""
	b := mustOpen(t, nsB, cfgB, &helperOptions{Name: ifName(t), Engine: EngineUserspace})
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
	if want := netip.AddrPortFrom(second.Addr(), 51821); len(peers) != 1 || peers[0].Endpoint != want {
		t.Errorf("netstack side peers = %+v, want one at %v (replies from the address it wrote to)", peers, want)
	}
	b.must("peers", &peers)
	if want := netip.AddrPortFrom(outerA.Addr(), 51820); len(peers) != 1 || peers[0].Endpoint != want {
		t.Errorf("tun side peers = %+v, want one at %v", peers, want)
	}
	a.close()
	b.close()
}
