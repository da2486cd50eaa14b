package wg

import (
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// scaleTestDevice is a device with n peers (one /32 each, no endpoint)
// whose watcher polls only at start, so that it allocates nothing while
// a test counts. onEvent may be nil.
func scaleTestDevice(t *testing.T, n int, onEvent func(Event)) (*Device, *Config) {
	t.Helper()
	cfg := &Config{Interface: Interface{PrivateKey: mustKey(t)}}
	for i := range n {
		a := netip.AddrFrom4([4]byte{10, byte(64 + i>>16), byte(i >> 8), byte(i)})
		cfg.Peers = append(cfg.Peers, Peer{PublicKey: mustKey(t).PublicKey(), AllowedIPs: []netip.Prefix{netip.PrefixFrom(a, 32)}})
	}
	timing := defaultWatchTiming()
	timing.poll = time.Hour
	d, err := NewDevice(tuntest.NewChannelTUN().TUN(), cfg, &DeviceOptions{timing: &timing, OnEvent: onEvent})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, cfg
}

// TestReconfigureOnePeerCostsTheSame checks that a Reconfigure changing
// one peer allocates as much with 1000 peers as with 10: it compares the
// unchanged peers with the applied ones in place, with no map, copy or
// validation state per peer (before, 1000 peers cost 143 KB more).
func TestReconfigureOnePeerCostsTheSame(t *testing.T) {
	checkLeaks(t)
	bytesPerCall := func(n int) uint64 {
		d, cfg := scaleTestDevice(t, n, nil)
		alt := cfg.Clone()
		alt.Peers[n/2].AllowedIPs = append(alt.Peers[n/2].AllowedIPs, netip.MustParsePrefix("100.64.0.1/32"))
		time.Sleep(50 * time.Millisecond) // the watcher's first poll
		best := ^uint64(0)
		for range 3 { // the least of three, in case a collection or a goroutine of the engine interferes
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			const calls = 20
			for i := range calls {
				c := cfg
				if i%2 == 0 {
					c = alt
				}
				if err := d.Reconfigure(c); err != nil {
					t.Fatal(err)
				}
			}
			runtime.ReadMemStats(&after)
			best = min(best, (after.TotalAlloc-before.TotalAlloc)/calls)
		}
		return best
	}
	small, large := bytesPerCall(10), bytesPerCall(1000)
	t.Logf("bytes allocated per Reconfigure: %d at 10 peers, %d at 1000", small, large)
	if large > small+4096 {
		t.Errorf("a one-peer Reconfigure allocates %d bytes at 1000 peers, %d at 10: it grows with the peers", large, small)
	}
}

// TestReconfigureValidatesLikeValidate checks that Reconfigure, which
// skips validating the peers it applied already, rejects every config
// Validate rejects, with Validate's error, and changes nothing then.
func TestReconfigureValidatesLikeValidate(t *testing.T) {
	checkLeaks(t)
	ownPriv := mustKey(t) // a private key whose public key is peer 1's
	d, cfg := scaleTestDevice(t, 4, nil)
	cfg.Peers[1].PublicKey = ownPriv.PublicKey()
	if err := d.Reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	newKey := mustKey(t).PublicKey()
	for _, tc := range []struct {
		name string
		edit func(c *Config)
	}{
		{"an unchanged peer again, last", func(c *Config) { c.Peers = append(c.Peers, c.Peers[0]) }},
		{"a changed peer with an unchanged one's key", func(c *Config) {
			c.Peers[3].PublicKey = c.Peers[2].PublicKey
		}},
		{"a changed peer with a later unchanged one's key", func(c *Config) {
			c.Peers[0].PublicKey = c.Peers[3].PublicKey
			c.Peers[0].PersistentKeepalive = time.Second
		}},
		{"two new peers with one key", func(c *Config) {
			c.Peers = append(c.Peers, Peer{PublicKey: newKey}, Peer{PublicKey: newKey})
		}},
		{"the interface's key on an unchanged peer", func(c *Config) { c.Interface.PrivateKey = ownPriv }},
		{"an invalid prefix on a changed peer", func(c *Config) {
			c.Peers[2].AllowedIPs = append(c.Peers[2].AllowedIPs, netip.Prefix{})
		}},
		{"a bad endpoint", func(c *Config) { c.Peers[2].Endpoint = "no-port" }},
		{"a keepalive out of range", func(c *Config) { c.Peers[0].PersistentKeepalive = 70000 * time.Second }},
		{"no public key", func(c *Config) { c.Peers[1].PublicKey = Key{} }},
		{"no private key", func(c *Config) { c.Interface.PrivateKey = Key{} }},
		{"too many allowed IPs", func(c *Config) {
			c.Peers[3].AllowedIPs = make([]netip.Prefix, MaxAllowedIPs)
			for i := range c.Peers[3].AllowedIPs {
				c.Peers[3].AllowedIPs[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{11, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
			}
		}},
		{"too many peers", func(c *Config) {
			for len(c.Peers) <= MaxPeers {
				c.Peers = append(c.Peers, c.Peers[0])
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := d.Config()
			bad := cfg.Clone()
			tc.edit(bad)
			want := bad.Validate()
			if want == nil {
				t.Fatal("the test's config is valid")
			}
			err := d.Reconfigure(bad)
			if err == nil || err.Error() != want.Error() {
				t.Fatalf("Reconfigure = %v, want Validate's %v", err, want)
			}
			if diff := cmp.Diff(before, d.Config(), configOpts); diff != "" {
				t.Errorf("config after a rejected Reconfigure (-before +after):\n%s", diff)
			}
		})
	}
	// Valid changes of the same kinds still apply.
	good := cfg.Clone()
	good.Peers[0], good.Peers[3] = good.Peers[3], good.Peers[0]
	good.Peers = append(good.Peers, Peer{PublicKey: newKey})
	if err := d.Reconfigure(good); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(good.Peers, d.Config().Peers, configOpts); diff != "" {
		t.Errorf("peers after a valid Reconfigure (-want +got):\n%s", diff)
	}
}

// TestReconfigureResolvesChangedOnly checks that Reconfigure resolves
// only the endpoints that changed: the others are kept as the engine has
// them, so their names need no lookup (and a name that stopped resolving
// does not fail the call).
func TestReconfigureResolvesChangedOnly(t *testing.T) {
	checkLeaks(t)
	dns := &fakeDNS{addrs: map[string][]netip.Addr{}}
	dns.set("a.wgkit.test.", netip.MustParseAddr("198.18.0.1"))
	dns.set("b.wgkit.test.", netip.MustParseAddr("198.18.0.2"))
	queries := func() int {
		dns.mu.Lock()
		defer dns.mu.Unlock()
		return dns.queries
	}
	sw := newSwitch(t)
	addr, err := sw.NewAddr()
	if err != nil {
		t.Fatal(err)
	}
	cfg := &Config{Interface: Interface{PrivateKey: mustKey(t)}}
	for i, name := range []string{"a.wgkit.test", "b.wgkit.test"} {
		cfg.Peers = append(cfg.Peers, Peer{
			PublicKey:  mustKey(t).PublicKey(),
			Endpoint:   net.JoinHostPort(name, "51820"),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 5, 0, byte(i)}), 32)},
		})
	}
	d, err := NewDevice(tuntest.NewChannelTUN().TUN(), cfg, &DeviceOptions{Bind: sw.NewBind(0, addr), Resolver: dns.resolver(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	q := queries()
	dns.mu.Lock()
	delete(dns.addrs, "a.wgkit.test.") // no longer resolves
	dns.mu.Unlock()
	if err := d.Reconfigure(cfg); err != nil {
		t.Fatalf("Reconfigure with unchanged endpoints: %v", err)
	}
	if got := queries() - q; got != 0 {
		t.Errorf("Reconfigure with unchanged endpoints made %d DNS queries, want 0", got)
	}
	changed := cfg.Clone()
	changed.Peers[1].Endpoint = "198.18.0.9:51820"
	if err := d.Reconfigure(changed); err != nil {
		t.Fatal(err)
	}
	if got := d.Peers()[1].Endpoint; got != netip.MustParseAddrPort("198.18.0.9:51820") {
		t.Errorf("peer 1's endpoint after Reconfigure = %v, want 198.18.0.9:51820", got)
	}
	changed.Peers[0].Endpoint = "a.wgkit.test:51820"
	changed.Peers[0].PersistentKeepalive = 5 * time.Second
	if err := d.Reconfigure(changed); err != nil {
		t.Fatalf("Reconfigure of another field of the peer whose name fails: %v", err)
	}
	changed.Peers[0].Endpoint = "b.wgkit.test:51820"
	if err := d.Reconfigure(changed); err != nil {
		t.Fatal(err)
	}
	if got := queries() - q; got == 0 {
		t.Error("Reconfigure of a changed name made no DNS query")
	}
	if got := d.Peers()[0].Endpoint; got != netip.MustParseAddrPort("198.18.0.2:51820") {
		t.Errorf("peer 0's endpoint after Reconfigure = %v, want b's 198.18.0.2:51820", got)
	}
}

// TestReconfigureAfterPrefixMoved checks that a peer Reconfigure did not
// resend, because it was unchanged, is resent by the next one once
// another peer took one of its allowed IPs in the engine: the comparison
// in place must not trust it then.
func TestReconfigureAfterPrefixMoved(t *testing.T) {
	checkLeaks(t)
	d, cfg := scaleTestDevice(t, 3, nil)
	moved := cfg.Peers[0].AllowedIPs[0]
	took := cfg.Clone()
	took.Peers[2].AllowedIPs = append(took.Peers[2].AllowedIPs, moved) // peer 0 unchanged
	if err := d.Reconfigure(took); err != nil {
		t.Fatal(err)
	}
	if k, _ := d.PeerFor(moved.Addr()); k != cfg.Peers[2].PublicKey {
		t.Fatalf("PeerFor(%v) = %v after peer 2 took it, want peer 2", moved.Addr(), k)
	}
	if err := d.Reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	if k, _ := d.PeerFor(moved.Addr()); k != cfg.Peers[0].PublicKey {
		t.Errorf("PeerFor(%v) = %v after Reconfigure back, want peer 0", moved.Addr(), k)
	}
	if diff := cmp.Diff(cfg.Peers, d.Config().Peers, configOpts); diff != "" {
		t.Errorf("peers after Reconfigure back (-want +got):\n%s", diff)
	}
}
