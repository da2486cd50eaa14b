package wgnt

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/wgkit/wgkit/internal/engine"
)

// cmpNet compares the netip values.
var cmpNet = cmpopts.EquateComparable(netip.Addr{}, netip.AddrPort{}, netip.Prefix{})

func ptr[T any](v T) *T { return &v }

// errString is err's message, "" for nil.
func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func pfxs(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func aips(ss ...string) []rawAllowedIP {
	var out []rawAllowedIP
	for _, p := range pfxs(ss...) {
		out = append(out, rawAllowedIP{Prefix: p})
	}
	return out
}

func TestCheckName(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string // want "" for valid
	}{
		{"plain", "wgkit0", ""},
		{"spaces and unicode", "Tunnel ü 1", ""},
		{"longest", strings.Repeat("a", 127), ""},
		{"empty", "", "wgnt: empty adapter name"},
		{"long", strings.Repeat("a", 128), `wgnt: adapter name "aaaaaaaaaaaaaaaaaaaa" is longer than 127 UTF-16 code units`},
		// 64 runes outside the BMP are 128 UTF-16 code units.
		{"surrogates", strings.Repeat("😀", 64), `wgnt: adapter name "😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀" is longer than 127 UTF-16 code units`},
		{"NUL", "a\x00b", `wgnt: adapter name "a\x00b" contains NUL`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := errString(checkName(tc.in))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("checkName (-want +got):\n%s", diff)
			}
		})
	}
	// The tunnel type follows the same rule, under its own name.
	if got, want := errString(checkDriverString("tunnel type", "")), "wgnt: empty tunnel type"; got != want {
		t.Errorf("empty tunnel type: %q, want %q", got, want)
	}
}

// TestFromConfig checks the translation to the driver's flags: a nil
// field sets no Has flag, so the driver keeps the setting.
func TestFromConfig(t *testing.T) {
	priv, psk := engine.Key{7}, engine.Key{9}
	for _, tc := range []struct {
		name    string
		cfg     engine.Config
		want    *rawInterface
		wantErr string
	}{
		{"zero changes nothing", engine.Config{}, &rawInterface{}, ""},
		{"interface", engine.Config{PrivateKey: &priv, ListenPort: ptr(51820), FwMark: ptr(uint32(0)), ReplacePeers: true},
			&rawInterface{Flags: ifaceHasPrivateKey | ifaceHasListenPort | ifaceReplacePeers, PrivateKey: priv, ListenPort: 51820}, ""},
		{"zero key and port are set, not skipped", engine.Config{PrivateKey: &engine.Key{}, ListenPort: ptr(0)},
			&rawInterface{Flags: ifaceHasPrivateKey | ifaceHasListenPort}, ""},
		{"fwmark", engine.Config{FwMark: ptr(uint32(0x10))}, nil, "firewall mark 0x10: WireGuardNT has no firewall marks"},
		{"full peer", engine.Config{Peers: []engine.PeerConfig{{
			PublicKey: engine.Key{1}, PresharedKey: &psk, PersistentKeepalive: ptr(25*time.Second + 900*time.Millisecond),
			Endpoint:          netip.MustParseAddrPort("[::ffff:127.0.0.1]:9"),
			ReplaceAllowedIPs: true,
			AllowedIPs:        pfxs("10.1.2.3/24", "fd00::1/64", "::ffff:10.0.0.0/104"),
		}}}, &rawInterface{Peers: []rawPeer{{
			Flags:     peerHasPublicKey | peerHasPresharedKey | peerHasPersistentKeepalive | peerHasEndpoint | peerReplaceAllowedIPs,
			PublicKey: engine.Key{1}, PresharedKey: psk, Keepalive: 25,
			Endpoint:   netip.MustParseAddrPort("127.0.0.1:9"),
			AllowedIPs: aips("10.1.2.0/24", "fd00::/64", "::ffff:10.0.0.0/104"),
		}}}, ""},
		{"peer keeps what is nil", engine.Config{Peers: []engine.PeerConfig{{PublicKey: engine.Key{1}}}},
			&rawInterface{Peers: []rawPeer{{Flags: peerHasPublicKey, PublicKey: engine.Key{1}}}}, ""},
		{"remove sends only the key", engine.Config{Peers: []engine.PeerConfig{{
			PublicKey: engine.Key{2}, Remove: true, UpdateOnly: true, PresharedKey: &psk, AllowedIPs: pfxs("10.0.0.0/8"),
		}}}, &rawInterface{Peers: []rawPeer{{Flags: peerHasPublicKey | peerRemove, PublicKey: engine.Key{2}}}}, ""},
		{"update only", engine.Config{Peers: []engine.PeerConfig{{PublicKey: engine.Key{3}, UpdateOnly: true, PersistentKeepalive: ptr(time.Duration(0))}}},
			&rawInterface{Peers: []rawPeer{{Flags: peerHasPublicKey | peerUpdateOnly | peerHasPersistentKeepalive, PublicKey: engine.Key{3}}}}, ""},
		{"IPv6 endpoint with scope", engine.Config{Peers: []engine.PeerConfig{{PublicKey: engine.Key{4}, Endpoint: netip.MustParseAddrPort("[fe80::1%12]:51820")}}},
			&rawInterface{Peers: []rawPeer{{Flags: peerHasPublicKey | peerHasEndpoint, PublicKey: engine.Key{4}, Endpoint: netip.MustParseAddrPort("[fe80::1%12]:51820")}}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); err != nil {
				t.Fatalf("the test's config is invalid: %v", err)
			}
			got, err := fromConfig(&tc.cfg)
			if diff := cmp.Diff(tc.wantErr, errString(err)); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.want, got, cmpNet); diff != "" {
				t.Errorf("fromConfig (-want +got):\n%s", diff)
			}
		})
	}
}

// TestMarshalLayout checks the bytes against the offsets of WireGuardNT's
// wireguard.h written out here as literals (not the package's constants),
// the way the driver reads them on a little-endian machine.
func TestMarshalLayout(t *testing.T) {
	r := &rawInterface{
		Flags: ifaceHasPrivateKey | ifaceHasListenPort, ListenPort: 0x1234, PrivateKey: engine.Key{0xaa},
		Peers: []rawPeer{{
			Flags: peerHasPublicKey | peerHasEndpoint, PublicKey: engine.Key{0xbb}, PresharedKey: engine.Key{0xcc}, Keepalive: 25,
			Endpoint:   netip.MustParseAddrPort("[fd00::2%7]:51820"),
			AllowedIPs: aips("10.9.0.0/16", "fd00::/8"),
		}, {
			Flags: peerHasPublicKey | peerRemove, PublicKey: engine.Key{0xdd},
			Endpoint: netip.MustParseAddrPort("192.0.2.1:443"),
		}},
	}
	want := make([]byte, 80+136+2*24+136)
	le := binary.LittleEndian
	le.PutUint32(want[0:], 0b110) // HAS_PRIVATE_KEY | HAS_LISTEN_PORT
	le.PutUint16(want[4:], 0x1234)
	want[6] = 0xaa                         // PrivateKey
	want[72] = 2                           // PeersCount
	p := want[80:]                         // first WIREGUARD_PEER
	p[0] = 0b1001                          // HAS_PUBLIC_KEY | HAS_ENDPOINT
	p[8] = 0xbb                            // PublicKey
	p[40] = 0xcc                           // PresharedKey
	p[72] = 25                             // PersistentKeepalive
	p[76] = 23                             // SOCKADDR_IN6: AF_INET6 (23 on Windows)
	p[78], p[79] = 0xca, 0x6c              // sin6_port 51820, network order
	p[84], p[85], p[99] = 0xfd, 0x00, 0x02 // sin6_addr fd00::2
	p[100] = 7                             // sin6_scope_id
	p[128] = 2                             // AllowedIPsCount
	a := want[80+136:]
	copy(a[0:], []byte{10, 9}) // 10.9.0.0
	a[16] = 2                  // AF_INET
	a[18] = 16                 // Cidr
	a = a[24:]
	a[0] = 0xfd // fd00::
	a[16] = 23  // AF_INET6
	a[18] = 8
	p = want[80+136+48:] // second peer
	p[0] = 0b1000001     // HAS_PUBLIC_KEY | REMOVE
	p[8] = 0xdd
	p[76] = 2 // SOCKADDR_IN: AF_INET
	p[78], p[79] = 0x01, 0xbb
	copy(p[80:], []byte{192, 0, 2, 1})

	got, err := r.marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("marshal:\n got %x\nwant %x", got, want)
	}
	back, err := parse(got)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(r, back, cmpNet); diff != "" {
		t.Errorf("parse(marshal(r)) (-want +got):\n%s", diff)
	}
}

// TestRoundTrip takes configs through the driver's form and reads them
// back as the driver reports an adapter it applied them to, from empty:
// the Has flags of a set request are those of a get reply, plus the
// counters and handshake time the driver fills in.
func TestRoundTrip(t *testing.T) {
	priv, psk := engine.Key{7}, engine.Key{9}
	hs := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		cfg   engine.Config
		reply func(r *rawInterface) // how the driver's reply differs, if at all
		want  *engine.State
	}{
		{"empty", engine.Config{}, nil, &engine.State{}},
		{"full", engine.Config{
			PrivateKey: &priv, ListenPort: ptr(51820), ReplacePeers: true,
			Peers: []engine.PeerConfig{{
				PublicKey: engine.Key{1}, PresharedKey: &psk, PersistentKeepalive: ptr(25 * time.Second),
				Endpoint:   netip.MustParseAddrPort("[::ffff:127.0.0.1]:9"),
				AllowedIPs: pfxs("10.1.2.3/24", "fd00::1/64"),
			}, {
				PublicKey: engine.Key{2}, Endpoint: netip.MustParseAddrPort("[::1]:51821"),
				AllowedIPs: pfxs("0.0.0.0/0", "::/0"),
			}},
		}, nil, &engine.State{
			PrivateKey: priv, ListenPort: 51820,
			Peers: []engine.PeerState{{
				PublicKey: engine.Key{1}, PresharedKey: psk, PersistentKeepalive: 25 * time.Second,
				Endpoint:   netip.MustParseAddrPort("127.0.0.1:9"),
				AllowedIPs: pfxs("10.1.2.0/24", "fd00::/64"),
				RxBytes:    10, TxBytes: 20, LastHandshake: hs,
			}, {
				PublicKey: engine.Key{2}, Endpoint: netip.MustParseAddrPort("[::1]:51821"),
				AllowedIPs: pfxs("0.0.0.0/0", "::/0"),
				RxBytes:    10, TxBytes: 20, LastHandshake: hs,
			}},
		}},
		{"IPv4-mapped endpoint reads back as IPv4", engine.Config{Peers: []engine.PeerConfig{{PublicKey: engine.Key{4}}}},
			func(r *rawInterface) {
				r.Peers[0].Flags |= peerHasEndpoint
				r.Peers[0].Endpoint = netip.MustParseAddrPort("[::ffff:127.0.0.1]:7")
			},
			&engine.State{Peers: []engine.PeerState{{PublicKey: engine.Key{4}, Endpoint: netip.MustParseAddrPort("127.0.0.1:7"), RxBytes: 10, TxBytes: 20, LastHandshake: hs}}}},
		{"peer without endpoint or keepalive", engine.Config{Peers: []engine.PeerConfig{{PublicKey: engine.Key{3}}}}, nil,
			&engine.State{Peers: []engine.PeerState{{PublicKey: engine.Key{3}, RxBytes: 10, TxBytes: 20, LastHandshake: hs}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := fromConfig(&tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if tc.reply != nil {
				tc.reply(r)
			}
			b, err := r.marshal()
			if err != nil {
				t.Fatal(err)
			}
			// What the driver adds in its reply.
			for off, i := ifaceSize, 0; i < len(r.Peers); i++ {
				binary.LittleEndian.PutUint64(b[off+104:], 20)                 // TxBytes
				binary.LittleEndian.PutUint64(b[off+112:], 10)                 // RxBytes
				binary.LittleEndian.PutUint64(b[off+120:], 134116992000000000) // 2026-01-01 as a FILETIME
				off += peerSize + aipSize*len(r.Peers[i].AllowedIPs)
			}
			got, err := parse(b)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got.state(), cmpNet); diff != "" {
				t.Errorf("state (-want +got):\n%s", diff)
			}
		})
	}
}

func TestState(t *testing.T) {
	r := &rawInterface{
		Flags: ifaceHasPublicKey, PrivateKey: engine.Key{1}, PublicKey: engine.Key{2}, ListenPort: 9,
		Peers: []rawPeer{{Flags: peerHasPublicKey, PublicKey: engine.Key{3}, PresharedKey: engine.Key{4}, Keepalive: 5,
			Endpoint: netip.MustParseAddrPort("127.0.0.1:1")}},
	}
	// Without their Has flags, the private key, port, preshared key,
	// keepalive and endpoint are not reported; no handshake is the zero Time.
	want := &engine.State{PublicKey: engine.Key{2}, Peers: []engine.PeerState{{PublicKey: engine.Key{3}}}}
	if diff := cmp.Diff(want, r.state(), cmpNet); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}
}

func TestFromFileTime(t *testing.T) {
	for _, tc := range []struct {
		ft   uint64
		want time.Time
	}{
		{116444736000000000, time.Unix(0, 0)},
		{116444736000000001, time.Unix(0, 100)},
		{134116992000000000, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		{1, time.Date(1601, 1, 1, 0, 0, 0, 100, time.UTC)},
	} {
		if got := fromFileTime(tc.ft); !got.Equal(tc.want) {
			t.Errorf("fromFileTime(%d) = %v, want %v", tc.ft, got.UTC(), tc.want)
		}
	}
	fromFileTime(1<<64 - 1) // no panic
}

func TestParseErrors(t *testing.T) {
	one := &rawInterface{Peers: []rawPeer{{PublicKey: engine.Key{1}, AllowedIPs: aips("10.0.0.0/8")}}}
	good, err := one.marshal()
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(b []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		return b
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "driver configuration of 0 bytes ends within the interface"},
		{"short interface", good[:79], "driver configuration of 79 bytes ends within the interface"},
		{"short peer", good[:80+135], "driver configuration of 215 bytes ends within peer 0"},
		{"short allowed IPs", good[:len(good)-1], "driver configuration of 239 bytes ends within the allowed IPs of peer 0"},
		{"huge peer count", edit(func(b []byte) { binary.LittleEndian.PutUint32(b[72:], 1<<32-1) }),
			"driver configuration of 240 bytes ends within peer 1"},
		{"huge allowed IP count", edit(func(b []byte) { binary.LittleEndian.PutUint32(b[80+128:], 1<<32-1) }),
			"driver configuration of 240 bytes ends within the allowed IPs of peer 0"},
		{"bad family", edit(func(b []byte) { b[80+136+16] = 10 }),
			"driver configuration, peer 0, allowed IP 0: address family 10"},
		{"bad prefix length", edit(func(b []byte) { b[80+136+18] = 33 }),
			"driver configuration, peer 0, allowed IP 0: prefix length 33"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(tc.in)
			got := errString(err)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("parse error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMarshalErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    *rawInterface
		want string
	}{
		{"invalid prefix", &rawInterface{Peers: []rawPeer{{AllowedIPs: []rawAllowedIP{{}}}}}, "invalid allowed IP prefix invalid Prefix"},
		{"named zone", &rawInterface{Peers: []rawPeer{{Endpoint: netip.MustParseAddrPort("[fe80::1%eth0]:1")}}},
			`endpoint [fe80::1%eth0]:1: zone "eth0" is not an interface index`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.r.marshal()
			got := errString(err)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("marshal error (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzParse feeds parse arbitrary driver replies: it must not panic or
// read past its input, and what it accepts must survive marshal and parse
// unchanged.
func FuzzParse(f *testing.F) {
	r, _ := fromConfig(&engine.Config{PrivateKey: &engine.Key{1}, ListenPort: ptr(1), Peers: []engine.PeerConfig{
		{PublicKey: engine.Key{2}, Endpoint: netip.MustParseAddrPort("[fe80::1%3]:4"), AllowedIPs: pfxs("10.0.0.0/8", "::/0")},
		{PublicKey: engine.Key{5}, Endpoint: netip.MustParseAddrPort("127.0.0.1:6")},
	}})
	b, _ := r.marshal()
	f.Add(b)
	f.Add(b[:100])
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parse(b)
		if err != nil {
			return
		}
		if got := r.size(); got > uint64(len(b)) {
			t.Fatalf("parsed %d bytes' worth from %d", got, len(b))
		}
		b2, err := r.marshal()
		if err != nil {
			t.Fatalf("marshal of a parsed configuration: %v", err)
		}
		r2, err := parse(b2)
		if err != nil {
			t.Fatalf("parse of a marshalled configuration: %v", err)
		}
		if diff := cmp.Diff(r, r2, cmpNet); diff != "" {
			t.Fatalf("parse, marshal, parse (-first +second):\n%s", diff)
		}
		r.state() // no panic
	})
}
