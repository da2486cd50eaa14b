package wg_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"
	"time"

	"github.com/wgkit/wgkit/netstack"
	"github.com/wgkit/wgkit/wg"
)

// Two tunnels in one process, over loopback UDP: the client waits until
// its peer answers before it uses the tunnel, and reads the counters the
// device keeps.
func ExampleDevice_WaitHandshake() {
	srvKey, err := wg.GeneratePrivateKey()
	if err != nil {
		log.Fatal(err)
	}
	cliKey, err := wg.GeneratePrivateKey()
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv, err := netstack.Open(ctx, &wg.Config{
		Interface: wg.Interface{PrivateKey: srvKey, Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}},
		Peers:     []wg.Peer{{PublicKey: cliKey.PublicKey(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.2/32")}}},
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	cli, err := netstack.Open(ctx, &wg.Config{
		Interface: wg.Interface{PrivateKey: cliKey, Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.0.2/32")}},
		Peers: []wg.Peer{{
			PublicKey:  srvKey.PublicKey(),
			Endpoint:   fmt.Sprintf("127.0.0.1:%d", srv.Device().ListenPort()),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")},
		}},
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()

	// Returns at the first completed handshake, or wraps
	// wg.ErrHandshakeTimeout at ctx's deadline, naming the peer.
	if _, err := cli.Device().WaitHandshake(ctx, srvKey.PublicKey()); err != nil {
		log.Fatal(err)
	}
	ps := cli.Device().Peers()[0]
	fmt.Println("tunnel up; initiations sent:", ps.HandshakeAttempts > 0, "failures:", ps.HandshakeFailures)
	// Output: tunnel up; initiations sent: true failures: 0
}
