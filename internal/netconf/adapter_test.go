package netconf

import (
	"context"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/wgkit/wgkit/wg"
)

// TestApplyAdapterPlan checks that a system without routing tables
// (Windows) takes Apply's one path: MTU, addresses, link up, DNS, then
// every one of AdapterRoutes on the interface, with no rules, no listing
// of the main table and no route skipped as covered (10.0.0.0/24 under
// 0.0.0.0/0), and that a failure rolls back through the Configurator.
func TestApplyAdapterPlan(t *testing.T) {
	cfg := &wg.Config{Peers: []wg.Peer{
		{AllowedIPs: []netip.Prefix{pfx("10.0.0.0/24"), pfx("0.0.0.0/0")}},
		{AllowedIPs: []netip.Prefix{pfx("fd00::/64")}},
	}}
	for _, tt := range []struct {
		name  string
		table TableSetting
		want  []string
	}{
		{"auto", TableSetting{Mode: TableAuto}, []string{
			"mtu 1420", "addr 10.0.0.1/24", "up", "dns [10.0.0.53] [corp.example]",
			"route fd00::/64 table 0", "route 10.0.0.0/24 table 0", "route 0.0.0.0/0 table 0",
		}},
		{"fixed table routes on the adapter too", TableSetting{Mode: TableFixed, ID: 1234}, []string{
			"mtu 1420", "addr 10.0.0.1/24", "up", "dns [10.0.0.53] [corp.example]",
			"route fd00::/64 table 0", "route 10.0.0.0/24 table 0", "route 0.0.0.0/0 table 0",
		}},
		{"off", TableSetting{Mode: TableOff}, []string{
			"mtu 1420", "addr 10.0.0.1/24", "up", "dns [10.0.0.53] [corp.example]",
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			plan := PlanAdapter(cfg, tt.table)
			if len(plan.Rules) != 0 || plan.FwMark != 0 {
				t.Errorf("PlanAdapter = %+v, want no rules and no fwmark", plan)
			}
			s := Settings{
				MTU:        wg.DefaultMTU,
				Addresses:  []netip.Prefix{pfx("10.0.0.1/24")},
				Plan:       plan,
				DNS:        true,
				DNSServers: []netip.Addr{netip.MustParseAddr("10.0.0.53")},
				DNSSearch:  []string{"corp.example"},
			}
			f := &fakeConf{main: []netip.Prefix{pfx("10.0.0.0/24")}}
			if err := Apply(context.Background(), f, s); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, f.calls); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
			if f.listed != 0 {
				t.Errorf("MainRoutes called %d times, want none", f.listed)
			}
			// A failure at the last step undoes every earlier one.
			f = &fakeConf{failAt: len(tt.want)}
			if err := Apply(context.Background(), f, s); err == nil {
				t.Fatal("Apply with a failing last step succeeded")
			}
			var undone []string
			for i := len(tt.want) - 2; i >= 0; i-- {
				undone = append(undone, tt.want[i])
			}
			if diff := cmp.Diff(undone, f.undone); diff != "" {
				t.Errorf("undone after a failure (-want +got):\n%s", diff)
			}
		})
	}
}
