package wg

import (
	"bufio"
	"net"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// peerForAll looks up each address and returns the name of the peer that
// routes it ("" for none), naming peers by names.
func peerForAll(d *Device, names map[Key]string, addrs []string) map[string]string {
	got := make(map[string]string, len(addrs))
	for _, a := range addrs {
		k, ok := d.PeerFor(netip.MustParseAddr(a))
		switch {
		case !ok:
			got[a] = ""
		case names[k] == "":
			got[a] = "unknown key " + k.String()
		default:
			got[a] = names[k]
		}
	}
	return got
}

// TestPeerFor checks PeerFor's longest-prefix match and that it follows
// every way peers change: SetPeer, RemovePeer, Reconfigure, wg(8) and Close.
func TestPeerFor(t *testing.T) {
	checkLeaks(t)
	dir := t.TempDir()
	l, err := ListenUAPI(dir, "wgroute")
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := mustKey(t).PublicKey(), mustKey(t).PublicKey(), mustKey(t).PublicKey()
	names := map[Key]string{a: "a", b: "b", c: "c"}
	pfx := netip.MustParsePrefix
	cfg := &Config{
		Interface: Interface{PrivateKey: mustKey(t)},
		Peers: []Peer{
			{PublicKey: a, AllowedIPs: []netip.Prefix{pfx("10.0.0.0/8"), pfx("fd00::/64")}},
			{PublicKey: b, AllowedIPs: []netip.Prefix{pfx("10.1.0.0/16"), pfx("10.1.2.3/32")}},
		},
	}
	d, err := NewDevice(tuntest.NewChannelTUN().TUN(), cfg, &DeviceOptions{UAPI: l})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	addrs := []string{"10.9.9.9", "10.1.9.9", "10.1.2.3", "192.168.1.1", "fd00::1", "fd01::1", "::ffff:10.9.9.9"}
	uapiSet := func(body string) {
		t.Helper()
		conn, err := net.Dial("unix", filepath.Join(dir, "wgroute.sock"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Write([]byte("set=1\n" + body + "\n")); err != nil {
			t.Fatal(err)
		}
		if line, _ := bufio.NewReader(conn).ReadString('\n'); line != "errno=0\n" {
			t.Fatalf("wg set reply = %q, want errno=0", line)
		}
	}
	steps := []struct {
		name   string
		change func() error
		want   map[string]string
	}{
		{"initial", func() error { return nil }, map[string]string{
			"10.9.9.9": "a", "10.1.9.9": "b", "10.1.2.3": "b", "192.168.1.1": "",
			"fd00::1": "a", "fd01::1": "", "::ffff:10.9.9.9": "",
		}},
		{"SetPeer adds c and takes a /32 from b", func() error {
			return d.SetPeer(Peer{PublicKey: c, AllowedIPs: []netip.Prefix{pfx("10.1.2.3/32"), pfx("192.168.0.0/16")}})
		}, map[string]string{
			"10.9.9.9": "a", "10.1.9.9": "b", "10.1.2.3": "c", "192.168.1.1": "c",
			"fd00::1": "a", "fd01::1": "", "::ffff:10.9.9.9": "",
		}},
		{"RemovePeer b", func() error { return d.RemovePeer(b) }, map[string]string{
			"10.9.9.9": "a", "10.1.9.9": "a", "10.1.2.3": "c", "192.168.1.1": "c",
			"fd00::1": "a", "fd01::1": "", "::ffff:10.9.9.9": "",
		}},
		{"Reconfigure to b alone", func() error {
			next := cfg.Clone()
			next.Peers = []Peer{{PublicKey: b, AllowedIPs: []netip.Prefix{pfx("fd00::/8")}}}
			return d.Reconfigure(next)
		}, map[string]string{
			"10.9.9.9": "", "10.1.9.9": "", "10.1.2.3": "", "192.168.1.1": "",
			"fd00::1": "b", "fd01::1": "b", "::ffff:10.9.9.9": "",
		}},
		{"wg set adds a", func() error {
			uapiSet("public_key=" + hexKey(a) + "\nallowed_ip=0.0.0.0/0\n")
			return nil
		}, map[string]string{
			"10.9.9.9": "a", "10.1.9.9": "a", "10.1.2.3": "a", "192.168.1.1": "a",
			"fd00::1": "b", "fd01::1": "b", "::ffff:10.9.9.9": "",
		}},
		{"wg set removes b", func() error {
			uapiSet("public_key=" + hexKey(b) + "\nremove=true\n")
			return nil
		}, map[string]string{
			"10.9.9.9": "a", "10.1.9.9": "a", "10.1.2.3": "a", "192.168.1.1": "a",
			"fd00::1": "", "fd01::1": "", "::ffff:10.9.9.9": "",
		}},
		{"Close", func() error { return d.Close() }, map[string]string{
			"10.9.9.9": "", "10.1.9.9": "", "10.1.2.3": "", "192.168.1.1": "",
			"fd00::1": "", "fd01::1": "", "::ffff:10.9.9.9": "",
		}},
	}
	// The steps depend on each other: stop at the first failure.
	for _, s := range steps {
		if err := s.change(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if diff := cmp.Diff(s.want, peerForAll(d, names, addrs)); diff != "" {
			t.Fatalf("%s: PeerFor mismatch (-want +got):\n%s", s.name, diff)
		}
	}
}

func TestPeerForOddAddresses(t *testing.T) {
	tests := []struct {
		name string
		ip   netip.Addr
	}{
		{"zero Addr", netip.Addr{}},
		{"zoned", netip.MustParseAddr("fe80::1%eth0")},
	}
	tbl := newRouteTable(1, []PeerStatus{{PublicKey: Key{1}, AllowedIPs: []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"), {},
	}}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if k, ok := tbl.lookup(tt.ip); ok {
				t.Errorf("lookup(%v) = %v, true; want no peer", tt.ip, k)
			}
		})
	}
}

// TestPeerForAllocs checks that PeerFor formats and allocates nothing once
// its table is built, however many peers there are.
func TestPeerForAllocs(t *testing.T) {
	checkLeaks(t)
	cfg := &Config{Interface: Interface{PrivateKey: mustKey(t)}}
	for i := range 200 {
		cfg.Peers = append(cfg.Peers, Peer{
			PublicKey:  mustKey(t).PublicKey(),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 7, byte(i >> 8), byte(i)}), 32)},
		})
	}
	d, err := NewDevice(tuntest.NewChannelTUN().TUN(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ip := netip.MustParseAddr("10.7.0.199")
	if k, ok := d.PeerFor(ip); !ok || k != cfg.Peers[199].PublicKey {
		t.Fatalf("PeerFor(%v) = %v, %v; want peer 199", ip, k, ok)
	}
	// AllocsPerRun counts every goroutine's allocations, the device's
	// once-a-second state poll included: a run that a poll fell into is
	// tried again, up to three times.
	var n float64
	for range 3 {
		if n = testing.AllocsPerRun(100, func() { d.PeerFor(ip) }); n == 0 {
			break
		}
	}
	if n != 0 {
		t.Errorf("PeerFor allocates %v times per call, want 0", n)
	}
}

// TestPeerForInPlace checks that SetPeer and RemovePeer update PeerFor's
// table in place, without reading the engine's state again (the cost of
// changing one peer among thousands), and that the table they leave
// answers as one rebuilt from the engine does: prefixes that move from
// one peer to another, peers that lose prefixes, removed peers.
func TestPeerForInPlace(t *testing.T) {
	checkLeaks(t)
	a, b, c := mustKey(t).PublicKey(), mustKey(t).PublicKey(), mustKey(t).PublicKey()
	names := map[Key]string{a: "a", b: "b", c: "c"}
	pfx := netip.MustParsePrefix
	cfg := &Config{
		Interface: Interface{PrivateKey: mustKey(t)},
		Peers: []Peer{
			{PublicKey: a, AllowedIPs: []netip.Prefix{pfx("10.0.0.0/8"), pfx("fd00::/64")}},
			{PublicKey: b, AllowedIPs: []netip.Prefix{pfx("10.1.0.0/16"), pfx("10.1.2.3/32")}},
			{PublicKey: c, AllowedIPs: []netip.Prefix{pfx("10.2.0.0/16")}},
		},
	}
	d, err := NewDevice(tuntest.NewChannelTUN().TUN(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	addrs := []string{"10.9.9.9", "10.1.9.9", "10.1.2.3", "10.2.0.1", "10.3.0.1", "192.168.1.1", "fd00::1", "fd01::1"}
	peerForAll(d, names, addrs) // builds the table
	rebuilds := d.routeRebuilds.Load()
	steps := []struct {
		name   string
		change func() error
		want   map[string]string
	}{
		{"move 10.1.0.0/16 from b to c, c drops 10.2.0.0/16", func() error {
			return d.SetPeer(Peer{PublicKey: c, AllowedIPs: []netip.Prefix{pfx("10.1.0.0/16"), pfx("10.3.0.0/16")}})
		}, map[string]string{"10.9.9.9": "a", "10.1.9.9": "c", "10.1.2.3": "b", "10.2.0.1": "a", "10.3.0.1": "c", "192.168.1.1": "", "fd00::1": "a", "fd01::1": ""}},
		{"remove b", func() error { return d.RemovePeer(b) },
			map[string]string{"10.9.9.9": "a", "10.1.9.9": "c", "10.1.2.3": "c", "10.2.0.1": "a", "10.3.0.1": "c", "192.168.1.1": "", "fd00::1": "a", "fd01::1": ""}},
		{"a loses its IPv6 prefix and gains a /0", func() error {
			return d.SetPeer(Peer{PublicKey: a, AllowedIPs: []netip.Prefix{pfx("10.0.0.0/8"), pfx("0.0.0.0/0")}})
		}, map[string]string{"10.9.9.9": "a", "10.1.9.9": "c", "10.1.2.3": "c", "10.2.0.1": "a", "10.3.0.1": "c", "192.168.1.1": "a", "fd00::1": "", "fd01::1": ""}},
		{"b comes back with a /32 inside c's /16", func() error {
			return d.SetPeer(Peer{PublicKey: b, AllowedIPs: []netip.Prefix{pfx("10.1.2.3/32")}})
		}, map[string]string{"10.9.9.9": "a", "10.1.9.9": "c", "10.1.2.3": "b", "10.2.0.1": "a", "10.3.0.1": "c", "192.168.1.1": "a", "fd00::1": "", "fd01::1": ""}},
	}
	for _, st := range steps {
		if err := st.change(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if diff := cmp.Diff(st.want, peerForAll(d, names, addrs)); diff != "" {
			t.Errorf("%s: PeerFor (-want +got):\n%s", st.name, diff)
		}
		// The table kept in place answers as one built from the engine.
		es, err := d.state()
		if err != nil {
			t.Fatal(err)
		}
		fresh := newRouteTable(0, es.peers)
		for _, a := range addrs {
			ip := netip.MustParseAddr(a)
			k1, ok1 := d.PeerFor(ip)
			k2, ok2 := fresh.lookup(ip)
			if k1 != k2 || ok1 != ok2 {
				t.Errorf("%s: %s: in place %s/%v, rebuilt %s/%v", st.name, a, names[k1], ok1, names[k2], ok2)
			}
		}
	}
	if got := d.routeRebuilds.Load(); got != rebuilds {
		t.Errorf("SetPeer and RemovePeer rebuilt the table %d times, want 0", got-rebuilds)
	}
}
