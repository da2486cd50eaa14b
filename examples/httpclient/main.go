// Command httpclient fetches a URL through a WireGuard tunnel opened in
// process from a wg-quick configuration, with no root and no network
// interface. Host names in the URL are resolved by the DNS servers of the
// configuration, through the tunnel.
//
//	go run ./examples/httpclient -config client.conf -url http://10.0.0.1/
//
// It prints the response body to stdout and the status and peer state to
// stderr.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/wgkit/wgkit/netstack"
	"github.com/wgkit/wgkit/wg"
)

func main() {
	config := flag.String("config", "", "wg-quick configuration `file` (required)")
	url := flag.String("url", "", "`URL` to fetch through the tunnel (required)")
	timeout := flag.Duration("timeout", 30*time.Second, "give up after this long")
	verbose := flag.Bool("v", false, "log the engine's debug messages to stderr")
	pcap := flag.String("pcap", "", "write the tunnel's packets to this pcap `file` (tcpdump -r, Wireshark)")
	flag.Parse()
	if *config == "" || *url == "" {
		flag.Usage()
		os.Exit(2)
	}
	var logger *slog.Logger
	if *verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := run(ctx, *config, *url, *pcap, logger); err != nil {
		fmt.Fprintln(os.Stderr, "httpclient:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, file, url, pcap string, logger *slog.Logger) (err error) {
	cfg, err := wg.LoadConfig(file) // errors name the file and line
	if err != nil {
		return err
	}
	opts := &netstack.Options{Logger: logger}
	if pcap != "" {
		out, err := os.Create(pcap)
		if err != nil {
			return err
		}
		// Runs after the tunnel's Close, which ends the capture.
		defer func() {
			if cerr := out.Close(); err == nil {
				err = cerr
			}
		}()
		opts.Capture = out
	}
	tnet, err := netstack.Open(ctx, cfg, opts)
	if err != nil {
		return err
	}
	defer func() {
		tnet.Close()
		if pcap != "" {
			st := tnet.Stats()
			fmt.Fprintf(os.Stderr, "%d packets written to %s, %d lost\n", st.CapturePackets, pcap, st.CaptureDropped)
		}
	}()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := tnet.HTTPClient().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	fmt.Fprintln(os.Stderr, resp.Proto, resp.Status)
	if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
		return err
	}
	for _, p := range tnet.Device().Peers() {
		fmt.Fprintf(os.Stderr, "peer %s endpoint %v last handshake %s rx %d B tx %d B\n",
			p.PublicKey, p.Endpoint, p.LastHandshake.Format(time.RFC3339), p.RxBytes, p.TxBytes)
	}
	if resp.StatusCode >= 400 {
		return fmt.Errorf("%s", resp.Status)
	}
	return nil
}
