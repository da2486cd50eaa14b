//go:build windows

package wgnt

import (
	"crypto/rand"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/curve25519"
	"golang.org/x/sys/windows"
	"golang.zx2c4.com/wireguard/windows/tunnel/winipcfg"

	"github.com/wgkit/wgkit/internal/engine"
)

// requireDriver skips the test where no adapter can be made.
func requireDriver(t *testing.T) {
	t.Helper()
	if err := loadDLL(); err != nil {
		t.Skipf("skipping: WireGuardNT's DLL is unusable (put wireguard.dll next to the test binary): %v", err)
	}
	if !windows.GetCurrentProcessToken().IsElevated() {
		t.Skip("skipping: WireGuardNT adapters need Administrator rights")
	}
}

func TestBadArguments(t *testing.T) {
	for _, tc := range []struct {
		name, adapter string
		opts          *Options
		want          string
	}{
		{"empty name", "", nil, "wgnt: empty adapter name"},
		{"long tunnel type", "wgkit-bad", &Options{TunnelType: strings.Repeat("t", 128)}, `wgnt: tunnel type "tttttttttttttttttttt" is longer than 127 UTF-16 code units`},
		{"bad GUID", "wgkit-bad", &Options{GUID: "not-a-guid"}, `wgnt: create adapter "wgkit-bad": bad GUID "not-a-guid": `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Create(tc.adapter, tc.opts)
			if err == nil {
				d.Close()
				t.Fatal("no error")
			}
			if got := err.Error(); len(got) < len(tc.want) || got[:len(tc.want)] != tc.want {
				t.Errorf("error %q, want it to start with %q", got, tc.want)
			}
		})
	}
}

// TestWithoutDLL checks what a host without wireguard.dll gets: no
// engine, and a Create that says why instead of the driver package's
// panic.
func TestWithoutDLL(t *testing.T) {
	if loadDLL() == nil {
		t.Skip("skipping: wireguard.dll is present; TestAdapter covers this host")
	}
	if Available() {
		t.Error("Available without the DLL")
	}
	_, err := Create("wgkit-nodll", nil)
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("Create = %v, want errors.ErrUnsupported", err)
	}
}

func newKey(t *testing.T) (priv, pub engine.Key) {
	t.Helper()
	rand.Read(priv[:])
	p, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil {
		t.Fatal(err)
	}
	return priv, engine.Key(p)
}

// TestAdapter makes an adapter, configures it, reads it back, changes
// it, and removes it.
func TestAdapter(t *testing.T) {
	requireDriver(t)
	if !Available() {
		t.Fatal("Available is false where the DLL loads and the process is elevated")
	}
	const guid = "{77676B69-7470-7465-7374-776E74303031}"
	d, err := Create("wgkit-test0", &Options{GUID: guid})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	luid := winipcfg.LUID(d.LUID())
	if g, err := luid.GUID(); err != nil || g.String() != guid {
		t.Errorf("adapter GUID %v (%v), want %s", g, err, guid)
	}

	priv, pub := newKey(t)
	_, peer1 := newKey(t)
	_, peer2 := newKey(t)
	psk := engine.Key{9}
	ka := 25 * time.Second
	port := 0
	cfg := &engine.Config{
		PrivateKey: &priv, ListenPort: &port, ReplacePeers: true,
		Peers: []engine.PeerConfig{{
			PublicKey: peer1, PresharedKey: &psk, PersistentKeepalive: &ka,
			Endpoint:   netip.MustParseAddrPort("127.0.0.1:9"),
			AllowedIPs: pfxs("10.77.0.2/32", "fd77::/64"),
		}, {
			PublicKey: peer2, AllowedIPs: pfxs("10.78.0.0/16"),
		}},
	}
	if err := d.Configure(cfg); err != nil {
		t.Fatal(err)
	}
	if err := d.Up(); err != nil {
		t.Fatal(err)
	}
	st, err := d.State()
	if err != nil {
		t.Fatal(err)
	}
	if st.ListenPort == 0 {
		t.Error("no listen port picked at up")
	}
	want := &engine.State{
		PrivateKey: priv, PublicKey: pub, ListenPort: st.ListenPort,
		Peers: []engine.PeerState{{
			PublicKey: peer1, PresharedKey: psk, PersistentKeepalive: ka,
			Endpoint:   netip.MustParseAddrPort("127.0.0.1:9"),
			AllowedIPs: pfxs("10.77.0.2/32", "fd77::/64"),
		}, {
			PublicKey: peer2, AllowedIPs: pfxs("10.78.0.0/16"),
		}},
	}
	// Counters may move (keepalives to the discard port); compare the rest.
	for i := range st.Peers {
		st.Peers[i].RxBytes, st.Peers[i].TxBytes = 0, 0
	}
	if diff := cmp.Diff(want, st, cmpNet); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}

	// Update-only leaves an unknown peer out; remove drops peer2; a
	// replace of allowed IPs on peer1.
	_, stranger := newKey(t)
	if err := d.Configure(&engine.Config{Peers: []engine.PeerConfig{
		{PublicKey: stranger, UpdateOnly: true, AllowedIPs: pfxs("10.79.0.0/16")},
		{PublicKey: peer2, Remove: true},
		{PublicKey: peer1, ReplaceAllowedIPs: true, AllowedIPs: pfxs("10.77.0.3/32")},
	}}); err != nil {
		t.Fatal(err)
	}
	st, err = d.State()
	if err != nil {
		t.Fatal(err)
	}
	var keys []engine.Key
	for _, p := range st.Peers {
		keys = append(keys, p.PublicKey)
	}
	if !slices.Equal(keys, []engine.Key{peer1}) {
		t.Errorf("peers after update: %x, want only peer1 %x", keys, peer1)
	} else if diff := cmp.Diff(pfxs("10.77.0.3/32"), st.Peers[0].AllowedIPs, cmpNet); diff != "" {
		t.Errorf("peer1's allowed IPs (-want +got):\n%s", diff)
	}

	mark := uint32(1)
	if err := d.Configure(&engine.Config{FwMark: &mark}); err == nil {
		t.Error("Configure took a firewall mark")
	}

	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := luid.Interface(); err == nil {
		t.Error("the adapter outlived Close")
	}
	if err := d.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
	if _, err := d.State(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("State after Close = %v, want net.ErrClosed", err)
	}
	if err := d.Configure(&engine.Config{}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Configure after Close = %v, want net.ErrClosed", err)
	}
	if err := d.Up(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Up after Close = %v, want net.ErrClosed", err)
	}
}
