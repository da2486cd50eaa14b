//go:build windows

package tun

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"golang.org/x/sys/windows"
	"golang.zx2c4.com/wireguard/conn"
	wgtun "golang.zx2c4.com/wireguard/tun"

	"github.com/wgkit/wgkit/internal/netconf"
	"github.com/wgkit/wgkit/wg"
)

// wintunTypeMu serializes this package's creation of Wintun adapters.
// wireguard-go takes an adapter's tunnel type only from its package
// variable WintunTunnelType. To honour Options.TunnelType per call rather
// than as a setting of the whole process, createWintun sets that variable
// for the duration of one CreateTUNWithRequestedGUID call, under this lock,
// and restores it: two Opens with different types never see each other's.
// Code outside wgkit that writes the variable itself is not covered.
var wintunTypeMu sync.Mutex

// createWintun creates (or reuses) the Wintun adapter name with the given
// tunnel type ("" keeps wireguard-go's) and requested GUID (nil: any).
func createWintun(name, tunnelType string, guid *windows.GUID, mtu int) (wgtun.Device, error) {
	wintunTypeMu.Lock()
	defer wintunTypeMu.Unlock()
	if tunnelType != "" && tunnelType != wgtun.WintunTunnelType {
		prev := wgtun.WintunTunnelType
		wgtun.WintunTunnelType = tunnelType
		defer func() { wgtun.WintunTunnelType = prev }()
	}
	return wgtun.CreateTUNWithRequestedGUID(name, guid, mtu)
}

// open is Open on Windows: a Wintun adapter configured through the IP
// helper API (internal/netconf). Windows has no policy routing tables, so
// the config's Table only matters when it is "off" (no routes); any other
// value routes every AllowedIPs prefix on the adapter.
//
// A default route through the adapter would capture the tunnel's own UDP
// packets. As wireguard-windows does, the engine's sockets are then bound
// to the interface holding the host's best other default route. Unlike
// wireguard-windows, this is done once, at Open: a later change of uplink
// is not followed.
func open(ctx context.Context, cfg *wg.Config, opts *Options, a *openArgs) (*Interface, error) {
	name, log := a.name, a.log
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ts, err := netconf.ParseTable(cfg.Interface.Table, nil)
	if err != nil {
		return nil, err
	}
	// The GUID, by contrast, is an argument: the package variable
	// WintunStaticRequestedGUID is neither read nor written.
	var guid *windows.GUID
	if opts.GUID != "" {
		g, err := windows.GUIDFromString(opts.GUID)
		if err != nil {
			return nil, fmt.Errorf("guid %q: %w", opts.GUID, err)
		}
		guid = &g
	}
	mtu := cfg.Interface.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	if ts.Mode == netconf.TableFixed {
		log.Warn("tun: routing tables do not exist on Windows; routing on the adapter", "table", cfg.Interface.Table)
	}
	routes := netconf.AdapterRoutes(cfg, ts)
	defaults := map[bool]bool{} // is4 -> has a default route
	for _, r := range routes {
		if r.Bits() == 0 {
			defaults[r.Addr().Is4()] = true
		}
	}
	if len(defaults) > 0 && a.bind == nil {
		// Keep a handle on the default Bind to bind its sockets below.
		a.bind = conn.NewDefaultBind()
	}

	t, err := createWintun(name, opts.TunnelType, guid, mtu)
	if err != nil {
		return nil, fmt.Errorf("create wintun adapter: %w", err)
	}
	nt, ok := t.(*wgtun.NativeTun)
	if !ok {
		t.Close()
		return nil, fmt.Errorf("unexpected tun device %T", t)
	}
	luid := nt.LUID()
	var uapi net.Listener
	if !opts.DisableUAPI {
		uapi, err = wg.ListenUAPI("", name)
		if err != nil {
			t.Close()
			return nil, err
		}
	}
	engineBind := a.bind
	a.bind = nil // NewDevice owns it from here, failing or not.
	dev, err := wg.NewDeviceContext(ctx, t, cfg, &wg.DeviceOptions{Logger: log, Bind: engineBind, UAPI: uapi})
	if err != nil {
		if uapi != nil {
			uapi.Close() // in case NewDevice did not; harmless if it did
		}
		return nil, err
	}
	if err := checkListenPort(dev, cfg.Interface.ListenPort); err != nil {
		return nil, errors.Join(err, dev.Close())
	}
	undo, err := netconf.ApplyWindows(luid, netconf.WindowsSettings{
		MTU:        mtu,
		Addresses:  cfg.Interface.Addresses,
		Routes:     routes,
		DNS:        opts.SetDNS,
		DNSServers: cfg.Interface.DNS,
		DNSSearch:  cfg.Interface.DNSSearch,
	}, log)
	if err != nil {
		return nil, errors.Join(err, dev.Close())
	}
	if err := bindToUplink(engineBind, luid, defaults); err != nil {
		return nil, errors.Join(err, undo(), dev.Close())
	}
	log.Info("tun: interface up", "name", name, "mtu", mtu, "routes", len(routes))
	return &Interface{name: name, dev: dev, unconfigure: undo}, nil
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
