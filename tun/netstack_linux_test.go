//go:build linux

package tun

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/wgkit/wgkit/netstack"
	"github.com/wgkit/wgkit/wg"
)

// netstackRole runs an in-process netstack tunnel in the child. The child
// still lives in a namespace: the engine's UDP socket must reach the veth
// addresses.
func netstackRole(ctx context.Context, cfg *wg.Config, log *slog.Logger) (func(cmd, arg string) (any, error), func() error, error) {
	n, err := netstack.Open(ctx, cfg, &netstack.Options{Logger: log})
	if err != nil {
		return nil, nil, err
	}
	var tcp tcpEcho
	handle := func(cmd, arg string) (any, error) {
		switch cmd {
		case "ping":
			addr, err := netip.ParseAddr(arg)
			if err != nil {
				return nil, err
			}
			// The first echo request waits for the handshake.
			var last error
			for range 3 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, last = n.Ping(ctx, addr)
				cancel()
				if last == nil {
					return nil, nil
				}
			}
			return nil, last
		case "listen":
			ln, err := n.Listen("tcp", arg)
			if err != nil {
				return nil, err
			}
			return tcp.serve(ln), nil
		case "peers":
			return n.Device().Peers(), nil
		}
		return commonCommand(&tcp, n, cmd, arg)
	}
	closer := func() error {
		err := n.Close()
		tcp.close()
		return err
	}
	return handle, closer, nil
}

// TestNetstackToKernel runs a netstack tunnel in one namespace against a
// kernel TUN interface in the other.
func TestNetstackToKernel(t *testing.T) {
	requireRoot(t)
	nsA, nsB := newNetnsPair(t)
	cfgA, cfgB := pairConfigs(t, netip.MustParsePrefix("10.77.0.0/24"), netip.MustParsePrefix("fd77::/64"))
	nameB := ifName(t)
	b := mustOpen(t, nsB, cfgB, &helperOptions{Name: nameB})
	a, r := startHelper(t, nsA, "netstack", cfgA, nil)
	if !r.OK {
		t.Fatalf("netstack.Open in %s: %s", nsA, r.Err)
	}

	checkTraffic(a, b)

	var peers []wg.PeerStatus
	b.must("peers", &peers)
	if len(peers) != 1 || peers[0].LastHandshake.IsZero() {
		t.Errorf("kernel side peers = %+v, want one with a handshake", peers)
	}
	if want := netip.AddrPortFrom(outerA.Addr(), 51820); len(peers) == 1 && peers[0].Endpoint != want {
		t.Errorf("kernel side sees the netstack peer at %v, want %v", peers[0].Endpoint, want)
	}
	a.close()
	b.close()
}
