package netstack

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/wgkit/wgkit/internal/memnet"
	"github.com/wgkit/wgkit/wg"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
)

// TestIPv4MappedAddress checks that an IPv4-mapped interface address is
// given to the stack as the IPv4 address with its prefix in IPv4 bits.
func TestIPv4MappedAddress(t *testing.T) {
	t.Run("mapped /120", func(t *testing.T) {
		a, _ := openPair(t, func(a, _ *wg.Config) {
			a.Interface.Addresses = []netip.Prefix{netip.MustParsePrefix("::ffff:10.123.0.1/120")}
		})
		var got []string
		for _, pa := range a.stack.AllAddresses()[nicID] {
			if pa.Protocol == ipv4.ProtocolNumber && pa.AddressWithPrefix.Address.String() == "10.123.0.1" {
				got = append(got, pa.AddressWithPrefix.String())
			}
		}
		if diff := cmp.Diff([]string{"10.123.0.1/24"}, got); diff != "" {
			t.Errorf("stack addresses (-want +got):\n%s", diff)
		}
	})
	t.Run("mapped /64", func(t *testing.T) {
		k, err := wg.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		cfg := &wg.Config{Interface: wg.Interface{PrivateKey: k, Addresses: []netip.Prefix{netip.MustParsePrefix("::ffff:10.123.0.1/64")}}}
		sw := memnet.NewSwitch(nil)
		defer sw.Close()
		ep, err := sw.NewAddr()
		if err != nil {
			t.Fatal(err)
		}
		n, err := Open(context.Background(), cfg, &Options{Bind: sw.NewBind(1, ep)})
		if err == nil {
			n.Close()
			t.Fatal("Open with an IPv4-mapped /64 succeeded")
		}
		if want := "netstack: open: address ::ffff:10.123.0.1/64: "; !strings.HasPrefix(err.Error(), want) {
			t.Errorf("Open = %v, want an error starting %q", err, want)
		}
	})
}
