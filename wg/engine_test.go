package wg

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/wgkit/wgkit/internal/engine"
)

// opaqueEngine hides a real wireguard-go engine behind the bare
// engine.Engine interface, so that NewDeviceEngine treats it as it does a
// kernel engine: no UAPI, no handshake notes, state polled.
type opaqueEngine struct {
	engine.Engine
	inner *userspace
}

// newOpaqueEngine runs wireguard-go on a channel TUN, silent, on loopback.
func newOpaqueEngine() (*opaqueEngine, *tuntest.ChannelTUN) {
	tn := tuntest.NewChannelTUN()
	u := &userspace{dev: device.NewDevice(tn.TUN(), conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))}
	return &opaqueEngine{Engine: u, inner: u}, tn
}

// behindBack applies c to the engine directly, as wg(8) changes a kernel
// engine through netlink.
func (o *opaqueEngine) behindBack(t *testing.T, c *engine.Config) {
	t.Helper()
	if err := o.inner.Configure(c); err != nil {
		t.Fatal(err)
	}
}

func (o *opaqueEngine) peer(t *testing.T, k Key) *engine.PeerState {
	t.Helper()
	st, err := o.inner.State()
	if err != nil {
		t.Fatal(err)
	}
	for i := range st.Peers {
		if Key(st.Peers[i].PublicKey) == k {
			return &st.Peers[i]
		}
	}
	return nil
}

func TestNewDeviceEngineRejects(t *testing.T) {
	checkLeaks(t)
	l, err := ListenUAPI(t.TempDir(), "wgengine")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts *DeviceOptions
		cfg  *Config
		want string
	}{
		{"uapi", &DeviceOptions{UAPI: l}, &Config{Interface: Interface{PrivateKey: mustKey(t)}}, "wg: new device: the engine serves no UAPI"},
		{"bind", &DeviceOptions{Bind: conn.NewDefaultBind()}, &Config{Interface: Interface{PrivateKey: mustKey(t)}}, "wg: new device: a Bind needs the wireguard-go engine"},
		{"nil config", nil, nil, "wg: new device: nil config"},
		{"invalid config", nil, &Config{}, "wg: invalid config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _ := newOpaqueEngine()
			_, err := NewDeviceEngine(context.Background(), e, tt.cfg, tt.opts)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("NewDeviceEngine: %v, want an error starting %q", err, tt.want)
			}
			if err := e.Close(); !errors.Is(err, net.ErrClosed) {
				t.Errorf("engine not closed by the failed NewDeviceEngine: Close = %v", err)
			}
		})
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("UAPI listener not closed: Accept = %v", err)
	}
	if _, err := NewDeviceEngine(context.Background(), nil, &Config{}, nil); err == nil || !strings.Contains(err.Error(), "nil engine") {
		t.Errorf("nil engine: %v", err)
	}
}

// TestDeviceOnOtherEngine runs a Device on an engine seen only through
// engine.Engine, against a wireguard-go Device on loopback: handshakes
// and events come from polling, every method works, and changes made
// behind the Device's back show in Peers, Config and PeerFor.
func TestDeviceOnOtherEngine(t *testing.T) {
	checkLeaks(t)
	bKey, aKey := mustKey(t), mustKey(t)
	aAddr, bAddr := netip.MustParseAddr("10.8.0.1"), netip.MustParseAddr("10.8.0.2")
	bTun := tuntest.NewChannelTUN()
	b, err := NewDevice(bTun.TUN(), &Config{
		Interface: Interface{PrivateKey: bKey},
		Peers:     []Peer{{PublicKey: aKey.PublicKey(), AllowedIPs: []netip.Prefix{netip.PrefixFrom(aAddr, 32)}}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	e, aTun := newOpaqueEngine()
	var mu sync.Mutex
	var kinds []EventKind
	bPub := bKey.PublicKey()
	a, err := NewDeviceEngine(context.Background(), e, &Config{
		Interface: Interface{PrivateKey: aKey},
		Peers: []Peer{{
			PublicKey:  bPub,
			Endpoint:   netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(b.ListenPort())).String(),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(bAddr, 32)},
		}},
	}, &DeviceOptions{OnEvent: func(ev Event) {
		mu.Lock()
		kinds = append(kinds, ev.Kind)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.ListenPort() == 0 || a.PublicKey() != aKey.PublicKey() {
		t.Errorf("ListenPort %d, PublicKey %v: want a port and %v", a.ListenPort(), a.PublicKey(), aKey.PublicKey())
	}

	// Such an engine initiates when traffic needs the peer.
	aTun.Outbound <- tuntest.Ping(bAddr, aAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hs, err := a.WaitHandshake(ctx, bPub)
	if err != nil {
		t.Fatalf("WaitHandshake: %v", err)
	}
	// The engine counts the initiation's bytes after its send returns,
	// which can be after the response was handled: wait a moment for it.
	var ps []PeerStatus
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		ps = a.Peers()
		if len(ps) != 1 || ps[0].TxBytes != 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(ps) != 1 || ps[0].PublicKey != bPub || !ps[0].LastHandshake.Equal(hs) || ps[0].TxBytes == 0 {
		t.Fatalf("Peers() = %+v, want b with the handshake at %v and bytes sent", ps, hs)
	}
	if k, ok := a.PeerFor(bAddr); !ok || k != bPub {
		t.Errorf("PeerFor(%v) = %v, %v", bAddr, k, ok)
	}

	// A change behind the device's back (wg(8) on a kernel engine) shows
	// in PeerFor within its expiry, and Config and Peers see it at once.
	extra := netip.MustParsePrefix("10.99.0.0/24")
	e.behindBack(t, &engine.Config{Peers: []engine.PeerConfig{{PublicKey: engine.Key(bPub), UpdateOnly: true, AllowedIPs: []netip.Prefix{extra}}}})
	if got := a.Config().Peers[0].AllowedIPs; !slices.Contains(got, extra) {
		t.Errorf("Config AllowedIPs %v lack %v", got, extra)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if k, ok := a.PeerFor(netip.MustParseAddr("10.99.0.7")); ok && k == bPub {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("PeerFor did not follow a change behind the device's back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// And it stays cheap: one rebuild at most per expiry, not per call.
	before := a.routeRebuilds.Load()
	for range 10000 {
		a.PeerFor(bAddr)
	}
	if n := a.routeRebuilds.Load() - before; n > 2 {
		t.Errorf("%d route rebuilds for 10000 PeerFor calls", n)
	}

	// SetPeer, RemovePeer, Reconfigure reach the engine.
	cPub := mustKey(t).PublicKey()
	cPfx := netip.MustParsePrefix("10.8.0.3/32")
	if err := a.SetPeer(Peer{PublicKey: cPub, AllowedIPs: []netip.Prefix{cPfx}, PersistentKeepalive: 25 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if p := e.peer(t, cPub); p == nil || p.PersistentKeepalive != 25*time.Second ||
		!slices.Equal([]netip.Prefix{cPfx}, p.AllowedIPs) {
		t.Errorf("after SetPeer the engine has %+v", p)
	}
	if k, ok := a.PeerFor(cPfx.Addr()); !ok || k != cPub {
		t.Errorf("PeerFor(%v) after SetPeer = %v, %v", cPfx.Addr(), k, ok)
	}
	if err := a.RemovePeer(cPub); err != nil {
		t.Fatal(err)
	}
	if p := e.peer(t, cPub); p != nil {
		t.Errorf("after RemovePeer the engine has %+v", p)
	}
	// Reconfigure: b unchanged keeps its session (and the endpoint), a new
	// peer d is added.
	dPub := mustKey(t).PublicKey()
	cfg := a.Config()
	cfg.Peers[0].AllowedIPs = []netip.Prefix{netip.PrefixFrom(bAddr, 32)}
	cfg.Peers = append(cfg.Peers, Peer{PublicKey: dPub, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.8.0.4/32")}})
	if err := a.Reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	if p := e.peer(t, bPub); p == nil || !p.LastHandshake.Equal(hs) || slices.Contains(p.AllowedIPs, extra) {
		t.Errorf("after Reconfigure b is %+v, want its session and without %v", p, extra)
	}
	if e.peer(t, dPub) == nil {
		t.Error("after Reconfigure the engine lacks the new peer")
	}

	// Events come from polling: the handshake and the peers' comings and
	// goings.
	want := []EventKind{EventPeerAdded, EventHandshakeCompleted, EventPeerAdded, EventPeerRemoved, EventPeerAdded}
	deadline = time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		got := slices.Clone(kinds)
		mu.Unlock()
		if slices.Equal(got, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("events (-want +got):\n%s", cmp.Diff(want, got))
		}
		time.Sleep(50 * time.Millisecond)
	}

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
	if err := e.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("engine not closed by Close: %v", err)
	}
}

// TestUserspaceEngineSemantics checks that the wireguard-go engine applies
// engine.Config as internal/engine documents it (and as the kernel
// engines do): nil fields leave settings alone, allowed IPs add up unless
// replaced, UpdateOnly adds no peer, Remove of an unknown peer is no
// error, mapped endpoints are stored unmapped, keepalives are truncated.
func TestUserspaceEngineSemantics(t *testing.T) {
	checkLeaks(t)
	e, _ := newOpaqueEngine()
	defer e.Close()
	priv := engine.Key(mustKey(t))
	p1, p2 := engine.Key(mustKey(t).PublicKey()), engine.Key(mustKey(t).PublicKey())
	port, mark := 0, uint32(7)
	pfx := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	dur := func(d time.Duration) *time.Duration { return &d }
	type peer struct {
		Endpoint   netip.AddrPort
		AllowedIPs []netip.Prefix
		Keepalive  time.Duration
	}
	steps := []struct {
		name string
		c    engine.Config
		want map[engine.Key]peer
	}{
		{"add", engine.Config{PrivateKey: &priv, ListenPort: &port, FwMark: &mark, Peers: []engine.PeerConfig{{
			PublicKey: p1, Endpoint: netip.MustParseAddrPort("[::ffff:127.0.0.1]:9"), PersistentKeepalive: dur(25900 * time.Millisecond),
			AllowedIPs: []netip.Prefix{pfx("10.0.0.1/24")},
		}}}, map[engine.Key]peer{p1: {netip.MustParseAddrPort("127.0.0.1:9"), []netip.Prefix{pfx("10.0.0.0/24")}, 25 * time.Second}}},
		{"allowed IPs add up", engine.Config{Peers: []engine.PeerConfig{{PublicKey: p1, AllowedIPs: []netip.Prefix{pfx("fd00::/64")}}}},
			map[engine.Key]peer{p1: {netip.MustParseAddrPort("127.0.0.1:9"), []netip.Prefix{pfx("10.0.0.0/24"), pfx("fd00::/64")}, 25 * time.Second}}},
		{"replaced", engine.Config{Peers: []engine.PeerConfig{{PublicKey: p1, ReplaceAllowedIPs: true, AllowedIPs: []netip.Prefix{pfx("10.1.0.0/16")}, PersistentKeepalive: dur(0)}}},
			map[engine.Key]peer{p1: {netip.MustParseAddrPort("127.0.0.1:9"), []netip.Prefix{pfx("10.1.0.0/16")}, 0}}},
		{"update only adds nothing", engine.Config{Peers: []engine.PeerConfig{{PublicKey: p2, UpdateOnly: true, AllowedIPs: []netip.Prefix{pfx("10.2.0.0/16")}}}},
			map[engine.Key]peer{p1: {netip.MustParseAddrPort("127.0.0.1:9"), []netip.Prefix{pfx("10.1.0.0/16")}, 0}}},
		{"remove unknown", engine.Config{Peers: []engine.PeerConfig{{PublicKey: p2, Remove: true}}},
			map[engine.Key]peer{p1: {netip.MustParseAddrPort("127.0.0.1:9"), []netip.Prefix{pfx("10.1.0.0/16")}, 0}}},
		{"replace peers", engine.Config{ReplacePeers: true, Peers: []engine.PeerConfig{{PublicKey: p2}}},
			map[engine.Key]peer{p2: {}}},
	}
	for _, step := range steps {
		if err := e.Configure(&step.c); err != nil {
			t.Fatalf("%s: Configure: %v", step.name, err)
		}
		st, err := e.State()
		if err != nil {
			t.Fatal(err)
		}
		if st.PrivateKey != priv || st.PublicKey != engine.Key(Key(priv).PublicKey()) || st.FwMark != mark {
			t.Errorf("%s: interface changed: fwmark %d, keys %x/%x", step.name, st.FwMark, st.PrivateKey[:4], st.PublicKey[:4])
		}
		got := map[engine.Key]peer{}
		for _, p := range st.Peers {
			got[p.PublicKey] = peer{p.Endpoint, p.AllowedIPs, p.PersistentKeepalive}
		}
		if diff := cmp.Diff(step.want, got, cmpopts.EquateComparable(netip.AddrPort{}, netip.Prefix{}), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: peers (-want +got):\n%s", step.name, diff)
		}
	}
	for _, bad := range []*engine.Config{nil, {Peers: []engine.PeerConfig{{}}}} {
		if err := e.Configure(bad); err == nil {
			t.Errorf("Configure(%+v) = nil, want an error", bad)
		}
	}
}
