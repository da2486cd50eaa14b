//go:build linux

package tun

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/wgkit/wgkit/internal/nettest"
	"github.com/wgkit/wgkit/wg"
)

// The tests in this file need root, /dev/net/tun and `ip netns`. Each
// creates its own network namespaces, joined by a veth pair created inside
// them, and deletes them in t.Cleanup; nothing is created in the test
// process's own namespace. The tunnels run in child processes inside the
// namespaces (see helper_linux_test.go).

// Outer (veth) and inner (tunnel) addresses used in the namespaces.
var (
	outerA  = netip.MustParsePrefix("192.168.241.1/24")
	outerB  = netip.MustParsePrefix("192.168.241.2/24")
	innerA  = netip.MustParsePrefix("10.77.0.1/24")
	innerB  = netip.MustParsePrefix("10.77.0.2/24")
	inner6A = netip.MustParsePrefix("fd77::1/64")
	inner6B = netip.MustParsePrefix("fd77::2/64")
)

func randHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// requireRoot skips t unless it can create TUN devices and namespaces.
func requireRoot(t *testing.T) {
	t.Helper()
	nettest.RequireRoot(t)
}

// run runs a command and fails the test on error.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	// No command of these tests takes long; a hung one fails the test.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newNetns creates a network namespace deleted in t.Cleanup, with lo up.
func newNetns(t *testing.T) string {
	t.Helper()
	return nettest.NewNetns(t, "wgkt-")
}

// newNetnsPair creates two namespaces joined by a veth pair (created
// inside the first, its peer moved straight into the second) with outerA
// and outerB on its ends.
func newNetnsPair(t *testing.T) (nsA, nsB string) {
	t.Helper()
	nsA, nsB = newNetns(t), newNetns(t)
	run(t, "ip", "-n", nsA, "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b", "netns", nsB)
	run(t, "ip", "-n", nsA, "addr", "add", outerA.String(), "dev", "veth-a")
	run(t, "ip", "-n", nsB, "addr", "add", outerB.String(), "dev", "veth-b")
	// No IPv6 link-local addresses: their late DAD would change the
	// namespace under the before/after comparisons.
	run(t, "ip", "-n", nsA, "link", "set", "veth-a", "addrgenmode", "none", "up")
	run(t, "ip", "-n", nsB, "link", "set", "veth-b", "addrgenmode", "none", "up")
	// The kernel finishes bringing the pair up asynchronously (link watch
	// runs up to a second later); wait for its last trace, the IPv6
	// multicast route, so that before/after comparisons see a settled
	// namespace.
	for _, ns := range []struct{ name, dev string }{{nsA, "veth-a"}, {nsB, "veth-b"}} {
		want := "table 255 ff00::/8 dev " + ns.dev + " type 5"
		deadline := time.Now().Add(5 * time.Second)
		for !slices.Contains(snapshot(t, ns.name).Routes, want) {
			if time.Now().After(deadline) {
				t.Fatalf("namespace %s: %s did not come up in 5s", ns.name, ns.dev)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nsA, nsB
}

// ifName returns an interface name unique to this run: wg(8)'s socket
// directory is shared by every namespace.
func ifName(t *testing.T) string { return "wgk" + randHex(t, 4) }

type keyPair struct{ priv, pub wg.Key }

func newKey(t *testing.T) keyPair {
	t.Helper()
	k, err := wg.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return keyPair{k, k.PublicKey()}
}

// pairConfigs returns the configs of two interfaces, a listening on
// 51820 at outerA and b on 51821 at outerB, each with the other as peer.
// aAllowed are the AllowedIPs of a's peer (b).
func pairConfigs(t *testing.T, aAllowed ...netip.Prefix) (a, b *wg.Config) {
	ka, kb := newKey(t), newKey(t)
	a = &wg.Config{
		Interface: wg.Interface{PrivateKey: ka.priv, ListenPort: 51820, Addresses: []netip.Prefix{innerA, inner6A}},
		Peers: []wg.Peer{{
			PublicKey:  kb.pub,
			Endpoint:   netip.AddrPortFrom(outerB.Addr(), 51821).String(),
			AllowedIPs: aAllowed,
		}},
	}
	b = &wg.Config{
		Interface: wg.Interface{PrivateKey: kb.priv, ListenPort: 51821, Addresses: []netip.Prefix{innerB, inner6B}},
		Peers: []wg.Peer{{
			PublicKey:  ka.pub,
			Endpoint:   netip.AddrPortFrom(outerA.Addr(), 51820).String(),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.77.0.1/32"), netip.MustParsePrefix("fd77::1/128")},
		}},
	}
	return a, b
}

// nsState is what a namespace's network configuration looks like, as
// sorted strings, to compare before and after.
type nsState struct {
	Links  []string
	Addrs  []string
	Routes []string
	Rules  []string
}

func (s nsState) hasLink(name string) bool { return slices.Contains(s.Links, name) }

// snapshot reads ns's links, addresses, routes of every table and rules
// through a netlink handle bound to ns.
func snapshot(t *testing.T, ns string) nsState {
	t.Helper()
	nsh, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatalf("open netns %s: %v", ns, err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", ns, err)
	}
	defer h.Close()
	return snapshotOf(t, h)
}

// snapshotOf reads the namespace of h as snapshot does.
func snapshotOf(t *testing.T, h *netlink.Handle) nsState {
	t.Helper()
	var s nsState
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
		s.Links = append(s.Links, l.Attrs().Name)
	}
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		s.Addrs = append(s.Addrs, names[a.LinkIndex]+" "+a.IPNet.String())
	}
	routes, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		dst := "default"
		if r.Dst != nil {
			dst = r.Dst.String()
		}
		s.Routes = append(s.Routes, fmt.Sprintf("table %d %s dev %s type %d", r.Table, dst, names[r.LinkIndex], r.Type))
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rules, err := h.RuleList(fam)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rules {
			s.Rules = append(s.Rules, fmt.Sprintf("family %d pref %d table %d mark %d invert %v suppress_prefixlength %d",
				fam, r.Priority, r.Table, r.Mark, r.Invert, r.SuppressPrefixlen))
		}
	}
	for _, l := range [][]string{s.Links, s.Addrs, s.Routes, s.Rules} {
		slices.Sort(l)
	}
	return s
}

// checkTraffic pings each side's inner addresses from the other, over IPv4
// and IPv6, and runs TCP echo round trips of 1 MiB both ways.
func checkTraffic(a, b *helperProc) {
	a.t.Helper()
	a.must("ping "+innerB.Addr().String(), nil)
	a.must("ping "+inner6B.Addr().String(), nil)
	b.must("ping "+innerA.Addr().String(), nil)
	b.must("ping "+inner6A.Addr().String(), nil)
	for _, c := range []struct {
		from, to *helperProc
		listen   netip.Addr
	}{
		{a, b, innerB.Addr()},
		{a, b, inner6B.Addr()},
		{b, a, innerA.Addr()},
		{b, a, inner6A.Addr()},
	} {
		var addr string
		c.to.must("listen "+netip.AddrPortFrom(c.listen, 0).String(), &addr)
		c.from.must("dial "+addr, nil)
	}
}

// mustOpen opens an interface in a child in ns, failing the test if Open fails.
func mustOpen(t *testing.T, ns string, cfg *wg.Config, ho *helperOptions) *helperProc {
	t.Helper()
	h, r := startHelper(t, ns, "open", cfg, ho)
	if !r.OK {
		t.Fatalf("Open in %s: %s", ns, r.Err)
	}
	return h
}

func containsAll(t *testing.T, what string, have, want []string) {
	t.Helper()
	for _, w := range want {
		if !slices.Contains(have, w) {
			t.Errorf("%s: missing %q; have:\n  %s", what, w, strings.Join(have, "\n  "))
		}
	}
}

func TestTwoInterfaces(t *testing.T) {
	requireRoot(t)
	nsA, nsB := newNetnsPair(t)
	// 10.77.0.2/32 and fd77::2/128 lie in the addresses' prefix routes
	// and are skipped like wg-quick does; 10.78.0.0/16 needs a route.
	cfgA, cfgB := pairConfigs(t, netip.MustParsePrefix("10.77.0.2/32"), netip.MustParsePrefix("fd77::2/128"),
		netip.MustParsePrefix("10.78.0.0/16"))
	cfgB.Interface.MTU = 1380
	nameA, nameB := ifName(t), ifName(t)
	before := snapshot(t, nsA)

	b := mustOpen(t, nsB, cfgB, &helperOptions{Name: nameB})
	a := mustOpen(t, nsA, cfgA, &helperOptions{Name: nameA})

	open := snapshot(t, nsA)
	if !open.hasLink(nameA) {
		t.Errorf("links in %s = %v, want %s", nsA, open.Links, nameA)
	}
	containsAll(t, "addresses", open.Addrs, []string{nameA + " 10.77.0.1/24", nameA + " fd77::1/64"})
	containsAll(t, "routes", open.Routes, []string{
		"table 254 10.78.0.0/16 dev " + nameA + " type 1",
		"table 254 10.77.0.0/24 dev " + nameA + " type 1",
	})
	if got := run(t, "ip", "-n", nsA, "link", "show", "dev", nameA); !strings.Contains(got, "mtu 1420 ") || !strings.Contains(got, ",UP") {
		t.Errorf("ip link show %s = %q, want mtu 1420 and UP", nameA, got)
	}
	if got := run(t, "ip", "-n", nsA, "addr", "show", "dev", nameA); !strings.Contains(got, "inet 10.77.0.1/24 ") || !strings.Contains(got, "inet6 fd77::1/64 ") {
		t.Errorf("ip addr show %s = %q, want 10.77.0.1/24 and fd77::1/64", nameA, got)
	}
	if got := run(t, "ip", "-n", nsA, "route", "show", "dev", nameA); !strings.Contains(got, "10.78.0.0/16 scope link") {
		t.Errorf("ip route show dev %s = %q, want 10.78.0.0/16", nameA, got)
	}
	if got := run(t, "ip", "-n", nsB, "link", "show", "dev", nameB); !strings.Contains(got, "mtu 1380 ") {
		t.Errorf("ip link show %s = %q, want the config's mtu 1380", nameB, got)
	}

	checkTraffic(a, b)

	cfg := a.config()
	if diff := cmp.Diff(cfgA.Interface.Addresses, cfg.Interface.Addresses, cmpopts.EquateComparable(netip.Prefix{})); diff != "" {
		t.Errorf("Device().Config() addresses (-want +got):\n%s", diff)
	}

	a.close()
	b.close()
	after := snapshot(t, nsA)
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("namespace %s after Close differs from before Open (-before +after):\n%s", nsA, diff)
	}
	for _, name := range []string{nameA, nameB} {
		if _, err := os.Stat(filepath.Join("/var/run/wireguard", name+".sock")); !os.IsNotExist(err) {
			t.Errorf("UAPI socket of %s after Close: stat err = %v, want not exist", name, err)
		}
	}
}

func TestFullTunnel(t *testing.T) {
	requireRoot(t)
	nsA, nsB := newNetnsPair(t)
	// Table 51820 is taken, so the fwmark scheme must pick 51821.
	run(t, "ip", "-n", nsA, "route", "add", "192.0.2.0/24", "dev", "veth-a", "table", "51820")
	// b's endpoint is reached through a's default route, as on a real
	// host: were the engine's packets not marked, the rules would send
	// them into the tunnel itself. (An on-link endpoint would not tell:
	// "suppress_prefixlength 0" lets the main table's subnet route win.)
	run(t, "ip", "-n", nsB, "addr", "add", "198.51.100.2/32", "dev", "lo")
	run(t, "ip", "-n", nsA, "route", "add", "default", "via", outerB.Addr().String())
	cfgA, cfgB := pairConfigs(t, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"))
	cfgA.Peers[0].Endpoint = "198.51.100.2:51821"
	nameA, nameB := ifName(t), ifName(t)
	before := snapshot(t, nsA)

	// b first: a full tunnel starts a handshake at once (the kernel's own
	// IPv6 packets on the new link take its default route), and one that
	// finds nobody listening is retried only after 5s.
	b := mustOpen(t, nsB, cfgB, &helperOptions{Name: nameB})
	a := mustOpen(t, nsA, cfgA, &helperOptions{Name: nameA})

	open := snapshot(t, nsA)
	containsAll(t, "routes", open.Routes, []string{
		"table 51821 0.0.0.0/0 dev " + nameA + " type 1",
		"table 51821 ::/0 dev " + nameA + " type 1",
	})
	var rules []string
	for _, r := range open.Rules {
		if !slices.Contains(before.Rules, r) {
			rules = append(rules, r[:strings.Index(r, " pref ")]+r[strings.Index(r, " table "):])
		}
	}
	slices.Sort(rules)
	wantRules := []string{
		"family 10 table 254 mark 0 invert false suppress_prefixlength 0",
		"family 10 table 51821 mark 51821 invert true suppress_prefixlength -1",
		"family 2 table 254 mark 0 invert false suppress_prefixlength 0",
		"family 2 table 51821 mark 51821 invert true suppress_prefixlength -1",
	}
	if diff := cmp.Diff(wantRules, rules); diff != "" {
		t.Errorf("rules added (-want +got):\n%s", diff)
	}
	cfg := a.config()
	if cfg.Interface.FwMark != 51821 {
		t.Errorf("engine fwmark = %d, want 51821", cfg.Interface.FwMark)
	}

	// Only works if the encrypted packets to outerB escape the default
	// route through the tunnel.
	checkTraffic(a, b)

	a.close()
	b.close()
	after := snapshot(t, nsA)
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("namespace %s after Close differs from before Open (-before +after):\n%s", nsA, diff)
	}
}

func TestWGTools(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("wg"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("wg(8) from wireguard-tools is required in CI")
		}
		t.Skip("skipping: wg(8) from wireguard-tools not installed")
	}
	nsA, nsB := newNetnsPair(t)
	cfgA, cfgB := pairConfigs(t, netip.MustParsePrefix("10.77.0.2/32"))
	nameA, nameB := ifName(t), ifName(t)
	b := mustOpen(t, nsB, cfgB, &helperOptions{Name: nameB})
	a := mustOpen(t, nsA, cfgA, &helperOptions{Name: nameA})
	a.must("ping 10.77.0.2", nil)

	sock := filepath.Join("/var/run/wireguard", nameA+".sock")
	if fi, err := os.Stat(sock); err != nil {
		t.Errorf("UAPI socket: %v", err)
	} else if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		t.Errorf("UAPI socket mode = %v, want no access for group and others", perm)
	}
	peer := cfgA.Peers[0].PublicKey.String()
	show := run(t, "ip", "netns", "exec", nsA, "wg", "show", nameA)
	for _, want := range []string{"interface: " + nameA, "listening port: 51820", "peer: " + peer,
		"allowed ips: 10.77.0.2/32", "latest handshake: ", "endpoint: 192.168.241.2:51821"} {
		if !strings.Contains(show, want) {
			t.Errorf("wg show %s lacks %q:\n%s", nameA, want, show)
		}
	}

	var peers []wg.PeerStatus
	a.must("peers", &peers)
	if len(peers) != 1 {
		t.Fatalf("Peers() = %d peers before wg set, want 1", len(peers))
	}
	run(t, "ip", "netns", "exec", nsA, "wg", "set", nameA, "peer", peer, "remove")
	a.must("peers", &peers)
	if len(peers) != 0 {
		t.Errorf("Peers() after wg set peer remove = %v, want none", peers)
	}
	if show := run(t, "ip", "netns", "exec", nsA, "wg", "show", nameA, "peers"); strings.TrimSpace(show) != "" {
		t.Errorf("wg show %s peers after removal = %q, want empty", nameA, show)
	}

	a.close()
	b.close()
	if out, err := exec.Command("ip", "netns", "exec", nsA, "wg", "show", nameA).CombinedOutput(); err == nil {
		t.Errorf("wg show %s after Close succeeded:\n%s", nameA, out)
	}
}

func TestSetDNS(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	// A stand-in resolvconf records its arguments and input.
	dir := t.TempDir()
	logFile := filepath.Join(dir, "log")
	script := "#!/bin/sh\n{ echo \"args: $*\"; cat; } >> " + logFile + "\n"
	if err := os.WriteFile(filepath.Join(dir, "resolvconf"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg, _ := pairConfigs(t)
	cfg.Interface.DNS = []netip.Addr{netip.MustParseAddr("10.77.0.53"), netip.MustParseAddr("fd77::53")}
	cfg.Interface.DNSSearch = []string{"example.com", "corp.example"}
	name := ifName(t)
	h, r := startHelper(t, ns, "open", cfg, &helperOptions{Name: name, SetDNS: true}, "PATH="+dir+":"+os.Getenv("PATH"))
	if !r.OK {
		t.Fatalf("Open: %s", r.Err)
	}
	readLog := func() string {
		b, err := os.ReadFile(logFile)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	want := "args: -a tun." + name + " -m 0 -x\nnameserver 10.77.0.53\nnameserver fd77::53\nsearch example.com corp.example\n"
	if diff := cmp.Diff(want, readLog()); diff != "" {
		t.Errorf("resolvconf after Open (-want +got):\n%s", diff)
	}
	if got := h.config(); len(got.Interface.DNS) != 2 || len(got.Interface.DNSSearch) != 2 {
		t.Errorf("Device().Config() DNS = %v %v, want the config's", got.Interface.DNS, got.Interface.DNSSearch)
	}
	h.close()
	want += "args: -d tun." + name + " -f\n"
	if diff := cmp.Diff(want, readLog()); diff != "" {
		t.Errorf("resolvconf after Close (-want +got):\n%s", diff)
	}
}

func TestOpenFailureRollsBack(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name    string
		setup   func(t *testing.T, ns, ifname string) // before the snapshot
		modify  func(cfg *wg.Config, ho *helperOptions)
		env     []string
		wantErr string
	}{
		{
			name: "interface name in use",
			setup: func(t *testing.T, ns, ifname string) {
				run(t, "ip", "-n", ns, "tuntap", "add", ifname, "mode", "tun")
			},
			wantErr: "interface already exists",
		},
		{
			// The engine fails to bind its UDP port after the TUN, the
			// UAPI socket and the engine exist.
			name: "listen port in use",
			setup: func(t *testing.T, ns, _ string) {
				cfg, _ := pairConfigs(t)
				if _, r := startHelper(t, ns, "holdport", cfg, nil); !r.OK {
					t.Fatalf("hold port: %s", r.Err)
				}
			},
			wantErr: "51820", // "address already in use", or our check of the bound port
		},
		{
			name:    "invalid interface name",
			modify:  func(_ *wg.Config, ho *helperOptions) { ho.Name = "bad/name" },
			wantErr: "invalid interface name",
		},
		{
			name:    "unknown table",
			modify:  func(cfg *wg.Config, _ *helperOptions) { cfg.Interface.Table = "nosuchtable" },
			wantErr: "unknown table name",
		},
		{
			name: "second address fails",
			modify: func(cfg *wg.Config, _ *helperOptions) {
				cfg.Interface.Addresses = []netip.Prefix{innerA, innerA}
			},
			wantErr: "add address 10.77.0.1/24",
		},
		{
			// With IPv6 off in the namespace, the IPv6 rules go in but the
			// IPv6 default route does not: the rules, the IPv4 route and
			// the addresses must all be rolled back.
			name: "route fails after rules",
			setup: func(t *testing.T, ns, _ string) {
				run(t, "ip", "netns", "exec", ns, "sysctl", "-q", "-w",
					"net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
			},
			modify: func(cfg *wg.Config, _ *helperOptions) {
				cfg.Interface.Addresses = []netip.Prefix{innerA}
				cfg.Peers[0].AllowedIPs = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
			},
			wantErr: "add route ::/0 table 51820",
		},
		{
			name: "dns without resolvconf",
			modify: func(cfg *wg.Config, ho *helperOptions) {
				cfg.Interface.DNS = []netip.Addr{netip.MustParseAddr("10.77.0.53")}
				cfg.Peers[0].AllowedIPs = []netip.Prefix{netip.MustParsePrefix("10.78.0.0/16")}
				ho.SetDNS = true
			},
			env:     []string{"PATH=/nonexistent"},
			wantErr: "set dns",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := newNetns(t)
			name := ifName(t)
			if tt.setup != nil {
				tt.setup(t, ns, name)
			}
			cfg, _ := pairConfigs(t, netip.MustParsePrefix("10.78.0.0/16"))
			ho := &helperOptions{Name: name}
			if tt.modify != nil {
				tt.modify(cfg, ho)
			}
			before := snapshot(t, ns)
			h, r := startHelper(t, ns, "open", cfg, ho, tt.env...)
			if r.OK {
				h.close()
				t.Fatalf("Open succeeded, want an error containing %q", tt.wantErr)
			}
			if !strings.Contains(r.Err, tt.wantErr) || !strings.HasPrefix(r.Err, "tun: open ") {
				t.Errorf("Open error = %q, want one starting with \"tun: open \" and containing %q", r.Err, tt.wantErr)
			}
			var res closeResult
			if err := json.Unmarshal(r.Data, &res); err != nil {
				t.Fatalf("decode reply data %s: %v", r.Data, err)
			}
			if res.Leaks != "" {
				t.Errorf("goroutines leaked after the failed Open:\n%s", res.Leaks)
			}
			after := snapshot(t, ns)
			if diff := cmp.Diff(before, after); diff != "" {
				t.Errorf("namespace after the failed Open differs from before (-before +after):\n%s", diff)
			}
			if _, err := os.Stat(filepath.Join("/var/run/wireguard", ho.Name+".sock")); !os.IsNotExist(err) {
				t.Errorf("UAPI socket after the failed Open: stat err = %v, want not exist", err)
			}
		})
	}
}

func TestTableSetting(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		table string
		want  []string // routes through the interface, beyond those of its addresses
	}{
		{table: "off"},
		{table: "1234", want: []string{
			"table 1234 0.0.0.0/0 dev NAME type 1",
			"table 1234 10.78.0.0/16 dev NAME type 1",
			"table 1234 ::/0 dev NAME type 1",
		}},
		{table: "main", want: []string{
			"table 254 0.0.0.0/0 dev NAME type 1",
			"table 254 10.78.0.0/16 dev NAME type 1",
			"table 254 ::/0 dev NAME type 1",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.table, func(t *testing.T) {
			ns := newNetns(t)
			name := ifName(t)
			cfg, _ := pairConfigs(t, netip.MustParsePrefix("10.78.0.0/16"), netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"))
			cfg.Interface.Table = tt.table
			before := snapshot(t, ns)
			h := mustOpen(t, ns, cfg, &helperOptions{Name: name})
			open := snapshot(t, ns)
			var got []string
			for _, r := range open.Routes {
				if !strings.HasSuffix(r, " dev "+name+" type 1") || strings.Contains(r, "10.77.0.0/24") || strings.Contains(r, "fd77::/64") {
					continue // not ours, or an address's prefix route
				}
				if strings.HasPrefix(r, "table 254 fe80::/64 ") {
					continue // the kernel's link-local route
				}
				got = append(got, strings.ReplaceAll(r, name, "NAME"))
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("routes through the interface (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(before.Rules, open.Rules); diff != "" {
				t.Errorf("rules changed (-before +open):\n%s", diff)
			}
			h.close()
			if diff := cmp.Diff(before, snapshot(t, ns)); diff != "" {
				t.Errorf("namespace after Close differs from before Open (-before +after):\n%s", diff)
			}
		})
	}
}
