package netstack

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/wgkit/wgkit/wg"
	"golang.org/x/net/dns/dnsmessage"
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

// TestLookupSkipsLameReferral gives A two DNS servers on B: the first
// answers every query with an empty NOERROR that is neither authoritative
// nor recursive (a lame referral), the second is the test server. The
// lookup must go on to the second, as Go's resolver does; an empty
// authoritative answer, by contrast, is final (TestLookupHost's v6-only
// name).
func TestLookupSkipsLameReferral(t *testing.T) {
	a, b := openPair(t, func(a, _ *wg.Config) { a.Interface.DNS = []netip.Addr{addrB6, addrB4} })
	lameDNS(t, b, addrB6)
	srv := newTestDNS()
	srv.serveOn(t, b, addrB4)
	addrs, err := a.LookupHost(testContext(t, 10*time.Second), "host.example")
	if err != nil {
		t.Fatalf("LookupHost after a lame referral: %v", err)
	}
	if len(addrs) != 2 {
		t.Errorf("LookupHost = %v, want the two addresses of host.example", addrs)
	}

	// With only the lame server, the lookup fails, and not as "not found".
	c, d := openPair(t, func(a, _ *wg.Config) { a.Interface.DNS = []netip.Addr{addrB6} })
	lameDNS(t, d, addrB6)
	_, err = c.LookupHost(testContext(t, 10*time.Second), "host.example")
	var de *net.DNSError
	if !errors.As(err, &de) || de.IsNotFound || !strings.Contains(err.Error(), "lame referral") {
		t.Errorf("LookupHost with only a lame server = %v, want a *net.DNSError saying lame referral, not not-found", err)
	}
}

// lameDNS makes n answer every DNS query on addr with an empty NOERROR,
// without the authoritative and recursion-available bits or EDNS.
func lameDNS(t *testing.T, n *Net, addr netip.Addr) {
	t.Helper()
	pc, err := n.ListenPacket("udp", netip.AddrPortFrom(addr, 53).String())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var m dnsmessage.Message
			if m.Unpack(buf[:k]) != nil {
				continue
			}
			resp := dnsmessage.Message{
				Header:    dnsmessage.Header{ID: m.ID, Response: true, RecursionDesired: m.RecursionDesired},
				Questions: m.Questions,
			}
			if b, err := resp.Pack(); err == nil {
				pc.WriteTo(b, from)
			}
		}
	}()
}
