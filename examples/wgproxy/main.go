// Command wgproxy opens a WireGuard tunnel in process and serves it to the
// programs beside it: a SOCKS5 server, an HTTP proxy, and port forwards
// both ways, with no root and no network interface. It reads wireproxy's
// configuration files unchanged.
//
//	go run ./examples/wgproxy -config wireproxy.conf
//	go run ./examples/wgproxy -config wg0.conf -socks 127.0.0.1:1080 \
//		-forward tcp:127.0.0.1:2222=10.0.0.5:22 -reverse tcp:8080=127.0.0.1:80
//
// SIGINT and SIGTERM close everything; SIGHUP re-reads the file and
// applies its wg-quick part (keys, peers) to the running tunnel without
// dropping connections. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/wgkit/wgkit/netstack"
	"github.com/wgkit/wgkit/netstack/proxy"
	"golang.zx2c4.com/wireguard/conn"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	notifyHUP(hup)
	err := run(ctx, os.Args[1:], &runOptions{hup: hup, stderr: os.Stderr})
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// runOptions are run's hooks for main and for tests.
type runOptions struct {
	hup    <-chan os.Signal // reload requests
	stderr io.Writer        // usage and log
	bind   conn.Bind        // the tunnel's UDP transport; nil: netstack's default
	ready  func(addrs []string)
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return fmt.Sprint(*l) }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// run parses args, opens the tunnel, serves until ctx ends and then closes
// everything. ready, if set, gets the host addresses the proxies and
// forwards listen on, in the order socks, http, forwards.
func run(ctx context.Context, args []string, o *runOptions) error {
	fs := flag.NewFlagSet("wgproxy", flag.ContinueOnError)
	fs.SetOutput(o.stderr)
	file := fs.String("config", "", "wg-quick or wireproxy configuration `file` (required)")
	var socks, httpAddrs, forwards, reverses listFlag
	fs.Var(&socks, "socks", "serve SOCKS5 on host `address` (repeatable)")
	fs.Var(&httpAddrs, "http", "serve an HTTP proxy on host `address` (repeatable)")
	fs.Var(&forwards, "forward", "forward `proto:bind=target`, host bind to tunnel target, proto tcp or udp (repeatable)")
	fs.Var(&reverses, "reverse", "forward `proto:port=target`, tunnel port to host target (repeatable)")
	verbose := fs.Bool("v", false, "log debug messages, the engine's too")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *file == "" || fs.NArg() > 0 {
		fs.Usage()
		return flag.ErrHelp
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(o.stderr, &slog.HandlerOptions{Level: level}))

	cfg, err := loadConfig(*file, socks, httpAddrs, forwards, reverses)
	if err != nil {
		return err
	}
	for _, w := range cfg.warnings {
		log.Warn(w)
	}
	if len(cfg.socks)+len(cfg.http)+len(cfg.forwards)+len(cfg.reverses) == 0 {
		return errors.New("wgproxy: nothing to serve: the file has no [Socks5], [http], [TCPClientTunnel], [TCPServerTunnel] or [UDPProxyTunnel] section and no -socks, -http, -forward or -reverse flag")
	}
	openCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	tnet, err := netstack.Open(openCtx, cfg.wg, &netstack.Options{Logger: log, Bind: o.bind})
	cancel()
	if err != nil {
		return fmt.Errorf("wgproxy: %w", err)
	}
	s := &services{log: log, tnet: tnet}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	// Close order: the services (listeners, proxies, forwards, and
	// their connections), then the tunnel.
	defer tnet.Close()
	defer s.close()
	if err := s.start(cfg); err != nil {
		return err
	}
	log.Info("tunnel up", "addresses", tnet.Addrs(), "public_key", tnet.Device().PublicKey().String())
	if o.ready != nil {
		o.ready(s.addrs)
	}
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down")
			return nil
		case <-o.hup:
			reload(log, tnet, *file, cfg, socks, httpAddrs, forwards, reverses)
		}
	}
}

// loadConfig reads the file and adds the flags' services.
func loadConfig(file string, socks, httpAddrs, forwards, reverses []string) (*config, error) {
	cfg, err := parseConfig(file)
	if err != nil {
		return nil, err
	}
	for _, a := range socks {
		cfg.socks = append(cfg.socks, server{bind: a})
	}
	for _, a := range httpAddrs {
		cfg.http = append(cfg.http, server{bind: a})
	}
	for _, f := range forwards {
		fw, err := parseFlagForward(f)
		if err != nil {
			return nil, fmt.Errorf("wgproxy: %w", err)
		}
		cfg.forwards = append(cfg.forwards, fw)
	}
	for _, r := range reverses {
		rv, err := parseFlagReverse(r)
		if err != nil {
			return nil, fmt.Errorf("wgproxy: %w", err)
		}
		cfg.reverses = append(cfg.reverses, rv)
	}
	return cfg, nil
}

// reload re-reads the file and applies its wg-quick part to the running
// device; open connections stay. Changed proxies or forwards need a
// restart, and the log says so.
func reload(log *slog.Logger, tnet *netstack.Net, file string, old *config, socks, httpAddrs, forwards, reverses []string) {
	cfg, err := loadConfig(file, socks, httpAddrs, forwards, reverses)
	if err != nil {
		log.Error("reload: configuration not applied", "err", err)
		return
	}
	if err := tnet.Device().Reconfigure(cfg.wg); err != nil {
		log.Error("reload: configuration not applied", "err", err)
		return
	}
	if cfg.servicesText() != old.servicesText() {
		log.Warn("reload: the proxy and forward sections changed; they take effect on restart")
	}
	log.Info("reload: tunnel configuration applied", "peers", len(cfg.wg.Peers))
}

// services are the running proxies and forwards.
type services struct {
	log    *slog.Logger
	tnet   *netstack.Net
	ctx    context.Context // ends the forwards
	cancel context.CancelFunc
	addrs  []string // host listen addresses, in start's order

	wg      sync.WaitGroup
	closers []func() // run in reverse order by close
}

// start starts every service of cfg; on error, close undoes what started.
func (s *services) start(cfg *config) error {
	for _, sv := range cfg.socks {
		ln, err := net.Listen("tcp", sv.bind)
		if err != nil {
			return fmt.Errorf("wgproxy: socks5: %w", err)
		}
		srv := proxy.NewSOCKS5(s.tnet, &proxy.SOCKS5Options{Username: sv.user, Password: sv.pass, Logger: s.log})
		s.closers = append(s.closers, func() { srv.Close() })
		s.goServe("socks5", ln, func() error { return srv.Serve(ln) })
	}
	for _, sv := range cfg.http {
		ln, err := net.Listen("tcp", sv.bind)
		if err != nil {
			return fmt.Errorf("wgproxy: http: %w", err)
		}
		h := proxy.HTTPHandler(s.tnet, &proxy.HTTPOptions{Username: sv.user, Password: sv.pass, Logger: s.log})
		hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
		s.closers = append(s.closers, func() { hs.Close(); h.(io.Closer).Close() })
		s.goServe("http", ln, func() error { return hs.Serve(ln) })
	}
	for _, f := range cfg.forwards {
		target := f.target
		dial := func(ctx context.Context) (net.Conn, error) {
			c, err := s.tnet.DialContext(ctx, f.proto, target)
			if err != nil {
				s.log.Info("forward: dial failed", "target", target, "err", err)
			}
			return c, err
		}
		if f.proto == "tcp" {
			ln, err := net.Listen("tcp", f.bind)
			if err != nil {
				return fmt.Errorf("wgproxy: forward: %w", err)
			}
			s.goServe("forward tcp to "+target, ln, func() error { return proxy.ForwardTCP(s.ctx, ln, dial) })
		} else {
			pc, err := net.ListenPacket("udp", f.bind)
			if err != nil {
				return fmt.Errorf("wgproxy: forward: %w", err)
			}
			s.goPacket("forward udp to "+target, pc, func() error {
				return proxy.ForwardUDP(s.ctx, pc, dial, &proxy.UDPOptions{Logger: s.log})
			})
		}
	}
	for _, r := range cfg.reverses {
		target := r.target
		dial := func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, r.proto, target)
			if err != nil {
				s.log.Info("reverse: dial failed", "target", target, "err", err)
			}
			return c, err
		}
		addr := ":" + strconv.Itoa(int(r.port)) // every tunnel address
		if r.proto == "tcp" {
			ln, err := s.tnet.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("wgproxy: reverse: %w", err)
			}
			s.goRun("reverse tcp "+addr+" to "+target, func() error { return proxy.ForwardTCP(s.ctx, ln, dial) })
		} else {
			pc, err := s.tnet.ListenPacket("udp", addr)
			if err != nil {
				return fmt.Errorf("wgproxy: reverse: %w", err)
			}
			s.goRun("reverse udp "+addr+" to "+target, func() error {
				return proxy.ForwardUDP(s.ctx, pc, dial, &proxy.UDPOptions{Logger: s.log})
			})
		}
	}
	return nil
}

func (s *services) goServe(what string, ln net.Listener, serve func() error) {
	s.addrs = append(s.addrs, ln.Addr().String())
	s.log.Info("listening", "service", what, "addr", ln.Addr().String())
	s.goRun(what, serve)
}

func (s *services) goPacket(what string, pc net.PacketConn, serve func() error) {
	s.addrs = append(s.addrs, pc.LocalAddr().String())
	s.log.Info("listening", "service", what, "addr", pc.LocalAddr().String())
	s.goRun(what, serve)
}

// goRun runs serve until close; an early end is logged.
func (s *services) goRun(what string, serve func() error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := serve()
		if s.ctx.Err() == nil {
			s.log.Error("service ended", "service", what, "err", err)
		}
	}()
}

// close ends every service and waits for them.
func (s *services) close() {
	s.cancel()
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.wg.Wait()
}
