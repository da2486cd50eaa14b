package wg

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// testPeer is one side of a device pair on a channel TUN.
type testPeer struct {
	key  Key
	addr netip.Addr
	tun  *tuntest.ChannelTUN
	dev  *Device
}

func mustKey(t testing.TB) Key {
	t.Helper()
	k, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newPair starts two devices on loopback UDP that know each other. b is
// created first so that a can be given b's bound port as its endpoint; b
// learns a's endpoint from a's handshake.
func newPair(t *testing.T) (a, b *testPeer) {
	t.Helper()
	a = &testPeer{key: mustKey(t), addr: netip.MustParseAddr("10.9.0.1"), tun: tuntest.NewChannelTUN()}
	b = &testPeer{key: mustKey(t), addr: netip.MustParseAddr("10.9.0.2"), tun: tuntest.NewChannelTUN()}
	var err error
	b.dev, err = NewDevice(b.tun.TUN(), &Config{
		Interface: Interface{PrivateKey: b.key},
		Peers: []Peer{{
			PublicKey:  a.key.PublicKey(),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(a.addr, 32)},
		}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.dev.Close() })
	a.dev, err = NewDevice(a.tun.TUN(), &Config{
		Interface: Interface{PrivateKey: a.key},
		Peers: []Peer{{
			PublicKey:  b.key.PublicKey(),
			Endpoint:   netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(b.dev.ListenPort())).String(),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(b.addr, 32)},
		}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.dev.Close() })
	return a, b
}

// send writes an ICMP echo from -> to into from's TUN and reports whether
// it comes out of to's TUN within timeout.
func send(t *testing.T, from, to *testPeer, timeout time.Duration) bool {
	t.Helper()
	pkt := tuntest.Ping(to.addr, from.addr)
	select {
	case from.tun.Outbound <- pkt:
	case <-time.After(timeout):
		t.Fatalf("%v: engine did not read from its TUN", from.addr)
	}
	deadline := time.After(timeout)
	for {
		select {
		case got := <-to.tun.Inbound:
			if bytes.Equal(got, pkt) {
				return true
			}
			// Anything else (a keepalive never reaches the TUN) is a bug.
			t.Fatalf("%v received unexpected packet % x", to.addr, got)
		case <-deadline:
			return false
		}
	}
}

func TestDevicePairExchangesPackets(t *testing.T) {
	checkLeaks(t)
	a, b := newPair(t)
	if !send(t, a, b, 5*time.Second) {
		t.Fatal("a -> b: packet not delivered")
	}
	if !send(t, b, a, 5*time.Second) {
		t.Fatal("b -> a: packet not delivered")
	}

	aps := a.dev.Peers()
	if len(aps) != 1 {
		t.Fatalf("a.Peers() = %d peers, want 1", len(aps))
	}
	p := aps[0]
	if p.PublicKey != b.key.PublicKey() {
		t.Errorf("peer key = %v, want %v", p.PublicKey, b.key.PublicKey())
	}
	if p.LastHandshake.IsZero() || time.Since(p.LastHandshake) > time.Minute {
		t.Errorf("LastHandshake = %v, want a recent time", p.LastHandshake)
	}
	if p.RxBytes == 0 || p.TxBytes == 0 {
		t.Errorf("RxBytes = %d, TxBytes = %d, want both > 0", p.RxBytes, p.TxBytes)
	}
	// b learned a's endpoint from the handshake (roaming).
	bps := b.dev.Peers()
	want := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(a.dev.ListenPort()))
	if len(bps) != 1 || bps[0].Endpoint != want {
		t.Errorf("b.Peers() = %+v, want endpoint %v", bps, want)
	}
	if got := a.dev.PublicKey(); got != a.key.PublicKey() {
		t.Errorf("PublicKey() = %v, want %v", got, a.key.PublicKey())
	}
}

func TestDeviceRuntimePeerChanges(t *testing.T) {
	checkLeaks(t)
	a, b := newPair(t)
	if !send(t, a, b, 5*time.Second) {
		t.Fatal("packet not delivered before changes")
	}
	hs := a.dev.Peers()[0].LastHandshake

	// Adding a third peer to a keeps the a-b session and traffic.
	other := mustKey(t).PublicKey()
	if err := a.dev.SetPeer(Peer{
		PublicKey:  other,
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.9.1.0/24")},
	}); err != nil {
		t.Fatal(err)
	}
	if got := len(a.dev.Peers()); got != 2 {
		t.Fatalf("after SetPeer: %d peers, want 2", got)
	}
	if !send(t, a, b, 5*time.Second) {
		t.Fatal("packet not delivered after SetPeer of another peer")
	}
	if got := a.dev.Peers()[0].LastHandshake; !got.Equal(hs) {
		t.Errorf("handshake changed from %v to %v: SetPeer disturbed another peer", hs, got)
	}

	// Removing b from a stops traffic to b.
	if err := a.dev.RemovePeer(b.key.PublicKey()); err != nil {
		t.Fatal(err)
	}
	if send(t, a, b, 300*time.Millisecond) {
		t.Fatal("packet delivered to a removed peer")
	}

	// Reconfigure back to a config with b: only b is added, other removed.
	cfg := a.dev.Config()
	cfg.Peers = []Peer{{
		PublicKey:  b.key.PublicKey(),
		Endpoint:   netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(b.dev.ListenPort())).String(),
		AllowedIPs: []netip.Prefix{netip.PrefixFrom(b.addr, 32)},
	}}
	if err := a.dev.Reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	got := a.dev.Config()
	if len(got.Peers) != 1 || got.Peers[0].PublicKey != b.key.PublicKey() {
		t.Fatalf("Config().Peers after Reconfigure = %+v, want only b", got.Peers)
	}
	if !send(t, a, b, 5*time.Second) {
		t.Fatal("packet not delivered after Reconfigure")
	}
	hs = a.dev.Peers()[0].LastHandshake

	// Reconfiguring with the same config changes nothing: the session stays.
	if err := a.dev.Reconfigure(a.dev.Config()); err != nil {
		t.Fatal(err)
	}
	if !send(t, a, b, 5*time.Second) {
		t.Fatal("packet not delivered after a no-op Reconfigure")
	}
	if got := a.dev.Peers()[0].LastHandshake; !got.Equal(hs) {
		t.Errorf("no-op Reconfigure redid the handshake: %v -> %v", hs, got)
	}
}

func TestDeviceCloseTwice(t *testing.T) {
	checkLeaks(t)
	tn := tuntest.NewChannelTUN()
	d, err := NewDevice(tn.TUN(), &Config{Interface: Interface{PrivateKey: mustKey(t)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	err = d.Close()
	if !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close = %v, want an error wrapping net.ErrClosed", err)
	}
	if err := d.SetPeer(Peer{PublicKey: mustKey(t).PublicKey()}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("SetPeer after Close = %v, want net.ErrClosed", err)
	}
	if got := d.Peers(); got != nil {
		t.Errorf("Peers after Close = %v, want nil", got)
	}
}

func TestNewDeviceErrors(t *testing.T) {
	checkLeaks(t)
	// A resolver that never leaves the process: names not in /etc/hosts fail.
	offline := &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("offline resolver")
	}}
	tests := []struct {
		name    string
		cfg     *Config
		wantErr string
	}{
		{"nil config", nil, "nil config"},
		{"no private key", &Config{}, "wg: invalid config: [Interface]: no private key"},
		{"unresolvable endpoint", &Config{
			Interface: Interface{PrivateKey: mustKey(t)},
			Peers: []Peer{{
				PublicKey: mustKey(t).PublicKey(),
				Endpoint:  "no-such-host.invalid:51820",
			}},
		}, `endpoint "no-such-host.invalid:51820": resolve`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tn := tuntest.NewChannelTUN()
			_, err := NewDevice(tn.TUN(), tt.cfg, &DeviceOptions{Resolver: offline})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) ||
				!strings.HasPrefix(err.Error(), "wg: ") || strings.Count(err.Error(), "wg: ") != 1 {
				t.Fatalf("NewDevice error = %v, want one \"wg: \" prefix and %q", err, tt.wantErr)
			}
			// The TUN was closed: its Read fails at once.
			if _, err := tn.TUN().Read([][]byte{make([]byte, 1500)}, []int{0}, 0); err == nil {
				t.Error("tun.Device still open after NewDevice failed")
			}
		})
	}
}

func TestDeviceResolvesHostNames(t *testing.T) {
	checkLeaks(t)
	tn := tuntest.NewChannelTUN()
	peer := mustKey(t).PublicKey()
	d, err := NewDevice(tn.TUN(), &Config{
		Interface: Interface{PrivateKey: mustKey(t)},
		Peers:     []Peer{{PublicKey: peer, Endpoint: "localhost:51999"}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ps := d.Peers()
	if len(ps) != 1 || !ps[0].Endpoint.Addr().IsLoopback() || ps[0].Endpoint.Port() != 51999 {
		t.Fatalf("Peers() = %+v, want a loopback endpoint on port 51999", ps)
	}
	if got := d.Config().Peers[0].Endpoint; got != "localhost:51999" {
		t.Errorf("Config endpoint = %q, want the configured name", got)
	}
}

func TestDeviceUAPI(t *testing.T) {
	checkLeaks(t)
	dir := filepath.Join(t.TempDir(), "run")
	l, err := ListenUAPI(dir, "wgk0")
	if err != nil {
		t.Fatal(err)
	}
	tn := tuntest.NewChannelTUN()
	key := mustKey(t)
	peer := mustKey(t).PublicKey()
	d, err := NewDevice(tn.TUN(), &Config{
		Interface: Interface{PrivateKey: key},
		Peers:     []Peer{{PublicKey: peer, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}},
	}, &DeviceOptions{UAPI: l})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	sock := filepath.Join(dir, "wgk0.sock")
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("socket mode = %v, want 0600", perm)
	}
	if _, err := ListenUAPI(dir, "wgk0"); !errors.Is(err, os.ErrExist) {
		t.Errorf("second ListenUAPI on a live socket = %v, want os.ErrExist", err)
	}

	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	// A connection left open must not keep Close from returning.
	defer c.Close()
	// wg set: remove the peer through the socket.
	pubHex := strings.TrimSpace(hexKey(peer))
	if _, err := c.Write([]byte("set=1\npublic_key=" + pubHex + "\nremove=true\n\n")); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	if line, _ := r.ReadString('\n'); line != "errno=0\n" {
		t.Fatalf("set reply = %q, want errno=0", line)
	}
	r.ReadString('\n')
	if got := d.Peers(); len(got) != 0 {
		t.Errorf("after wg set remove: Peers() = %+v, want none", got)
	}
	if _, err := c.Write([]byte("get=1\n\n")); err != nil {
		t.Fatal(err)
	}
	line, _ := r.ReadString('\n')
	if want := "private_key=" + hexKey(key) + "\n"; line != want {
		t.Errorf("get first line = %q, want %q", line, want)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still present after Close: %v", err)
	}
}

func hexKey(k Key) string {
	var w uapiWriter
	w.key("", k)
	return strings.TrimSuffix(strings.TrimPrefix(w.String(), "="), "\n")
}

// checkLeaks fails t if goroutines started during the test outlive it. It
// is registered first so that it runs after every other cleanup.
func checkLeaks(t *testing.T) {
	t.Helper()
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
}

func TestNewDevicePortInUse(t *testing.T) {
	checkLeaks(t)
	busy, err := net.ListenUDP("udp", &net.UDPAddr{Port: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.LocalAddr().(*net.UDPAddr).Port
	dir := t.TempDir()
	l, err := ListenUAPI(dir, "wgbusy")
	if err != nil {
		t.Fatal(err)
	}
	tn := tuntest.NewChannelTUN()
	_, err = NewDevice(tn.TUN(), &Config{Interface: Interface{PrivateKey: mustKey(t), ListenPort: port}}, &DeviceOptions{UAPI: l})
	if err == nil || !strings.HasPrefix(err.Error(), "wg: new device: ") {
		t.Fatalf("NewDevice on a busy port = %v, want a wg: new device error", err)
	}
	// The UAPI listener was closed with the device: its socket is gone.
	if _, err := os.Stat(filepath.Join(dir, "wgbusy.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("UAPI socket left behind after a failed NewDevice: %v", err)
	}
}

func TestSetPeerInvalid(t *testing.T) {
	checkLeaks(t)
	tn := tuntest.NewChannelTUN()
	key := mustKey(t)
	d, err := NewDevice(tn.TUN(), &Config{Interface: Interface{PrivateKey: key}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tests := []struct {
		name    string
		peer    Peer
		wantErr string
	}{
		{"no public key", Peer{}, "no public key"},
		{"own key", Peer{PublicKey: key.PublicKey()}, "own public key"},
		{"negative keepalive", Peer{PublicKey: mustKey(t).PublicKey(), PersistentKeepalive: -time.Second}, "persistent keepalive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := d.SetPeer(tt.peer)
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.wantErr) ||
				strings.Count(err.Error(), "wg: ") != 1 {
				t.Fatalf("SetPeer = %v, want ErrInvalidConfig with %q and one \"wg: \" prefix", err, tt.wantErr)
			}
		})
	}
	if got := d.Peers(); len(got) != 0 {
		t.Errorf("invalid SetPeer calls added peers: %+v", got)
	}
}
