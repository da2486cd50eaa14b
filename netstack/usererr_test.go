package netstack

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wgkit/wgkit/internal/memnet"
	"github.com/wgkit/wgkit/wg"
)

// The tests in this file pin down errors a new user met: each must say
// what happened once, name what the user can fix, and unwrap to the
// cause.

// TestOpenRefuses checks Open's refusals of a nil context and of a config
// without an address, with the Bind released.
func TestOpenRefuses(t *testing.T) {
	var nilCtx context.Context // a variable: the point is that Open survives it
	tests := []struct {
		name string
		ctx  context.Context
		edit func(*wg.Config)
		want string
	}{
		{"nil context", nilCtx, nil, "netstack: open: nil context"},
		{"no address", context.Background(), func(c *wg.Config) { c.Interface.Addresses = nil }, "netstack: open: the config's interface has no Address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _ := pairConfigs(t, "", "")
			if tt.edit != nil {
				tt.edit(cfg)
			}
			sw := memnet.NewSwitch(nil)
			defer sw.Close()
			ep, err := sw.NewAddr()
			if err != nil {
				t.Fatal(err)
			}
			bind := &closeCountingBind{Bind: sw.NewBind(1, ep)}
			n, err := Open(tt.ctx, cfg, &Options{Bind: bind})
			if err == nil {
				n.Close()
				t.Fatal("Open succeeded, want an error")
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if bind.closes.Load() == 0 {
				t.Error("the Bind was not closed after the failed Open")
			}
		})
	}
}

// TestZeroNet checks that a Net not made by Open fails every call with an
// error wrapping net.ErrClosed instead of panicking.
func TestZeroNet(t *testing.T) {
	var n Net
	ctx := testContext(t, 5*time.Second)
	tests := []struct {
		name string
		call func() error
	}{
		{"Close", n.Close},
		{"DialContext", func() error { _, err := n.DialContext(ctx, "tcp", "10.0.0.1:80"); return err }},
		{"Listen", func() error { _, err := n.Listen("tcp", ":80"); return err }},
		{"ListenPacket", func() error { _, err := n.ListenPacket("udp", ":53"); return err }},
		{"Ping", func() error { _, err := n.Ping(ctx, netip.MustParseAddr("10.0.0.1")); return err }},
		{"LookupHost", func() error { _, err := n.LookupHost(ctx, "example.com"); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, net.ErrClosed) {
				t.Errorf("%s on a zero Net = %v, want an error wrapping net.ErrClosed", tt.name, err)
			}
		})
	}
	if got := n.Stats(); got != (Stats{}) {
		t.Errorf("Stats of a zero Net = %+v, want zeros", got)
	}
}

// TestErrorMessages checks the text of errors for a busy address, a
// destination no peer routes, and calls after Close.
func TestErrorMessages(t *testing.T) {
	a, _ := openPair(t, nil)
	ctx := testContext(t, 10*time.Second)
	l, err := a.Listen("tcp", netip.AddrPortFrom(addrA4, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busyTCP := l.Addr().String()
	pc, err := a.ListenPacket("udp", "[fd00:123::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	busyUDP := pc.LocalAddr().String()
	outside := netip.MustParseAddr("10.123.0.99")

	open := []struct {
		name, want string
		call       func() error
		is         error
	}{
		{"listen tcp on a busy port", "listen tcp " + busyTCP + ": bind: address already in use",
			func() error { _, err := a.Listen("tcp", busyTCP); return err }, syscall.EADDRINUSE},
		{"listen udp on a busy port", "listen udp " + busyUDP + ": bind: address already in use",
			func() error { _, err := a.ListenPacket("udp", busyUDP); return err }, syscall.EADDRINUSE},
		{"dial outside AllowedIPs", "dial tcp 10.123.0.99:80: netstack: no peer's AllowedIPs covers the destination",
			func() error { _, err := a.DialContext(ctx, "tcp", "10.123.0.99:80"); return err }, ErrNoRoute},
		{"ping outside AllowedIPs", "netstack: ping 10.123.0.99: no peer's AllowedIPs covers the destination",
			func() error { _, err := a.Ping(ctx, outside); return err }, ErrNoRoute},
	}
	closed := []struct {
		name, want string
		call       func() error
	}{
		{"listen after Close", "listen tcp4 0.0.0.0:8080: use of closed network connection",
			func() error { _, err := a.Listen("tcp4", ":8080"); return err }},
		{"ping after Close", "netstack: ping 10.123.0.2: use of closed network connection",
			func() error { _, err := a.Ping(ctx, addrB4); return err }},
		// The config has no DNS servers: Close must still be the reason.
		{"lookup after Close", "lookup example.com: netstack: use of closed network connection",
			func() error { _, err := a.LookupHost(ctx, "example.com"); return err }},
	}
	for _, tt := range open {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if err == nil {
				t.Fatal("no error")
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if !errors.Is(err, tt.is) {
				t.Errorf("error %v does not wrap %v", err, tt.is)
			}
		})
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	t.Run("Resolver after Close", func(t *testing.T) {
		// The Go resolver keeps only the text of its Dial's error.
		_, err := a.Resolver().LookupHost(ctx, "example.com")
		if err == nil || !strings.Contains(err.Error(), net.ErrClosed.Error()) || strings.Contains(err.Error(), "DNS servers") {
			t.Errorf("error %v, want one saying the Net is closed", err)
		}
	})
	for _, tt := range closed {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("error %v, want one wrapping net.ErrClosed", err)
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}
