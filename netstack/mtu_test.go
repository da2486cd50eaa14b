package netstack

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/wgkit/wgkit/internal/memnet"
	"github.com/wgkit/wgkit/wg"
)

// TestOpenMTUBounds checks that Open accepts exactly the MTUs wg.CheckMTU
// accepts, at every bound, and runs the tunnel at the MTU asked for.
func TestOpenMTUBounds(t *testing.T) {
	tests := []struct {
		name string
		mtu  int
		v6   bool
	}{
		{"0", 0, true},
		{"575 IPv4", 575, false},
		{"576 IPv4", 576, false},
		{"1279 IPv4", 1279, false},
		{"1279 IPv6", 1279, true},
		{"1280 IPv6", 1280, true},
		{"65535 IPv6", 65535, true},
		{"65536 IPv4", 65536, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _ := pairConfigs(t, "", "")
			if !tt.v6 {
				cfg.Interface.Addresses = []netip.Prefix{netip.PrefixFrom(addrA4, 32)}
			}
			cfg.Interface.MTU = tt.mtu
			sw := memnet.NewSwitch(nil)
			defer sw.Close()
			ep, err := sw.NewAddr()
			if err != nil {
				t.Fatal(err)
			}
			n, err := Open(testContext(t, 10*time.Second), cfg, &Options{Bind: sw.NewBind(1, ep)})
			rule := wg.CheckMTU(tt.mtu, cfg.Interface.Addresses)
			if diff := cmp.Diff(rule == nil, err == nil); diff != "" {
				t.Fatalf("Open accepted MTU %d (-wg.CheckMTU +Open):\n%s\nCheckMTU: %v\nOpen: %v", tt.mtu, diff, rule, err)
			}
			if err != nil {
				if !errors.Is(err, wg.ErrInvalidConfig) {
					t.Errorf("Open error %v does not wrap wg.ErrInvalidConfig", err)
				}
				return
			}
			defer n.Close()
			if diff := cmp.Diff(cfg.Interface.EffectiveMTU(), n.MTU()); diff != "" {
				t.Errorf("MTU() (-want +got):\n%s", diff)
			}
		})
	}
}
