package benchmarks

import (
	"context"
	"io"
	"log"
	"net"
	"net/netip"
	"strconv"
	"testing"

	socks5 "github.com/armon/go-socks5"
	xproxy "golang.org/x/net/proxy"

	"github.com/wgkit/wgkit/netstack/proxy"
)

// startSOCKS5 serves SOCKS5 on 127.0.0.1 over the client tunnel: wgkit's
// server over *netstack.Net, or for stock the server today's proxies
// (wireproxy) use, github.com/armon/go-socks5, dialling through stock
// wireguard-go's tun/netstack.
func startSOCKS5(b *testing.B, client tunnel) (addr string, stop func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	mustNoErr(b, err, "listen on loopback")
	done := make(chan struct{})
	switch t := client.(type) {
	case wgkitTunnel:
		s := proxy.NewSOCKS5(t.n, nil)
		go func() { defer close(done); s.Serve(ln) }()
		return ln.Addr().String(), func() { s.Close(); <-done }
	case *stockTunnel:
		s, err := socks5.New(&socks5.Config{Dial: t.tnet.DialContext, Logger: log.New(io.Discard, "", 0)})
		mustNoErr(b, err, "go-socks5")
		go func() { defer close(done); s.Serve(ln) }()
		// go-socks5 has no Close: closing the listener ends Serve, and
		// its connections end with the benchmark's.
		return ln.Addr().String(), func() { ln.Close(); <-done }
	}
	b.Fatalf("no SOCKS5 server for %T", client)
	return "", nil
}

// BenchmarkProxySOCKS5Throughput moves bulk TCP data from a client on the
// host through a SOCKS5 server on loopback into the tunnel, to a sink on
// the far side, with 1 and 4 streams: wgkit's server over wgkit's
// netstack against go-socks5 over stock wireguard-go's netstack.
func BenchmarkProxySOCKS5Throughput(b *testing.B) {
	for _, streams := range []int{1, 4} {
		b.Run("streams="+strconv.Itoa(streams), func(b *testing.B) {
			forEachImpl(b, func(b *testing.B, im impl) {
				server, client := openPair(b, im)
				addr, stop := startSOCKS5(b, client)
				defer stop()
				d, err := xproxy.SOCKS5("tcp", addr, nil, xproxy.Direct)
				mustNoErr(b, err, "socks5 client")
				dest := netip.AddrPortFrom(serverAddr, benchPort).String()
				benchStreams(b, server, streams, func() (net.Conn, error) {
					return d.Dial("tcp", dest)
				})
			})
		})
	}
}

// BenchmarkProxyForwardTCP compares a TCP port forward from the host into
// the tunnel (proxy.ForwardTCP on loopback, the client dialling it) with
// a direct DialContext through the same wgkit tunnel: path=forward
// against path=direct, one stream. The forward adds a copy through a
// loopback socket; the goal is at least 0.8 of the direct throughput.
func BenchmarkProxyForwardTCP(b *testing.B) {
	for _, path := range []string{"direct", "forward"} {
		b.Run("path="+path, func(b *testing.B) {
			server, client := openPair(b, impl{"wgkit", openWgkit})
			dial := func() (net.Conn, error) { return dialServer(b, client, benchPort), nil }
			if path == "forward" {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				mustNoErr(b, err, "listen on loopback")
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() {
					defer close(done)
					proxy.ForwardTCP(ctx, ln, func(ctx context.Context) (net.Conn, error) {
						return client.dial(ctx, netip.AddrPortFrom(serverAddr, benchPort))
					})
				}()
				defer func() { cancel(); <-done }()
				dial = func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) }
			}
			benchStreams(b, server, 1, dial)
		})
	}
}
