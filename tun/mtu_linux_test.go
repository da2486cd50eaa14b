//go:build linux

package tun

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/wgkit/wgkit/wg"
)

// TestOpenMTUBounds checks that Open accepts exactly the MTUs wg.CheckMTU
// accepts, at every bound, and that the interface runs at the MTU asked
// for. The refused ones fail before anything on the host changes, so they
// need no namespace.
func TestOpenMTUBounds(t *testing.T) {
	tests := []struct {
		name string
		mtu  int
		v6   bool
	}{
		{"575 IPv4", 575, false},
		{"576 IPv4", 576, false},
		{"1279 IPv6", 1279, true},
		{"1280 IPv6", 1280, true},
		{"65535 IPv6", 65535, true},
		{"65536 IPv4", 65536, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _ := pairConfigs(t)
			if !tt.v6 {
				cfg.Interface.Addresses = []netip.Prefix{innerA}
			}
			cfg.Interface.MTU = tt.mtu
			if rule := wg.CheckMTU(tt.mtu, cfg.Interface.Addresses); rule != nil {
				_, err := Open(context.Background(), cfg, &Options{Name: ifName(t)})
				if !errors.Is(err, wg.ErrInvalidConfig) || !strings.Contains(err.Error(), fmt.Sprintf("MTU %d ", tt.mtu)) {
					t.Errorf("Open = %v, want the error of wg.CheckMTU: %v", err, rule)
				}
				return
			}
			requireRoot(t)
			h := mustOpen(t, newNetns(t), cfg, &helperOptions{Name: ifName(t)})
			defer h.close()
			var got int
			h.must("mtu", &got)
			if diff := cmp.Diff(tt.mtu, got); diff != "" {
				t.Errorf("MTU() (-want +got):\n%s", diff)
			}
		})
	}
}

// TestInterfaceMTUAndAddrs checks that MTU and Addrs report the
// interface as the kernel has it, including changes made with ip(8).
func TestInterfaceMTUAndAddrs(t *testing.T) {
	requireRoot(t)
	ns := newNetns(t)
	cfg, _ := pairConfigs(t)
	cfg.Interface.MTU = 1380
	name := ifName(t)
	h := mustOpen(t, ns, cfg, &helperOptions{Name: name})
	defer h.close()

	var mtu int
	h.must("mtu", &mtu)
	if diff := cmp.Diff(1380, mtu); diff != "" {
		t.Errorf("MTU() after Open (-want +got):\n%s", diff)
	}
	var addrs []netip.Addr
	h.must("addrs", &addrs)
	sortAddrs := cmpopts.SortSlices(func(a, b netip.Addr) bool { return a.Less(b) })
	want := []netip.Addr{innerA.Addr(), inner6A.Addr()}
	if diff := cmp.Diff(want, addrs, sortAddrs, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("Addrs() after Open (-want +got):\n%s", diff)
	}

	run(t, "ip", "-n", ns, "link", "set", "dev", name, "mtu", "1300")
	run(t, "ip", "-n", ns, "address", "add", "10.77.9.9/32", "dev", name)
	h.must("mtu", &mtu)
	if diff := cmp.Diff(1300, mtu); diff != "" {
		t.Errorf("MTU() after ip link set mtu 1300 (-want +got):\n%s", diff)
	}
	h.must("addrs", &addrs)
	want = append(want, netip.MustParseAddr("10.77.9.9"))
	if diff := cmp.Diff(want, addrs, sortAddrs, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("Addrs() after ip address add (-want +got):\n%s", diff)
	}
}
