//go:build linux

package tun

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wgkit/wgkit/internal/engine"
	"github.com/wgkit/wgkit/internal/vmtest"
	"github.com/wgkit/wgkit/internal/wgdump"
	"github.com/wgkit/wgkit/netstack"
	"github.com/wgkit/wgkit/wg"
)

// TestKernelEngineVM boots a Debian kernel with the WireGuard module in
// qemu (internal/vmtest) and runs TestGuest* there: the kernel engine
// behind Open, against a netstack tunnel in the same process.
func TestKernelEngineVM(t *testing.T) {
	vmtest.RunTest(t, vmtest.Test{Run: "^TestGuest", Timeout: 4 * time.Minute})
}

const guestName = "wgk0"

// cmpNet compares netip values.
var cmpNet = cmpopts.EquateComparable(netip.Addr{}, netip.AddrPort{}, netip.Prefix{})

// TestGuestKernelEngine opens an interface with EngineAuto in a VM whose
// kernel has WireGuard, talks to it from a netstack tunnel over loopback
// UDP, changes its peers through Device and checks each change with
// `wg show dump`, and checks that Close leaves the host as it was. The
// config has a default route, so the fwmark scheme (rules, a table, the
// link's fwmark) is in play.
func TestGuestKernelEngine(t *testing.T) {
	vmtest.RequireVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	before := snapshotOf(t, h)

	kk, nk := newKey(t), newKey(t)
	any4, any6 := netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")
	kcfg := &wg.Config{
		Interface: wg.Interface{PrivateKey: kk.priv, ListenPort: 51820, Addresses: []netip.Prefix{innerA, inner6A}},
		Peers:     []wg.Peer{{PublicKey: nk.pub, AllowedIPs: []netip.Prefix{any4, any6}}},
	}
	// A failure midway leaves the host as it was, link included.
	for _, bad := range []struct {
		name   string
		modify func(cfg *wg.Config)
		hold   bool // hold the listen port
		want   string
	}{
		{"second address fails", func(cfg *wg.Config) { cfg.Interface.Addresses = []netip.Prefix{innerA, innerA} }, false, "add address 10.77.0.1/24"},
		{"listen port in use", func(*wg.Config) {}, true, "address already in use"},
	} {
		t.Run(bad.name, func(t *testing.T) {
			cfg := kcfg.Clone()
			bad.modify(cfg)
			if bad.hold {
				c, err := net.ListenPacket("udp4", ":51820")
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
			}
			ifc, err := Open(ctx, cfg, &Options{Name: guestName})
			if err == nil {
				ifc.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), bad.want) {
				t.Errorf("Open: %v, want an error with %q", err, bad.want)
			}
			if diff := cmp.Diff(before, snapshotOf(t, h)); diff != "" {
				t.Errorf("host changed by the failed Open (-before +after):\n%s", diff)
			}
		})
	}

	events := make(chan wg.Event, 64)
	ifc, err := Open(ctx, kcfg, &Options{Name: guestName, OnEvent: func(ev wg.Event) {
		select {
		case events <- ev:
		default:
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer ifc.Close() // the test's own Close comes first
	if got := ifc.Engine(); got != EngineKernel {
		t.Fatalf("Engine() = %v with EngineAuto in a VM with the module, want kernel", got)
	}
	if l, err := h.LinkByName(guestName); err != nil || l.Type() != "wireguard" || l.Attrs().MTU != wg.DefaultMTU {
		t.Fatalf("link %s: %v, %v; want a wireguard link of MTU %d", guestName, l, err, wg.DefaultMTU)
	}
	if _, err := os.Stat("/var/run/wireguard/" + guestName + ".sock"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("UAPI socket on the kernel engine: %v", err)
	}
	dev := ifc.Device()
	show := guestShow(ctx, t)
	if show.FwMark != 51820 || show.ListenPort != 51820 || show.PublicKey != engine.Key(kk.pub) {
		t.Errorf("wg show: fwmark %d, port %d, key %v; want 51820, 51820, %v", show.FwMark, show.ListenPort, wg.Key(show.PublicKey), kk.pub)
	}

	n, err := netstack.Open(ctx, &wg.Config{
		Interface: wg.Interface{PrivateKey: nk.priv, Addresses: []netip.Prefix{innerB, inner6B}},
		Peers: []wg.Peer{{
			PublicKey:  kk.pub,
			Endpoint:   "127.0.0.1:51820",
			AllowedIPs: []netip.Prefix{innerA.Masked(), inner6A.Masked()},
		}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()

	t.Run("traffic", func(t *testing.T) {
		var tcp tcpEcho
		defer tcp.close()
		for _, a := range []netip.Addr{innerA.Addr(), inner6A.Addr()} {
			if err := netstackPing(ctx, n, a); err != nil {
				t.Fatalf("netstack ping %s: %v", a, err)
			}
		}
		for _, a := range []netip.Addr{innerB.Addr(), inner6B.Addr()} {
			if out, err := exec.CommandContext(ctx, "ping", "-c", "1", "-W", "10", a.String()).CombinedOutput(); err != nil {
				t.Errorf("kernel ping %s: %v\n%s", a, err, out)
			}
		}
		addr, err := tcp.listen(netip.AddrPortFrom(innerA.Addr(), 0).String())
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := echoRoundTripN(n, addr.(string), 8<<20, time.Minute); err != nil {
			t.Fatalf("8 MiB echo: %v", err)
		}
		t.Logf("8 MiB each way in %v", time.Since(start).Round(time.Millisecond))
	})

	t.Run("events", func(t *testing.T) {
		// Read from the kernel's state: a second late at most. The peer
		// is added, learns its endpoint from the netstack side's
		// handshake, and the handshake completes.
		want := []wg.EventKind{wg.EventPeerAdded, wg.EventEndpointChanged, wg.EventHandshakeCompleted}
		var got []wg.EventKind
		timeout := time.After(10 * time.Second)
		for len(got) < len(want) {
			select {
			case ev := <-events:
				if ev.Peer != nk.pub {
					t.Errorf("event %v for peer %v", ev.Kind, ev.Peer)
				}
				got = append(got, ev.Kind)
			case <-timeout:
				t.Fatalf("events (-want +got):\n%s", cmp.Diff(want, got))
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("events (-want +got):\n%s", diff)
		}
	})

	t.Run("peers", func(t *testing.T) {
		ps := dev.Peers()
		show := guestShow(ctx, t)
		if len(ps) != 1 || len(show.Peers) != 1 {
			t.Fatalf("Peers() %d, wg show %d peers, want 1", len(ps), len(show.Peers))
		}
		p, w := ps[0], show.Peers[0]
		if w.LastHandshake.IsZero() || p.LastHandshake.Unix() != w.LastHandshake.Unix() {
			t.Errorf("handshake: wg show %v, Peers %v", w.LastHandshake, p.LastHandshake)
		}
		if diff := cmp.Diff(staticOfState(w), staticOfStatus(p), cmpNet); diff != "" {
			t.Errorf("Peers() vs wg show (-wg +Peers):\n%s", diff)
		}
		// Peers ran first: its counters may be lower by a keepalive or so.
		if p.RxBytes < 8<<20 || p.TxBytes < 8<<20 || p.RxBytes > w.RxBytes || w.RxBytes > p.RxBytes+1<<20 {
			t.Errorf("counters: Peers rx %d tx %d, wg show rx %d tx %d", p.RxBytes, p.TxBytes, w.RxBytes, w.TxBytes)
		}
		if hs, err := dev.WaitHandshake(ctx, nk.pub); err != nil || !hs.Equal(p.LastHandshake) {
			t.Errorf("WaitHandshake = %v, %v; want the current session's %v", hs, err, p.LastHandshake)
		}
		if p.HandshakeAttempts != 0 || p.EndpointChanges != 1 {
			t.Errorf("counters: %d attempts, %d endpoint changes; want 0 (the kernel does not tell) and 1", p.HandshakeAttempts, p.EndpointChanges)
		}
		if k, ok := dev.PeerFor(innerB.Addr()); !ok || k != nk.pub {
			t.Errorf("PeerFor(%v) = %v, %v", innerB.Addr(), k, ok)
		}
		if got := dev.ListenPort(); got != 51820 {
			t.Errorf("ListenPort() = %d", got)
		}
		if got := dev.PublicKey(); got != kk.pub {
			t.Errorf("PublicKey() = %v", got)
		}
	})

	t.Run("changes", func(t *testing.T) {
		extra := newKey(t).pub
		ep := netip.MustParseAddrPort("127.0.0.1:9")
		extraPeer := wg.Peer{PublicKey: extra, Endpoint: ep.String(), PersistentKeepalive: 25 * time.Second,
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.78.0.0/16")}}
		check := func(step string, want map[wg.Key]staticPeer) {
			t.Helper()
			got := map[wg.Key]staticPeer{}
			for _, p := range guestShow(ctx, t).Peers {
				got[wg.Key(p.PublicKey)] = staticOfState(p)
			}
			if diff := cmp.Diff(want, got, cmpNet); diff != "" {
				t.Errorf("%s: wg show's peers (-want +got):\n%s", step, diff)
			}
		}
		// The stack peer's endpoint, learnt from its handshake.
		stack := staticPeer{PublicKey: nk.pub, AllowedIPs: []netip.Prefix{any4, any6},
			Endpoint: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(n.Device().ListenPort()))}
		extraWant := staticPeer{PublicKey: extra, Endpoint: ep, AllowedIPs: extraPeer.AllowedIPs, PersistentKeepalive: 25 * time.Second}
		if err := dev.SetPeer(extraPeer); err != nil {
			t.Fatal(err)
		}
		check("SetPeer", map[wg.Key]staticPeer{nk.pub: stack, extra: extraWant})
		if k, ok := dev.PeerFor(netip.MustParseAddr("10.78.1.1")); !ok || k != extra {
			t.Errorf("PeerFor after SetPeer = %v, %v", k, ok)
		}
		if err := dev.RemovePeer(extra); err != nil {
			t.Fatal(err)
		}
		check("RemovePeer", map[wg.Key]staticPeer{nk.pub: stack})
		// wg(8) changes the link behind the Device's back; PeerFor
		// follows within its expiry, Config at once.
		run(t, "wg", "set", guestName, "peer", nk.pub.String(), "allowed-ips", "0.0.0.0/0,::/0,10.79.0.0/16")
		if !slices.Contains(dev.Config().Peers[0].AllowedIPs, netip.MustParsePrefix("10.79.0.0/16")) {
			t.Errorf("Config() after wg set: %v", dev.Config().Peers[0].AllowedIPs)
		}
		deadline := time.Now().Add(5 * time.Second)
		for k, ok := dev.PeerFor(netip.MustParseAddr("10.79.0.1")); !ok || k != nk.pub; k, ok = dev.PeerFor(netip.MustParseAddr("10.79.0.1")) {
			if time.Now().After(deadline) {
				t.Fatal("PeerFor did not follow wg set within 5 s")
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Reconfigure applies differences: the stack peer keeps its
		// session (same handshake), extra comes back.
		hs := dev.Peers()[0].LastHandshake
		cfg := dev.Config()
		cfg.Peers[0].AllowedIPs = []netip.Prefix{any4, any6}
		cfg.Peers = append(cfg.Peers, extraPeer)
		if err := dev.Reconfigure(cfg); err != nil {
			t.Fatal(err)
		}
		check("Reconfigure", map[wg.Key]staticPeer{nk.pub: stack, extra: extraWant})
		if got := dev.Peers()[0].LastHandshake; !got.Equal(hs) {
			t.Errorf("Reconfigure renewed the unchanged peer's handshake: %v, was %v", got, hs)
		}
		if err := netstackPing(ctx, n, innerA.Addr()); err != nil {
			t.Errorf("ping after Reconfigure: %v", err)
		}
	})

	if err := n.Close(); err != nil {
		t.Error(err)
	}
	if err := ifc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ifc.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
	if diff := cmp.Diff(before, snapshotOf(t, h)); diff != "" {
		t.Errorf("links, addresses, routes or rules left after Close (-before +after):\n%s", diff)
	}
}

// netstackPing pings a from n until an answer, at most 5 times 3 s (the
// first waits for the handshake).
func netstackPing(ctx context.Context, n *netstack.Net, a netip.Addr) error {
	var err error
	for range 5 {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err = n.Ping(pctx, a)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// staticPeer is what of a peer does not change with traffic.
type staticPeer struct {
	PublicKey           wg.Key
	Endpoint            netip.AddrPort
	AllowedIPs          []netip.Prefix
	PersistentKeepalive time.Duration
}

func staticOfStatus(p wg.PeerStatus) staticPeer {
	return staticPeer{p.PublicKey, p.Endpoint, p.AllowedIPs, p.PersistentKeepalive}
}

func staticOfState(p engine.PeerState) staticPeer {
	return staticPeer{wg.Key(p.PublicKey), p.Endpoint, p.AllowedIPs, p.PersistentKeepalive}
}

// guestShow runs `wg show wgk0 dump` and parses it.
func guestShow(ctx context.Context, t *testing.T) *engine.State {
	t.Helper()
	st, err := wgdump.Show(ctx, guestName)
	if err != nil {
		t.Fatal(err)
	}
	return st
}
