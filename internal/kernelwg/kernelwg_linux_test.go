//go:build linux

package kernelwg

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkit/wgkit/internal/netconf"
	"github.com/wgkit/wgkit/internal/nettest"
	"github.com/wgkit/wgkit/internal/vmtest"
	"github.com/wgkit/wgkit/internal/wgdump"
	"github.com/wgkit/wgkit/netstack"
	"github.com/wgkit/wgkit/wg"
)

// cmpNet compares the netip values.
var cmpNet = cmpopts.EquateComparable(netip.Addr{}, netip.AddrPort{}, netip.Prefix{})

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// inFreshNetns runs f, on the test's goroutine, with its thread moved
// into a new network namespace when the test may make one (root), so that
// a host whose kernel does have WireGuard gets no probe link in its own
// namespace; without root f runs where it is, where it cannot change
// anything. f may call t.Fatal and t.Skip.
func inFreshNetns(t *testing.T, f func()) {
	if os.Geteuid() != 0 {
		f()
		return
	}
	nettest.RequireRoot(t)
	name := nettest.NewNetns(t, "kwg")
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer orig.Close()
	// The thread stays locked if it cannot go back: the runtime then
	// ends it with the goroutine instead of reusing it.
	defer func() {
		if err := netns.Set(orig); err == nil {
			runtime.UnlockOSThread()
		}
	}()
	if err := netns.Set(ns); err != nil {
		t.Fatal(err)
	}
	f()
}

// TestHostHasNoKernelEngine checks, on a host whose kernel lacks
// WireGuard (as the machines here), that Available says so and that
// Create fails with an error that says why.
func TestHostHasNoKernelEngine(t *testing.T) {
	if vmtest.InVM() {
		t.Skip("skipping: the VM's kernel has WireGuard; see TestGuestKernelEngine")
	}
	inFreshNetns(t, func() {
		if Available() {
			t.Skip("skipping: this kernel has WireGuard; the negative case needs one without (the VM test covers the positive one)")
		}
		d, err := Create("wgkhost0", nil)
		if err == nil {
			d.Close()
			t.Fatal("Create succeeded where Available is false")
		}
		t.Logf("Create: %v", err)
		if !strings.HasPrefix(err.Error(), `kernelwg: create link "wgkhost0": `) {
			t.Errorf("error %q lacks the package and link prefix", err)
		}
		if os.Geteuid() == 0 {
			if !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), "no WireGuard") {
				t.Errorf("error %q does not say the kernel lacks WireGuard (errors.ErrUnsupported)", err)
			}
		} else if !errors.Is(err, os.ErrPermission) {
			t.Errorf("error %q: want os.ErrPermission without root", err)
		}
		if _, err := netlink.LinkByName("wgkhost0"); err == nil {
			t.Error("a failed Create left a link")
		}
	})
}

func TestBadArguments(t *testing.T) {
	for _, tc := range []struct {
		name, link string
		opts       *Options
		want       string
	}{
		{"empty name", "", nil, "kernelwg: empty link name"},
		{"long name", "abcdefghijklmnop", nil, `kernelwg: link name "abcdefghijklmnop" is longer than 15 bytes`},
		{"slash", "a/b", nil, `kernelwg: bad link name "a/b"`},
		{"dot", ".", nil, `kernelwg: bad link name "."`},
		{"negative MTU", "wgk1", &Options{MTU: -1}, `kernelwg: create link "wgk1": bad MTU -1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Create(tc.link, tc.opts)
			if err == nil {
				d.Close()
				t.Fatal("no error")
			}
			if diff := cmp.Diff(tc.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

// TestConversion checks the translation to wgctrl's types and back
// through a wgtypes.Device shaped as the kernel reports one.
func TestConversion(t *testing.T) {
	priv, psk := Key{7}, Key{9}
	port, mark := 51820, uint32(0xfffffff0)
	ka := 25*time.Second + 300*time.Millisecond
	cfg := &Config{
		PrivateKey: &priv, ListenPort: &port, FwMark: &mark, ReplacePeers: true,
		Peers: []PeerConfig{{
			PublicKey: Key{1}, PresharedKey: &psk, PersistentKeepalive: &ka,
			Endpoint:          netip.MustParseAddrPort("[::ffff:127.0.0.1]:9"),
			ReplaceAllowedIPs: true,
			AllowedIPs:        []netip.Prefix{netip.MustParsePrefix("10.1.2.3/24"), netip.MustParsePrefix("fd00::1/64")},
		}, {PublicKey: Key{2}, Remove: true}, {PublicKey: Key{3}, UpdateOnly: true}},
	}
	w := toWgtypes(cfg)
	if !w.Peers[1].Remove || w.Peers[1].UpdateOnly || !w.Peers[2].UpdateOnly || w.Peers[2].Remove {
		t.Errorf("remove and update-only flags: %+v, %+v", w.Peers[1], w.Peers[2])
	}
	if got, want := w.Peers[0].Endpoint.String(), "127.0.0.1:9"; got != want {
		t.Errorf("endpoint %s, want %s", got, want)
	}
	if got := *w.Peers[0].PersistentKeepaliveInterval; got != 25*time.Second {
		t.Errorf("keepalive %v, want whole seconds", got)
	}
	if got := fmt.Sprint(w.Peers[0].AllowedIPs); got != "[{10.1.2.0 ffffff00} {fd00:: ffffffffffffffff0000000000000000}]" {
		t.Errorf("allowed IPs %s", got)
	}

	// Back, as the kernel would report the configured device.
	dev := wgDevice(w)
	got := fromWgtypes(dev)
	want := &State{
		PrivateKey: priv, ListenPort: port, FwMark: mark,
		Peers: []PeerState{{
			PublicKey: Key{1}, PresharedKey: psk, PersistentKeepalive: 25 * time.Second,
			Endpoint:   netip.MustParseAddrPort("127.0.0.1:9"),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.1.2.0/24"), netip.MustParsePrefix("fd00::/64")},
			RxBytes:    10, TxBytes: 20,
		}},
	}
	if diff := cmp.Diff(want, got, cmpNet); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}
}

// wgDevice is the device the kernel would report after applying c to an
// empty one: IPv4 endpoints in 16-byte form, "never" as the epoch.
func wgDevice(c wgtypes.Config) *wgtypes.Device {
	d := &wgtypes.Device{PrivateKey: *c.PrivateKey, ListenPort: *c.ListenPort, FirewallMark: *c.FirewallMark}
	for _, p := range c.Peers {
		if p.Remove || p.UpdateOnly { // update-only: the empty device lacks it
			continue
		}
		d.Peers = append(d.Peers, wgtypes.Peer{
			PublicKey: p.PublicKey, PresharedKey: *p.PresharedKey,
			Endpoint:                    &net.UDPAddr{IP: p.Endpoint.IP.To16(), Port: p.Endpoint.Port},
			PersistentKeepaliveInterval: *p.PersistentKeepaliveInterval,
			AllowedIPs:                  p.AllowedIPs,
			LastHandshakeTime:           time.Unix(0, 0),
			ReceiveBytes:                10, TransmitBytes: 20,
		})
	}
	return d
}

// ---- In the VM ----

// TestKernelEngineVM boots a Debian kernel with the WireGuard module in
// qemu and runs TestGuest* there.
func TestKernelEngineVM(t *testing.T) {
	vmtest.RunTest(t, vmtest.Test{Run: "^TestGuest", Timeout: 4 * time.Minute})
}

var (
	kernelAddr4 = netip.MustParsePrefix("10.77.0.1/24")
	kernelAddr6 = netip.MustParsePrefix("fd77::1/64")
	stackAddr4  = netip.MustParsePrefix("10.77.0.2/24")
	stackAddr6  = netip.MustParsePrefix("fd77::2/64")
	extraRoute  = netip.MustParsePrefix("10.78.0.0/16")
)

const guestLink = "wgk0"

// TestGuestKernelEngine makes a kernel WireGuard interface and a wgkit
// netstack tunnel in this process and has them talk over loopback UDP.
func TestGuestKernelEngine(t *testing.T) {
	vmtest.RequireVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if !Available() {
		t.Fatal("Available() = false in a VM whose kernel has the wireguard module")
	}
	if links := wireguardLinks(t); len(links) != 0 {
		t.Fatalf("the probe left links: %v", links)
	}

	kPriv, nPriv := genKey(t), genKey(t)
	kPub, nPub := Key(kPriv.PublicKey()), Key(nPriv.PublicKey())
	dev, err := Create(guestLink, &Options{MTU: 1420})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() }) // the test's own Close comes first
	if _, err := Create(guestLink, nil); !errors.Is(err, os.ErrExist) {
		t.Errorf("second Create of %s: %v, want os.ErrExist", guestLink, err)
	}
	port := 51820
	kp := Key(kPriv)
	stackPeer := PeerConfig{
		PublicKey: nPub, ReplaceAllowedIPs: true,
		AllowedIPs: []netip.Prefix{host(stackAddr4), host(stackAddr6)},
	}
	if err := dev.Configure(&Config{PrivateKey: &kp, ListenPort: &port, Peers: []PeerConfig{stackPeer}}); err != nil {
		t.Fatal(err)
	}
	conf, err := netconf.NewLinux(guestLink, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []error{
		conf.AddAddress(kernelAddr4), conf.AddAddress(kernelAddr6),
		dev.Up(),
		conf.AddRoute(netconf.Route{Dst: extraRoute, Table: unix.RT_TABLE_MAIN}),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}

	n, err := netstack.Open(ctx, &wg.Config{
		Interface: wg.Interface{PrivateKey: nPriv, Addresses: []netip.Prefix{stackAddr4, stackAddr6}},
		Peers: []wg.Peer{{
			PublicKey:  wg.Key(kPub),
			Endpoint:   fmt.Sprintf("127.0.0.1:%d", port),
			AllowedIPs: []netip.Prefix{kernelAddr4.Masked(), kernelAddr6.Masked()},
		}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()

	t.Run("ping", func(t *testing.T) {
		for _, a := range []netip.Addr{kernelAddr4.Addr(), kernelAddr6.Addr()} {
			rtt, err := pingRetry(ctx, n, a)
			if err != nil {
				t.Fatalf("netstack ping %s: %v", a, err)
			}
			t.Logf("netstack ping %s: %v", a, rtt)
		}
		// And from the kernel's side, busybox's ping through the link.
		for _, a := range []netip.Addr{stackAddr4.Addr(), stackAddr6.Addr()} {
			if out, err := exec.CommandContext(ctx, "ping", "-c", "1", "-W", "10", a.String()).CombinedOutput(); err != nil {
				t.Errorf("kernel ping %s: %v\n%s", a, err, out)
			}
		}
	})

	t.Run("tcp 8MiB", func(t *testing.T) {
		start := time.Now()
		sum, got := tcpTransfer(ctx, t, n, 8<<20)
		if sum != got {
			t.Errorf("the kernel side read data with SHA-256 %x, the netstack side sent %x", got, sum)
		}
		t.Logf("8 MiB in %v", time.Since(start).Round(time.Millisecond))
	})

	t.Run("state", func(t *testing.T) {
		show := wgShow(ctx, t)
		st, err := dev.State()
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(ifaceOf(show), ifaceOf(st)); diff != "" {
			t.Errorf("State's interface vs wg show (-wg +State):\n%s", diff)
		}
		if st.PublicKey != kPub || st.PrivateKey != kp || st.ListenPort != port {
			t.Errorf("State keys or port: %v", ifaceOf(st))
		}
		if len(st.Peers) != 1 || len(show.Peers) != 1 {
			t.Fatalf("State has %d peers, wg show %d, want 1", len(st.Peers), len(show.Peers))
		}
		p, w := st.Peers[0], show.Peers[0]
		// wg show ran first: its counters may be lower, its handshake older.
		if diff := cmp.Diff(staticOf(w), staticOf(p), cmpNet); diff != "" {
			t.Errorf("State's peer vs wg show (-wg +State):\n%s", diff)
		}
		if w.LastHandshake.IsZero() || p.LastHandshake.IsZero() || p.LastHandshake.Unix() < w.LastHandshake.Unix() {
			t.Errorf("handshake: wg show %v, State %v", w.LastHandshake, p.LastHandshake)
		}
		if w.RxBytes == 0 || w.TxBytes == 0 || p.RxBytes < w.RxBytes || p.TxBytes < w.TxBytes || p.RxBytes < 8<<20 {
			t.Errorf("transfer: wg show rx %d tx %d, State rx %d tx %d", w.RxBytes, w.TxBytes, p.RxBytes, p.TxBytes)
		}
		if p.PublicKey != nPub || p.Endpoint != netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(n.Device().ListenPort())) {
			t.Errorf("peer %x at %v, want the netstack tunnel at port %d", p.PublicKey[:4], p.Endpoint, n.Device().ListenPort())
		}
		// The netstack side sees the same handshake.
		ps := n.Device().Peers()
		if len(ps) != 1 || ps[0].LastHandshake.IsZero() || ps[0].Endpoint.Port() != uint16(port) {
			t.Errorf("netstack's peers: %+v", ps)
		}
	})

	t.Run("second link", func(t *testing.T) {
		d2, err := Create("wgk1", &Options{MTU: 1380})
		if err != nil {
			t.Fatal(err)
		}
		defer d2.Close()
		if l, err := netlink.LinkByIndex(d2.Index()); err != nil || l.Attrs().Name != "wgk1" || l.Attrs().MTU != 1380 {
			t.Errorf("link %d: %v, %v; want wgk1 with MTU 1380", d2.Index(), l, err)
		}
		if err := d2.Up(); err != nil {
			t.Fatal(err)
		}
		// A port in use is refused, with the kernel's reason, and the
		// first link keeps working.
		if err := d2.Configure(&Config{ListenPort: &port}); !errors.Is(err, unix.EADDRINUSE) || !strings.HasPrefix(err.Error(), "kernelwg: configure wgk1: ") {
			t.Errorf("Configure with wgk0's port: %v, want EADDRINUSE", err)
		}
		if _, err := pingRetry(ctx, n, kernelAddr4.Addr()); err != nil {
			t.Errorf("wgk0 after wgk1's failed Configure: %v", err)
		}
		// Port 0 picks one.
		zero := 0
		if err := d2.Configure(&Config{ListenPort: &zero}); err != nil {
			t.Fatal(err)
		}
		st, err := d2.State()
		if err != nil {
			t.Fatal(err)
		}
		if st.ListenPort == 0 || st.ListenPort == port || st.PrivateKey != (Key{}) || len(st.Peers) != 0 {
			t.Errorf("wgk1 state %+v, want a picked port and nothing else", st)
		}
		if err := d2.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := netlink.LinkByName("wgk1"); err == nil {
			t.Error("wgk1 still there after Close")
		}
	})

	t.Run("set and remove peers", func(t *testing.T) {
		extra, psk := Key(genKey(t).PublicKey()), Key(genKey(t))
		ka := 25 * time.Second
		mark := uint32(0x1234)
		check := func(step string, wantPeers map[Key]staticPeer, wantMark uint32) {
			t.Helper()
			st, err := dev.State()
			if err != nil {
				t.Fatal(err)
			}
			got := map[Key]staticPeer{}
			for _, p := range st.Peers {
				got[p.PublicKey] = staticOf(p)
			}
			if diff := cmp.Diff(wantPeers, got, cmpNet); diff != "" {
				t.Errorf("%s: State's peers (-want +got):\n%s", step, diff)
			}
			show := wgShow(ctx, t)
			fromWG := map[Key]staticPeer{}
			for _, p := range show.Peers {
				fromWG[p.PublicKey] = staticOf(p)
			}
			if diff := cmp.Diff(wantPeers, fromWG, cmpNet); diff != "" {
				t.Errorf("%s: wg show's peers (-want +got):\n%s", step, diff)
			}
			if st.FwMark != wantMark || show.FwMark != wantMark {
				t.Errorf("%s: fwmark: State %#x, wg show %#x, want %#x", step, st.FwMark, show.FwMark, wantMark)
			}
		}
		stackStatic := func(allowed ...netip.Prefix) staticPeer {
			return staticPeer{
				PublicKey: nPub, AllowedIPs: allowed,
				Endpoint: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(n.Device().ListenPort())),
			}
		}
		extraStatic := staticPeer{
			PublicKey: extra, PresharedKey: psk, Endpoint: netip.MustParseAddrPort("127.0.0.1:9"),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.77.0.3/32")}, PersistentKeepalive: ka,
		}
		baseAllowed := []netip.Prefix{host(stackAddr4), host(stackAddr6)}

		if err := dev.Configure(&Config{FwMark: &mark, Peers: []PeerConfig{{
			PublicKey: extra, PresharedKey: &psk, Endpoint: extraStatic.Endpoint, PersistentKeepalive: &ka,
			ReplaceAllowedIPs: true, AllowedIPs: extraStatic.AllowedIPs,
		}}}); err != nil {
			t.Fatal(err)
		}
		check("add a peer", map[Key]staticPeer{nPub: stackStatic(baseAllowed...), extra: extraStatic}, mark)

		// Without ReplaceAllowedIPs the prefixes add up; with it they are replaced.
		more := netip.MustParsePrefix("10.77.0.4/32")
		if err := dev.Configure(&Config{Peers: []PeerConfig{{PublicKey: nPub, AllowedIPs: []netip.Prefix{more}}}}); err != nil {
			t.Fatal(err)
		}
		check("add an allowed IP", map[Key]staticPeer{nPub: stackStatic(append(baseAllowed, more)...), extra: extraStatic}, mark)
		zero := uint32(0)
		if err := dev.Configure(&Config{FwMark: &zero, Peers: []PeerConfig{{PublicKey: nPub, ReplaceAllowedIPs: true, AllowedIPs: baseAllowed}}}); err != nil {
			t.Fatal(err)
		}
		check("replace allowed IPs", map[Key]staticPeer{nPub: stackStatic(baseAllowed...), extra: extraStatic}, 0)

		if err := dev.Configure(&Config{Peers: []PeerConfig{{PublicKey: extra, Remove: true}}}); err != nil {
			t.Fatal(err)
		}
		check("remove a peer", map[Key]staticPeer{nPub: stackStatic(baseAllowed...)}, 0)

		// ReplacePeers drops the netstack tunnel: traffic stops...
		if err := dev.Configure(&Config{ReplacePeers: true, Peers: []PeerConfig{{PublicKey: extra, AllowedIPs: extraStatic.AllowedIPs}}}); err != nil {
			t.Fatal(err)
		}
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		if _, err := n.Ping(pctx, kernelAddr4.Addr()); err == nil {
			t.Error("ping answered with the peer replaced away")
		}
		pcancel()
		// ...and comes back with the peer. The netstack side still has a
		// session the kernel forgot, so the kernel must start the new
		// handshake: it gets the endpoint, and traffic of its own.
		back := stackPeer
		back.Endpoint = stackStatic().Endpoint
		if err := dev.Configure(&Config{ReplacePeers: true, Peers: []PeerConfig{back}}); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.CommandContext(ctx, "ping", "-c", "1", "-W", "10", stackAddr4.Addr().String()).CombinedOutput(); err != nil {
			t.Errorf("kernel ping after the peer came back: %v\n%s", err, out)
		}
		if _, err := pingRetry(ctx, n, kernelAddr4.Addr()); err != nil {
			t.Errorf("ping after the peer came back: %v", err)
		}
		check("replace peers", map[Key]staticPeer{nPub: stackStatic(baseAllowed...)}, 0)
	})

	// Close deletes the link, and its addresses and routes with it.
	if err := n.Close(); err != nil {
		t.Error(err)
	}
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(guestLink); err == nil {
		t.Errorf("link %s still there after Close", guestLink)
	}
	if links := wireguardLinks(t); len(links) != 0 {
		t.Errorf("wireguard links after Close: %v", links)
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if p, ok := netip.AddrFromSlice(a.IP); ok && (kernelAddr4.Contains(p.Unmap()) || kernelAddr6.Contains(p)) {
			t.Errorf("address %v left after Close", a)
		}
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst != nil && (r.Dst.String() == extraRoute.String() || r.Dst.String() == kernelAddr4.Masked().String()) {
			t.Errorf("route %v left after Close", r)
		}
	}
	if err := conf.Undo(); err != nil {
		t.Errorf("netconf Undo after the link went: %v", err)
	}
	if err := dev.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v, want net.ErrClosed", err)
	}
	if err := dev.Configure(&Config{}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Configure after Close: %v, want net.ErrClosed", err)
	}
	if _, err := dev.State(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("State after Close: %v, want net.ErrClosed", err)
	}
}

func genKey(t *testing.T) wg.Key {
	t.Helper()
	k, err := wg.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func host(p netip.Prefix) netip.Prefix { return netip.PrefixFrom(p.Addr(), p.Addr().BitLen()) }

func wireguardLinks(t *testing.T) []string {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if l.Type() == "wireguard" {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

// pingRetry pings until an answer, at most 10 times 3 seconds (the first
// may wait for a handshake, an IPv6 address for duplicate address
// detection).
func pingRetry(ctx context.Context, n *netstack.Net, a netip.Addr) (time.Duration, error) {
	var err error
	for range 10 {
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		rtt, perr := n.Ping(actx, a)
		cancel()
		if err = perr; err == nil || ctx.Err() != nil {
			return rtt, err
		}
	}
	return 0, err
}

// tcpTransfer sends size random bytes from the netstack tunnel to a
// listener on the kernel's address, behind an 8-byte length, and returns
// the SHA-256 sent and the one the listener computed and sent back.
func tcpTransfer(ctx context.Context, t *testing.T, n *netstack.Net, size int) (sent, got [32]byte) {
	ln, err := net.Listen("tcp", netip.AddrPortFrom(kernelAddr4.Addr(), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	deadline := time.Now().Add(2 * time.Minute)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	serr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			serr <- err
			return
		}
		defer c.Close()
		c.SetDeadline(deadline)
		var hdr [8]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			serr <- err
			return
		}
		h := sha256.New()
		if _, err := io.CopyN(h, c, int64(binary.BigEndian.Uint64(hdr[:]))); err != nil {
			serr <- fmt.Errorf("server read: %w", err)
			return
		}
		_, err = c.Write(h.Sum(nil))
		serr <- err
	}()
	c, err := n.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(deadline)
	data := make([]byte, size)
	rand.Read(data)
	sent = sha256.Sum256(data)
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], uint64(size))
	if _, err := c.Write(append(hdr[:], data...)); err != nil {
		t.Fatalf("write: %v", err)
	}
	if _, err := io.ReadFull(c, got[:]); err != nil {
		t.Fatalf("read the checksum: %v (server: %v)", err, <-serr)
	}
	if err := <-serr; err != nil {
		t.Fatalf("server: %v", err)
	}
	return sent, got
}

// ifaceState is the interface line of `wg show dump`.
type ifaceState struct {
	PrivateKey, PublicKey Key
	ListenPort            int
	FwMark                uint32
}

func ifaceOf(st *State) ifaceState {
	return ifaceState{st.PrivateKey, st.PublicKey, st.ListenPort, st.FwMark}
}

// staticPeer is what of a peer does not change with traffic.
type staticPeer struct {
	PublicKey, PresharedKey Key
	Endpoint                netip.AddrPort
	AllowedIPs              []netip.Prefix
	PersistentKeepalive     time.Duration
}

func staticOf(p PeerState) staticPeer {
	return staticPeer{p.PublicKey, p.PresharedKey, p.Endpoint, p.AllowedIPs, p.PersistentKeepalive}
}

// wgShow runs `wg show wgk0 dump` and parses it.
func wgShow(ctx context.Context, t *testing.T) *State {
	t.Helper()
	st, err := wgdump.Show(ctx, guestLink)
	if err != nil {
		t.Fatal(err)
	}
	return st
}
