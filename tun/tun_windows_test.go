//go:build windows

package tun

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/wgkit/wgkit/internal/wgnt"
	"github.com/wgkit/wgkit/wg"
)

func windowsConfig(t *testing.T) *wg.Config {
	t.Helper()
	k, err := wg.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	peer, err := wg.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return &wg.Config{
		Interface: wg.Interface{PrivateKey: k, Addresses: []netip.Prefix{netip.MustParsePrefix("10.77.0.1/24")}},
		Peers:     []wg.Peer{{PublicKey: peer.PublicKey(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.78.0.0/16")}}},
	}
}

func TestBadGUID(t *testing.T) {
	_, err := Open(context.Background(), windowsConfig(t), &Options{GUID: "not-a-guid"})
	if err == nil || !strings.Contains(err.Error(), "guid") {
		t.Errorf("Open with a bad GUID = %v, want an error about the GUID", err)
	}
}

// TestOpenWintun creates a real adapter: it needs Administrator rights and
// wintun.dll next to the test binary, so it runs only when asked.
func TestOpenWintun(t *testing.T) {
	if os.Getenv("WGKIT_TEST_WINTUN") == "" {
		t.Skip("skipping: set WGKIT_TEST_WINTUN=1 to create a Wintun adapter (needs Administrator and wintun.dll)")
	}
	ifc, err := Open(context.Background(), windowsConfig(t), &Options{Name: "wgkit-test", GUID: "{E5B3C7B4-5B7C-4B36-9D0B-5F5AF1C0B7A1}", Engine: EngineUserspace})
	if err != nil {
		t.Fatal(err)
	}
	if ifc.Name() != "wgkit-test" || ifc.Device() == nil || ifc.Engine() != EngineUserspace {
		t.Errorf("Name() = %q, Device() = %v, Engine() = %v", ifc.Name(), ifc.Device(), ifc.Engine())
	}
	if err := ifc.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := ifc.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
}

// TestEngineKernelWithoutDriver checks that EngineKernel fails with an
// error that says what is missing where WireGuardNT is not available
// (no adapter is created then).
func TestEngineKernelWithoutDriver(t *testing.T) {
	if wgnt.Available() {
		t.Skip("skipping: WireGuardNT is available here; TestOpenWireGuardNT covers it")
	}
	_, err := Open(context.Background(), windowsConfig(t), &Options{Name: "wgkit-nt-test", Engine: EngineKernel})
	if !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), "kernel engine: WireGuardNT not available") {
		t.Errorf("Open with EngineKernel = %v, want an error wrapping errors.ErrUnsupported that names WireGuardNT", err)
	}
}

// TestOpenWireGuardNT creates a real WireGuardNT adapter: it needs
// Administrator rights and wireguard.dll next to the test binary, so it
// runs only when asked.
func TestOpenWireGuardNT(t *testing.T) {
	if os.Getenv("WGKIT_TEST_WGNT") == "" {
		t.Skip("skipping: set WGKIT_TEST_WGNT=1 to create a WireGuardNT adapter (needs Administrator and wireguard.dll)")
	}
	cfg := windowsConfig(t)
	ifc, err := Open(context.Background(), cfg, &Options{Name: "wgkit-nt-test"})
	if err != nil {
		t.Fatal(err)
	}
	if ifc.Engine() != EngineKernel {
		t.Errorf("Engine() = %v with wireguard.dll present, want kernel", ifc.Engine())
	}
	ps := ifc.Device().Peers()
	if len(ps) != 1 || ps[0].PublicKey != cfg.Peers[0].PublicKey {
		t.Errorf("Peers() = %+v, want the config's peer", ps)
	}
	if err := ifc.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := ifc.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
}
