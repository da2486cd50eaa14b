package netconf

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
)

// Configurator changes the host configuration of one network interface.
// Every change that succeeds is recorded, and Undo reverts the recorded
// changes in reverse order. A Configurator is used by one goroutine.
type Configurator interface {
	// SetMTU sets the interface MTU in bytes.
	SetMTU(mtu int) error
	// AddAddress adds an address with its prefix length.
	AddAddress(p netip.Prefix) error
	// SetUp brings the link up.
	SetUp() error
	// MainRoutes returns the destinations of the interface's routes in the
	// main table (such as the prefix routes of its addresses).
	MainRoutes() ([]netip.Prefix, error)
	// AddRule adds a policy routing rule. added is false when an identical
	// rule already existed; such a rule is not recorded, so Undo keeps it.
	AddRule(r Rule) (added bool, err error)
	// AddRoute adds a route through the interface.
	AddRoute(r Route) error
	// SetDNS points the host resolver at servers and search domains for as
	// long as the interface is configured.
	SetDNS(ctx context.Context, servers []netip.Addr, search []string) error
	// Undo reverts every recorded change, newest first, continuing past
	// failures, and releases the Configurator. Changes already gone (for
	// example with a deleted link) are not errors.
	Undo() error
}

// undo is one recorded change of a Configurator and how to revert it.
type undo struct {
	what string
	do   func() error
}

// Settings is everything Apply installs.
type Settings struct {
	// MTU is set when nonzero, in bytes.
	MTU int
	// Addresses are added in order.
	Addresses []netip.Prefix
	// Plan holds the rules and routes (see PlanRoutes).
	Plan Plan
	// DNS, when true, applies DNSServers and DNSSearch through SetDNS.
	// Like wg-quick, nothing is changed when DNSServers is empty.
	DNS        bool
	DNSServers []netip.Addr
	DNSSearch  []string
}

// Apply installs s through c in wg-quick's order: MTU, addresses, link up,
// DNS, rules, routes. Main-table routes already covered by one of the
// interface's routes are skipped. If a step fails or ctx ends, Apply undoes
// what it did (c.Undo) and returns the error; on success the caller owns c
// and calls Undo to tear the configuration down.
func Apply(ctx context.Context, c Configurator, s Settings) (err error) {
	defer func() {
		if err != nil {
			if uerr := c.Undo(); uerr != nil {
				err = errors.Join(err, fmt.Errorf("roll back: %w", uerr))
			}
		}
	}()
	step := func(what string, f func() error) error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("netconf: %s: %w", what, err)
		}
		if err := f(); err != nil {
			return fmt.Errorf("netconf: %s: %w", what, err)
		}
		return nil
	}
	if s.MTU != 0 {
		if err := step(fmt.Sprintf("set mtu %d", s.MTU), func() error { return c.SetMTU(s.MTU) }); err != nil {
			return err
		}
	}
	for _, a := range s.Addresses {
		if err := step("add address "+a.String(), func() error { return c.AddAddress(a) }); err != nil {
			return err
		}
	}
	if err := step("set link up", c.SetUp); err != nil {
		return err
	}
	if s.DNS && len(s.DNSServers) > 0 {
		if err := step("set dns", func() error { return c.SetDNS(ctx, s.DNSServers, s.DNSSearch) }); err != nil {
			return err
		}
	}
	for _, r := range s.Plan.Rules {
		if err := step("add rule "+r.String(), func() error { _, err := c.AddRule(r); return err }); err != nil {
			return err
		}
	}
	var onLink []netip.Prefix
	if needMain(s.Plan.Routes) {
		if err := step("list routes", func() (err error) { onLink, err = c.MainRoutes(); return err }); err != nil {
			return err
		}
	}
	for _, r := range s.Plan.Routes {
		if r.Table == TableMain && Covered(r.Dst, onLink) {
			continue
		}
		what := fmt.Sprintf("add route %s table %d", r.Dst, r.Table)
		if err := step(what, func() error { return c.AddRoute(r) }); err != nil {
			return err
		}
		if r.Table == TableMain {
			onLink = append(onLink, r.Dst)
		}
	}
	return nil
}

func needMain(rs []Route) bool {
	for _, r := range rs {
		if r.Table == TableMain {
			return true
		}
	}
	return false
}
