package netstack_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/wgkit/wgkit/internal/udpbind"
	"github.com/wgkit/wgkit/netstack"
	"github.com/wgkit/wgkit/wg"
	"github.com/wgkit/wgkit/wg/wgtest"
)

// parallelServer are the options of the wgtest servers of parallel tests:
// wgtest's own leak check cannot tell whose goroutines it sees, so the
// package's goleak.VerifyTestMain checks instead.
var parallelServer = &wgtest.ServerOptions{NoLeakCheck: true}

// openClient opens a tunnel with cfg, a client config of a wgtest.Server,
// on a UDP socket on 127.0.0.1, with the given handshake timeout, closed
// at cleanup.
func openClient(t *testing.T, cfg *wg.Config, timeout time.Duration) *netstack.Net {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := netstack.Open(ctx, cfg, &netstack.Options{
		Bind:             udpbind.New(&udpbind.Options{ListenAddr: netip.MustParseAddr("127.0.0.1")}),
		HandshakeTimeout: timeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// TestDialHandshakeTimeout dials through a tunnel whose peer is down: the
// dial fails after HandshakeTimeout, not TCP's two minutes, with an error
// that wraps wg.ErrHandshakeTimeout, is a timeout, and names the peer's
// key and endpoint.
func TestDialHandshakeTimeout(t *testing.T) {
	t.Parallel() // these tests mostly wait
	const timeout = time.Second
	tests := []struct {
		name string
		// session makes a working session before the server stops: then
		// WireGuard allows no new initiation for 5 s after that handshake,
		// and the dial's time runs from then.
		session bool
		http    bool
		most    time.Duration // the longest the dial may take
	}{
		{name: "peer never up", most: timeout + 3*time.Second},
		{name: "peer never up, HTTP GET", http: true, most: timeout + 3*time.Second},
		{name: "peer stopped after a session", session: true, most: timeout + 5*time.Second + 3*time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := wgtest.NewServer(t, parallelServer)
			pub, ep := srv.PublicKey(), srv.Endpoint()
			cfg := srv.ClientConfig()
			var c *netstack.Net
			if tt.session {
				c = openClient(t, cfg, timeout)
				if _, err := c.Ping(context.Background(), srv.Addr()); err != nil {
					t.Fatal(err)
				}
				srv.Close()
			} else {
				srv.Close()
				c = openClient(t, cfg, timeout)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			dst := netip.AddrPortFrom(srv.Addr(), 80).String()
			start := time.Now()
			var err error
			if tt.http {
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+dst+"/", nil)
				var resp *http.Response
				if resp, err = c.HTTPClient().Do(req); err == nil {
					resp.Body.Close()
				}
			} else {
				var conn net.Conn
				if conn, err = c.DialContext(ctx, "tcp", dst); err == nil {
					conn.Close()
				}
			}
			took := time.Since(start)
			t.Logf("after %v: %v", took, err)
			if !errors.Is(err, wg.ErrHandshakeTimeout) {
				t.Fatalf("dial to a stopped peer: %v, want an error wrapping wg.ErrHandshakeTimeout", err)
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Errorf("error %v is not a net.Error timeout", err)
			}
			if !tt.http {
				var oe *net.OpError
				if !errors.As(err, &oe) || oe.Op != "dial" || oe.Addr == nil || oe.Addr.String() != dst {
					t.Errorf("error %v, want a *net.OpError of the dial to %s", err, dst)
				}
			}
			for _, s := range []string{pub.String(), ep.String()} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not name %s", err, s)
				}
			}
			if took < timeout || took > tt.most {
				t.Errorf("the dial failed after %v, want between %v and %v", took, timeout, tt.most)
			}
		})
	}
}

// TestDialHandshakeLivePeer checks that the handshake check leaves a dial
// to a live peer alone: the peer's stack drops the SYN (no host has that
// address), so the dial ends with its context, after a handshake
// completed.
func TestDialHandshakeLivePeer(t *testing.T) {
	t.Parallel()
	srv := wgtest.NewServer(t, parallelServer)
	c := openClient(t, srv.ClientConfig(), 500*time.Millisecond)
	// Routed to the server (its AllowedIPs are the whole prefix), which
	// has no such address.
	dst := netip.AddrPortFrom(srv.Addr().Next().Next().Next(), 80).String()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := c.DialContext(ctx, "tcp", dst)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, wg.ErrHandshakeTimeout) {
		t.Errorf("dial to an unanswered address behind a live peer: %v, want the context's deadline", err)
	}
}

// TestDialHandshakeTimeoutOff checks that a negative HandshakeTimeout
// turns the check off: the dial waits for its context.
func TestDialHandshakeTimeoutOff(t *testing.T) {
	t.Parallel()
	srv := wgtest.NewServer(t, parallelServer)
	cfg := srv.ClientConfig()
	srv.Close()
	c := openClient(t, cfg, -1)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	_, err := c.DialContext(ctx, "tcp", netip.AddrPortFrom(srv.Addr(), 80).String())
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, wg.ErrHandshakeTimeout) {
		t.Errorf("dial with the check off: %v, want the context's deadline", err)
	}
}
