//go:build linux

package netconf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var _ Configurator = (*Linux)(nil)

// Linux is the Configurator for a Linux network interface, speaking
// rtnetlink in the calling process's network namespace.
type Linux struct {
	h     *netlink.Handle
	link  netlink.Link
	name  string
	log   *slog.Logger
	undos []undo
}

// undoTimeout bounds resolvconf when tearing down.
const undoTimeout = 10 * time.Second

// NewLinux returns a Configurator for the existing interface name. log
// receives one debug line per change; nil discards.
func NewLinux(name string, log *slog.Logger) (*Linux, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netconf: open netlink: %w", err)
	}
	link, err := h.LinkByName(name)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("netconf: find link %q: %w", name, err)
	}
	return &Linux{h: h, link: link, name: name, log: log}, nil
}

func (l *Linux) record(what string, f func() error) {
	l.log.Debug("netconf: "+what, "dev", l.name)
	l.undos = append(l.undos, undo{what: what, do: f})
}

// SetMTU implements Configurator. The old MTU is restored by Undo.
func (l *Linux) SetMTU(mtu int) error {
	old := l.link.Attrs().MTU
	if err := l.h.LinkSetMTU(l.link, mtu); err != nil {
		return err
	}
	l.record(fmt.Sprintf("set mtu %d", mtu), func() error { return l.h.LinkSetMTU(l.link, old) })
	return nil
}

// AddAddress implements Configurator.
func (l *Linux) AddAddress(p netip.Prefix) error {
	a := &netlink.Addr{IPNet: ipNet(p)}
	if err := l.h.AddrAdd(l.link, a); err != nil {
		return err
	}
	l.record("add address "+p.String(), func() error { return l.h.AddrDel(l.link, a) })
	return nil
}

// SetUp implements Configurator.
func (l *Linux) SetUp() error {
	if err := l.h.LinkSetUp(l.link); err != nil {
		return err
	}
	l.record("set link up", func() error { return l.h.LinkSetDown(l.link) })
	return nil
}

// MainRoutes implements Configurator.
func (l *Linux) MainRoutes() ([]netip.Prefix, error) {
	filter := &netlink.Route{LinkIndex: l.link.Attrs().Index, Table: unix.RT_TABLE_MAIN}
	rs, err := l.h.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, r := range rs {
		if p, ok := prefixOf(r.Dst); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

// LinuxTableInUse reports whether table holds any IPv4 or IPv6 route in
// the calling namespace, the test wg-quick uses to find a free table for
// its fwmark scheme. It has the type TableInUse.
func LinuxTableInUse(table uint32) (bool, error) {
	found := false
	filter := &netlink.Route{Table: int(table)}
	err := netlink.RouteListFilteredIter(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TABLE, func(netlink.Route) bool {
		found = true
		return false
	})
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return false, err
	}
	return found, nil
}

// AddRule implements Configurator.
func (l *Linux) AddRule(r Rule) (bool, error) {
	nr := toNetlinkRule(r)
	if err := l.h.RuleAdd(nr); err != nil {
		if errors.Is(err, unix.EEXIST) {
			l.log.Debug("netconf: rule exists, kept as found", "rule", r.String())
			return false, nil
		}
		return false, err
	}
	l.record("add rule "+r.String(), func() error { return l.h.RuleDel(toNetlinkRule(r)) })
	return true, nil
}

func toNetlinkRule(r Rule) *netlink.Rule {
	nr := netlink.NewRule()
	nr.Family = unix.AF_INET
	if r.IPv6 {
		nr.Family = unix.AF_INET6
	}
	nr.Table = int(r.Table)
	nr.Mark = r.Mark
	nr.Invert = r.Invert
	nr.SuppressPrefixlen = r.SuppressPrefixlen
	return nr
}

// AddRoute implements Configurator. Like "ip route add DST dev IF", an
// IPv4 route has link scope.
func (l *Linux) AddRoute(r Route) error {
	nr := &netlink.Route{
		LinkIndex: l.link.Attrs().Index,
		Dst:       ipNet(r.Dst),
		Table:     int(r.Table),
	}
	if r.Dst.Addr().Is4() {
		nr.Scope = netlink.SCOPE_LINK
	}
	if err := l.h.RouteAdd(nr); err != nil {
		return err
	}
	l.record(fmt.Sprintf("add route %s table %d", r.Dst, r.Table), func() error { return l.h.RouteDel(nr) })
	return nil
}

// ResolvconfInterface is the name under which SetDNS registers the
// interface's DNS settings with resolvconf(8).
func ResolvconfInterface(name string) string { return "tun." + name }

// SetDNS implements Configurator through resolvconf(8), as wg-quick does:
// "resolvconf -a tun.NAME -m 0 -x" with the settings on stdin; Undo runs
// "resolvconf -d tun.NAME -f". It fails when resolvconf is not installed.
func (l *Linux) SetDNS(ctx context.Context, servers []netip.Addr, search []string) error {
	path, err := exec.LookPath("resolvconf")
	if err != nil {
		return err
	}
	var in bytes.Buffer
	for _, s := range servers {
		fmt.Fprintf(&in, "nameserver %s\n", s)
	}
	if len(search) > 0 {
		fmt.Fprintf(&in, "search %s\n", strings.Join(search, " "))
	}
	iface := ResolvconfInterface(l.name)
	if err := runResolvconf(ctx, path, &in, "-a", iface, "-m", "0", "-x"); err != nil {
		return err
	}
	l.record("resolvconf -a "+iface, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), undoTimeout)
		defer cancel()
		return runResolvconf(ctx, path, nil, "-d", iface, "-f")
	})
	return nil
}

func runResolvconf(ctx context.Context, path string, stdin *bytes.Buffer, args ...string) error {
	cmd := exec.CommandContext(ctx, path, args...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if msg != "" {
			return fmt.Errorf("%s %s: %w: %s", filepath.Base(path), strings.Join(args, " "), err, msg)
		}
		return fmt.Errorf("%s %s: %w", filepath.Base(path), strings.Join(args, " "), err)
	}
	return nil
}

// Undo implements Configurator.
func (l *Linux) Undo() error {
	if l.h == nil {
		return nil
	}
	var errs []error
	for i := len(l.undos) - 1; i >= 0; i-- {
		u := l.undos[i]
		if err := u.do(); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("netconf: undo %s: %w", u.what, err))
			continue
		}
		l.log.Debug("netconf: undid "+u.what, "dev", l.name)
	}
	l.undos = nil
	l.h.Close()
	l.h = nil
	return errors.Join(errs...)
}

// gone reports errors meaning the object to remove no longer exists, as
// when the link was deleted under us.
func gone(err error) bool {
	var le netlink.LinkNotFoundError
	return errors.As(err, &le) ||
		errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) ||
		errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EADDRNOTAVAIL) ||
		errors.Is(err, os.ErrNotExist)
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits == 0 {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	if a.Is4() && bits == 128 {
		ones -= 96
	}
	return netip.PrefixFrom(a, ones), true
}
