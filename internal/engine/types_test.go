package engine

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestConfigValidate(t *testing.T) {
	port := func(p int) *int { return &p }
	ka := func(d time.Duration) *time.Duration { return &d }
	pub := Key{1}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // "" for valid
	}{
		{"zero", Config{}, ""},
		{"full", Config{ListenPort: port(51820), Peers: []PeerConfig{{
			PublicKey: pub, Endpoint: netip.MustParseAddrPort("127.0.0.1:9"), PersistentKeepalive: ka(25 * time.Second),
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		}}}, ""},
		{"port high", Config{ListenPort: port(65536)}, "engine: listen port 65536 out of range 0 to 65535"},
		{"port negative", Config{ListenPort: port(-1)}, "engine: listen port -1 out of range 0 to 65535"},
		{"zero key", Config{Peers: []PeerConfig{{}}}, "engine: peer 0: zero public key"},
		{"removed zero key", Config{Peers: []PeerConfig{{Remove: true}}}, "engine: peer 0: zero public key"},
		{"removed with bad fields", Config{Peers: []PeerConfig{{PublicKey: pub, Remove: true, PersistentKeepalive: ka(-1)}}}, ""},
		{"endpoint port 0", Config{Peers: []PeerConfig{{PublicKey: pub, Endpoint: netip.MustParseAddrPort("127.0.0.1:0")}}},
			"engine: peer 0: endpoint 127.0.0.1:0: port 0"},
		{"keepalive long", Config{Peers: []PeerConfig{{PublicKey: pub, PersistentKeepalive: ka(MaxKeepalive + time.Second)}}},
			"engine: peer 0: persistent keepalive 18h12m16s out of range 0 to 18h12m15s"},
		{"bad prefix", Config{Peers: []PeerConfig{{PublicKey: pub, AllowedIPs: []netip.Prefix{{}}}}},
			"engine: peer 0: invalid allowed IP prefix invalid Prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ""
			if err := tc.cfg.Validate(); err != nil {
				got = err.Error()
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Validate (-want +got):\n%s", diff)
			}
		})
	}
}
