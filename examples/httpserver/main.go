// Command httpserver serves HTTP on a WireGuard tunnel opened in process
// from a wg-quick configuration, with no root and no network interface.
// Only the tunnel's peers can reach it.
//
//	go run ./examples/httpserver -config server.conf -listen :80
//
// It answers every request with a greeting naming the caller's tunnel
// address, and runs until interrupted.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/wgkit/wgkit/netstack"
	"github.com/wgkit/wgkit/wg"
)

func main() {
	config := flag.String("config", "", "wg-quick configuration `file` (required)")
	listen := flag.String("listen", ":80", "tunnel `address` to serve on; \":port\" means all of the tunnel's addresses")
	verbose := flag.Bool("v", false, "log the engine's debug messages")
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *config, *listen, logger); err != nil {
		fmt.Fprintln(os.Stderr, "httpserver:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, file, listen string, logger *slog.Logger) error {
	cfg, err := wg.LoadConfig(file) // errors name the file and line
	if err != nil {
		return err
	}
	openCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tnet, err := netstack.Open(openCtx, cfg, &netstack.Options{Logger: logger})
	if err != nil {
		return err
	}
	defer tnet.Close()

	l, err := tnet.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			logger.Info("request", "from", r.RemoteAddr, "method", r.Method, "url", r.URL.String())
			fmt.Fprintf(w, "hello %s, this is %s serving over WireGuard\n", r.RemoteAddr, r.Host)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	logger.Info("serving", "listen", l.Addr().String(), "tunnel", tnet.Addrs(),
		"public_key", tnet.Device().PublicKey().String(), "udp_port", tnet.Device().ListenPort())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return err
	}
	<-errc
	return nil
}
