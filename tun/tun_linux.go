//go:build linux

package tun

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	wgtun "golang.zx2c4.com/wireguard/tun"

	"github.com/wgkit/wgkit/internal/netconf"
	"github.com/wgkit/wgkit/wg"
)

// open is Open on Linux. The order, and the reverse order of the roll back:
// plan routes (before anything changes, so the fwmark goes into the
// engine's config), create the TUN, listen for UAPI, start the engine, then
// configure the host through netconf (addresses, link up, DNS, rules,
// routes).
func open(ctx context.Context, cfg *wg.Config, opts *Options, a *openArgs) (*Interface, error) {
	name, log := a.name, a.log

	// Validate everything we can before touching the host. wireguard-go's
	// CreateTUN leaks its file descriptor when the name is invalid or in
	// use, and its goroutines when the MTU is refused, so check first.
	if err := checkName(name); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	mtu := cfg.Interface.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	if mtu < 68 || mtu > 65535 {
		return nil, fmt.Errorf("mtu %d out of range [68, 65535]", mtu)
	}
	ts, err := netconf.ParseTable(cfg.Interface.Table, lookupTableName)
	if err != nil {
		return nil, err
	}
	if _, err := netlink.LinkByName(name); err == nil {
		return nil, fmt.Errorf("interface already exists: %w", os.ErrExist)
	} else if !errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil, fmt.Errorf("look up interface: %w", err)
	}
	plan, err := netconf.PlanRoutes(cfg, ts, netconf.LinuxTableInUse)
	if err != nil {
		return nil, err
	}
	runCfg := cfg.Clone()
	if plan.FwMark != 0 {
		runCfg.Interface.FwMark = plan.FwMark
	}

	t, err := wgtun.CreateTUN(name, mtu)
	if err != nil {
		return nil, fmt.Errorf("create tun: %w", err)
	}
	index := 0
	if link, err := netlink.LinkByName(name); err == nil {
		index = link.Attrs().Index
	}
	remove := func() error { return removeLink(name, index) }
	var uapi net.Listener
	if !opts.DisableUAPI {
		uapi, err = wg.ListenUAPI("", name)
		if err != nil {
			t.Close()
			return nil, errors.Join(err, remove())
		}
	}
	dopts := &wg.DeviceOptions{Logger: log, Bind: a.bind, UAPI: uapi}
	a.bind = nil // NewDevice owns it from here, failing or not.
	dev, err := wg.NewDeviceContext(ctx, t, runCfg, dopts)
	if err != nil {
		if uapi != nil {
			// NewDevice should have closed it, but not every failure
			// path of it does; a second Close is harmless.
			uapi.Close()
		}
		return nil, errors.Join(err, remove())
	}
	closeDev := func() error {
		return errors.Join(dev.Close(), remove())
	}
	if err := checkListenPort(dev, cfg.Interface.ListenPort); err != nil {
		return nil, errors.Join(err, closeDev())
	}

	nc, err := netconf.NewLinux(name, log)
	if err != nil {
		return nil, errors.Join(err, closeDev())
	}
	err = netconf.Apply(ctx, nc, netconf.Settings{
		Addresses:  cfg.Interface.Addresses,
		Plan:       plan,
		DNS:        opts.SetDNS,
		DNSServers: cfg.Interface.DNS,
		DNSSearch:  cfg.Interface.DNSSearch,
	})
	if err != nil {
		// Apply has undone its own changes.
		return nil, errors.Join(err, closeDev())
	}
	log.Info("tun: interface up", "name", name, "mtu", mtu, "routes", len(plan.Routes), "rules", len(plan.Rules))
	return &Interface{name: name, dev: dev, unconfigure: nc.Undo, remove: remove}, nil
}

// checkName applies the kernel's rules for interface names
// (dev_valid_name): 1 to 15 bytes, not "." or "..", no '/', ':' or space
// (the kernel's isspace, which includes byte 0xa0). A NUL byte would end
// the name early in the kernel's copy, so the interface created would not
// be the one named.
func checkName(name string) error {
	if len(name) == 0 || len(name) > 15 || name == "." || name == ".." ||
		strings.ContainsAny(name, "/: \t\n\r\v\f\x00") || strings.IndexByte(name, 0xa0) >= 0 {
		return fmt.Errorf("invalid interface name %q", name)
	}
	return nil
}

// removeLink deletes the interface if it still exists with the index it
// was created with. Closing the TUN deletes it already; this catches the
// case where it did not (or where another process kept the TUN open).
func removeLink(name string, index int) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil // gone, as it should be
	}
	if index != 0 && link.Attrs().Index != index {
		return nil // someone else's interface by now
	}
	if err := netlink.LinkDel(link); err != nil && !errors.As(err, new(netlink.LinkNotFoundError)) {
		return fmt.Errorf("delete link: %w", err)
	}
	return nil
}

// lookupTableName resolves a routing table name as ip-route(8) does, from
// iproute2's rt_tables files.
func lookupTableName(name string) (uint32, bool) {
	files := []string{"/etc/iproute2/rt_tables", "/usr/share/iproute2/rt_tables", "/usr/lib/iproute2/rt_tables"}
	for _, d := range []string{"/etc/iproute2/rt_tables.d", "/usr/share/iproute2/rt_tables.d", "/usr/lib/iproute2/rt_tables.d"} {
		m, _ := filepath.Glob(filepath.Join(d, "*.conf"))
		files = append(files, m...)
	}
	for _, f := range files {
		if id, ok := lookupIn(f, name); ok {
			return id, true
		}
	}
	return 0, false
}

func lookupIn(file, name string) (uint32, bool) {
	f, err := os.Open(file)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	m, err := netconf.ParseRTTables(f)
	if err != nil {
		return 0, false
	}
	id, ok := m[name]
	return id, ok
}
