// Command metrics serves the Prometheus metrics of WireGuard tunnels
// through wgkit's wgprom collector, under the names of wireguard_exporter.
//
// With -config FILE it opens that wg-quick configuration on the netstack
// backend and serves its metrics on -listen. With no -config it opens two
// tunnels in this process that talk over UDP on 127.0.0.1, moves a little
// traffic between them and serves the metrics of both. -once prints one
// scrape to stdout and exits instead of serving.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/signal"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/wgkit/wgkit/netstack"
	"github.com/wgkit/wgkit/wg"
	"github.com/wgkit/wgkit/wg/wgprom"
)

func main() {
	config := flag.String("config", "", "wg-quick configuration `file` (default: two demo tunnels in this process)")
	listen := flag.String("listen", "127.0.0.1:9586", "`address` to serve /metrics on")
	once := flag.Bool("once", false, "print one scrape to stdout and exit")
	flag.Parse()
	if err := run(*config, *listen, *once); err != nil {
		fmt.Fprintln(os.Stderr, "metrics:", err)
		os.Exit(1)
	}
}

func run(config, listen string, once bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	c := wgprom.New(nil)
	if config != "" {
		cfg, err := wg.LoadConfig(config)
		if err != nil {
			return err
		}
		tnet, err := netstack.Open(ctx, cfg, nil)
		if err != nil {
			return err
		}
		defer tnet.Close()
		if err := c.AddBackend(tnet.Name(), tnet.Device(), backendStats(tnet)); err != nil {
			return err
		}
	} else {
		closeDemo, err := demo(ctx, c)
		if err != nil {
			return err
		}
		defer closeDemo()
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		return err
	}
	handler := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	if once {
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		_, err := io.Copy(os.Stdout, rec.Body)
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", handler)
	srv := &http.Server{Addr: listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	fmt.Fprintf(os.Stderr, "metrics: serving http://%s/metrics\n", listen)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// demo opens a server and a client tunnel on 127.0.0.1, adds both to c
// and moves a few bytes between them, so that the counters show traffic.
func demo(ctx context.Context, c *wgprom.Collector) (closeAll func(), err error) {
	srvKey, err := wg.GeneratePrivateKey()
	if err != nil {
		return nil, err
	}
	cliKey, err := wg.GeneratePrivateKey()
	if err != nil {
		return nil, err
	}
	srvAddr := netip.MustParseAddr("10.124.0.1")
	srv, err := netstack.Open(ctx, &wg.Config{
		Interface: wg.Interface{PrivateKey: srvKey, Addresses: []netip.Prefix{netip.PrefixFrom(srvAddr, 24)}},
		Peers:     []wg.Peer{{PublicKey: cliKey.PublicKey(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.124.0.2/32")}}},
	}, nil)
	if err != nil {
		return nil, err
	}
	cli, err := netstack.Open(ctx, &wg.Config{
		Interface: wg.Interface{PrivateKey: cliKey, Addresses: []netip.Prefix{netip.MustParsePrefix("10.124.0.2/24")}},
		Peers: []wg.Peer{{
			PublicKey:  srvKey.PublicKey(),
			Endpoint:   fmt.Sprintf("127.0.0.1:%d", srv.Device().ListenPort()),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(srvAddr, 32)},
		}},
	}, nil)
	if err != nil {
		srv.Close()
		return nil, err
	}
	closeAll = func() {
		cli.Close()
		srv.Close()
	}
	if err := errors.Join(c.AddBackend("server", srv.Device(), backendStats(srv)), c.AddBackend("client", cli.Device(), backendStats(cli))); err != nil {
		closeAll()
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cli.Ping(pctx, srvAddr); err != nil {
		closeAll()
		return nil, fmt.Errorf("ping through the demo tunnel: %w", err)
	}
	return closeAll, nil
}

// backendStats reports a netstack tunnel's own counters to the collector.
func backendStats(n *netstack.Net) func() wgprom.BackendStats {
	return func() wgprom.BackendStats {
		s, f := n.Stats(), n.ForwardStats()
		return wgprom.BackendStats{
			PacketsDropped: s.LinkDropped,
			CaptureDropped: s.CaptureDropped,
			Forward: &wgprom.ForwardStats{
				TCPFlows: f.TCPFlows, UDPFlows: f.UDPFlows, PendingDials: f.PendingDials,
				Refused: f.Refused, Dropped: f.Dropped, DialErrors: f.DialErrors, Relayed: f.Relayed,
			},
		}
	}
}
