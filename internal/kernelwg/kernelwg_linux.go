//go:build linux

package kernelwg

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkit/wgkit/internal/engine"
)

// Device is the kernel engine behind wg.Device's seam.
var _ engine.Engine = (*Device)(nil)

// Options are the optional settings of Create. nil and zero fields mean
// the documented defaults.
type Options struct {
	// MTU is the link's MTU in bytes; 0 leaves the kernel's default
	// (1420). The kernel checks the range.
	MTU int
}

// Device is a kernel WireGuard link made by Create, in the network
// namespace Create ran in. Its methods are safe for concurrent use; they
// reach the link by name, so renaming it behind the Device's back
// detaches them.
type Device struct {
	name  string
	index int
	h     *netlink.Handle // rtnetlink, bound to Create's namespace
	ctl   *wgctrl.Client  // generic netlink, bound to Create's namespace

	mu     sync.Mutex // serializes the methods
	closed bool       // guarded by mu
}

// Available reports whether the kernel can make WireGuard links here: it
// creates one with a random name in the calling thread's network
// namespace and deletes it, as wg-quick does. The kernel loads the module
// on demand if it can. It is false without CAP_NET_ADMIN.
func Available() bool {
	suffix := make([]byte, 3)
	rand.Read(suffix)
	name := "wgkprobe" + hex.EncodeToString(suffix)
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return false
	}
	defer h.Close()
	if err := h.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
		return false
	}
	if err := h.LinkDel(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
		return false // a link we cannot delete is no engine to use
	}
	return true
}

// Create makes the WireGuard link name (1 to 15 bytes, as interface
// names go) in the calling thread's network namespace, down and without
// configuration, and returns its Device. The error wraps
// errors.ErrUnsupported when the kernel has no WireGuard, os.ErrExist when
// a link of that name exists, and os.ErrPermission without CAP_NET_ADMIN.
// Nothing is left behind when it fails.
func Create(name string, opts *Options) (*Device, error) {
	if opts == nil {
		opts = &Options{}
	}
	fail := func(err error) (*Device, error) {
		return nil, fmt.Errorf("kernelwg: create link %q: %w", name, err)
	}
	if err := checkName(name); err != nil {
		return nil, err
	}
	if opts.MTU < 0 || opts.MTU > 65535 {
		return fail(fmt.Errorf("bad MTU %d", opts.MTU))
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fail(fmt.Errorf("open rtnetlink: %w", err))
	}
	// Roll back in reverse order on failure.
	var undo []func()
	rollback := func(err error) (*Device, error) {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return fail(err)
	}
	undo = append(undo, func() { h.Close() })
	attrs := netlink.LinkAttrs{Name: name, MTU: opts.MTU}
	if err := h.LinkAdd(&netlink.Wireguard{LinkAttrs: attrs}); err != nil {
		return rollback(classify(err))
	}
	link, err := h.LinkByName(name)
	if err != nil {
		// Delete by name: the link was made a moment ago.
		h.LinkDel(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: name}})
		return rollback(fmt.Errorf("find the new link: %w", err))
	}
	d := &Device{name: name, index: link.Attrs().Index, h: h}
	undo = append(undo, func() { d.deleteLink() })
	// wgctrl finds the kernel's generic netlink family only once the
	// module is loaded, which the link's creation makes sure of.
	d.ctl, err = wgctrl.New()
	if err != nil {
		return rollback(fmt.Errorf("open generic netlink: %w", err))
	}
	return d, nil
}

// checkName checks an interface name as the kernel does (dev_valid_name).
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("kernelwg: empty link name")
	case len(name) > unix.IFNAMSIZ-1:
		return fmt.Errorf("kernelwg: link name %.20q is longer than %d bytes", name, unix.IFNAMSIZ-1)
	case name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n\x00"):
		return fmt.Errorf("kernelwg: bad link name %q", name)
	}
	return nil
}

// classify explains the errors of RTM_NEWLINK a caller can act on.
func classify(err error) error {
	switch {
	case errors.Is(err, unix.EOPNOTSUPP):
		return fmt.Errorf("the kernel has no WireGuard (is the wireguard module available?): %w", unsupported{err})
	case errors.Is(err, unix.EEXIST):
		return fmt.Errorf("a link of that name exists: %w", err) // unix.EEXIST is os.ErrExist
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("not permitted (needs CAP_NET_ADMIN): %w", err)
	}
	return err
}

// unsupported is an error that also matches errors.ErrUnsupported.
type unsupported struct{ error }

func (u unsupported) Is(target error) bool { return target == errors.ErrUnsupported }
func (u unsupported) Unwrap() error        { return u.error }

// Name returns the link's name.
func (d *Device) Name() string { return d.name }

// Index returns the link's interface index.
func (d *Device) Index() int { return d.index }

// errClosedLocked returns the error for op after Close, or nil.
func (d *Device) errClosedLocked(op string) error {
	if d.closed {
		return fmt.Errorf("kernelwg: %s %s: %w", op, d.name, net.ErrClosed)
	}
	return nil
}

// Up sets the link up, which opens its UDP sockets (and picks the listen
// port if it is 0).
func (d *Device) Up() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.errClosedLocked("up"); err != nil {
		return err
	}
	if err := d.h.LinkSetUp(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Index: d.index}}); err != nil {
		return fmt.Errorf("kernelwg: up %s: %w", d.name, err)
	}
	return nil
}

// Configure applies c. It is applied as one generic netlink request (or
// a few, for many peers); a rejected request leaves what came before it
// applied, as wg(8) does.
func (d *Device) Configure(c *Config) error {
	if c == nil {
		return errors.New("kernelwg: configure: nil config")
	}
	if err := c.Validate(); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.errClosedLocked("configure"); err != nil {
		return err
	}
	if err := d.ctl.ConfigureDevice(d.name, toWgtypes(c)); err != nil {
		return fmt.Errorf("kernelwg: configure %s: %w", d.name, err)
	}
	return nil
}

// toWgtypes converts a validated Config.
func toWgtypes(c *Config) wgtypes.Config {
	w := wgtypes.Config{
		PrivateKey:   (*wgtypes.Key)(c.PrivateKey),
		ListenPort:   c.ListenPort,
		ReplacePeers: c.ReplacePeers,
	}
	if c.FwMark != nil {
		m := int(*c.FwMark)
		w.FirewallMark = &m
	}
	for _, p := range c.Peers {
		wp := wgtypes.PeerConfig{
			PublicKey:         p.PublicKey,
			Remove:            p.Remove,
			UpdateOnly:        p.UpdateOnly,
			PresharedKey:      (*wgtypes.Key)(p.PresharedKey),
			ReplaceAllowedIPs: p.ReplaceAllowedIPs,
		}
		if p.Endpoint.IsValid() {
			wp.Endpoint = net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.Endpoint.Addr().Unmap(), p.Endpoint.Port()))
		}
		if k := p.PersistentKeepalive; k != nil {
			s := k.Truncate(time.Second)
			wp.PersistentKeepaliveInterval = &s
		}
		for _, pfx := range p.AllowedIPs {
			pfx = pfx.Masked()
			wp.AllowedIPs = append(wp.AllowedIPs, net.IPNet{
				IP:   pfx.Addr().AsSlice(),
				Mask: net.CIDRMask(pfx.Bits(), pfx.Addr().BitLen()),
			})
		}
		w.Peers = append(w.Peers, wp)
	}
	return w
}

// State reads the link's configuration and status from the kernel.
func (d *Device) State() (*State, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.errClosedLocked("read state of"); err != nil {
		return nil, err
	}
	dev, err := d.ctl.Device(d.name)
	if err != nil {
		return nil, fmt.Errorf("kernelwg: read state of %s: %w", d.name, err)
	}
	return fromWgtypes(dev), nil
}

// fromWgtypes converts what wgctrl reports.
func fromWgtypes(dev *wgtypes.Device) *State {
	st := &State{
		PrivateKey: dev.PrivateKey,
		PublicKey:  dev.PublicKey,
		ListenPort: dev.ListenPort,
		FwMark:     uint32(dev.FirewallMark),
	}
	for _, p := range dev.Peers {
		ps := PeerState{
			PublicKey:           p.PublicKey,
			PresharedKey:        p.PresharedKey,
			RxBytes:             uint64(max(p.ReceiveBytes, 0)),
			TxBytes:             uint64(max(p.TransmitBytes, 0)),
			PersistentKeepalive: p.PersistentKeepaliveInterval,
		}
		if p.Endpoint != nil {
			ap := p.Endpoint.AddrPort()
			ps.Endpoint = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
		// The kernel reports "never" as the epoch.
		if t := p.LastHandshakeTime; !t.IsZero() && t.UnixNano() != 0 {
			ps.LastHandshake = t
		}
		for _, n := range p.AllowedIPs {
			a, ok := netip.AddrFromSlice(n.IP)
			ones, bits := n.Mask.Size()
			if !ok || bits == 0 {
				continue
			}
			if bits == 32 {
				a = a.Unmap()
			}
			ps.AllowedIPs = append(ps.AllowedIPs, netip.PrefixFrom(a, ones))
		}
		st.Peers = append(st.Peers, ps)
	}
	return st
}

// Close deletes the link, which removes its addresses and routes with it,
// and releases the netlink sockets. It is safe to call more than once;
// calls after the first return an error wrapping net.ErrClosed. A link
// already deleted by someone else is not an error.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.errClosedLocked("close"); err != nil {
		return err
	}
	d.closed = true
	// Order: the generic netlink socket first (it only talks to the
	// link), then the link, then the rtnetlink socket that deletes it.
	errs := []error{d.ctl.Close(), d.deleteLink()}
	d.h.Close()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kernelwg: close %s: %w", d.name, err)
	}
	return nil
}

// deleteLink deletes the link if it is still the one Create made: the
// same index, name and kind. An index reused by another link after ours
// went is left alone.
func (d *Device) deleteLink() error {
	link, err := d.h.LinkByIndex(d.index)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) || errors.Is(err, unix.ENODEV) {
			return nil
		}
		return fmt.Errorf("find link %d: %w", d.index, err)
	}
	if link.Attrs().Name != d.name || link.Type() != "wireguard" {
		return nil
	}
	if err := d.h.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete link: %w", err)
	}
	return nil
}
