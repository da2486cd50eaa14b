package wgtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/wgkit/wgkit/netstack"
	"github.com/wgkit/wgkit/wg"
	"golang.zx2c4.com/wireguard/conn"
)

// Default tunnel prefixes of a Server, read only. The addresses exist only
// inside the test process (netstack); nothing is routed on the host.
var (
	defaultServerPrefix4 = netip.MustParsePrefix("10.99.0.0/24")
	defaultServerPrefix6 = netip.MustParsePrefix("fd00:99::/64")
)

// openNet opens a netstack peer for cfg on bind, in router mode if fwd
// is not nil, bounding the set-up by 30 seconds (nothing there should
// block; the bound keeps a test from hanging if something does).
func openNet(cfg *wg.Config, log *slog.Logger, bind conn.Bind, fwd *netstack.ForwardOptions) (*netstack.Net, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return netstack.Open(ctx, cfg, &netstack.Options{Logger: log, Bind: bind, Forward: fwd})
}

// ServerOptions configures NewServer. A nil *ServerOptions and every zero
// field mean the documented default.
type ServerOptions struct {
	// Logger receives the server's engine and stack log. nil discards it.
	Logger *slog.Logger

	// Prefix4 and Prefix6 are the tunnel's address ranges. The server has
	// the first host address of each (10.99.0.1, fd00:99::1), clients get
	// the following ones. Zero means 10.99.0.0/24 and
	// fd00:99::/64.
	Prefix4, Prefix6 netip.Prefix

	// MTU is the tunnel MTU of the server and of its client configs.
	// Zero means the netstack default.
	MTU int

	// PersistentKeepalive is set on the server peer of every client
	// config. Zero means none.
	PersistentKeepalive time.Duration

	// NoLeakCheck switches off the goroutine leak check that runs after
	// the server is closed. The check takes a snapshot of the running
	// goroutines in NewServer and cannot tell whose goroutines it sees,
	// so tests that call t.Parallel must set NoLeakCheck and check with
	// goleak.VerifyTestMain instead.
	NoLeakCheck bool
}

// Server is a WireGuard peer running inside the test process on the
// netstack backend, reachable on 127.0.0.1 at a free UDP port. Create it
// with NewServer; it is closed when the test ends.
//
// All methods are safe for concurrent use.
type Server struct {
	t       testing.TB
	log     *slog.Logger
	net     *netstack.Net
	key     wg.Key
	port    int
	prefix4 netip.Prefix
	prefix6 netip.Prefix
	addr4   netip.Addr
	addr6   netip.Addr
	mtu     int
	keep    time.Duration

	mu      sync.Mutex
	clients int  // client addresses handed out; guarded by mu
	closed  bool // guarded by mu
}

// NewServer starts a WireGuard server peer with a fresh key on the
// netstack backend, its UDP socket on 127.0.0.1 at a free port. It fails
// the test if it cannot. The server is closed through t.Cleanup and,
// unless opts.NoLeakCheck, the test then fails if goroutines started
// since NewServer are still running (see ServerOptions.NoLeakCheck).
//
// NewServer must be called from the test's goroutine, as t.Fatal requires.
func NewServer(t testing.TB, opts *ServerOptions) *Server {
	t.Helper()
	if opts == nil {
		opts = &ServerOptions{}
	}
	var check func()
	if !opts.NoLeakCheck {
		check = leakCheck(t, leakGrace)
	}
	s := &Server{
		t:       t,
		log:     opts.Logger,
		prefix4: opts.Prefix4,
		prefix6: opts.Prefix6,
		mtu:     opts.MTU,
		keep:    opts.PersistentKeepalive,
	}
	if !s.prefix4.IsValid() {
		s.prefix4 = defaultServerPrefix4
	}
	if !s.prefix6.IsValid() {
		s.prefix6 = defaultServerPrefix6
	}
	if !s.prefix4.Addr().Is4() || !s.prefix6.Addr().Is6() {
		t.Fatalf("wgtest: new server: Prefix4 %v must be IPv4 and Prefix6 %v IPv6", s.prefix4, s.prefix6)
	}
	var err error
	if s.addr4, err = nthAddr(s.prefix4, 1); err != nil {
		t.Fatal(err)
	}
	if s.addr6, err = nthAddr(s.prefix6, 1); err != nil {
		t.Fatal(err)
	}
	if s.key, err = wg.GeneratePrivateKey(); err != nil {
		t.Fatalf("wgtest: new server: %v", err)
	}
	cfg := &wg.Config{Interface: wg.Interface{
		PrivateKey: s.key,
		Addresses: []netip.Prefix{
			netip.PrefixFrom(s.addr4, s.prefix4.Bits()),
			netip.PrefixFrom(s.addr6, s.prefix6.Bits()),
		},
		MTU: s.mtu,
	}}
	s.net, err = openNet(cfg, s.log, &loopbackBind{}, nil)
	if err != nil {
		t.Fatalf("wgtest: new server: %v", err)
	}
	s.port = s.net.Device().ListenPort()
	// Cleanups run last-in first-out: clients opened after this point
	// are closed before the server, and the leak check runs last.
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Error(err)
		}
		if check != nil {
			check()
		}
	})
	return s
}

// Net returns the server's network stack, on which the test listens for
// and dials connections through the tunnel.
func (s *Server) Net() *netstack.Net { return s.net }

// Device returns the server's WireGuard device, for its peers' status or
// for changing its configuration.
func (s *Server) Device() *wg.Device { return s.net.Device() }

// Addr returns the server's IPv4 tunnel address (10.99.0.1 by default).
func (s *Server) Addr() netip.Addr { return s.addr4 }

// Addr6 returns the server's IPv6 tunnel address (fd00:99::1 by default).
func (s *Server) Addr6() netip.Addr { return s.addr6 }

// PublicKey returns the server's public key.
func (s *Server) PublicKey() wg.Key { return s.key.PublicKey() }

// Endpoint returns the server's UDP address, 127.0.0.1 and its port.
func (s *Server) Endpoint() netip.AddrPort {
	return netip.AddrPortFrom(loopback4, uint16(s.port))
}

// ClientConfig returns a configuration for one more client: a fresh key,
// the next free addresses of the server's prefixes, and the server as its
// only peer with the server's prefixes as AllowedIPs. The client is added
// to the running server as a peer before ClientConfig returns.
//
// It fails the test if the prefixes are used up or the server is closed;
// call it from the test's goroutine.
func (s *Server) ClientConfig() *wg.Config {
	s.t.Helper()
	cfg, err := s.clientConfig()
	if err != nil {
		s.t.Fatal(err)
	}
	return cfg
}

func (s *Server) clientConfig() (*wg.Config, error) {
	key, err := wg.GeneratePrivateKey()
	if err != nil {
		return nil, fmt.Errorf("wgtest: client config: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("wgtest: client config: server: %w", net.ErrClosed)
	}
	n := s.clients + 2 // .0 is the network, .1 the server
	a4, err := nthAddr(s.prefix4, n)
	if err != nil {
		return nil, fmt.Errorf("wgtest: client config: %w", err)
	}
	a6, err := nthAddr(s.prefix6, n)
	if err != nil {
		return nil, fmt.Errorf("wgtest: client config: %w", err)
	}
	err = s.net.Device().SetPeer(wg.Peer{
		PublicKey:  key.PublicKey(),
		AllowedIPs: []netip.Prefix{hostPrefix(a4), hostPrefix(a6)},
	})
	if err != nil {
		return nil, fmt.Errorf("wgtest: client config: add peer: %w", err)
	}
	s.clients++
	return &wg.Config{
		Interface: wg.Interface{
			PrivateKey: key,
			Addresses: []netip.Prefix{
				netip.PrefixFrom(a4, s.prefix4.Bits()),
				netip.PrefixFrom(a6, s.prefix6.Bits()),
			},
			MTU: s.mtu,
		},
		Peers: []wg.Peer{{
			PublicKey:           s.key.PublicKey(),
			Endpoint:            net.JoinHostPort(loopback4.String(), strconv.Itoa(s.port)),
			AllowedIPs:          []netip.Prefix{s.prefix4, s.prefix6},
			PersistentKeepalive: s.keep,
		}},
	}, nil
}

// Client opens a client of the server on the netstack backend, with a
// ClientConfig and a UDP socket on 127.0.0.1 only. It is closed through
// t.Cleanup before the server. Call it from the test's goroutine.
func (s *Server) Client() *netstack.Net {
	s.t.Helper()
	cfg := s.ClientConfig()
	c, err := openNet(cfg, s.log, &loopbackBind{}, nil)
	if err != nil {
		s.t.Fatalf("wgtest: open client: %v", err)
	}
	s.t.Cleanup(func() { c.Close() })
	return c
}

// Close stops the server. The test's cleanup calls it; calling it earlier
// is allowed. A second Close returns an error wrapping net.ErrClosed.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("wgtest: close server: %w", net.ErrClosed)
	}
	s.closed = true
	s.mu.Unlock()
	if err := s.net.Close(); err != nil {
		return fmt.Errorf("wgtest: close server: %w", err)
	}
	return nil
}
