package netconf

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/wgkit/wgkit/wg"
)

var cmpPrefix = cmpopts.EquateComparable(netip.Prefix{}, netip.Addr{})

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestParseTable(t *testing.T) {
	names := map[string]uint32{"vpn": 100, "zero": 0}
	lookup := func(n string) (uint32, bool) { id, ok := names[n]; return id, ok }
	tests := []struct {
		in      string
		want    TableSetting
		wantErr string
	}{
		{in: "", want: TableSetting{Mode: TableAuto}},
		{in: "auto", want: TableSetting{Mode: TableAuto}},
		{in: "AUTO", want: TableSetting{Mode: TableAuto}},
		{in: "off", want: TableSetting{Mode: TableOff}},
		{in: "Off", want: TableSetting{Mode: TableOff}},
		{in: "main", want: TableSetting{Mode: TableFixed, ID: 254}},
		{in: "local", want: TableSetting{Mode: TableFixed, ID: 255}},
		{in: "default", want: TableSetting{Mode: TableFixed, ID: 253}},
		{in: "1234", want: TableSetting{Mode: TableFixed, ID: 1234}},
		{in: "0x10", want: TableSetting{Mode: TableFixed, ID: 16}},
		{in: "4294967295", want: TableSetting{Mode: TableFixed, ID: 4294967295}},
		{in: "vpn", want: TableSetting{Mode: TableFixed, ID: 100}},
		{in: "0", wantErr: "table 0"},
		{in: "4294967296", wantErr: "unknown table name"},
		{in: "nosuch", wantErr: "unknown table name"},
		{in: "zero", wantErr: "unknown table name"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseTable(tt.in, lookup)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "netconf: ") {
					t.Fatalf("ParseTable(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseTable(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestParseRTTables(t *testing.T) {
	in := `#
# reserved values
#
255	local
254	main   # the main table
253	default
0	unspec
100 vpn
0x20	hex
bad line
notanumber name
`
	got, err := ParseRTTables(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint32{"local": 255, "main": 254, "default": 253, "unspec": 0, "vpn": 100, "hex": 32}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseRTTables (-want +got):\n%s", diff)
	}
}

func TestPlanRoutes(t *testing.T) {
	peers := func(allowed ...[]string) []wg.Peer {
		var ps []wg.Peer
		for _, a := range allowed {
			var p wg.Peer
			for _, s := range a {
				p.AllowedIPs = append(p.AllowedIPs, pfx(s))
			}
			ps = append(ps, p)
		}
		return ps
	}
	used := map[uint32]bool{51820: true, 51821: true}
	inUse := func(t uint32) (bool, error) { return used[t], nil }
	tests := []struct {
		name   string
		table  TableSetting
		fwmark uint32
		peers  []wg.Peer
		want   Plan
	}{
		{
			name:  "off adds nothing",
			table: TableSetting{Mode: TableOff},
			peers: peers([]string{"10.0.0.0/24", "0.0.0.0/0"}),
			want:  Plan{},
		},
		{
			name:  "auto routes in main, longest prefix first, masked and deduplicated",
			table: TableSetting{Mode: TableAuto},
			peers: peers([]string{"10.0.0.0/8", "10.1.2.3/16"}, []string{"192.168.1.7/32", "fd00::1/64", "10.1.0.0/16"}),
			want: Plan{Routes: []Route{
				{Dst: pfx("fd00::/64"), Table: TableMain},
				{Dst: pfx("192.168.1.7/32"), Table: TableMain},
				{Dst: pfx("10.1.0.0/16"), Table: TableMain},
				{Dst: pfx("10.0.0.0/8"), Table: TableMain},
			}},
		},
		{
			name:  "auto default routes use the first free fwmark table",
			table: TableSetting{Mode: TableAuto},
			peers: peers([]string{"0.0.0.0/0", "::/0", "10.9.0.0/16"}),
			want: Plan{
				FwMark: 51822,
				Rules: []Rule{
					{Table: 51822, Mark: 51822, Invert: true, SuppressPrefixlen: -1},
					{Table: TableMain, SuppressPrefixlen: 0},
					{IPv6: true, Table: 51822, Mark: 51822, Invert: true, SuppressPrefixlen: -1},
					{IPv6: true, Table: TableMain, SuppressPrefixlen: 0},
				},
				Routes: []Route{
					{Dst: pfx("10.9.0.0/16"), Table: TableMain},
					{Dst: pfx("0.0.0.0/0"), Table: 51822},
					{Dst: pfx("::/0"), Table: 51822},
				},
			},
		},
		{
			name:   "auto default route with a configured fwmark uses it as table",
			table:  TableSetting{Mode: TableAuto},
			fwmark: 0x1234,
			peers:  peers([]string{"::/0"}),
			want: Plan{
				Rules: []Rule{
					{IPv6: true, Table: 0x1234, Mark: 0x1234, Invert: true, SuppressPrefixlen: -1},
					{IPv6: true, Table: TableMain, SuppressPrefixlen: 0},
				},
				Routes: []Route{{Dst: pfx("::/0"), Table: 0x1234}},
			},
		},
		{
			name:  "a fixed table takes every route, default ones too, with no rules",
			table: TableSetting{Mode: TableFixed, ID: 1000},
			peers: peers([]string{"0.0.0.0/0", "10.0.0.0/8"}, []string{"::/0"}),
			want: Plan{Routes: []Route{
				{Dst: pfx("10.0.0.0/8"), Table: 1000},
				{Dst: pfx("0.0.0.0/0"), Table: 1000},
				{Dst: pfx("::/0"), Table: 1000},
			}},
		},
		{
			name:  "table main is fixed too",
			table: TableSetting{Mode: TableFixed, ID: TableMain},
			peers: peers([]string{"0.0.0.0/0"}),
			want:  Plan{Routes: []Route{{Dst: pfx("0.0.0.0/0"), Table: TableMain}}},
		},
		{
			name:  "no peers",
			table: TableSetting{Mode: TableAuto},
			want:  Plan{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &wg.Config{Interface: wg.Interface{FwMark: tt.fwmark}, Peers: tt.peers}
			got, err := PlanRoutes(cfg, tt.table, inUse)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmpPrefix, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("PlanRoutes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAdapterRoutes(t *testing.T) {
	cfg := &wg.Config{Peers: []wg.Peer{
		{AllowedIPs: []netip.Prefix{pfx("10.0.0.1/24"), pfx("0.0.0.0/0"), pfx("fd00::/64")}},
		{AllowedIPs: []netip.Prefix{pfx("10.0.0.0/24"), pfx("::ffff:10.1.0.0/112"), pfx("fd00::1/64"), pfx("::/0")}},
	}}
	tests := []struct {
		name  string
		table TableSetting
		want  []netip.Prefix
	}{
		{name: "off", table: TableSetting{Mode: TableOff}},
		{
			// One route per destination: the IP helper API fails on a
			// second route to the same prefix.
			name:  "auto",
			table: TableSetting{Mode: TableAuto},
			want:  []netip.Prefix{pfx("fd00::/64"), pfx("10.0.0.0/24"), pfx("10.1.0.0/16"), pfx("0.0.0.0/0"), pfx("::/0")},
		},
		{
			name:  "fixed",
			table: TableSetting{Mode: TableFixed, ID: 1234},
			want:  []netip.Prefix{pfx("fd00::/64"), pfx("10.0.0.0/24"), pfx("10.1.0.0/16"), pfx("0.0.0.0/0"), pfx("::/0")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AdapterRoutes(cfg, tt.table)
			if diff := cmp.Diff(tt.want, got, cmpPrefix, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("AdapterRoutes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPlanRoutesTableErrors(t *testing.T) {
	cfg := &wg.Config{Peers: []wg.Peer{{AllowedIPs: []netip.Prefix{pfx("0.0.0.0/0")}}}}
	boom := errors.New("boom")
	_, err := PlanRoutes(cfg, TableSetting{}, func(uint32) (bool, error) { return false, boom })
	if !errors.Is(err, boom) {
		t.Errorf("PlanRoutes with a failing table probe = %v, want it to wrap %v", err, boom)
	}
	calls := 0
	_, err = PlanRoutes(cfg, TableSetting{}, func(uint32) (bool, error) { calls++; return true, nil })
	if err == nil || calls != maxTableProbe {
		t.Errorf("PlanRoutes with every table used = %v after %d probes, want an error after %d", err, calls, maxTableProbe)
	}
}

func TestCovered(t *testing.T) {
	on := []netip.Prefix{pfx("10.0.0.0/24"), pfx("fd00::/64")}
	tests := []struct {
		dst  string
		want bool
	}{
		{"10.0.0.2/32", true},
		{"10.0.0.0/24", true},
		{"10.0.0.0/23", false},
		{"10.0.1.0/24", false},
		{"fd00::5/128", true},
		{"fd00::/48", false},
		{"0.0.0.0/0", false},
		{"::ffff:10.0.0.2/128", false},
	}
	for _, tt := range tests {
		t.Run(tt.dst, func(t *testing.T) {
			if got := Covered(pfx(tt.dst), on); got != tt.want {
				t.Errorf("Covered(%s, %v) = %v, want %v", tt.dst, on, got, tt.want)
			}
		})
	}
}

func TestRuleString(t *testing.T) {
	tests := []struct {
		r    Rule
		want string
	}{
		{Rule{Table: 51820, Mark: 51820, Invert: true, SuppressPrefixlen: -1}, "-4 not fwmark 51820 table 51820"},
		{Rule{IPv6: true, Table: TableMain, SuppressPrefixlen: 0}, "-6 table 254 suppress_prefixlength 0"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.r.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}
