package wg

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// configOpts compares Configs: netip values by ==, nil and empty slices alike.
var configOpts = cmp.Options{
	cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}),
	cmpopts.EquateEmpty(),
}

// Keys used in the test configurations.
const (
	privA = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
	pubB  = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
	pubC  = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="
	pskB  = "/UwcSPg38hW/D9Y3tcS1FOV0K1wuURMbS0sesJEP5ak="
	zero  = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
)

func mustParseKey(t testing.TB, s string) Key {
	t.Helper()
	k, err := ParseKey(s)
	if err != nil {
		t.Fatalf("ParseKey(%q): %v", s, err)
	}
	return k
}

func pfxs(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

const fullConfig = `# A full wg-quick file.
[Interface]
PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
ListenPort = 51820
FwMark = 0x1234
Address = 10.0.0.2/24, fd00::2/64
DNS = 10.0.0.1, fd00::1, example.com, corp.example
MTU = 1380
Table = 1234
SaveConfig = true
PreUp = echo pre-up %i
PostUp = iptables -A FORWARD -i %i -j ACCEPT # keeps the comment
PreDown = echo pre-down
PostDown = iptables -D FORWARD -i %i -j ACCEPT

[Peer]
PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
PresharedKey = /UwcSPg38hW/D9Y3tcS1FOV0K1wuURMbS0sesJEP5ak=
AllowedIPs = 0.0.0.0/0, ::/0
Endpoint = vpn.example.com:51820
PersistentKeepalive = 25

[Peer]
PublicKey = TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=
AllowedIPs = 10.0.1.0/24
Endpoint = [2001:db8::1]:4500
`

func fullConfigWant(t testing.TB) *Config {
	return &Config{
		Interface: Interface{
			PrivateKey: mustParseKey(t, privA),
			ListenPort: 51820,
			FwMark:     0x1234,
			Addresses:  pfxs("10.0.0.2/24", "fd00::2/64"),
			DNS:        addrs("10.0.0.1", "fd00::1"),
			DNSSearch:  []string{"example.com", "corp.example"},
			MTU:        1380,
			Table:      "1234",
			SaveConfig: true,
			PreUp:      []string{"echo pre-up %i"},
			PostUp:     []string{"iptables -A FORWARD -i %i -j ACCEPT # keeps the comment"},
			PreDown:    []string{"echo pre-down"},
			PostDown:   []string{"iptables -D FORWARD -i %i -j ACCEPT"},
		},
		Peers: []Peer{
			{
				PublicKey:           mustParseKey(t, pubB),
				PresharedKey:        mustParseKey(t, pskB),
				AllowedIPs:          pfxs("0.0.0.0/0", "::/0"),
				Endpoint:            "vpn.example.com:51820",
				PersistentKeepalive: 25 * time.Second,
			},
			{
				PublicKey:  mustParseKey(t, pubC),
				AllowedIPs: pfxs("10.0.1.0/24"),
				Endpoint:   "[2001:db8::1]:4500",
			},
		},
	}
}

// validConfigs are inputs ParseConfig accepts, with the Config it must return.
func validConfigs(t testing.TB) []struct {
	name string
	in   string
	want *Config
} {
	a, b, c, psk := mustParseKey(t, privA), mustParseKey(t, pubB), mustParseKey(t, pubC), mustParseKey(t, pskB)
	return []struct {
		name string
		in   string
		want *Config
	}{
		{name: "full", in: fullConfig, want: fullConfigWant(t)},
		{
			name: "CRLF",
			in:   strings.ReplaceAll(fullConfig, "\n", "\r\n"),
			want: fullConfigWant(t),
		},
		{name: "empty file", in: "", want: &Config{}},
		{name: "comments and blank lines only", in: "# nothing\n\n   \n\t# more\n", want: &Config{}},
		{name: "empty interface", in: "[Interface]\n", want: &Config{}},
		{
			name: "no trailing newline",
			in:   "[Interface]\nPrivateKey = " + privA,
			want: &Config{Interface: Interface{PrivateKey: a}},
		},
		{
			name: "case-insensitive keys and sections",
			in: "[INTERFACE]\nprivatekey = " + privA + "\nLISTENPORT = 1\nfWmArK = OFF\naddress = 10.0.0.1/8\nsaveconfig = TRUE\npostup = X\n" +
				"[peer]\npublickey = " + pubB + "\nallowedips = 10.0.0.0/8\npersistentkeepalive = Off\nENDPOINT = Host.Example:1\n",
			want: &Config{
				Interface: Interface{PrivateKey: a, ListenPort: 1, Addresses: pfxs("10.0.0.1/8"), SaveConfig: true, PostUp: []string{"X"}},
				Peers:     []Peer{{PublicKey: b, AllowedIPs: pfxs("10.0.0.0/8"), Endpoint: "Host.Example:1"}},
			},
		},
		{
			name: "comments everywhere",
			in: "# head\n[Interface] # the interface\nPrivateKey = " + privA + " # secret\n#Address = 10.9.9.9/32\n" +
				"Address = 10.0.0.1/32 # , 10.0.0.2/32\nDNS = 1.1.1.1#9.9.9.9\n\n[Peer]#p\n  # indented comment\nPublicKey=" + pubB + "#x\n",
			want: &Config{
				Interface: Interface{PrivateKey: a, Addresses: pfxs("10.0.0.1/32"), DNS: addrs("1.1.1.1")},
				Peers:     []Peer{{PublicKey: b}},
			},
		},
		{
			name: "hook commands keep '#' and '='",
			in: "[Interface]\nPreUp = echo '#1' # trailing\nPostUp=a=b #c\nPreDown =   sh -c 'x=1; echo $x'   \nPostDown = echo done #\n" +
				"PostDown = echo again\n",
			want: &Config{Interface: Interface{
				PreUp:    []string{"echo '#1' # trailing"},
				PostUp:   []string{"a=b #c"},
				PreDown:  []string{"sh -c 'x=1; echo $x'"},
				PostDown: []string{"echo done #", "echo again"},
			}},
		},
		{
			name: "empty wg-quick values",
			in:   "[Interface]\nAddress =\nDNS =\nMTU =\nTable =\nPostUp =\n",
			want: &Config{Interface: Interface{PostUp: []string{""}}},
		},
		{
			name: "repeated lines append",
			in: "[Interface]\nAddress = 10.0.0.1/24\nAddress = 10.0.0.2/24,fd00::1/64\nDNS = 1.1.1.1\nDNS = 8.8.8.8 9.9.9.9, search.example\nDNS=other.example\n" +
				"[Peer]\nPublicKey = " + pubB + "\nAllowedIPs = 10.0.0.0/24\nAllowedIPs = 10.1.0.0/24, 10.2.0.0/24\n",
			want: &Config{
				Interface: Interface{
					Addresses: pfxs("10.0.0.1/24", "10.0.0.2/24", "fd00::1/64"),
					DNS:       addrs("1.1.1.1", "8.8.8.8", "9.9.9.9"),
					DNSSearch: []string{"search.example", "other.example"},
				},
				Peers: []Peer{{PublicKey: b, AllowedIPs: pfxs("10.0.0.0/24", "10.1.0.0/24", "10.2.0.0/24")}},
			},
		},
		{
			name: "repeated single values override",
			in: "[Interface]\nListenPort = 1\nListenPort = 2\nMTU = 1400\nMTU = 1300\nTable = off\nTable = main\nSaveConfig = true\nSaveConfig = false\n" +
				"[Peer]\nPublicKey = " + pubC + "\nPublicKey = " + pubB + "\nPersistentKeepalive = 5\nPersistentKeepalive = off\nEndpoint = a:1\nEndpoint = b:2\n",
			want: &Config{
				Interface: Interface{ListenPort: 2, MTU: 1300, Table: "main"},
				Peers:     []Peer{{PublicKey: b, Endpoint: "b:2"}},
			},
		},
		{
			name: "DNS search domains",
			in:   "[Interface]\nDNS = 10.0.0.1, fe80::1%eth0, ~., lan, my-corp_1.example.\n",
			want: &Config{Interface: Interface{
				DNS:       addrs("10.0.0.1", "fe80::1%eth0"),
				DNSSearch: []string{"~.", "lan", "my-corp_1.example."},
			}},
		},
		{
			name: "hosts without prefix length",
			in:   "[Interface]\nAddress = 10.0.0.2, fd00::2\n[Peer]\nPublicKey = " + pubB + "\nAllowedIPs = 192.168.1.1, 2001:db8::1, ::ffff:1.2.3.4\n",
			want: &Config{
				Interface: Interface{Addresses: pfxs("10.0.0.2/32", "fd00::2/128")},
				Peers:     []Peer{{PublicKey: b, AllowedIPs: pfxs("192.168.1.1/32", "2001:db8::1/128", "::ffff:1.2.3.4/128")}},
			},
		},
		{
			name: "host bits kept as written",
			in:   "[Interface]\nAddress = 10.0.0.2/24\n[Peer]\nPublicKey = " + pubB + "\nAllowedIPs = 10.0.0.7/24, fd00::7/64\n",
			want: &Config{
				Interface: Interface{Addresses: pfxs("10.0.0.2/24")},
				Peers:     []Peer{{PublicKey: b, AllowedIPs: pfxs("10.0.0.7/24", "fd00::7/64")}},
			},
		},
		{
			name: "off values and number forms",
			in:   "[Interface]\nFwMark = off\nListenPort = 0\n[Peer]\nPublicKey = " + pubB + "\nPersistentKeepalive = off\n[Peer]\nPublicKey = " + pubC + "\nPersistentKeepalive = 0065535\n",
			want: &Config{Peers: []Peer{{PublicKey: b}, {PublicKey: c, PersistentKeepalive: 65535 * time.Second}}},
		},
		{name: "fwmark hex", in: "[Interface]\nFwMark = 0xffffffff\n", want: &Config{Interface: Interface{FwMark: 0xffffffff}}},
		{name: "fwmark hex upper digits", in: "[Interface]\nFwMark = 0xCAFE\n", want: &Config{Interface: Interface{FwMark: 0xcafe}}},
		{name: "fwmark decimal", in: "[Interface]\nFwMark = 51820\n", want: &Config{Interface: Interface{FwMark: 51820}}},
		{
			name: "sections in any order",
			in:   "[Peer]\nPublicKey = " + pubB + "\n[Interface]\nPrivateKey = " + privA + "\n[Peer]\nPublicKey = " + pubC + "\n",
			want: &Config{Interface: Interface{PrivateKey: a}, Peers: []Peer{{PublicKey: b}, {PublicKey: c}}},
		},
		{
			name: "multiple interface sections merge",
			in:   "[Interface]\nListenPort = 1\nAddress = 10.0.0.1/32\n[Peer]\nPublicKey = " + pubB + "\n[Interface]\nListenPort = 2\nAddress = 10.0.0.2/32\nPrivateKey = " + privA + "\n",
			want: &Config{
				Interface: Interface{PrivateKey: a, ListenPort: 2, Addresses: pfxs("10.0.0.1/32", "10.0.0.2/32")},
				Peers:     []Peer{{PublicKey: b}},
			},
		},
		{
			name: "whitespace variants",
			in: "  [Interface]  \n\tPrivateKey\t=\t" + privA + "\t\nAddress=10.0.0.1/32,10.0.0.2/32 ,  10.0.0.3/32\n" +
				"[Peer]\nPublicKey=" + pubB + "\nPresharedKey = " + pskB[:10] + " " + pskB[10:] + "\nAllowedIPs = 10.0.0.0/8 , fd00::/8\nEndpoint = 1.2.3.4 : 51820\n",
			want: &Config{
				Interface: Interface{PrivateKey: a, Addresses: pfxs("10.0.0.1/32", "10.0.0.2/32", "10.0.0.3/32")},
				Peers:     []Peer{{PublicKey: b, PresharedKey: psk, AllowedIPs: pfxs("10.0.0.0/8", "fd00::/8"), Endpoint: "1.2.3.4:51820"}},
			},
		},
		{
			name: "endpoint forms",
			in: "[Peer]\nPublicKey = " + pubB + "\nEndpoint = fe80::1:51820\n[Peer]\nPublicKey = " + pubC + "\nEndpoint = [fe80::1%eth0]:051820\n" +
				"[Peer]\nPublicKey = " + privA + "\nEndpoint = 192.0.2.1:65535\n",
			want: &Config{Peers: []Peer{
				{PublicKey: b, Endpoint: "[fe80::1]:51820"},
				{PublicKey: c, Endpoint: "[fe80::1%eth0]:51820"},
				{PublicKey: a, Endpoint: "192.0.2.1:65535"},
			}},
		},
		{
			name: "explicit zero keys",
			in:   "[Interface]\nPrivateKey = " + zero + "\n[Peer]\nPublicKey = " + zero + "\nPresharedKey = " + zero + "\n",
			want: &Config{Peers: []Peer{{}}},
		},
		{
			name: "MTU bounds",
			in:   "[Interface]\nMTU = 576\nMTU = 65535\n",
			want: &Config{Interface: Interface{MTU: 65535}},
		},
	}
}

func TestParseConfig(t *testing.T) {
	for _, tt := range validConfigs(t) {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseConfig(strings.NewReader(tt.in))
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, configOpts); diff != "" {
				t.Errorf("ParseConfig (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	peerB := "[Peer]\nPublicKey = " + pubB + "\n"
	tests := []struct {
		name     string
		in       string
		wantLine int
		wantMsg  string
	}{
		{"unknown key in interface", "[Interface]\nFoo = 1\n", 2, `unknown key "Foo" in [Interface]`},
		{"unknown key in peer", peerB + "Bar = 2\n", 3, `unknown key "Bar" in [Peer]`},
		{"unknown section", "[Interface]\n[Peers]\n", 2, `unknown section "[Peers]"`},
		{"unknown section with space", "[ Interface ]\n", 1, `unknown section "[ Interface ]"`},
		{"section with text after it", "[Interface] x\n", 1, `unknown section`},
		{"key outside a section", "# c\nPrivateKey = " + privA + "\n", 2, `key "PrivateKey" outside a section`},
		{"wg-quick key in peer", peerB + "Address = 10.0.0.1/32\n", 3, `key "Address" belongs in [Interface], not in [Peer]`},
		{"peer key in interface", "[Interface]\nEndpoint = a:1\n", 2, `key "Endpoint" belongs in [Peer], not in [Interface]`},
		{"line without equals", "[Interface]\nPrivateKey\n", 2, `want "Key = Value"`},
		{"key with inner space", "[Interface]\nPrivate Key = " + privA + "\n", 2, `unknown key "Private Key"`},
		{"bad private key", "[Interface]\nPrivateKey = abc\n", 2, "PrivateKey: invalid key"},
		{"non-canonical key", "[Interface]\nPrivateKey = " + privA[:42] + "l=\n", 2, "PrivateKey: invalid key"},
		{"bad public key", "[Peer]\nPublicKey = " + pubB[1:] + "\n", 2, "PublicKey: invalid key"},
		{"bad preshared key", peerB + "PresharedKey = x\n", 3, "PresharedKey: invalid key"},
		{"empty wg value", "[Peer]\nPublicKey =\n", 2, "empty value for PublicKey"},
		{"empty allowed IPs", peerB + "AllowedIPs = \n", 3, "empty value for AllowedIPs"},
		{"allowed IPs empty entry", peerB + "AllowedIPs = 10.0.0.0/8,,10.1.0.0/16\n", 3, `bad address ""`},
		{"allowed IPs trailing comma", peerB + "AllowedIPs = 10.0.0.0/8,\n", 3, `bad address ""`},
		{"allowed IPs incremental", peerB + "AllowedIPs = +10.0.0.0/8\n", 3, `bad prefix "+10.0.0.0/8"`},
		{"bad prefix length", peerB + "AllowedIPs = 10.0.0.0/33\n", 3, `bad prefix "10.0.0.0/33"`},
		{"bad v6 prefix length", "[Interface]\nAddress = fd00::1/129\n", 2, `bad prefix "fd00::1/129"`},
		{"bad address", "[Interface]\nAddress = 10.0.0.256/24\n", 2, `bad prefix "10.0.0.256/24"`},
		{"bad host", "[Interface]\nAddress = 10.0.0.1, nope\n", 2, `Address: bad address "nope"`},
		{"address with zone", "[Interface]\nAddress = fe80::1%eth0\n", 2, `bad address "fe80::1%eth0"`},
		{"prefix with zone", "[Interface]\nAddress = fe80::1%eth0/64\n", 2, `bad prefix "fe80::1%eth0/64"`},
		{"port too big", "[Interface]\nListenPort = 65536\n", 2, `ListenPort: bad port "65536"`},
		{"port negative", "[Interface]\nListenPort = -1\n", 2, `bad port "-1"`},
		{"port name", "[Interface]\nListenPort = https\n", 2, `bad port "https"`},
		{"port plus", "[Interface]\nListenPort = +1\n", 2, `bad port "+1"`},
		{"fwmark too big", "[Interface]\nFwMark = 4294967296\n", 2, `bad fwmark "4294967296"`},
		{"fwmark hex too big", "[Interface]\nFwMark = 0x100000000\n", 2, `bad fwmark`},
		{"fwmark bare 0x", "[Interface]\nFwMark = 0x\n", 2, `bad fwmark "0x"`},
		{"fwmark upper 0X", "[Interface]\nFwMark = 0X10\n", 2, `bad fwmark "0X10"`},
		{"fwmark word", "[Interface]\nFwMark = on\n", 2, `bad fwmark "on"`},
		{"boolean", "[Interface]\nSaveConfig = yes\n", 2, `SaveConfig: bad boolean "yes"`},
		{"boolean empty", "[Interface]\nSaveConfig =\n", 2, `bad boolean ""`},
		{"MTU too small", "[Interface]\nMTU = 575\n", 2, `MTU: bad MTU "575"`},
		{"MTU too big", "[Interface]\nMTU = 65536\n", 2, `bad MTU "65536"`},
		{"MTU word", "[Interface]\nMTU = auto\n", 2, `bad MTU "auto"`},
		{"keepalive too big", peerB + "PersistentKeepalive = 65536\n", 3, `PersistentKeepalive: bad keepalive "65536"`},
		{"keepalive fraction", peerB + "PersistentKeepalive = 1.5\n", 3, `bad keepalive "1.5"`},
		{"keepalive negative", peerB + "PersistentKeepalive = -1\n", 3, `bad keepalive "-1"`},
		{"endpoint without port", peerB + "Endpoint = vpn.example.com\n", 3, `Endpoint: bad endpoint "vpn.example.com": no port`},
		{"endpoint empty port", peerB + "Endpoint = vpn.example.com:\n", 3, "no port"},
		{"endpoint v6 without port", peerB + "Endpoint = [2001:db8::1]\n", 3, "no port"},
		{"endpoint v6 empty port", peerB + "Endpoint = [2001:db8::1]:\n", 3, "no port"},
		{"endpoint v6 unclosed", peerB + "Endpoint = [2001:db8::1:51820\n", 3, "no matching ']'"},
		{"endpoint port zero", peerB + "Endpoint = host:0\n", 3, `port "0" is not 1..65535`},
		{"endpoint port name", peerB + "Endpoint = host:wireguard\n", 3, `port "wireguard"`},
		{"endpoint port too big", peerB + "Endpoint = host:65536\n", 3, `port "65536"`},
		{"endpoint empty host", peerB + "Endpoint = :51820\n", 3, "empty host"},
		{"endpoint empty v6 host", peerB + "Endpoint = []:51820\n", 3, "empty host"},
		{"endpoint bad v6", peerB + "Endpoint = [2001:db8::g]:1\n", 3, `bad IPv6 address "2001:db8::g"`},
		{"endpoint bad host", peerB + "Endpoint = a/b:1\n", 3, `bad host name "a/b"`},
		{"endpoint bad IPv4", peerB + "Endpoint = 10.0.0.256:1\n", 3, `bad IPv4 address "10.0.0.256"`},
		{"endpoint short IPv4", peerB + "Endpoint = 10.1:1\n", 3, `bad IPv4 address "10.1"`},
		{"peer without public key", "[Interface]\n\n[Peer]\nAllowedIPs = 10.0.0.0/8\n", 3, "[Peer] has no PublicKey"},
		{"middle peer without public key", peerB + "[Peer]\nEndpoint = a:1\n" + peerB, 3, "[Peer] has no PublicKey"},
		{"empty peer before interface", "[Peer]\n[Interface]\n", 1, "[Peer] has no PublicKey"},
		{"peer with bad key is no peer", "[Peer]\nPublicKey = bad\n", 2, "invalid key"},
		{"DNS address-like", "[Interface]\nDNS = 10.0.0\n", 2, `DNS: bad DNS server address "10.0.0"`},
		{"DNS bad v6", "[Interface]\nDNS = 1.1.1.1, fd00:::1\n", 2, `bad DNS server address "fd00:::1"`},
		{"DNS bad search domain", "[Interface]\nDNS = exa$mple.com\n", 2, `bad DNS search domain "exa$mple.com"`},
		{"DNS search domain with equals", "[Interface]\nDNS = a=b\n", 2, `bad DNS search domain "a=b"`},
		{"table with space", "[Interface]\nTable = 1 2\n", 2, `Table: bad table "1 2"`},
		{"error on a later line", "[Interface]\nPrivateKey = " + privA + "\nListenPort = 1\n\n# c\n[Peer]\nPublicKey = " + pubB + "\nFoo = bar\n", 8, `unknown key "Foo" in [Peer]`},
		{"CRLF line numbers", "[Interface]\r\n\r\nMTU = 1\r\n", 3, `bad MTU "1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseConfig(strings.NewReader(tt.in))
			if err == nil {
				t.Fatalf("ParseConfig succeeded with %+v, want an error", got)
			}
			var cerr *ConfigError
			if !errors.As(err, &cerr) {
				t.Fatalf("error %q (%T) is not a *ConfigError", err, err)
			}
			if cerr.Line != tt.wantLine {
				t.Errorf("error %q: Line = %d, want %d", err, cerr.Line, tt.wantLine)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not contain %q", err, tt.wantMsg)
			}
			if prefix := "wg: parse config line "; !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("error %q does not start with %q", err, prefix)
			}
			if strings.Count(err.Error(), "wg: ") != 1 {
				t.Errorf("error %q repeats the \"wg: \" prefix", err)
			}
			if strings.Contains(err.Error(), privA) {
				t.Errorf("error %q leaks the private key", err)
			}
		})
	}
}

func TestParseConfigKeyErrorWrapsErrInvalidKey(t *testing.T) {
	_, err := ParseConfig(strings.NewReader("[Interface]\nPrivateKey = nope\n"))
	if !errors.Is(err, ErrInvalidKey) {
		t.Errorf("error %v does not wrap ErrInvalidKey", err)
	}
}

// errReader returns its data, then err.
type errReader struct {
	data string
	err  error
}

func (r *errReader) Read(p []byte) (int, error) {
	if r.data == "" {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestParseConfigReadError(t *testing.T) {
	errBoom := errors.New("boom")
	_, err := ParseConfig(&errReader{data: "[Interface]\n", err: errBoom})
	if !errors.Is(err, errBoom) {
		t.Fatalf("error %v does not wrap the reader's error", err)
	}
	if !strings.HasPrefix(err.Error(), "wg: parse config: ") {
		t.Errorf("error %q lacks the \"wg: parse config: \" prefix", err)
	}
}

func TestParseConfigLongLine(t *testing.T) {
	// A line of exactly MaxConfigLine bytes, with or without its line
	// ending, is kept whole.
	cmd := strings.Repeat("x", MaxConfigLine-len("PostUp = "))
	for _, end := range []string{"\n", ""} {
		got, err := ParseConfig(strings.NewReader("[Interface]\nPostUp = " + cmd + end))
		if err != nil {
			t.Fatalf("ParseConfig: %v", err)
		}
		if len(got.Interface.PostUp) != 1 || got.Interface.PostUp[0] != cmd {
			t.Errorf("long PostUp not kept whole")
		}
	}
}

func TestConfigErrorUnwrap(t *testing.T) {
	inner := errors.New("inner")
	err := error(&ConfigError{Line: 7, Err: inner})
	if got, want := err.Error(), "wg: parse config line 7: inner"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, inner) {
		t.Error("errors.Is(ConfigError, inner) = false")
	}
}

const fullConfigCanonical = `[Interface]
PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
ListenPort = 51820
FwMark = 0x1234
Address = 10.0.0.2/24, fd00::2/64
DNS = 10.0.0.1, fd00::1, example.com, corp.example
MTU = 1380
Table = 1234
SaveConfig = true
PreUp = echo pre-up %i
PostUp = iptables -A FORWARD -i %i -j ACCEPT # keeps the comment
PreDown = echo pre-down
PostDown = iptables -D FORWARD -i %i -j ACCEPT

[Peer]
PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
PresharedKey = /UwcSPg38hW/D9Y3tcS1FOV0K1wuURMbS0sesJEP5ak=
AllowedIPs = 0.0.0.0/0, ::/0
Endpoint = vpn.example.com:51820
PersistentKeepalive = 25

[Peer]
PublicKey = TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=
AllowedIPs = 10.0.1.0/24
Endpoint = [2001:db8::1]:4500
`

func TestMarshalTextGolden(t *testing.T) {
	tests := []struct {
		name string
		cfg  *Config
		want string
	}{
		{name: "full", cfg: fullConfigWant(t), want: fullConfigCanonical},
		{name: "zero", cfg: &Config{}, want: "[Interface]\n"},
		{
			name: "zero peer keeps its public key line",
			cfg:  &Config{Peers: []Peer{{AllowedIPs: pfxs("10.0.0.1/32")}}},
			want: "[Interface]\n\n[Peer]\nPublicKey = " + zero + "\nAllowedIPs = 10.0.0.1/32\n",
		},
		{
			name: "search domains only",
			cfg:  &Config{Interface: Interface{DNSSearch: []string{"a.example", "b"}}},
			want: "[Interface]\nDNS = a.example, b\n",
		},
		{
			name: "empty hook",
			cfg:  &Config{Interface: Interface{PreDown: []string{""}}},
			want: "[Interface]\nPreDown = \n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.cfg.MarshalText()
			if err != nil {
				t.Fatalf("MarshalText: %v", err)
			}
			if diff := cmp.Diff(tt.want, string(got)); diff != "" {
				t.Errorf("MarshalText (-want +got):\n%s", diff)
			}
		})
	}
}

// TestMarshalTextRoundTrip checks ParseConfig(MarshalText(c)) == c for
// every valid test configuration, and that MarshalText is idempotent.
func TestMarshalTextRoundTrip(t *testing.T) {
	for _, tt := range validConfigs(t) {
		t.Run(tt.name, func(t *testing.T) {
			checkRoundTrip(t, tt.want)
		})
	}
}

// checkRoundTrip checks that ParseConfig(MarshalText(c)) equals c and
// that marshaling the result gives the same text again.
func checkRoundTrip(t *testing.T, c *Config) {
	t.Helper()
	text, err := c.MarshalText()
	if err != nil {
		t.Fatalf("MarshalText: %v", err)
	}
	back, err := ParseConfig(strings.NewReader(string(text)))
	if err != nil {
		t.Fatalf("ParseConfig(MarshalText()): %v\n%s", err, text)
	}
	if diff := cmp.Diff(c, back, configOpts); diff != "" {
		t.Errorf("ParseConfig(MarshalText()) (-want +got):\n%s\ntext:\n%s", diff, text)
	}
	again, err := back.MarshalText()
	if err != nil {
		t.Fatalf("second MarshalText: %v", err)
	}
	if diff := cmp.Diff(string(text), string(again)); diff != "" {
		t.Errorf("MarshalText not idempotent (-first +second):\n%s", diff)
	}
}

func TestMarshalTextRefuses(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantMsg string
	}{
		{"hook with newline", func(c *Config) { c.Interface.PostUp = []string{"a\nb"} }, "PostUp command \"a\\nb\" contains a line break"},
		{"hook with leading space", func(c *Config) { c.Interface.PreUp = []string{" a"} }, "leading or trailing whitespace"},
		{"hook with trailing CR", func(c *Config) { c.Interface.PreDown = []string{"a\r"} }, "leading or trailing whitespace"},
		{"search domain is IPv4", func(c *Config) { c.Interface.DNSSearch = []string{"1.2.3.4"} }, "looks like an IP address"},
		{"search domain is digits", func(c *Config) { c.Interface.DNSSearch = []string{"123"} }, "looks like an IP address"},
		{"search domain with colon", func(c *Config) { c.Interface.DNSSearch = []string{"a:b"} }, "looks like an IP address"},
		{"search domain with comma", func(c *Config) { c.Interface.DNSSearch = []string{"a,b"} }, "bad DNS search domain"},
		{"search domain with space", func(c *Config) { c.Interface.DNSSearch = []string{"a b"} }, "bad DNS search domain"},
		{"search domain with hash", func(c *Config) { c.Interface.DNSSearch = []string{"a#b"} }, "bad DNS search domain"},
		{"search domain with equals", func(c *Config) { c.Interface.DNSSearch = []string{"a=b"} }, "bad DNS search domain"},
		{"empty search domain", func(c *Config) { c.Interface.DNSSearch = []string{""} }, "empty DNS search domain"},
		{"invalid DNS address", func(c *Config) { c.Interface.DNS = []netip.Addr{{}} }, "DNS: invalid address"},
		{"DNS zone with comma", func(c *Config) { c.Interface.DNS = []netip.Addr{netip.MustParseAddr("fe80::1").WithZone("a,b")} }, `bad IPv6 zone "a,b"`},
		{"negative keepalive", func(c *Config) { c.Peers[0].PersistentKeepalive = -time.Second }, "persistent keepalive -1s"},
		{"sub-second keepalive", func(c *Config) { c.Peers[0].PersistentKeepalive = 500 * time.Millisecond }, "not a whole number of seconds"},
		{"fractional keepalive", func(c *Config) { c.Peers[0].PersistentKeepalive = 1500 * time.Millisecond }, "not a whole number of seconds"},
		{"keepalive too long", func(c *Config) { c.Peers[0].PersistentKeepalive = 65536 * time.Second }, "0..65535"},
		{"invalid address prefix", func(c *Config) { c.Interface.Addresses = []netip.Prefix{{}} }, "Address: invalid prefix"},
		{"invalid allowed IP", func(c *Config) { c.Peers[1].AllowedIPs = append(c.Peers[1].AllowedIPs, netip.Prefix{}) }, "peer 1: AllowedIPs: invalid prefix"},
		{"bad prefix length", func(c *Config) {
			c.Peers[0].AllowedIPs = []netip.Prefix{netip.PrefixFrom(netip.MustParseAddr("10.0.0.0"), 40)}
		}, "invalid prefix"},
		{"table with space", func(c *Config) { c.Interface.Table = "1 2" }, `bad table "1 2"`},
		{"table with newline", func(c *Config) { c.Interface.Table = "1\n[Peer]" }, "bad table"},
		{"table with hash", func(c *Config) { c.Interface.Table = "a#b" }, "bad table"},
		{"listen port negative", func(c *Config) { c.Interface.ListenPort = -1 }, "listen port -1 out of range"},
		{"listen port too big", func(c *Config) { c.Interface.ListenPort = 65536 }, "listen port 65536 out of range"},
		{"MTU too small", func(c *Config) { c.Interface.MTU = 100 }, "MTU 100 out of range"},
		{"MTU too big", func(c *Config) { c.Interface.MTU = 70000 }, "MTU 70000 out of range"},
		{"endpoint without port", func(c *Config) { c.Peers[0].Endpoint = "host" }, `bad endpoint "host": no port`},
		{"endpoint not canonical", func(c *Config) { c.Peers[0].Endpoint = "::1:51820" }, `not in the canonical form "[::1]:51820"`},
		{"endpoint with newline", func(c *Config) { c.Peers[0].Endpoint = "a\nb:1" }, "bad endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := fullConfigWant(t)
			tt.mutate(c)
			text, err := c.MarshalText()
			if err == nil {
				t.Fatalf("MarshalText succeeded, want an error; text:\n%s", text)
			}
			if !strings.HasPrefix(err.Error(), "wg: marshal config: ") {
				t.Errorf("error %q lacks the \"wg: marshal config: \" prefix", err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not contain %q", err, tt.wantMsg)
			}
		})
	}
}

func TestMarshalTextNil(t *testing.T) {
	var c *Config
	if _, err := c.MarshalText(); err == nil {
		t.Error("(*Config)(nil).MarshalText() succeeded, want an error")
	}
}

func validConfig(t *testing.T) *Config {
	c := fullConfigWant(t)
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate of the full test config: %v", err)
	}
	return c
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantMsg string // "" means valid
	}{
		{"full config", func(*Config) {}, ""},
		{"no peers", func(c *Config) { c.Peers = nil }, ""},
		{"only a private key", func(c *Config) { *c = Config{Interface: Interface{PrivateKey: c.Interface.PrivateKey}} }, ""},
		{"ListenPort bounds", func(c *Config) { c.Interface.ListenPort = 65535 }, ""},
		{"MTU 576 without IPv6 address", func(c *Config) { c.Interface.Addresses = pfxs("10.0.0.1/32"); c.Interface.MTU = 576 }, ""},
		{"MTU 1280 with IPv6 address", func(c *Config) { c.Interface.MTU = 1280 }, ""},
		{"zero MTU is the default", func(c *Config) { c.Interface.MTU = 0 }, ""},
		{"keepalive 65535s", func(c *Config) { c.Peers[0].PersistentKeepalive = 65535 * time.Second }, ""},
		{"sub-second keepalive", func(c *Config) { c.Peers[0].PersistentKeepalive = time.Millisecond }, ""},
		{"non-canonical endpoint", func(c *Config) { c.Peers[0].Endpoint = "::1:51820" }, ""},
		{"zero private key", func(c *Config) { c.Interface.PrivateKey = Key{} }, "[Interface]: no private key"},
		{"listen port negative", func(c *Config) { c.Interface.ListenPort = -1 }, "listen port -1 out of range"},
		{"listen port too big", func(c *Config) { c.Interface.ListenPort = 65536 }, "listen port 65536 out of range"},
		{"MTU too small for IPv6", func(c *Config) { c.Interface.MTU = 1279 }, "MTU 1279 out of range 1280..65535"},
		{"MTU too small", func(c *Config) { c.Interface.Addresses = pfxs("10.0.0.1/32"); c.Interface.MTU = 575 }, "MTU 575 out of range 576..65535"},
		{"MTU too big", func(c *Config) { c.Interface.MTU = 65536 }, "MTU 65536 out of range"},
		{"negative MTU", func(c *Config) { c.Interface.MTU = -1 }, "MTU -1 out of range"},
		{"invalid address", func(c *Config) { c.Interface.Addresses = append(c.Interface.Addresses, netip.Prefix{}) }, "invalid address prefix"},
		{"invalid DNS", func(c *Config) { c.Interface.DNS = []netip.Addr{{}} }, "invalid DNS server address"},
		{"zero peer key", func(c *Config) { c.Peers[1].PublicKey = Key{} }, "peer 1: no public key"},
		{"duplicate peer key", func(c *Config) { c.Peers[1].PublicKey = c.Peers[0].PublicKey }, "peer 1: public key " + pubB + " already used by peer 0"},
		{"peer is ourselves", func(c *Config) { c.Peers[0].PublicKey = c.Interface.PrivateKey.PublicKey() }, "peer 0: public key"},
		{"invalid allowed IP", func(c *Config) { c.Peers[0].AllowedIPs = []netip.Prefix{{}} }, "peer 0: invalid allowed IP prefix"},
		{"bad endpoint", func(c *Config) { c.Peers[1].Endpoint = "nowhere" }, `peer 1: bad endpoint "nowhere": no port`},
		{"negative keepalive", func(c *Config) { c.Peers[0].PersistentKeepalive = -time.Second }, "persistent keepalive -1s out of range"},
		{"keepalive too long", func(c *Config) { c.Peers[0].PersistentKeepalive = 65536 * time.Second }, "out of range 0..65535s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig(t)
			tt.mutate(c)
			err := c.Validate()
			if tt.wantMsg == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate succeeded, want error containing %q", tt.wantMsg)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v does not wrap ErrInvalidConfig", err)
			}
			if !strings.HasPrefix(err.Error(), "wg: invalid config: ") {
				t.Errorf("error %q lacks the \"wg: invalid config: \" prefix", err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not contain %q", err, tt.wantMsg)
			}
		})
	}
}

func TestValidateNil(t *testing.T) {
	var c *Config
	if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("(*Config)(nil).Validate() = %v, want ErrInvalidConfig", err)
	}
}

func TestClone(t *testing.T) {
	orig := fullConfigWant(t)
	clone := orig.Clone()
	if diff := cmp.Diff(orig, clone, configOpts); diff != "" {
		t.Fatalf("Clone (-orig +clone):\n%s", diff)
	}

	// Change every element of every slice of the clone, and its scalars.
	in := &clone.Interface
	in.PrivateKey[0] ^= 1
	in.ListenPort++
	in.Addresses[0] = netip.MustParsePrefix("192.0.2.1/32")
	in.DNS[0] = netip.MustParseAddr("192.0.2.53")
	in.DNSSearch[0] = "changed.example"
	in.PreUp[0], in.PostUp[0], in.PreDown[0], in.PostDown[0] = "x", "x", "x", "x"
	clone.Peers[0].PublicKey[0] ^= 1
	clone.Peers[0].AllowedIPs[0] = netip.MustParsePrefix("192.0.2.0/24")
	clone.Peers[1].Endpoint = "changed:1"
	clone.Peers = append(clone.Peers, Peer{})

	if diff := cmp.Diff(fullConfigWant(t), orig, configOpts); diff != "" {
		t.Errorf("changing the clone changed the original (-want +got):\n%s", diff)
	}
}

func TestCloneNilAndEmpty(t *testing.T) {
	var c *Config
	if got := c.Clone(); got != nil {
		t.Errorf("(*Config)(nil).Clone() = %+v, want nil", got)
	}
	empty := &Config{}
	got := empty.Clone()
	if got == empty {
		t.Error("Clone returned the same pointer")
	}
	if diff := cmp.Diff(empty, got); diff != "" {
		t.Errorf("Clone of empty Config (-want +got):\n%s", diff)
	}
}
