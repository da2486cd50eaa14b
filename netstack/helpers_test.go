package netstack

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/wgkit/wgkit/internal/memnet"
	"github.com/wgkit/wgkit/wg"
	"go.uber.org/goleak"
	"golang.zx2c4.com/wireguard/conn"
)

// goleakOptions are the goroutine leak checks' exceptions: none. Every
// goroutine gVisor starts for a stack (TCP processors, timers) is stopped
// by stack.Close plus stack.Wait, and wireguard-go's by Device.Close; the
// checks confirm that no process-global goroutine survives a Net. Keep
// this the single place to add one if a dependency update needs it.
func goleakOptions() []goleak.Option {
	return nil
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleakOptions()...)
}

var (
	addrA4 = netip.MustParseAddr("10.123.0.1")
	addrB4 = netip.MustParseAddr("10.123.0.2")
	addrA6 = netip.MustParseAddr("fd00:123::1")
	addrB6 = netip.MustParseAddr("fd00:123::2")
)

// pairConfigs returns the configurations of two peers A and B that know
// each other by the endpoints epA and epB. Each allows exactly the other's
// two addresses.
func pairConfigs(t testing.TB, epA, epB string) (cfgA, cfgB *wg.Config) {
	t.Helper()
	keyA, err := wg.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyB, err := wg.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	host := func(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }
	cfgA = &wg.Config{
		Interface: wg.Interface{
			PrivateKey: keyA,
			Addresses:  []netip.Prefix{netip.PrefixFrom(addrA4, 24), netip.PrefixFrom(addrA6, 64)},
		},
		Peers: []wg.Peer{{
			PublicKey:  keyB.PublicKey(),
			Endpoint:   epB,
			AllowedIPs: []netip.Prefix{host(addrB4), host(addrB6)},
		}},
	}
	cfgB = &wg.Config{
		Interface: wg.Interface{
			PrivateKey: keyB,
			Addresses:  []netip.Prefix{netip.PrefixFrom(addrB4, 24), netip.PrefixFrom(addrB6, 64)},
		},
		Peers: []wg.Peer{{
			PublicKey:  keyA.PublicKey(),
			Endpoint:   epA,
			AllowedIPs: []netip.Prefix{host(addrA4), host(addrA6)},
		}},
	}
	return cfgA, cfgB
}

// openPair opens two Nets A and B connected through an in-memory switch
// (no sockets at all). edit, if not nil, may change the configurations
// before they are applied. Both Nets and the switch are closed at cleanup.
func openPair(t testing.TB, edit func(a, b *wg.Config)) (a, b *Net) {
	t.Helper()
	return openPairOpts(t, edit, nil, nil)
}

// openPairOpts is openPair with options for A and B; nil means defaults.
// Their Bind is replaced by the switch's.
func openPairOpts(t testing.TB, edit func(a, b *wg.Config), optsA, optsB *Options) (a, b *Net) {
	t.Helper()
	sw, epA, epB := newSwitch(t)
	cfgA, cfgB := pairConfigs(t, epA.String(), epB.String())
	if edit != nil {
		edit(cfgA, cfgB)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	withBind := func(o *Options, bind conn.Bind) *Options {
		if o == nil {
			o = &Options{}
		}
		c := *o
		c.Bind = bind
		return &c
	}
	a, err := Open(ctx, cfgA, withBind(optsA, sw.NewBind(1, epA)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err = Open(ctx, cfgB, withBind(optsB, sw.NewBind(2, epB)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return a, b
}

// newSwitch returns an in-memory switch, closed at cleanup, and two of
// its addresses.
func newSwitch(t testing.TB) (sw *memnet.Switch, epA, epB netip.AddrPort) {
	t.Helper()
	sw = memnet.NewSwitch(nil)
	t.Cleanup(func() { sw.Close() })
	epA, err := sw.NewAddr()
	if err != nil {
		t.Fatal(err)
	}
	epB, err = sw.NewAddr()
	if err != nil {
		t.Fatal(err)
	}
	return sw, epA, epB
}

// testContext returns a context that ends with the test or after d.
func testContext(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// serverTunnel is a tunnel A (switch node 1) listening on TCP port 80 of
// all its addresses, for tests that open client tunnels with B's
// configuration themselves: several in turn, on other switch nodes.
type serverTunnel struct {
	sw       *memnet.Switch
	a        *Net
	cfgB     *wg.Config
	epB      netip.AddrPort
	accepted chan net.Conn // the listener's connections, in order
}

// openServerTunnel opens A and its listener, closed at cleanup.
func openServerTunnel(t *testing.T, ctx context.Context) *serverTunnel {
	t.Helper()
	sw, epA, epB := newSwitch(t)
	cfgA, cfgB := pairConfigs(t, epA.String(), epB.String())
	a, err := Open(ctx, cfgA, &Options{Bind: sw.NewBind(1, epA)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	ln, err := a.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &serverTunnel{sw: sw, a: a, cfgB: cfgB, epB: epB, accepted: make(chan net.Conn, 2)}
	done := make(chan struct{})
	t.Cleanup(func() { close(done) }) // runs before the listener's Close
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case s.accepted <- c:
			case <-done:
				c.Close()
				return
			}
		}
	}()
	return s
}

// openClient opens a client tunnel with B's configuration on switch node
// node, closed at cleanup if the test has not closed it.
func (s *serverTunnel) openClient(t *testing.T, ctx context.Context, node int) *Net {
	t.Helper()
	b, err := Open(ctx, s.cfgB, &Options{Bind: s.sw.NewBind(node, s.epB)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// accept returns the listener's next connection, closed at cleanup,
// waiting at most 5 s for it.
func (s *serverTunnel) accept(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-s.accepted:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted within 5 s")
		return nil
	}
}
