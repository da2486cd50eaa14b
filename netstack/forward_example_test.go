package netstack_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"time"

	"github.com/wgkit/wgkit/netstack"
	"github.com/wgkit/wgkit/wg"
)

// A router tunnel (an exit node) and a peer that sends everything through
// it. The router forwards the peer's connections to 192.0.2.0/24; its Dial
// sends them to a web server this example runs on 127.0.0.1, where a real
// router would dial the destination itself (Dial nil).
func ExampleForwardOptions() {
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s", r.Host)
	}))
	defer web.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	routerKey, _ := wg.GeneratePrivateKey()
	peerKey, _ := wg.GeneratePrivateKey()
	offices := netip.MustParsePrefix("192.0.2.0/24")
	router, err := netstack.Open(ctx, &wg.Config{
		Interface: wg.Interface{PrivateKey: routerKey, Addresses: []netip.Prefix{netip.MustParsePrefix("10.123.0.1/24")}},
		Peers:     []wg.Peer{{PublicKey: peerKey.PublicKey(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.123.0.2/32")}}},
	}, &netstack.Options{Forward: &netstack.ForwardOptions{
		Allow: func(network string, src, dst netip.AddrPort) bool { return offices.Contains(dst.Addr()) },
		Dial: func(ctx context.Context, network string, src, dst netip.AddrPort) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, web.Listener.Addr().String())
		},
	}})
	if err != nil {
		log.Fatal(err)
	}
	defer router.Close()
	peer, err := netstack.Open(ctx, &wg.Config{
		Interface: wg.Interface{PrivateKey: peerKey, Addresses: []netip.Prefix{netip.MustParsePrefix("10.123.0.2/24")}},
		Peers: []wg.Peer{{
			PublicKey:  routerKey.PublicKey(),
			Endpoint:   "127.0.0.1:" + strconv.Itoa(router.Device().ListenPort()),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")},
		}},
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer peer.Close()

	resp, err := peer.HTTPClient().Get("http://192.0.2.10/")
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(string(body))

	// A destination Allow refuses fails at once.
	_, err = peer.DialContext(ctx, "tcp", "198.51.100.1:80")
	fmt.Println("refused:", err != nil, "- refused flows:", router.ForwardStats().Refused)
	// Output:
	// hello from 192.0.2.10
	// refused: true - refused flows: 1
}
