//go:build linux

package tun

import (
	"context"
	"errors"
	"fmt"
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

	"github.com/wgkit/wgkit/internal/vmtest"
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
	if show.iface.FwMark != 51820 || show.iface.ListenPort != 51820 || show.iface.PublicKey != kk.pub {
		t.Errorf("wg show interface %+v, want port and fwmark 51820 and key %v", show.iface, kk.pub)
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
		if len(ps) != 1 || len(show.peers) != 1 {
			t.Fatalf("Peers() %d, wg show %d peers, want 1", len(ps), len(show.peers))
		}
		p, w := ps[0], show.peers[0]
		if w.handshake == 0 || p.LastHandshake.Unix() != w.handshake {
			t.Errorf("handshake: wg show %d, Peers %v", w.handshake, p.LastHandshake)
		}
		if diff := cmp.Diff(w.static, shownOf(p), cmpopts.EquateComparable(netip.AddrPort{})); diff != "" {
			t.Errorf("Peers() vs wg show (-wg +Peers):\n%s", diff)
		}
		if p.RxBytes < 8<<20 || p.TxBytes < 8<<20 || p.RxBytes > w.rx+1<<20 || w.rx > p.RxBytes {
			t.Errorf("counters: Peers rx %d tx %d, wg show rx %d tx %d", p.RxBytes, p.TxBytes, w.rx, w.tx)
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
		check := func(step string, want map[wg.Key]staticShown) {
			t.Helper()
			got := map[wg.Key]staticShown{}
			for _, p := range guestShow(ctx, t).peers {
				p.static.Endpoint = netip.AddrPort{} // learnt, not configured
				got[p.static.PublicKey] = p.static
			}
			if diff := cmp.Diff(want, got, cmpopts.EquateComparable(netip.AddrPort{})); diff != "" {
				t.Errorf("%s: wg show's peers (-want +got):\n%s", step, diff)
			}
		}
		stack := staticShown{PublicKey: nk.pub, AllowedIPs: "0.0.0.0/0,::/0", Keepalive: "off"}
		if err := dev.SetPeer(extraPeer); err != nil {
			t.Fatal(err)
		}
		check("SetPeer", map[wg.Key]staticShown{nk.pub: stack, extra: {PublicKey: extra, AllowedIPs: "10.78.0.0/16", Keepalive: "25"}})
		if k, ok := dev.PeerFor(netip.MustParseAddr("10.78.1.1")); !ok || k != extra {
			t.Errorf("PeerFor after SetPeer = %v, %v", k, ok)
		}
		if err := dev.RemovePeer(extra); err != nil {
			t.Fatal(err)
		}
		check("RemovePeer", map[wg.Key]staticShown{nk.pub: stack})
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
		check("Reconfigure", map[wg.Key]staticShown{nk.pub: stack, extra: {PublicKey: extra, AllowedIPs: "10.78.0.0/16", Keepalive: "25"}})
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

// staticShown is what `wg show dump` prints of a peer that does not
// change with traffic, in its own spelling.
type staticShown struct {
	PublicKey  wg.Key
	Endpoint   netip.AddrPort
	AllowedIPs string // comma-separated, in the kernel's order
	Keepalive  string // seconds or "off"
}

func shownOf(p wg.PeerStatus) staticShown {
	var allowed []string
	for _, pfx := range p.AllowedIPs {
		allowed = append(allowed, pfx.String())
	}
	ka := "off"
	if p.PersistentKeepalive > 0 {
		ka = fmt.Sprint(int(p.PersistentKeepalive.Seconds()))
	}
	return staticShown{PublicKey: p.PublicKey, Endpoint: p.Endpoint, AllowedIPs: strings.Join(allowed, ","), Keepalive: ka}
}

type guestShown struct {
	iface struct {
		PublicKey  wg.Key
		ListenPort int
		FwMark     int
	}
	peers []struct {
		static    staticShown
		handshake int64
		rx, tx    uint64
	}
}

// guestShow runs `wg show wgk0 dump` (one tab-separated line for the
// interface, then one per peer) and parses it.
func guestShow(ctx context.Context, t *testing.T) guestShown {
	t.Helper()
	out, err := exec.CommandContext(ctx, "wg", "show", guestName, "dump").CombinedOutput()
	if err != nil {
		t.Fatalf("wg show: %v\n%s", err, out)
	}
	var s guestShown
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i, line := range lines {
		f := strings.Split(line, "\t")
		var err error
		if i == 0 {
			if len(f) != 4 {
				t.Fatalf("wg show: interface line %q", line)
			}
			s.iface.PublicKey, err = wg.ParseKey(f[1])
			if err == nil {
				_, err = fmt.Sscan(f[2], &s.iface.ListenPort)
			}
			if err == nil && f[3] != "off" {
				_, err = fmt.Sscanf(f[3], "0x%x", &s.iface.FwMark)
			}
		} else {
			if len(f) != 8 {
				t.Fatalf("wg show: peer line %q", line)
			}
			p := &struct {
				static    staticShown
				handshake int64
				rx, tx    uint64
			}{}
			p.static.PublicKey, err = wg.ParseKey(f[0])
			if err == nil && f[2] != "(none)" {
				p.static.Endpoint, err = netip.ParseAddrPort(f[2])
			}
			if f[3] != "(none)" {
				p.static.AllowedIPs = f[3]
			}
			p.static.Keepalive = f[7]
			if err == nil {
				_, err = fmt.Sscan(f[4], &p.handshake)
			}
			if err == nil {
				_, err = fmt.Sscan(f[5], &p.rx)
			}
			if err == nil {
				_, err = fmt.Sscan(f[6], &p.tx)
			}
			s.peers = append(s.peers, *p)
		}
		if err != nil {
			t.Fatalf("wg show: line %q: %v", line, err)
		}
	}
	return s
}
