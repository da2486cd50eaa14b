//go:build windows

package tun

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"golang.org/x/sys/windows"
	"golang.zx2c4.com/wireguard/conn"
	wgtun "golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/windows/tunnel/winipcfg"

	"github.com/wgkit/wgkit/internal/engine"
	"github.com/wgkit/wgkit/internal/netconf"
	"github.com/wgkit/wgkit/internal/wgnt"
	"github.com/wgkit/wgkit/internal/wintun"
	"github.com/wgkit/wgkit/wg"
)

// windowsTun is the platform of Windows: a Wintun adapter configured
// through the IP helper API (internal/netconf). Windows has no policy
// routing tables, so the config's Table only matters when it is "off" (no
// routes); any other value routes every AllowedIPs prefix on the adapter.
//
// A default route through the adapter would capture the tunnel's own UDP
// packets. As wireguard-windows does, the engine's sockets are then bound
// to the interface holding the host's best other default route. Unlike
// wireguard-windows, this is done once, at Open: a later change of uplink
// is not followed.
type windowsTun struct {
	guid     *windows.GUID
	luid     uint64
	addrs    []netip.Prefix // the config's addresses
	defaults map[bool]bool  // is4 -> the tunnel has a default route
	// bind is the engine's Bind, kept to bind its sockets to the uplink.
	bind conn.Bind
}

var _ platform = (*windowsTun)(nil)

func newPlatform() (platform, error) { return &windowsTun{}, nil }

func (w *windowsTun) prepare(s *openState) (*wg.Config, netconf.Plan, error) {
	cfg := s.cfg
	w.addrs = slices.Clone(cfg.Interface.Addresses)
	ts, err := netconf.ParseTable(cfg.Interface.Table, nil)
	if err != nil {
		return nil, netconf.Plan{}, err
	}
	// The GUID is an argument, as is the tunnel type: the package variables
	// WintunStaticRequestedGUID and WintunTunnelType are neither read nor
	// written.
	if s.opts.GUID != "" {
		g, err := windows.GUIDFromString(s.opts.GUID)
		if err != nil {
			return nil, netconf.Plan{}, fmt.Errorf("guid %q: %w", s.opts.GUID, err)
		}
		w.guid = &g
	}
	if ts.Mode == netconf.TableFixed {
		s.log.Warn("tun: routing tables do not exist on Windows; routing on the adapter", "table", cfg.Interface.Table)
	}
	plan := netconf.PlanAdapter(cfg, ts)
	w.defaults = map[bool]bool{}
	for _, r := range plan.Routes {
		if r.Dst.Bits() == 0 {
			w.defaults[r.Dst.Addr().Is4()] = true
		}
	}
	return cfg, plan, nil
}

func (w *windowsTun) createTUN(s *openState, mtu int) (wgtun.Device, error) {
	if len(w.defaults) > 0 && s.bind == nil {
		// Keep a handle on the default Bind to bind its sockets in
		// finish. (WireGuardNT binds its own sockets: only wireguard-go
		// needs this.)
		s.bind = conn.NewDefaultBind()
	}
	w.bind = s.bind
	t, err := wintun.Create(s.name, s.opts.TunnelType, w.guid, mtu)
	if err != nil {
		return nil, err
	}
	w.luid = t.LUID()
	return t, nil
}

// createKernel creates a WireGuardNT adapter when the driver is there
// (wgnt.Available); its Close removes it. The adapter has no MTU of its
// own: configurator sets the IP MTU of each family.
func (w *windowsTun) createKernel(s *openState, _ int) (engine.Engine, error) {
	if !wgnt.Available() {
		return nil, fmt.Errorf("WireGuardNT not available (wireguard.dll next to the program, Administrator rights): %w", errors.ErrUnsupported)
	}
	d, err := wgnt.Create(s.name, &wgnt.Options{GUID: s.opts.GUID, TunnelType: s.opts.TunnelType})
	if err != nil {
		return nil, err
	}
	w.luid = d.LUID()
	return d, nil
}

// configurator returns the IP helper Configurator, which sets the IP MTU
// of each family too.
func (w *windowsTun) configurator(s *openState, mtu int) (netconf.Configurator, int, error) {
	return netconf.NewWindows(w.luid, s.log), mtu, nil
}

// finish binds wireguard-go's sockets to the uplink; with WireGuardNT
// (no Bind) there is nothing to do: the driver keeps its own sockets off
// the tunnel.
func (w *windowsTun) finish(_ *openState, _ *wg.Device) error {
	if w.bind == nil {
		return nil
	}
	return bindToUplink(w.bind, w.luid, w.defaults)
}

func (w *windowsTun) linkMTU() (int, error) {
	l := winipcfg.LUID(w.luid)
	for _, fam := range []winipcfg.AddressFamily{windows.AF_INET, windows.AF_INET6} {
		if row, err := l.IPInterface(fam); err == nil {
			return int(row.NLMTU), nil
		}
	}
	return 0, errors.New("no ip interface")
}

// linkAddrs lists the adapter's unicast addresses, leaving out the
// link-local ones Windows adds by itself (a configured one stays).
func (w *windowsTun) linkAddrs() ([]netip.Addr, error) {
	rows, err := winipcfg.GetUnicastIPAddressTable(windows.AF_UNSPEC)
	if err != nil {
		return nil, err
	}
	out := []netip.Addr{}
	for i := range rows {
		if uint64(rows[i].InterfaceLUID) != w.luid {
			continue
		}
		if a := rows[i].Address.Addr().Unmap(); a.IsValid() && (!a.IsLinkLocalUnicast() || configured(w.addrs, a)) {
			out = append(out, a)
		}
	}
	return out, nil
}

// bindToUplink binds the Bind's sockets of each family with a default
// route in the tunnel to the host's best other default-route interface.
func bindToUplink(b conn.Bind, own uint64, defaults map[bool]bool) error {
	if len(defaults) == 0 {
		return nil
	}
	sb, ok := b.(conn.BindSocketToInterface)
	if !ok {
		return nil // a custom Bind routes its packets itself
	}
	for is4 := range defaults {
		fam := uint16(windows.AF_INET6)
		if is4 {
			fam = windows.AF_INET
		}
		index, err := netconf.DefaultInterface(fam, own)
		if err != nil {
			return err
		}
		if index == 0 {
			continue // no uplink for this family: nothing to escape to
		}
		if is4 {
			err = sb.BindSocketToInterface4(index, false)
		} else {
			err = sb.BindSocketToInterface6(index, false)
		}
		if err != nil {
			return fmt.Errorf("bind sockets to interface %d: %w", index, err)
		}
	}
	return nil
}
