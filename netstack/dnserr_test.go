package netstack

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/wgkit/wgkit/wg"
)

// TestLookupErrorsUnwrap checks that the *net.DNSError of a failed lookup
// unwraps to its cause, so that errors.Is finds net.ErrClosed after Close
// (as Net.Close promises for blocked dials), the context's error, and
// ErrNoRoute for a DNS server no peer routes.
func TestLookupErrorsUnwrap(t *testing.T) {
	// B takes DNS queries and answers none: they wait until their context
	// or Close.
	silent := func(a, _ *wg.Config) { a.Interface.DNS = []netip.Addr{addrB4} }
	t.Run("Close", func(t *testing.T) {
		a, b := openPair(t, silent)
		silentDNS(t, b, addrB4)
		errs := make(chan error, 2)
		go func() { _, err := a.LookupHost(context.Background(), "host.example"); errs <- err }()
		go func() { _, err := a.Dial("tcp", "host.example:80"); errs <- err }()
		time.Sleep(100 * time.Millisecond)
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			select {
			case err := <-errs:
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("lookup blocked at Close: %v, want an error wrapping net.ErrClosed", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Close did not unblock a lookup")
			}
		}
	})
	t.Run("context", func(t *testing.T) {
		a, b := openPair(t, silent)
		silentDNS(t, b, addrB4)
		tests := []struct {
			name string
			ctx  func() (context.Context, context.CancelFunc)
			want error
		}{
			{"cancelled", func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				time.AfterFunc(50*time.Millisecond, cancel)
				return ctx, cancel
			}, context.Canceled},
			{"deadline", func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 50*time.Millisecond)
			}, context.DeadlineExceeded},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ctx, cancel := tt.ctx()
				defer cancel()
				_, err := a.LookupHost(ctx, "host.example")
				var de *net.DNSError
				if !errors.As(err, &de) || !errors.Is(err, tt.want) {
					t.Errorf("LookupHost = %v, want a *net.DNSError wrapping %v", err, tt.want)
				}
			})
		}
	})
	t.Run("no route to the server", func(t *testing.T) {
		a, _ := openPair(t, func(a, _ *wg.Config) { a.Interface.DNS = []netip.Addr{netip.MustParseAddr("10.99.0.53")} })
		_, err := a.LookupHost(testContext(t, 10*time.Second), "host.example")
		var de *net.DNSError
		if !errors.As(err, &de) || !errors.Is(err, ErrNoRoute) {
			t.Errorf("LookupHost = %v, want a *net.DNSError wrapping ErrNoRoute", err)
		}
	})
}

// silentDNS makes n take DNS queries on addr and answer none. Without a
// socket on the port, n's stack would refuse them (ICMP port
// unreachable), and the lookup fail at once with ECONNREFUSED.
func silentDNS(t *testing.T, n *Net, addr netip.Addr) {
	t.Helper()
	pc, err := n.ListenPacket("udp", netip.AddrPortFrom(addr, 53).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
}
