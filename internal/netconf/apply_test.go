package netconf

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeConf records calls and, at failAt (1-based count of changing
// calls), fails instead.
type fakeConf struct {
	calls  []string
	failAt int
	main   []netip.Prefix
	undone []string
	done   []string // successful changes, oldest first
	exists map[string]bool
	listed int // calls of MainRoutes
}

var _ Configurator = (*fakeConf)(nil)

var errFake = errors.New("fake failure")

func (f *fakeConf) change(s string) error {
	f.calls = append(f.calls, s)
	if len(f.calls) == f.failAt {
		return errFake
	}
	f.done = append(f.done, s)
	return nil
}

func (f *fakeConf) SetMTU(mtu int) error            { return f.change(fmt.Sprint("mtu ", mtu)) }
func (f *fakeConf) AddAddress(p netip.Prefix) error { return f.change("addr " + p.String()) }
func (f *fakeConf) SetUp() error                    { return f.change("up") }
func (f *fakeConf) MainRoutes() ([]netip.Prefix, error) {
	f.listed++
	return f.main, nil
}
func (f *fakeConf) AddRule(r Rule) (bool, error) {
	if f.exists[r.String()] {
		f.calls = append(f.calls, "rule exists "+r.String())
		return false, nil
	}
	return true, f.change("rule " + r.String())
}
func (f *fakeConf) AddRoute(r Route) error {
	return f.change(fmt.Sprintf("route %s table %d", r.Dst, r.Table))
}
func (f *fakeConf) SetDNS(_ context.Context, servers []netip.Addr, search []string) error {
	return f.change(fmt.Sprintf("dns %v %v", servers, search))
}
func (f *fakeConf) Undo() error {
	for i := len(f.done) - 1; i >= 0; i-- {
		f.undone = append(f.undone, f.done[i])
	}
	f.done = nil
	return nil
}

func TestApply(t *testing.T) {
	s := Settings{
		MTU:       1380,
		Addresses: []netip.Prefix{pfx("10.0.0.1/24"), pfx("fd00::1/64")},
		Plan: Plan{
			Rules: []Rule{
				{Table: 51820, Mark: 51820, Invert: true, SuppressPrefixlen: -1},
				{Table: TableMain, SuppressPrefixlen: 0},
			},
			Routes: []Route{
				{Dst: pfx("10.0.0.5/32"), Table: TableMain}, // covered by the address route
				{Dst: pfx("10.9.0.0/16"), Table: TableMain}, // added
				{Dst: pfx("10.9.0.0/16"), Table: TableMain}, // covered by the one just added
				{Dst: pfx("10.0.0.0/24"), Table: 100},       // other tables are not checked
				{Dst: pfx("0.0.0.0/0"), Table: 51820},
			},
		},
		DNS:        true,
		DNSServers: []netip.Addr{netip.MustParseAddr("10.0.0.53")},
		DNSSearch:  []string{"example.com"},
	}
	all := []string{
		"mtu 1380",
		"addr 10.0.0.1/24",
		"addr fd00::1/64",
		"up",
		"dns [10.0.0.53] [example.com]",
		"rule -4 not fwmark 51820 table 51820",
		"rule -4 table 254 suppress_prefixlength 0",
		"route 10.9.0.0/16 table 254",
		"route 10.0.0.0/24 table 100",
		"route 0.0.0.0/0 table 51820",
	}
	t.Run("success", func(t *testing.T) {
		f := &fakeConf{main: []netip.Prefix{pfx("10.0.0.0/24"), pfx("fd00::/64")}}
		if err := Apply(context.Background(), f, s); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(all, f.calls); diff != "" {
			t.Errorf("calls (-want +got):\n%s", diff)
		}
		if len(f.undone) != 0 {
			t.Errorf("undone after success: %v", f.undone)
		}
	})
	for failAt := 1; failAt <= len(all); failAt++ {
		t.Run(fmt.Sprintf("failure at %q rolls back", all[failAt-1]), func(t *testing.T) {
			f := &fakeConf{failAt: failAt, main: []netip.Prefix{pfx("10.0.0.0/24")}}
			err := Apply(context.Background(), f, s)
			if !errors.Is(err, errFake) || !strings.HasPrefix(err.Error(), "netconf: ") {
				t.Fatalf("Apply = %v, want an error wrapping %v", err, errFake)
			}
			var want []string
			for i := failAt - 2; i >= 0; i-- {
				want = append(want, all[i])
			}
			if diff := cmp.Diff(want, f.undone); diff != "" {
				t.Errorf("undone (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("no dns without servers or without the option", func(t *testing.T) {
		for _, s := range []Settings{{DNS: true, DNSSearch: []string{"x"}}, {DNSServers: s.DNSServers}} {
			f := &fakeConf{}
			if err := Apply(context.Background(), f, s); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{"up"}, f.calls); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
		}
	})
	t.Run("existing rule is kept", func(t *testing.T) {
		f := &fakeConf{exists: map[string]bool{"-4 table 254 suppress_prefixlength 0": true}}
		s := Settings{Plan: Plan{Rules: []Rule{{Table: TableMain, SuppressPrefixlen: 0}}}}
		if err := Apply(context.Background(), f, s); err != nil {
			t.Fatal(err)
		}
		f.Undo()
		if diff := cmp.Diff([]string{"up"}, f.undone); diff != "" {
			t.Errorf("undone (-want +got):\n%s", diff)
		}
	})
	t.Run("cancelled context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		f := &fakeConf{}
		if err := Apply(ctx, f, s); !errors.Is(err, context.Canceled) {
			t.Fatalf("Apply = %v, want context.Canceled", err)
		}
		if len(f.calls) != 0 {
			t.Errorf("calls after cancel: %v", f.calls)
		}
	})
}
