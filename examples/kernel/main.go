// Command kernel brings up a WireGuard network interface from a wg-quick
// configuration, as `wg-quick up` does, keeps it up until interrupted
// (SIGINT or SIGTERM), then tears it down as `wg-quick down` does.
//
//	sudo go run ./examples/kernel -config wg0.conf
//
// It needs root (or CAP_NET_ADMIN) on Linux, or Administrator and
// wintun.dll on Windows. While it runs, `wg show NAME` reports the
// interface and every program on the host can use the tunnel.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/wgkit/wgkit/tun"
	"github.com/wgkit/wgkit/wg"
)

func main() {
	config := flag.String("config", "", "wg-quick configuration `file` (required)")
	name := flag.String("name", "", "interface `name`; default: the file's name without .conf, as wg-quick does, else "+tun.DefaultName)
	dns := flag.Bool("dns", false, "point the host's resolver at the configuration's DNS servers while up")
	verbose := flag.Bool("v", false, "log the engine's debug messages")
	flag.Parse()
	if *config == "" {
		flag.Usage()
		os.Exit(2)
	}
	if *name == "" {
		*name = nameFromFile(*config)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *config, *name, *dns, logger); err != nil {
		fmt.Fprintln(os.Stderr, "kernel:", err)
		os.Exit(1)
	}
}

// nameFromFile is wg-quick's rule: wg0.conf names the interface wg0.
func nameFromFile(file string) string {
	base, ok := strings.CutSuffix(filepath.Base(file), ".conf")
	if !ok || base == "" || len(base) > 15 || strings.ContainsAny(base, "/: \t") {
		return tun.DefaultName
	}
	return base
}

func run(ctx context.Context, file, name string, dns bool, logger *slog.Logger) error {
	cfg, err := wg.LoadConfig(file) // errors name the file and line
	if err != nil {
		return err
	}
	openCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ifc, err := tun.Open(openCtx, cfg, &tun.Options{Name: name, Logger: logger, SetDNS: dns})
	if err != nil {
		return err
	}
	dev := ifc.Device()
	logger.Info("interface up", "name", ifc.Name(), "addresses", cfg.Interface.Addresses,
		"public_key", dev.PublicKey().String(), "udp_port", dev.ListenPort())

	<-ctx.Done()
	logger.Info("shutting down", "name", ifc.Name())
	for _, p := range dev.Peers() {
		logger.Info("peer", "public_key", p.PublicKey.String(), "endpoint", p.Endpoint,
			"last_handshake", p.LastHandshake, "rx_bytes", p.RxBytes, "tx_bytes", p.TxBytes)
	}
	return ifc.Close()
}
