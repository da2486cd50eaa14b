//go:build windows

package netconf

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"golang.org/x/sys/windows"
	"golang.zx2c4.com/wireguard/windows/tunnel/winipcfg"
)

// WindowsSettings is what ApplyWindows installs on a Wintun adapter.
type WindowsSettings struct {
	// MTU is the IP MTU of both families, in bytes; 0 leaves it alone.
	MTU int
	// Addresses are the adapter's addresses.
	Addresses []netip.Prefix
	// Routes are the destinations routed through the adapter. Windows has
	// no policy routing tables: every route goes on the adapter itself.
	Routes []netip.Prefix
	// DNS, when true and DNSServers is not empty, sets the adapter's DNS
	// servers and search domains.
	DNS        bool
	DNSServers []netip.Addr
	DNSSearch  []string
}

// ApplyWindows configures the adapter luid through the IP helper API, per
// address family: addresses, routes, interface settings (MTU; automatic
// metric off and metric 0 for a family with a default route, so the
// tunnel's default route wins; no duplicate address detection or router
// discovery), then DNS. It returns the function that removes what it set;
// on failure it removes it itself. The adapter's own deletion removes
// everything as well.
func ApplyWindows(luid uint64, s WindowsSettings, log *slog.Logger) (undo func() error, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := winipcfg.LUID(luid)
	var undos []func() error
	undo = func() error {
		var errs []error
		for i := len(undos) - 1; i >= 0; i-- {
			if err := undos[i](); err != nil && !errors.Is(err, windows.ERROR_NOT_FOUND) {
				errs = append(errs, err)
			}
		}
		undos = nil
		return errors.Join(errs...)
	}
	defer func() {
		if err != nil {
			if uerr := undo(); uerr != nil {
				err = errors.Join(err, fmt.Errorf("roll back: %w", uerr))
			}
		}
	}()
	for _, fam := range []winipcfg.AddressFamily{windows.AF_INET, windows.AF_INET6} {
		is4 := fam == windows.AF_INET
		name := "ipv6"
		if is4 {
			name = "ipv4"
		}
		var addrs []netip.Prefix
		for _, a := range s.Addresses {
			if a.Addr().Is4() == is4 {
				addrs = append(addrs, a)
			}
		}
		var routes []*winipcfg.RouteData
		hasDefault := false
		for _, r := range s.Routes {
			if r.Addr().Is4() != is4 {
				continue
			}
			hop := netip.IPv6Unspecified()
			if is4 {
				hop = netip.IPv4Unspecified()
			}
			routes = append(routes, &winipcfg.RouteData{Destination: r.Masked(), NextHop: hop})
			hasDefault = hasDefault || r.Bits() == 0
		}
		if len(addrs) == 0 && len(routes) == 0 {
			continue // the family may well be disabled on the host
		}
		if len(addrs) > 0 {
			if err := l.SetIPAddressesForFamily(fam, addrs); err != nil {
				return nil, fmt.Errorf("netconf: set %s addresses: %w", name, err)
			}
			undos = append(undos, func() error { return l.FlushIPAddresses(fam) })
			log.Debug("netconf: set addresses", "family", name, "addresses", addrs)
		}
		if len(routes) > 0 {
			if err := l.SetRoutesForFamily(fam, routes); err != nil {
				return nil, fmt.Errorf("netconf: set %s routes: %w", name, err)
			}
			undos = append(undos, func() error { return l.FlushRoutes(fam) })
			log.Debug("netconf: set routes", "family", name, "count", len(routes))
		}
		row, err := l.IPInterface(fam)
		if err != nil {
			return nil, fmt.Errorf("netconf: read %s interface: %w", name, err)
		}
		row.RouterDiscoveryBehavior = winipcfg.RouterDiscoveryDisabled
		row.DadTransmits = 0
		row.ManagedAddressConfigurationSupported = false
		row.OtherStatefulConfigurationSupported = false
		if s.MTU > 0 {
			row.NLMTU = uint32(s.MTU)
		}
		if hasDefault {
			row.UseAutomaticMetric = false
			row.Metric = 0
		}
		if err := row.Set(); err != nil {
			return nil, fmt.Errorf("netconf: set %s interface (mtu, metric): %w", name, err)
		}
		if s.DNS && len(s.DNSServers) > 0 {
			if err := l.SetDNS(fam, s.DNSServers, s.DNSSearch); err != nil {
				return nil, fmt.Errorf("netconf: set %s dns: %w", name, err)
			}
			undos = append(undos, func() error { return l.FlushDNS(fam) })
		}
	}
	return undo, nil
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
