// Command router runs a WireGuard exit node or subnet router in process,
// with no root and no network interface: peers that route a subnet (or
// 0.0.0.0/0 and ::/0) through its tunnel reach the networks of the host
// it runs on, and with -relay they reach each other through it, as
// through a WireGuard hub.
//
//	go run ./examples/router -config router.conf -allow 192.168.1.0/24 -relay
//
// Each peer connection is dialled anew from the host (see
// netstack.ForwardOptions). It logs the router's counters every -stats
// interval and runs until interrupted.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/wgkit/wgkit/netstack"
	"github.com/wgkit/wgkit/wg"
)

func main() {
	config := flag.String("config", "", "wg-quick configuration `file` (required)")
	allow := flag.String("allow", "", "comma-separated `prefixes` peers may reach; empty means the default policy (anything but the host's own and loopback, link-local and multicast addresses)")
	relay := flag.Bool("relay", false, "relay packets between peers (a WireGuard hub)")
	every := flag.Duration("stats", 30*time.Second, "how often to log the router's counters; 0 means never")
	verbose := flag.Bool("v", false, "log the engine's debug messages, and each flow -allow refuses")
	flag.Parse()
	if *config == "" {
		flag.Usage()
		os.Exit(2)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	fo := &netstack.ForwardOptions{RelayPeers: *relay}
	if *allow != "" {
		var prefixes []netip.Prefix
		for _, s := range strings.Split(*allow, ",") {
			p, err := netip.ParsePrefix(strings.TrimSpace(s))
			if err != nil {
				fmt.Fprintln(os.Stderr, "router: -allow:", err)
				os.Exit(2)
			}
			prefixes = append(prefixes, p.Masked())
		}
		fo.Allow = func(network string, src, dst netip.AddrPort) bool {
			for _, p := range prefixes {
				if p.Contains(dst.Addr()) {
					return true
				}
			}
			logger.Debug("refused", "network", network, "src", src, "dst", dst)
			return false
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *config, fo, *every, logger); err != nil {
		fmt.Fprintln(os.Stderr, "router:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, file string, fo *netstack.ForwardOptions, every time.Duration, logger *slog.Logger) error {
	cfg, err := wg.LoadConfig(file)
	if err != nil {
		return err
	}
	openCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tnet, err := netstack.Open(openCtx, cfg, &netstack.Options{Logger: logger, Forward: fo})
	if err != nil {
		return err
	}
	defer tnet.Close()
	logger.Info("routing", "tunnel", tnet.Addrs(), "relay", fo.RelayPeers,
		"public_key", tnet.Device().PublicKey().String(), "udp_port", tnet.Device().ListenPort())
	var tick <-chan time.Time
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
			s := tnet.ForwardStats()
			logger.Info("stats", "tcp", s.TCPFlows, "udp", s.UDPFlows, "pending", s.PendingDials,
				"refused", s.Refused, "dropped", s.Dropped, "dial_errors", s.DialErrors, "relayed", s.Relayed)
		}
	}
}
