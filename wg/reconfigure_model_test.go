package wg

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/wgkit/wgkit/internal/engine"
)

// modelReads returns how often d read its engine model from the engine.
func modelReads(d *Device) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.modelReads
}

// TestReconfigureModel checks that Reconfigure diffs against what the
// device applied without reading the engine back, and that a wg(8) "set"
// through the UAPI socket makes it read the engine again, so that it
// still applies exactly the differences: the wg(8) changes to peers the
// new config does not mention are undone, and a prefix SetPeer moved
// between peers is moved back.
func TestReconfigureModel(t *testing.T) {
	checkLeaks(t)
	d, sock, _ := uapiTestDevice(t, 3, nil)
	want := d.Config()
	reads := modelReads(d)
	check := func(step string, wantReads int) {
		t.Helper()
		if err := d.Reconfigure(want); err != nil {
			t.Fatalf("%s: Reconfigure: %v", step, err)
		}
		if got := modelReads(d) - reads; got != wantReads {
			t.Errorf("%s: Reconfigure read the engine %d times, want %d", step, got, wantReads)
		}
		reads = modelReads(d)
		got := d.Config()
		if diff := cmp.Diff(want.Peers, got.Peers, configOpts); diff != "" {
			t.Errorf("%s: peers after Reconfigure (-want +got):\n%s", step, diff)
		}
		if got.Interface.PrivateKey != want.Interface.PrivateKey {
			t.Errorf("%s: private key after Reconfigure is not the configured one", step)
		}
		for _, p := range want.Peers {
			pfx := p.AllowedIPs[0]
			if k, ok := d.PeerFor(pfx.Addr()); !ok || k != p.PublicKey {
				t.Errorf("%s: PeerFor(%v) = %v, %v; want %v", step, pfx.Addr(), k, ok, p.PublicKey)
			}
		}
	}

	// Changes through the Device itself keep the model: no read.
	want.Peers[0].PersistentKeepalive = 25 * time.Second
	check("one peer changed", 0)
	if err := d.SetPeer(Peer{PublicKey: want.Peers[1].PublicKey, AllowedIPs: want.Peers[0].AllowedIPs}); err != nil {
		t.Fatal(err)
	}
	check("after SetPeer took peer 0's prefix", 0)
	extra := mustKey(t).PublicKey()
	if err := d.SetPeer(Peer{PublicKey: extra, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.250.0.0/16")}}); err != nil {
		t.Fatal(err)
	}
	if err := d.RemovePeer(want.Peers[2].PublicKey); err != nil {
		t.Fatal(err)
	}
	check("after SetPeer of a new peer and RemovePeer", 0)
	check("unchanged", 0)

	// wg(8) changes behind the Device's back: every field Reconfigure
	// compares, on peers the new config leaves as they were.
	key2 := mustKey(t)
	added := mustKey(t).PublicKey()
	uapiSetText(t, sock, fmt.Sprintf("private_key=%s\n"+
		"public_key=%s\nallowed_ip=10.201.0.0/24\n"+
		"public_key=%s\npersistent_keepalive_interval=7\npreshared_key=%s\n"+
		"public_key=%s\nreplace_allowed_ips=true\nallowed_ip=%s\n"+
		"public_key=%s\nallowed_ip=10.202.0.0/24\n",
		hexKey(key2),
		hexKey(want.Peers[0].PublicKey),
		hexKey(want.Peers[1].PublicKey), hexKey(mustKey(t)),
		hexKey(want.Peers[2].PublicKey), want.Peers[1].AllowedIPs[0],
		hexKey(added)))
	check("after wg set", 1)
	check("unchanged after wg set", 0)
	if k, ok := d.PeerFor(netip.MustParseAddr("10.202.0.1")); ok {
		t.Errorf("PeerFor(10.202.0.1) = %v after Reconfigure removed the peer wg(8) added", k)
	}
}

// TestReconfigureOrder checks that Peers and Config follow the order of
// the last Reconfigure, whether it changes the order or keeps it, and
// put a peer SetPeer adds after it.
func TestReconfigureOrder(t *testing.T) {
	checkLeaks(t)
	d, _, _ := uapiTestDevice(t, 4, nil)
	cfg := d.Config()
	order := func() []Key {
		var ks []Key
		for _, ps := range d.Peers() {
			ks = append(ks, ps.PublicKey)
		}
		return ks
	}
	keys := func(ps []Peer) []Key {
		var ks []Key
		for _, p := range ps {
			ks = append(ks, p.PublicKey)
		}
		return ks
	}
	reversed := cfg.Clone()
	slices.Reverse(reversed.Peers)
	added := mustKey(t).PublicKey()
	for _, step := range []struct {
		name string
		cfg  *Config
		set  *Peer
		want []Key
	}{
		{name: "reversed", cfg: reversed, want: keys(reversed.Peers)},
		{name: "same again", cfg: reversed, want: keys(reversed.Peers)},
		{name: "SetPeer adds last", set: &Peer{PublicKey: added}, want: append(keys(reversed.Peers), added)},
		{name: "back to the first order", cfg: cfg, want: keys(cfg.Peers)},
	} {
		if step.cfg != nil {
			if err := d.Reconfigure(step.cfg); err != nil {
				t.Fatalf("%s: %v", step.name, err)
			}
		} else if err := d.SetPeer(*step.set); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if diff := cmp.Diff(step.want, order()); diff != "" {
			t.Errorf("%s: Peers order (-want +got):\n%s", step.name, diff)
		}
		if diff := cmp.Diff(step.want, keys(d.Config().Peers)); diff != "" {
			t.Errorf("%s: Config order (-want +got):\n%s", step.name, diff)
		}
	}
}

// TestReconfigureKernelEngineReads checks that on an engine wg(8) changes
// unseen (a kernel engine, here wireguard-go behind the bare interface)
// Reconfigure reads the engine every time, and so undoes a change made
// behind the device's back that a model of what it applied would miss.
func TestReconfigureKernelEngineReads(t *testing.T) {
	checkLeaks(t)
	e, _ := newOpaqueEngine()
	pub := mustKey(t).PublicKey()
	cfg := &Config{
		Interface: Interface{PrivateKey: mustKey(t)},
		Peers:     []Peer{{PublicKey: pub, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.8.0.2/32")}}},
	}
	d, err := NewDeviceEngine(context.Background(), e, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	e.behindBack(t, &engine.Config{Peers: []engine.PeerConfig{{
		PublicKey: engine.Key(pub), UpdateOnly: true, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")},
	}}})
	before := modelReads(d)
	if err := d.Reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	if got := modelReads(d) - before; got != 1 {
		t.Errorf("Reconfigure read the engine %d times, want 1", got)
	}
	got := e.peer(t, pub)
	if got == nil {
		t.Fatal("the peer is gone")
	}
	if diff := cmp.Diff(cfg.Peers[0].AllowedIPs, got.AllowedIPs, configOpts); diff != "" {
		t.Errorf("allowed IPs after Reconfigure (-want +got):\n%s", diff)
	}
}
