package netstack_test

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
	"github.com/wgkit/wgkit/wg"
)

// openServerAndClient opens two tunnels in this process that talk to each
// other over UDP on 127.0.0.1: a "server" at 10.123.0.1 and a "client" at
// 10.123.0.2. In a real program each side would come from a wg-quick file
// (wg.ParseConfig) and run on a different machine.
func openServerAndClient(ctx context.Context) (server, client *netstack.Net, err error) {
	serverKey, err := wg.GeneratePrivateKey()
	if err != nil {
		return nil, nil, err
	}
	clientKey, err := wg.GeneratePrivateKey()
	if err != nil {
		return nil, nil, err
	}
	server, err = netstack.Open(ctx, &wg.Config{
		Interface: wg.Interface{
			PrivateKey: serverKey,
			ListenPort: 0, // any free port; see Device().ListenPort()
			Addresses:  []netip.Prefix{netip.MustParsePrefix("10.123.0.1/24")},
		},
		Peers: []wg.Peer{{
			PublicKey:  clientKey.PublicKey(),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.123.0.2/32")},
		}},
	}, nil)
	if err != nil {
		return nil, nil, err
	}
	client, err = netstack.Open(ctx, &wg.Config{
		Interface: wg.Interface{
			PrivateKey: clientKey,
			Addresses:  []netip.Prefix{netip.MustParsePrefix("10.123.0.2/24")},
		},
		Peers: []wg.Peer{{
			PublicKey:  serverKey.PublicKey(),
			Endpoint:   "127.0.0.1:" + strconv.Itoa(server.Device().ListenPort()),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.123.0.0/24")},
		}},
	}, nil)
	if err != nil {
		server.Close()
		return nil, nil, err
	}
	return server, client, nil
}

func ExampleOpen() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	server, client, err := openServerAndClient(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()
	defer client.Close()

	if _, err := client.Ping(ctx, netip.MustParseAddr("10.123.0.1")); err != nil {
		log.Fatal(err)
	}
	fmt.Println("client addresses:", client.Addrs())
	fmt.Println("handshake done:", !client.Device().Peers()[0].LastHandshake.IsZero())
	// Output:
	// client addresses: [10.123.0.2]
	// handshake done: true
}

func ExampleNet_DialContext() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	server, client, err := openServerAndClient(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()
	defer client.Close()

	// A TCP service on the server's tunnel address.
	l, err := server.Listen("tcp", "10.123.0.1:7")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "hello through the tunnel\n")
	}()

	// ctx bounds the dial only; the connection outlives it.
	c, err := client.DialContext(ctx, "tcp", "10.123.0.1:7")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	msg, err := io.ReadAll(c)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(string(msg))
	// Output: hello through the tunnel
}

func ExampleNet_Listen() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	server, client, err := openServerAndClient(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()
	defer client.Close()

	// An HTTP server on every tunnel address of the server, port 80.
	l, err := server.Listen("tcp", ":80")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintf(w, "hello %s\n", host)
	})}
	go srv.Serve(l)
	defer srv.Close()

	resp, err := client.HTTPClient().Get("http://10.123.0.1/")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(resp.Status, " ", string(body))
	// Output: 200 OK hello 10.123.0.2
}
