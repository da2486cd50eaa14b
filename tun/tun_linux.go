//go:build linux

package tun

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/conn"
	wgtun "golang.zx2c4.com/wireguard/tun"

	"github.com/wgkit/wgkit/internal/engine"
	"github.com/wgkit/wgkit/internal/kernelwg"
	"github.com/wgkit/wgkit/internal/netconf"
	"github.com/wgkit/wgkit/internal/udpbind"
	"github.com/wgkit/wgkit/wg"
)

// linux is the platform of Linux: wireguard-go's kernel TUN driver and
// rtnetlink, planned as wg-quick does (routing tables, the fwmark scheme).
type linux struct {
	name  string
	addrs []netip.Prefix // the config's addresses
	index int            // the interface's index once created; 0 before
}

var _ platform = (*linux)(nil)

func newPlatform() (platform, error) { return &linux{}, nil }

// prepare checks the name (wireguard-go's CreateTUN leaks its file
// descriptor when the name is invalid or in use, so check first), the
// table and that no interface has the name, then plans the routes: before
// anything changes, so the fwmark goes into the engine's config.
func (l *linux) prepare(s *openState) (*wg.Config, netconf.Plan, error) {
	cfg := s.cfg
	l.name, l.addrs = s.name, slices.Clone(cfg.Interface.Addresses)
	if err := checkName(l.name); err != nil {
		return nil, netconf.Plan{}, err
	}
	ts, err := netconf.ParseTable(cfg.Interface.Table, lookupTableName)
	if err != nil {
		return nil, netconf.Plan{}, err
	}
	if _, err := netlink.LinkByName(l.name); err == nil {
		return nil, netconf.Plan{}, fmt.Errorf("interface already exists: %w", os.ErrExist)
	} else if !errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil, netconf.Plan{}, fmt.Errorf("look up interface: %w", err)
	}
	plan, err := netconf.PlanRoutes(cfg, ts, netconf.LinuxTableInUse)
	if err != nil {
		return nil, netconf.Plan{}, err
	}
	runCfg := cfg
	if plan.FwMark != 0 {
		runCfg = cfg.Clone()
		runCfg.Interface.FwMark = plan.FwMark
	}
	return runCfg, plan, nil
}

// bindBatch is the batch of the default Bind: the engine's and the TUN's
// (conn.IdealBatchSize), below which udpbind loses to wireguard-go's Bind
// on a kernel TUN (BENCHMARKS.md, "kernel TUN, second round").
const bindBatch = 128

// newDefaultBind returns the Bind wireguard-go runs on when Options.Bind
// is nil: wgkit's, with the sticky source that wireguard-go's own Bind
// has (replies leave from the address the peer wrote to), which moves
// more per CPU second (no allocation per datagram, GSO from the packets
// in place).
func newDefaultBind(s *openState) conn.Bind {
	return udpbind.New(&udpbind.Options{BatchSize: bindBatch, StickySource: true, Logger: s.log})
}

// createTUN creates the TUN with its MTU, and the default Bind unless the
// caller gave one; once the TUN is closed, the interface it made must be
// gone too (removeLink).
func (l *linux) createTUN(s *openState, mtu int) (wgtun.Device, error) {
	if s.bind == nil {
		// Open closes it if a later step fails, as a caller's.
		s.bind = newDefaultBind(s)
	}
	t, err := wgtun.CreateTUN(l.name, mtu)
	if err != nil {
		return nil, fmt.Errorf("create tun: %w", err)
	}
	if link, err := netlink.LinkByName(l.name); err == nil {
		l.index = link.Attrs().Index
	}
	s.cl.push(func() error { return removeLink(l.name, l.index) })
	return t, nil
}

// createKernel creates the kernel's `wireguard` link with its MTU; once
// the engine is closed, which deletes it, the link must be gone
// (removeLink catches an engine that did not).
func (l *linux) createKernel(s *openState, mtu int) (engine.Engine, error) {
	d, err := kernelwg.Create(l.name, &kernelwg.Options{MTU: mtu})
	if err != nil {
		return nil, err // already "kernelwg: create link ...", ErrUnsupported when absent
	}
	l.index = d.Index()
	s.cl.push(func() error { return removeLink(l.name, l.index) })
	return d, nil
}

// configurator returns the rtnetlink Configurator; CreateTUN and
// createKernel have set the MTU already.
func (l *linux) configurator(s *openState, _ int) (netconf.Configurator, int, error) {
	nc, err := netconf.NewLinux(l.name, s.log)
	return nc, 0, err
}

func (l *linux) finish(*openState, *wg.Device) error { return nil }

func (l *linux) link() (netlink.Link, error) {
	link, err := netlink.LinkByName(l.name)
	if err != nil {
		return nil, err
	}
	if l.index != 0 && link.Attrs().Index != l.index {
		return nil, errors.New("interface replaced")
	}
	return link, nil
}

func (l *linux) linkMTU() (int, error) {
	link, err := l.link()
	if err != nil {
		return 0, err
	}
	return link.Attrs().MTU, nil
}

// linkAddrs lists the link's addresses, leaving out the link-local ones
// the kernel may add by itself (a configured one stays).
func (l *linux) linkAddrs() ([]netip.Addr, error) {
	link, err := l.link()
	if err != nil {
		return nil, err
	}
	as, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	out := []netip.Addr{}
	for _, a := range as {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		if ip = ip.Unmap(); !ip.IsLinkLocalUnicast() || configured(l.addrs, ip) {
			out = append(out, ip)
		}
	}
	return out, nil
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
