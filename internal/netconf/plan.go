// Package netconf plans and applies the host network configuration of a
// WireGuard interface the way wg-quick(8) does: addresses, MTU, link state,
// routes for the peers' AllowedIPs and, for a default route, wg-quick's
// fwmark and policy-rule scheme.
//
// Planning (Plan) is pure and portable, so it is unit-tested without root.
// Applying a plan goes through the small Configurator interface and one
// sequence, Apply, on every system: the Linux implementation (netlink)
// lives in linux.go, the Windows one (IP helper API) in windows.go. Every change a Configurator
// makes is recorded so that Undo restores the host as it was.
package netconf

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/wgkit/wgkit/wg"
)

// Well-known routing table numbers (linux/rtnetlink.h).
const (
	TableDefault = 253
	TableMain    = 254
	TableLocal   = 255
)

// DefaultFwMarkTable is the first table (and fwmark) wg-quick tries for a
// default route when the config sets no FwMark.
const DefaultFwMarkTable = 51820

// TableMode says how routes are placed; see ParseTable.
type TableMode int

const (
	// TableAuto is wg-quick's default ("" or "auto"): routes go into the
	// main table, except default routes, which use the fwmark scheme.
	TableAuto TableMode = iota
	// TableOff adds no routes and no rules.
	TableOff
	// TableFixed puts every route, default routes included, into one
	// table and adds no rules.
	TableFixed
)

// TableSetting is a parsed wg-quick Table value.
type TableSetting struct {
	Mode TableMode
	// ID is the table number for TableFixed; 0 otherwise.
	ID uint32
}

// ParseTable parses wg-quick's Table value: "" or "auto", "off", a table
// number, or a table name. The names "main", "local" and "default" are
// always known; other names are looked up with lookup, which may be nil.
// The keywords match in any case ("Off", "MAIN"); wg-quick matches them
// case-sensitively, so there "Off" would go to ip(8) as a table name and
// fail.
func ParseTable(s string, lookup func(name string) (uint32, bool)) (TableSetting, error) {
	s = strings.TrimSpace(s)
	switch strings.ToLower(s) {
	case "", "auto":
		return TableSetting{Mode: TableAuto}, nil
	case "off":
		return TableSetting{Mode: TableOff}, nil
	case "main":
		return TableSetting{Mode: TableFixed, ID: TableMain}, nil
	case "local":
		return TableSetting{Mode: TableFixed, ID: TableLocal}, nil
	case "default":
		return TableSetting{Mode: TableFixed, ID: TableDefault}, nil
	}
	if n, err := strconv.ParseUint(s, 0, 32); err == nil {
		if n == 0 {
			return TableSetting{}, fmt.Errorf("netconf: table %q: table 0 is not a table", s)
		}
		return TableSetting{Mode: TableFixed, ID: uint32(n)}, nil
	}
	if lookup != nil {
		if id, ok := lookup(s); ok && id != 0 {
			return TableSetting{Mode: TableFixed, ID: id}, nil
		}
	}
	return TableSetting{}, fmt.Errorf("netconf: table %q: unknown table name", s)
}

// ParseRTTables reads table names in the format of iproute2's rt_tables
// file ("NUMBER NAME" lines, '#' comments) into a map from name to number.
// Malformed lines are skipped, as iproute2 does.
func ParseRTTables(r io.Reader) (map[string]uint32, error) {
	m := make(map[string]uint32)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		n, err := strconv.ParseUint(f[0], 0, 32)
		if err != nil {
			continue
		}
		m[f[1]] = uint32(n)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("netconf: read table names: %w", err)
	}
	return m, nil
}

// Route is a route for Dst through the WireGuard interface in Table.
type Route struct {
	Dst   netip.Prefix
	Table uint32
}

// Rule is a policy routing rule, in the two shapes wg-quick adds:
//
//	not fwmark Mark table Table          (Invert, Mark != 0)
//	table Table suppress_prefixlength 0  (SuppressPrefixlen == 0)
type Rule struct {
	// IPv6 selects the address family: false is IPv4.
	IPv6 bool
	// Table is the table the rule looks up.
	Table uint32
	// Mark is the fwmark the rule matches; 0 matches any.
	Mark uint32
	// Invert negates the match (ip rule's "not").
	Invert bool
	// SuppressPrefixlen is ip rule's suppress_prefixlength; -1 is unset.
	SuppressPrefixlen int
}

// String formats r as ip-rule(8) would take it.
func (r Rule) String() string {
	var b strings.Builder
	if r.IPv6 {
		b.WriteString("-6 ")
	} else {
		b.WriteString("-4 ")
	}
	if r.Invert {
		b.WriteString("not ")
	}
	if r.Mark != 0 {
		fmt.Fprintf(&b, "fwmark %d ", r.Mark)
	}
	fmt.Fprintf(&b, "table %d", r.Table)
	if r.SuppressPrefixlen >= 0 {
		fmt.Fprintf(&b, " suppress_prefixlength %d", r.SuppressPrefixlen)
	}
	return b.String()
}

// Plan is what to install for one interface, in order: Rules first, then
// Routes (longest prefixes first, as wg-quick sorts them).
type Plan struct {
	// FwMark is the fwmark the engine must set on its UDP packets so they
	// escape the tunnel's table; 0 means leave the engine's as configured.
	FwMark uint32
	// Rules are the policy rules to add.
	Rules []Rule
	// Routes are the routes to add. Routes in the main table whose Dst an
	// existing on-link route of the interface already covers are skipped
	// when applying, as wg-quick does (see Apply).
	Routes []Route
}

// TableInUse reports whether a routing table holds any IPv4 or IPv6 route.
type TableInUse func(table uint32) (bool, error)

// maxTableProbe bounds the search for a free fwmark table.
const maxTableProbe = 4096

// PlanRoutes computes the routes and rules for cfg, following wg-quick(8):
//
//   - Table = off: nothing.
//   - Table = N (a number or name, "main" included): every AllowedIPs
//     prefix is routed in table N, default routes too, with no rules.
//   - Table unset or auto: prefixes are routed in the main table, except
//     the default routes 0.0.0.0/0 and ::/0. For each of those, the route
//     goes into table T, where T is cfg's FwMark if set, else the first
//     table from 51820 up for which inUse reports false, and two rules are
//     added for its family: "not fwmark T table T" (unmarked traffic uses
//     the tunnel) and "table main suppress_prefixlength 0" (the main table
//     still wins for everything but its default route). The engine marks
//     its own UDP packets with T (Plan.FwMark) so they do not loop back
//     into the tunnel.
//
// Prefixes are masked and deduplicated. inUse is only called when a
// default route needs a table and cfg has no FwMark; it may be nil otherwise.
func PlanRoutes(cfg *wg.Config, ts TableSetting, inUse TableInUse) (Plan, error) {
	var p Plan
	if cfg == nil || ts.Mode == TableOff {
		return p, nil
	}
	var dsts []netip.Prefix
	for _, peer := range cfg.Peers {
		for _, a := range peer.AllowedIPs {
			if !a.IsValid() {
				continue
			}
			dsts = append(dsts, netip.PrefixFrom(a.Addr().Unmap(), prefixBits(a)).Masked())
		}
	}
	// Longest prefix first, IPv4 before IPv6 at equal length, then by address:
	// wg-quick's order, made deterministic.
	slices.SortFunc(dsts, func(a, b netip.Prefix) int {
		if c := cmp.Compare(b.Bits(), a.Bits()); c != 0 {
			return c
		}
		return a.Addr().Compare(b.Addr())
	})
	dsts = slices.Compact(dsts)

	var fwTable uint32
	for _, d := range dsts {
		switch {
		case ts.Mode == TableFixed:
			p.Routes = append(p.Routes, Route{Dst: d, Table: ts.ID})
		case d.Bits() != 0:
			p.Routes = append(p.Routes, Route{Dst: d, Table: TableMain})
		default:
			if fwTable == 0 {
				t, err := fwMarkTable(cfg.Interface.FwMark, inUse)
				if err != nil {
					return Plan{}, err
				}
				fwTable = t
				if cfg.Interface.FwMark == 0 {
					p.FwMark = t
				}
			}
			v6 := d.Addr().Is6()
			p.Rules = append(p.Rules,
				Rule{IPv6: v6, Table: fwTable, Mark: fwTable, Invert: true, SuppressPrefixlen: -1},
				Rule{IPv6: v6, Table: TableMain, SuppressPrefixlen: 0},
			)
			p.Routes = append(p.Routes, Route{Dst: d, Table: fwTable})
		}
	}
	return p, nil
}

// prefixBits keeps a prefix length valid for an unmapped address.
func prefixBits(a netip.Prefix) int {
	if a.Addr().Is4In6() {
		return max(a.Bits()-96, 0)
	}
	return a.Bits()
}

// fwMarkTable picks the table of the fwmark scheme: the configured mark,
// else the first table from DefaultFwMarkTable that holds no route.
func fwMarkTable(mark uint32, inUse TableInUse) (uint32, error) {
	if mark != 0 {
		return mark, nil
	}
	if inUse == nil {
		return DefaultFwMarkTable, nil
	}
	for t := uint32(DefaultFwMarkTable); t < DefaultFwMarkTable+maxTableProbe; t++ {
		used, err := inUse(t)
		if err != nil {
			return 0, fmt.Errorf("netconf: find a free routing table: %w", err)
		}
		if !used {
			return t, nil
		}
	}
	return 0, errors.New("netconf: find a free routing table: none free from 51820")
}

// Covered reports whether dst lies inside one of the prefixes in on, the
// destinations of routes the interface already has in the main table.
// wg-quick skips such routes ("ip route show dev IF match DST").
func Covered(dst netip.Prefix, on []netip.Prefix) bool {
	for _, o := range on {
		if o.Addr().Is4() == dst.Addr().Is4() && o.Bits() <= dst.Bits() && o.Contains(dst.Addr()) {
			return true
		}
	}
	return false
}

// AdapterRoutes returns the destinations to route on the interface itself
// where the system has no policy routing tables (Windows): every
// AllowedIPs prefix of cfg, masked, unmapped and deduplicated, longest
// first, or none when ts is TableOff. The IP helper API refuses to add a
// route twice, so prefixes that differ only in their host bits
// (10.0.0.1/24 and 10.0.0.0/24), or that two peers share, must become one
// route.
func AdapterRoutes(cfg *wg.Config, ts TableSetting) []netip.Prefix {
	if ts.Mode == TableOff {
		return nil
	}
	// The routes of a fixed table are exactly that list, and planning
	// them cannot fail: no table is probed. The table number is unused.
	p, _ := PlanRoutes(cfg, TableSetting{Mode: TableFixed, ID: TableMain}, nil)
	out := make([]netip.Prefix, 0, len(p.Routes))
	for _, r := range p.Routes {
		out = append(out, r.Dst)
	}
	return out
}

// TableNone is the Table of the routes of a system without policy routing
// tables (Windows): they go on the interface itself. Apply never skips
// such a route as covered (that is for TableMain) and lists no routes.
const TableNone = 0

// PlanAdapter is PlanRoutes for a system without policy routing tables
// (Windows): a route in TableNone for each of AdapterRoutes(cfg, ts), no
// rules and no fwmark.
func PlanAdapter(cfg *wg.Config, ts TableSetting) Plan {
	var p Plan
	for _, dst := range AdapterRoutes(cfg, ts) {
		p.Routes = append(p.Routes, Route{Dst: dst, Table: TableNone})
	}
	return p
}
