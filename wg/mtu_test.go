package wg

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// mtuAgreement is whether each of the config paths accepted an MTU.
type mtuAgreement struct {
	CheckMTU, Validate, MarshalText, ParseConfig bool
}

// TestMTURuleAgrees checks that CheckMTU, Validate, MarshalText and
// ParseConfig accept and refuse the same MTUs at every bound, with and
// without an IPv6 address.
func TestMTURuleAgrees(t *testing.T) {
	v4 := pfxs("10.0.0.2/24")
	v6 := pfxs("10.0.0.2/24", "fd00::2/64")
	tests := []struct {
		name  string
		mtu   int
		addrs []netip.Prefix
		ok    bool
	}{
		{"zero is the default", 0, v6, true},
		{"575 IPv4", 575, v4, false},
		{"576 IPv4", 576, v4, true},
		{"576 no address", 576, nil, true},
		{"1279 IPv4", 1279, v4, true},
		{"1279 IPv6", 1279, v6, false},
		{"1280 IPv6", 1280, v6, true},
		{"575 IPv6", 575, v6, false},
		{"65535 IPv4", 65535, v4, true},
		{"65535 IPv6", 65535, v6, true},
		{"65536 IPv4", 65536, v4, false},
		{"65536 IPv6", 65536, v6, false},
		{"negative", -1, v4, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := mtuAgreement{tt.ok, tt.ok, tt.ok, tt.ok}
			cfg := &Config{Interface: Interface{PrivateKey: mustParseKey(t, privA), Addresses: tt.addrs, MTU: tt.mtu}}
			var got mtuAgreement
			cerr := CheckMTU(tt.mtu, tt.addrs)
			got.CheckMTU = cerr == nil
			if cerr != nil && (!errors.Is(cerr, ErrInvalidConfig) || !strings.HasPrefix(cerr.Error(), "wg: invalid config: MTU ")) {
				t.Errorf("CheckMTU error %q: want \"wg: invalid config: MTU ...\" wrapping ErrInvalidConfig", cerr)
			}
			got.Validate = cfg.Validate() == nil
			_, merr := cfg.MarshalText()
			got.MarshalText = merr == nil
			// MTU before Address: the IPv6 bound must hold whatever
			// the order of the lines. A file leaves out MTU for the
			// default ("MTU = 0" is refused, as ip(8) refuses it).
			text := fmt.Sprintf("[Interface]\nPrivateKey = %s\n", privA)
			if tt.mtu != 0 {
				text += fmt.Sprintf("MTU = %d\n", tt.mtu)
			}
			for _, a := range tt.addrs {
				text += "Address = " + a.String() + "\n"
			}
			_, perr := ParseConfig(strings.NewReader(text))
			got.ParseConfig = perr == nil
			if tt.mtu < 0 {
				got.ParseConfig = false // "-1" is no number to the parser: refused, but not by the rule
				if perr == nil {
					t.Errorf("ParseConfig accepted MTU %d", tt.mtu)
				}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("MTU %d, addresses %v: accepted (-want +got):\n%s\nCheckMTU: %v\nParseConfig: %v", tt.mtu, tt.addrs, diff, cerr, perr)
			}
			var ce *ConfigError
			if perr != nil && (!errors.As(perr, &ce) || ce.Line != 3) {
				t.Errorf("ParseConfig error %v: want a *ConfigError for line 3, the MTU line", perr)
			}
		})
	}
}

func TestEffectiveMTU(t *testing.T) {
	for _, tt := range []struct {
		name string
		mtu  int
		want int
	}{
		{"zero means DefaultMTU", 0, DefaultMTU},
		{"set", 1380, 1380},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := &Interface{MTU: tt.mtu}
			if diff := cmp.Diff(tt.want, in.EffectiveMTU()); diff != "" {
				t.Errorf("EffectiveMTU (-want +got):\n%s", diff)
			}
		})
	}
}
