package proxy_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/wgkit/wgkit/netstack"
	"github.com/wgkit/wgkit/netstack/proxy"
	"github.com/wgkit/wgkit/wg"
	xproxy "golang.org/x/net/proxy"
)

// exampleTunnel opens a tunnel to a peer in this process that serves HTTP
// at 10.124.0.1:80 (answering "hello through the tunnel"); both use UDP on 127.0.0.1. A real program opens only
// its own side, from a wg-quick file. close closes both.
func exampleTunnel(ctx context.Context) (tnet *netstack.Net, close func(), err error) {
	kA, err := wg.GeneratePrivateKey()
	if err != nil {
		return nil, nil, err
	}
	kB, err := wg.GeneratePrivateKey()
	if err != nil {
		return nil, nil, err
	}
	peer, err := netstack.Open(ctx, &wg.Config{
		Interface: wg.Interface{PrivateKey: kA, Addresses: []netip.Prefix{netip.MustParsePrefix("10.124.0.1/24")}},
		Peers:     []wg.Peer{{PublicKey: kB.PublicKey(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.124.0.2/32")}}},
	}, nil)
	if err != nil {
		return nil, nil, err
	}
	ln, err := peer.Listen("tcp", ":80")
	if err != nil {
		peer.Close()
		return nil, nil, err
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello through the tunnel")
	}), ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	tnet, err = netstack.Open(ctx, &wg.Config{
		Interface: wg.Interface{PrivateKey: kB, Addresses: []netip.Prefix{netip.MustParsePrefix("10.124.0.2/24")}},
		Peers: []wg.Peer{{
			PublicKey:  kA.PublicKey(),
			Endpoint:   "127.0.0.1:" + strconv.Itoa(peer.Device().ListenPort()),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.124.0.0/24")},
		}},
	}, nil)
	if err != nil {
		hs.Close()
		peer.Close()
		return nil, nil, err
	}
	return tnet, func() { tnet.Close(); hs.Close(); peer.Close() }, nil
}

// A SOCKS5 server on the host's loopback, dialling through the tunnel: any
// SOCKS5 client (curl --socks5-hostname, a browser, x/net/proxy) reaches
// the tunnel's hosts through it.
func ExampleNewSOCKS5() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tnet, closeTunnel, err := exampleTunnel(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer closeTunnel()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	s := proxy.NewSOCKS5(tnet, nil)
	defer s.Close()
	go s.Serve(ln)

	// A client of the proxy.
	d, err := xproxy.SOCKS5("tcp", ln.Addr().String(), nil, xproxy.Direct)
	if err != nil {
		log.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{DialContext: d.(xproxy.ContextDialer).DialContext}}
	resp, err := client.Get("http://10.124.0.1/")
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	client.CloseIdleConnections()
	fmt.Println(string(body))
	// Output: hello through the tunnel
}

// A port forward from the host's loopback to a service in the tunnel.
func ExampleForwardTCP() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tnet, closeTunnel, err := exampleTunnel(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer closeTunnel()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	fwdCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- proxy.ForwardTCP(fwdCtx, ln, func(ctx context.Context) (net.Conn, error) {
			return tnet.DialContext(ctx, "tcp", "10.124.0.1:80")
		})
	}()

	// Any program on the host now reaches 10.124.0.1:80 at ln's address.
	client := &http.Client{Transport: &http.Transport{}}
	resp, err := client.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	client.CloseIdleConnections()
	fmt.Println(string(body))
	stop()
	fmt.Println(<-done)
	// Output:
	// hello through the tunnel
	// context canceled
}
