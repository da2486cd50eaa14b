package benchmarks

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/wgkit/wgkit/netstack"
	"github.com/wgkit/wgkit/wg"
)

// wgkitTunnel is wgkit's netstack backend with default options.
type wgkitTunnel struct{ n *netstack.Net }

func openWgkit(tb testing.TB, cfg *wg.Config) tunnel {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := netstack.Open(ctx, cfg, nil)
	mustNoErr(tb, err, "wgkit: open")
	return wgkitTunnel{n}
}

func (w wgkitTunnel) dial(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	return w.n.DialContext(ctx, "tcp", addr.String())
}

func (w wgkitTunnel) listen(addr netip.AddrPort) (net.Listener, error) {
	return w.n.Listen("tcp", addr.String())
}

func (w wgkitTunnel) listenPort() int { return w.n.Device().ListenPort() }

func (w wgkitTunnel) close() { w.n.Close() }
