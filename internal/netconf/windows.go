//go:build windows

package netconf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"golang.org/x/sys/windows"
	"golang.zx2c4.com/wireguard/windows/tunnel/winipcfg"
)

var _ Configurator = (*Windows)(nil)

// Windows is the Configurator for a Wintun adapter, speaking the IP helper
// API. Windows has no policy routing tables: routes go on the adapter
// whatever their Table (plan them with PlanAdapter) and AddRule fails.
//
// An address family is set up when its first address or route arrives
// (families without either are left alone, as the family may well be
// disabled on the host): its existing addresses or routes are flushed,
// its interface settings get the MTU, no duplicate address detection and
// no router discovery, and a family with a default route gets automatic
// metric off and metric 0, so the tunnel's default route wins. SetDNS
// applies to every family set up, before or after it. Undo flushes what
// was set; the adapter's own deletion removes everything as well.
type Windows struct {
	luid  winipcfg.LUID
	log   *slog.Logger
	mtu   int
	fams  map[winipcfg.AddressFamily]*winFamily
	dns   *winDNS // set by SetDNS; applied to families set up later too
	undos []undo
	done  bool
}

// winFamily is the state of one address family of the adapter.
type winFamily struct {
	addrsFlushed, routesFlushed, metricSet bool
}

type winDNS struct {
	servers []netip.Addr
	search  []string
}

// NewWindows returns a Configurator for the adapter luid. log receives one
// debug line per change; nil discards.
func NewWindows(luid uint64, log *slog.Logger) *Windows {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Windows{luid: winipcfg.LUID(luid), log: log, fams: make(map[winipcfg.AddressFamily]*winFamily)}
}

func (w *Windows) record(what string, f func() error) {
	w.log.Debug("netconf: "+what, "luid", uint64(w.luid))
	w.undos = append(w.undos, undo{what: what, do: f})
}

func familyOf(a netip.Addr) (winipcfg.AddressFamily, string) {
	if a.Is4() {
		return windows.AF_INET, "ipv4"
	}
	return windows.AF_INET6, "ipv6"
}

// family returns the state of fam, setting the family up on first use.
func (w *Windows) family(fam winipcfg.AddressFamily, name string) (*winFamily, error) {
	if f := w.fams[fam]; f != nil {
		return f, nil
	}
	row, err := w.luid.IPInterface(fam)
	if err != nil {
		return nil, fmt.Errorf("read %s interface: %w", name, err)
	}
	row.RouterDiscoveryBehavior = winipcfg.RouterDiscoveryDisabled
	row.DadTransmits = 0
	row.ManagedAddressConfigurationSupported = false
	row.OtherStatefulConfigurationSupported = false
	if w.mtu > 0 {
		row.NLMTU = uint32(w.mtu)
	}
	if err := row.Set(); err != nil {
		return nil, fmt.Errorf("set %s interface (mtu): %w", name, err)
	}
	f := &winFamily{}
	w.fams[fam] = f
	if w.dns != nil {
		if err := w.setDNS(fam, name); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// SetMTU implements Configurator: the IP MTU of every family set up from
// here on (Apply sets the MTU first).
func (w *Windows) SetMTU(mtu int) error {
	w.mtu = mtu
	return nil
}

// AddAddress implements Configurator. The family's existing addresses are
// flushed before its first one; Undo flushes the family's addresses.
func (w *Windows) AddAddress(p netip.Prefix) error {
	fam, name := familyOf(p.Addr())
	f, err := w.family(fam, name)
	if err != nil {
		return err
	}
	if err := w.flushOnce(&f.addrsFlushed, name+" addresses", func() error { return w.luid.FlushIPAddresses(fam) }); err != nil {
		return err
	}
	return w.luid.AddIPAddress(p)
}

// flushOnce runs flush the first time, when *done is false, and records
// it as the undo of what it names.
func (w *Windows) flushOnce(done *bool, what string, flush func() error) error {
	if *done {
		return nil
	}
	if err := flush(); err != nil {
		return fmt.Errorf("flush %s: %w", what, err)
	}
	*done = true
	w.record("set "+what, flush)
	return nil
}

// SetUp implements Configurator. A Wintun adapter is up while its engine
// runs, so there is nothing to do.
func (w *Windows) SetUp() error { return nil }

// MainRoutes implements Configurator. Windows has no main table; Apply
// does not call it for routes in TableNone.
func (w *Windows) MainRoutes() ([]netip.Prefix, error) { return nil, nil }

// AddRule implements Configurator: it always fails, Windows has no policy
// routing rules.
func (w *Windows) AddRule(r Rule) (bool, error) {
	return false, fmt.Errorf("policy rule %s: no policy routing on windows", r)
}

// AddRoute implements Configurator: a route for r.Dst on the adapter,
// whatever r.Table. The family's existing routes are flushed before its
// first one; Undo flushes the family's routes.
func (w *Windows) AddRoute(r Route) error {
	fam, name := familyOf(r.Dst.Addr())
	f, err := w.family(fam, name)
	if err != nil {
		return err
	}
	if err := w.flushOnce(&f.routesFlushed, name+" routes", func() error { return w.luid.FlushRoutes(fam) }); err != nil {
		return err
	}
	hop := netip.IPv6Unspecified()
	if fam == windows.AF_INET {
		hop = netip.IPv4Unspecified()
	}
	if err := w.luid.AddRoute(r.Dst.Masked(), hop, 0); err != nil {
		return err
	}
	if r.Dst.Bits() == 0 && !f.metricSet {
		row, err := w.luid.IPInterface(fam)
		if err != nil {
			return fmt.Errorf("read %s interface: %w", name, err)
		}
		row.UseAutomaticMetric = false
		row.Metric = 0
		if err := row.Set(); err != nil {
			return fmt.Errorf("set %s interface (metric): %w", name, err)
		}
		f.metricSet = true
	}
	return nil
}

// SetDNS implements Configurator: the adapter's DNS servers and search
// domains, in every family set up now or later; Undo flushes them.
func (w *Windows) SetDNS(_ context.Context, servers []netip.Addr, search []string) error {
	w.dns = &winDNS{servers: servers, search: search}
	for _, fam := range []winipcfg.AddressFamily{windows.AF_INET, windows.AF_INET6} {
		if w.fams[fam] == nil {
			continue
		}
		name := "ipv4"
		if fam == windows.AF_INET6 {
			name = "ipv6"
		}
		if err := w.setDNS(fam, name); err != nil {
			return err
		}
	}
	return nil
}

func (w *Windows) setDNS(fam winipcfg.AddressFamily, name string) error {
	if err := w.luid.SetDNS(fam, w.dns.servers, w.dns.search); err != nil {
		return fmt.Errorf("set %s dns: %w", name, err)
	}
	w.record("set "+name+" dns", func() error { return w.luid.FlushDNS(fam) })
	return nil
}

// Undo implements Configurator.
func (w *Windows) Undo() error {
	if w.done {
		return nil
	}
	w.done = true
	var errs []error
	for i := len(w.undos) - 1; i >= 0; i-- {
		u := w.undos[i]
		if err := u.do(); err != nil && !errors.Is(err, windows.ERROR_NOT_FOUND) {
			errs = append(errs, fmt.Errorf("netconf: undo %s: %w", u.what, err))
			continue
		}
		w.log.Debug("netconf: undid "+u.what, "luid", uint64(w.luid))
	}
	w.undos = nil
	return errors.Join(errs...)
}

// DefaultInterface returns the index of the interface, other than own,
// that holds the best default route of the family (windows.AF_INET or
// AF_INET6): the up interface with the lowest route plus interface metric.
// It returns 0 when there is none.
func DefaultInterface(family uint16, own uint64) (uint32, error) {
	fam := winipcfg.AddressFamily(family)
	rows, err := winipcfg.GetIPForwardTable2(fam)
	if err != nil {
		return 0, fmt.Errorf("netconf: read routes: %w", err)
	}
	best, index := ^uint32(0), uint32(0)
	for i := range rows {
		r := &rows[i]
		if r.DestinationPrefix.PrefixLength != 0 || uint64(r.InterfaceLUID) == own {
			continue
		}
		ifrow, err := r.InterfaceLUID.Interface()
		if err != nil || ifrow.OperStatus != winipcfg.IfOperStatusUp {
			continue
		}
		ipif, err := r.InterfaceLUID.IPInterface(fam)
		if err != nil {
			continue
		}
		if m := r.Metric + ipif.Metric; m < best {
			best, index = m, r.InterfaceIndex
		}
	}
	return index, nil
}
