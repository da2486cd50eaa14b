// Command quickstart shows wgkit's netstack backend end to end, with no
// root and no change to the host's network.
//
// With no arguments it starts two WireGuard tunnels in this process, a
// server and a client, that talk over UDP on 127.0.0.1. It serves HTTP on
// the server's tunnel address, fetches it through the client's tunnel,
// pings both tunnel addresses, prints each side's peer status and exits.
//
// With -config FILE -url URL it opens the wg-quick configuration FILE and
// fetches URL through that tunnel instead.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/wgkit/wgkit/netstack"
	"github.com/wgkit/wgkit/wg"
)

func main() {
	config := flag.String("config", "", "wg-quick configuration `file` to use instead of the built-in demo")
	url := flag.String("url", "", "`URL` to fetch through the tunnel of -config")
	verbose := flag.Bool("v", false, "log the engine's debug messages to stderr")
	timeout := flag.Duration("timeout", 30*time.Second, "give up after this long")
	flag.Parse()

	var logger *slog.Logger
	if *verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	var err error
	switch {
	case *config == "" && *url == "":
		err = demo(ctx, logger)
	case *config != "" && *url != "":
		err = fetchWith(ctx, *config, *url, logger)
	default:
		err = fmt.Errorf("-config and -url go together")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// demo runs a server and a client tunnel in this process.
func demo(ctx context.Context, logger *slog.Logger) error {
	serverKey, err := wg.GeneratePrivateKey()
	if err != nil {
		return err
	}
	clientKey, err := wg.GeneratePrivateKey()
	if err != nil {
		return err
	}
	// The tunnel addresses exist only inside the two in-process stacks.
	serverCfg := &wg.Config{
		Interface: wg.Interface{
			PrivateKey: serverKey,
			ListenPort: 0, // a free port; the client learns it below
			Addresses: []netip.Prefix{
				netip.MustParsePrefix("10.123.0.1/24"),
				netip.MustParsePrefix("fd00:123::1/64"),
			},
		},
		Peers: []wg.Peer{{
			PublicKey: clientKey.PublicKey(),
			AllowedIPs: []netip.Prefix{
				netip.MustParsePrefix("10.123.0.2/32"),
				netip.MustParsePrefix("fd00:123::2/128"),
			},
		}},
	}
	server, err := netstack.Open(ctx, serverCfg, &netstack.Options{Logger: logger})
	if err != nil {
		return err
	}
	defer server.Close()

	clientCfg := &wg.Config{
		Interface: wg.Interface{
			PrivateKey: clientKey,
			Addresses: []netip.Prefix{
				netip.MustParsePrefix("10.123.0.2/24"),
				netip.MustParsePrefix("fd00:123::2/64"),
			},
		},
		Peers: []wg.Peer{{
			PublicKey: serverKey.PublicKey(),
			Endpoint:  "127.0.0.1:" + strconv.Itoa(server.Device().ListenPort()),
			AllowedIPs: []netip.Prefix{
				netip.MustParsePrefix("10.123.0.0/24"),
				netip.MustParsePrefix("fd00:123::/64"),
			},
		}},
	}
	client, err := netstack.Open(ctx, clientCfg, &netstack.Options{Logger: logger})
	if err != nil {
		return err
	}
	defer client.Close()
	fmt.Printf("server %s on UDP port %d, tunnel addresses %v\n",
		server.Device().PublicKey(), server.Device().ListenPort(), server.Addrs())
	fmt.Printf("client %s, tunnel addresses %v\n", client.Device().PublicKey(), client.Addrs())

	// HTTP on port 80 of all the server's tunnel addresses.
	l, err := server.Listen("tcp", ":80")
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello %s, this is %s over WireGuard\n", r.RemoteAddr, r.Host)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go srv.Serve(l)
	defer srv.Close()

	for _, url := range []string{"http://10.123.0.1/", "http://[fd00:123::1]/"} {
		if err := fetch(ctx, client, url); err != nil {
			return err
		}
	}
	for _, addr := range []string{"10.123.0.1", "fd00:123::1"} {
		rtt, err := client.Ping(ctx, netip.MustParseAddr(addr))
		if err != nil {
			return err
		}
		fmt.Printf("ping %s: %v\n", addr, rtt.Round(time.Microsecond))
	}
	printPeers("server", server)
	printPeers("client", client)
	return nil
}

// fetchWith opens the tunnel of a wg-quick file and fetches url through it.
func fetchWith(ctx context.Context, file, url string, logger *slog.Logger) error {
	cfg, err := wg.LoadConfig(file) // errors name the file and line
	if err != nil {
		return err
	}
	tnet, err := netstack.Open(ctx, cfg, &netstack.Options{Logger: logger})
	if err != nil {
		return err
	}
	defer tnet.Close()
	if err := fetch(ctx, tnet, url); err != nil {
		return err
	}
	printPeers("tunnel", tnet)
	return nil
}

// fetch GETs url through the tunnel and prints the status and up to 1 KiB
// of the body.
func fetch(ctx context.Context, tnet *netstack.Net, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := tnet.HTTPClient().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if err != nil {
		return err
	}
	fmt.Printf("GET %s: %s\n%s", url, resp.Status, body)
	if len(body) > 0 && body[len(body)-1] != '\n' {
		fmt.Println()
	}
	return nil
}

func printPeers(side string, tnet *netstack.Net) {
	for _, p := range tnet.Device().Peers() {
		handshake := "never"
		if !p.LastHandshake.IsZero() {
			handshake = time.Since(p.LastHandshake).Round(time.Millisecond).String() + " ago"
		}
		endpoint := "(none)"
		if p.Endpoint.IsValid() {
			endpoint = net.JoinHostPort(p.Endpoint.Addr().String(), strconv.Itoa(int(p.Endpoint.Port())))
		}
		fmt.Printf("%s: peer %s endpoint %s handshake %s rx %d B tx %d B\n",
			side, p.PublicKey, endpoint, handshake, p.RxBytes, p.TxBytes)
	}
}
