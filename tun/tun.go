// Package tun runs a WireGuard tunnel on an operating system network
// interface: what `wg-quick up` does, as one call, and `wg-quick down` as
// Close.
//
// # Overview
//
// Open creates the interface, sets its MTU, adds the config's addresses,
// brings the link up, routes the peers' AllowedIPs through it and runs a
// [wg.Device] on it. Other programs on the host then use the tunnel like
// any interface. Close undoes all of it, in reverse order, and Open undoes
// what it did when a step fails, so the host is left as it was found.
//
// Opening an interface needs privileges: root or CAP_NET_ADMIN on Linux,
// Administrator on Windows.
//
// # Usage
//
//	cfg, err := wg.ParseConfig(file) // a wg-quick file
//	if err != nil { ... }
//	ifc, err := tun.Open(ctx, cfg, &tun.Options{Name: "wg0"})
//	if err != nil { ... }
//	defer ifc.Close()
//	// The host now routes cfg's AllowedIPs through wg0;
//	// ifc.Device() reports the peers and changes them at run time.
//
// # Routing
//
// Routes follow wg-quick(8) and the config's Table ([wg.Interface].Table).
// On Linux:
//
//   - "off": no routes and no rules.
//   - a table number, or a name from iproute2's rt_tables ("main"
//     included): every AllowedIPs prefix, default routes too, is routed
//     through the interface in that table.
//   - "" or "auto": prefixes are routed in the main table (skipping those
//     the interface's own subnet routes already cover), except default
//     routes (0.0.0.0/0, ::/0), which use wg-quick's fwmark scheme:
//     table T = the config's FwMark, or else 51820 or the first table above
//     it that holds no route; the engine marks its own UDP packets with T;
//     the rules "not fwmark T table T" and "table main suppress_prefixlength 0"
//     send everything else to table T, which holds the default route through
//     the tunnel. The tunnel's encrypted packets thus keep using the host's
//     routes instead of looping into the tunnel.
//
// What wg-quick does that this package does not: it runs no PreUp, PostUp,
// PreDown or PostDown hooks and ignores SaveConfig; it adds none of
// wg-quick's firewall rules for the fwmark scheme (the iptables or nft
// raw-table rule that drops packets for the tunnel's addresses arriving on
// other interfaces, and the connmark rules that copy the fwmark to replies)
// and does not set net.ipv4.conf.all.src_valid_mark. Without those, a host
// with strict reverse-path filtering (rp_filter=1) on the uplink may drop
// the peer's replies while a default route is up; loose mode (2) or off (0)
// is fine. With no MTU in the config the interface gets [wg.DefaultMTU]
// (1420 bytes) rather than wg-quick's estimate from the endpoint's route.
//
// # DNS
//
// The host's resolver is left alone unless [Options].SetDNS is set. The
// config's DNS values stay available through Device().Config().
//
// # Engines
//
// [Options].Engine chooses what runs WireGuard on the interface:
//
//   - [EngineAuto], the default, does as wg-quick does: the system's own
//     engine when it is there, else wireguard-go. On Linux that is the
//     kernel's WireGuard when creating a `wireguard` link works (the
//     kernel loads the wireguard module on demand); on Windows it is
//     WireGuardNT when wireguard.dll (from
//     https://download.wireguard.com/wireguardnt/, of the program's
//     architecture) is next to the program or in System32, loads, and
//     the driver answers. With [Options].Bind set it is wireguard-go.
//   - [EngineKernel] runs the system's engine or fails, with an error
//     wrapping errors.ErrUnsupported that names what is missing.
//   - [EngineUserspace] runs wireguard-go on a kernel TUN (Linux) or a
//     Wintun adapter (Windows, wintun.dll next to the program).
//
// [Interface.Engine] says which one runs. Addresses, MTU, routes, rules,
// DNS and their removal are the same with every engine, and so is
// [Interface.Device]: every [wg.Device] method works. What differs on
// the system's engine: the data path runs in the kernel; no UAPI socket
// is served, so [Options].DisableUAPI and [Options].UAPIDir are ignored
// (wg(8) reaches the interface through netlink on Linux, and through the
// driver on Windows, as for any kernel WireGuard interface); the device
// reads the engine's state once a second, so events and WaitHandshake
// see a handshake up to a second late, no EventHandshakeFailing is
// reported and the device cannot start handshakes itself (the kernel
// starts them when traffic needs the peer); a Bind cannot be supplied;
// and on Windows no socket binding to the uplink is needed (the driver
// keeps its own packets off the tunnel).
//
// # Configuration tools
//
// With wireguard-go, unless [Options].DisableUAPI is set, the device
// serves wg(8)'s configuration protocol (a socket NAME.sock in
// [Options].UAPIDir, /var/run/wireguard by default, readable by its
// owner only, or a named pipe on Windows), so `wg show NAME` and
// `wg set NAME ...` work on it as on a kernel WireGuard interface. On the
// kernel engines wg(8) works without it.
//
// # Platform support
//
// Linux uses the kernel's WireGuard, or wireguard-go's kernel TUN driver
// with its offloads (TSO, GRO, UDP GSO left on) and wgkit's UDP Bind
// (UDP GSO and GRO, replies from the address the peer wrote to), and
// rtnetlink. Windows
// uses WireGuardNT or Wintun, and the IP helper API; it has no routing
// tables, so any Table but "off" routes the AllowedIPs on the adapter,
// and with a default route wireguard-go's sockets are bound to the
// interface of the host's other default route, chosen once at Open (a
// later change of uplink is not followed). On other systems Open returns
// an error naming the system.
package tun

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/wgkit/wgkit/wg"
)

// DefaultName is the interface name used when Options.Name is empty.
const DefaultName = "wg0"

// Options are the optional settings of Open. A nil *Options and every zero
// field mean the documented default. The type is the same on every
// platform; fields for one platform are ignored on the others.
type Options struct {
	// Name is the interface name. "" means DefaultName ("wg0"). On Linux it
	// must be a valid interface name of at most 15 bytes and must not exist.
	Name string

	// Logger receives the engine's and the backend's log. nil discards.
	Logger *slog.Logger

	// Bind is the engine's outer transport. nil means UDP sockets on the
	// config's ListenPort that reply from the local address each peer
	// wrote to: on Linux wgkit's own (one dual-stack socket, batches of
	// 128 datagrams, no allocation per datagram), elsewhere
	// wireguard-go's default. The interface owns
	// the Bind: it is closed by Close, and by Open when Open fails. Only
	// wireguard-go takes a Bind: with one, EngineAuto runs wireguard-go
	// and EngineKernel fails.
	Bind conn.Bind

	// SetDNS, when true, points the host's resolver at the config's DNS
	// servers and search domains while the interface is open: through
	// resolvconf(8) on Linux ("resolvconf -a tun.NAME -m 0 -x"; Open fails
	// if resolvconf is missing), through the interface's DNS settings on
	// Windows. false (the default) leaves the resolver alone. Like
	// wg-quick, nothing is changed when the config lists no DNS server.
	SetDNS bool

	// DisableUAPI, when true, does not serve wg(8)'s configuration
	// protocol. false (the default) serves it, under Name, so
	// `wg show NAME` works. (netstack.Options.EnableUAPI is the same
	// switch with the opposite default.) The kernel engines serve no
	// UAPI (wg(8) reaches them by netlink or the driver) and ignore it.
	DisableUAPI bool

	// UAPIDir is the directory of the UAPI socket NAME.sock (Unix), as in
	// wg.ListenUAPI. "" means wg.DefaultUAPIDir, /var/run/wireguard, the
	// only directory wg(8) searches. Windows uses a named pipe and ignores
	// it, as do the kernel engines. Setting it together with DisableUAPI is
	// an error.
	UAPIDir string

	// TunnelType is the tunnel type of the Wintun or WireGuardNT adapter
	// (Windows only). "" means "WireGuard". It is passed to the driver
	// for this adapter alone: wireguard-go's process-wide
	// WintunTunnelType is neither read nor written.
	TunnelType string

	// GUID is the requested GUID of the Wintun or WireGuardNT adapter
	// (Windows only), in the form "{XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX}".
	// "" lets the driver choose one.
	GUID string

	// Engine selects the WireGuard engine; the zero value is EngineAuto:
	// the system's own when it is there, else wireguard-go (see the
	// package documentation). Interface.Engine reports which one runs.
	Engine Engine

	// OnEvent, when set, receives the device's events, as
	// wg.DeviceOptions.OnEvent (on the kernel engines a second late at
	// most, and without failing handshakes). nil: events are only logged.
	OnEvent func(wg.Event)

	// Resolver resolves the peers' endpoint host names. nil means
	// net.DefaultResolver.
	Resolver *net.Resolver
}

// Interface is an open WireGuard network interface. Create one with Open.
// Its methods are safe for concurrent use.
type Interface struct {
	name  string
	eng   Engine // EngineKernel or EngineUserspace
	dev   *wg.Device
	plat  platform
	mtu   int          // the MTU Open set, in bytes
	addrs []netip.Addr // the addresses Open added, immutable

	mu     sync.Mutex
	closed bool    // guarded by mu
	cl     closers // guarded by mu; Open's stack of closers, run by Close
}

// Open brings up a WireGuard interface for cfg as `wg-quick up` would (see
// the package documentation) and runs a [wg.Device] on it. cfg is not
// retained; opts may be nil.
//
// ctx bounds the set-up (including the resolution of endpoint host names),
// not the life of the interface: cancelling it after Open returns has no
// effect. If Open fails, everything it changed on the host is undone.
// On Linux, Open fails with an error wrapping os.ErrExist when an
// interface of that name exists (Wintun on Windows reuses its adapter of
// that name).
func Open(ctx context.Context, cfg *wg.Config, opts *Options) (*Interface, error) {
	if opts == nil {
		opts = &Options{}
	}
	s := &openState{name: opts.Name, opts: opts, log: opts.Logger, bind: opts.Bind}
	if s.name == "" {
		s.name = DefaultName
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	err := ctx.Err()
	if err == nil && cfg == nil {
		err = errors.New("nil config")
	}
	var ifc *Interface
	if err == nil {
		var p platform
		if p, err = newPlatform(); err == nil {
			ifc, err = open(ctx, cfg, p, s)
		}
	}
	if err != nil {
		if s.bind != nil {
			s.bind.Close()
		}
		return nil, &prefixError{"tun: open " + s.name + ": ", err}
	}
	return ifc, nil
}

// Name returns the interface name.
func (i *Interface) Name() string { return i.name }

// Engine returns the engine that runs: EngineKernel (the kernel's
// WireGuard on Linux, WireGuardNT on Windows) or EngineUserspace
// (wireguard-go), never EngineAuto.
func (i *Interface) Engine() Engine { return i.eng }

// Device returns the engine running on the interface, for status and
// run-time changes (peers, keys). Peer changes made through it, or through
// wg(8), change what the engine sends and accepts but not the host's
// routes, which stay those Open derived from its config. After Close the
// Device is closed too.
func (i *Interface) Device() *wg.Device { return i.dev }

// MTU returns the interface's MTU in bytes as the system reports it now,
// so a change made with other tools (`ip link set NAME mtu N`) shows. When
// the system cannot tell (after Close), it returns the MTU Open set: the
// config's, or wg.DefaultMTU.
func (i *Interface) MTU() int {
	if m, err := i.plat.linkMTU(); err == nil && m > 0 {
		return m
	}
	return i.mtu
}

// Addrs returns the interface's own addresses as the system reports them
// now, in the system's order, so a change made with other tools
// (`ip address`) shows; link-local addresses the system adds by itself
// are left out. When the system cannot tell (after Close), it returns the
// addresses Open added, in config order. The slice is the caller's.
func (i *Interface) Addrs() []netip.Addr {
	if as, err := i.plat.linkAddrs(); err == nil {
		return as
	}
	return slices.Clone(i.addrs)
}

// Close tears the interface down as `wg-quick down` would. In order (the
// reverse of Open's): it undoes what Open changed on the host, newest
// first (on Linux: the routes, the policy rules, the resolver if Open
// changed it, the link state and the addresses), stops the engine (with
// wireguard-go: closes the TUN, the UAPI listener and the Bind; a kernel
// engine: deletes its interface) and makes sure the interface is gone.
// It carries on past failures and returns them joined. A second Close
// returns an error wrapping net.ErrClosed.
func (i *Interface) Close() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed {
		return fmt.Errorf("tun: close %s: %w", i.name, net.ErrClosed)
	}
	i.closed = true
	return i.cl.run(func(err error) error { return &prefixError{"tun: close " + i.name + ": ", err} })
}
