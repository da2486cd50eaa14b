// Package wgkit is an embeddable WireGuard library for Go: any Go program
// can open a WireGuard tunnel with one call and use it through the types of
// the standard library. This root package holds only documentation; the code
// lives in the packages named below.
//
// # Overview
//
// wgkit wraps the wireguard-go protocol engine (golang.zx2c4.com/wireguard)
// behind one typed API with interchangeable backends. A configuration is a
// [github.com/wgkit/wgkit/wg.Config], parsed from and written to the
// wg-quick(8) format with [github.com/wgkit/wgkit/wg.ParseConfig] and
// [github.com/wgkit/wgkit/wg.Config.MarshalText]. A running engine is a
// [github.com/wgkit/wgkit/wg.Device], which reports typed peer status
// ([github.com/wgkit/wgkit/wg.PeerStatus]) and takes peer changes while
// traffic flows. The seam between the engine and a backend is wireguard-go's
// tun.Device, so a custom tun.Device plugs in through
// [github.com/wgkit/wgkit/wg.NewDevice].
//
// # Usage
//
// From a wg-quick file to a net.Conn through an in-process tunnel, without
// root:
//
//	cfg, err := wg.ParseConfig(f)
//	tnet, err := netstack.Open(ctx, cfg, nil)
//	defer tnet.Close()
//	conn, err := tnet.DialContext(ctx, "tcp", "10.0.0.1:80")
//
// [github.com/wgkit/wgkit/netstack.Net] also listens, pings, resolves names
// through the tunnel's DNS servers and hands out an [net/http.Client].
// [github.com/wgkit/wgkit/netstack/proxy] serves a tunnel to other programs
// on the host: a SOCKS5 server, an HTTP proxy and TCP and UDP port
// forwards both ways, with names resolved by the tunnel's DNS only. For
// tests, [github.com/wgkit/wgkit/wg/wgtest] runs real WireGuard peers in the
// test process, the way net/http/httptest runs HTTP servers.
//
// To know whether a tunnel works:
// [github.com/wgkit/wgkit/wg.Device.WaitHandshake] waits for a handshake
// with a peer; [github.com/wgkit/wgkit/wg.DeviceOptions].OnEvent (and the
// same field of both backends' Options) receives typed events for
// handshakes completed and failing, endpoint changes and peer changes,
// which are also logged through the configured *slog.Logger;
// [github.com/wgkit/wgkit/wg/wgprom] exports every device to Prometheus
// under wireguard_exporter's metric names; and
// [github.com/wgkit/wgkit/netstack.Options].Capture writes a tunnel's
// packets as pcap for tcpdump or Wireshark.
//
// # Backends
//
//   - [github.com/wgkit/wgkit/netstack]: a gVisor TCP/IP stack inside the
//     process. No root, no adapter, no change to the host: the application
//     dials and listens on the tunnel directly. Suits in-app VPN dialers,
//     proxies and test fixtures. With
//     [github.com/wgkit/wgkit/netstack.Options.Forward] it is also a
//     router: an exit node or subnet router for its peers, and a hub that
//     relays between them, still without root.
//   - [github.com/wgkit/wgkit/tun] on Linux: a network interface with its
//     addresses, MTU, routes and policy rules set up as wg-quick(8) does,
//     and removed on Close. Needs CAP_NET_ADMIN.
//   - [github.com/wgkit/wgkit/tun] on Windows: the same through the IP
//     helper API. Needs Administrator rights.
//
// # Engines
//
// The netstack backend always runs wireguard-go. The tun backend runs the
// system's own WireGuard when it is there, as wg-quick does, and
// wireguard-go otherwise ([github.com/wgkit/wgkit/tun.Options].Engine:
// EngineAuto, the default; EngineKernel; EngineUserspace):
//
//   - Linux: the kernel's WireGuard, a `wireguard` link made through
//     rtnetlink and configured through generic netlink, when the kernel
//     can make one (the wireguard module, loaded on demand); else
//     wireguard-go on a TUN.
//   - Windows: WireGuardNT when its wireguard.dll (of the program's
//     architecture, from download.wireguard.com/wireguardnt) is next to
//     the program or in System32, loads and the driver answers; else
//     wireguard-go on Wintun (wintun.dll).
//
// The [github.com/wgkit/wgkit/wg.Device] and every one of its methods are
// the same on both, and so is the host's configuration. What differs on a
// kernel engine: the data path runs in the kernel (faster, no goroutines
// of the process carry packets); no UAPI socket is served, since wg(8)
// configures the interface through netlink (Linux) or the driver
// (Windows); events are read from the engine's state once a second and
// failing handshakes are not reported; and a Bind cannot be supplied.
//
// Every backend's Close is idempotent, releases every goroutine, socket,
// interface and route, and returns an error wrapping [net.ErrClosed] when
// called again. Two tunnels in one process never interfere: there is no
// package-level mutable state.
//
// # Platform support
//
// The wg and netstack packages work wherever Go and wireguard-go run. The
// tun package supports Linux and Windows; on other systems its Open returns
// an error naming the system. The wg(8) configuration socket (UAPI) is
// served on Unix sockets and on Windows named pipes, so `wg show` works on a
// wgkit device (on the kernel engines wg(8) needs no socket). The
// backends' Options name it alike: Name is the name wg(8) sees, UAPIDir the
// socket's directory ("" is /var/run/wireguard), and one switch turns it on, with the backend's default: netstack serves no
// socket unless [github.com/wgkit/wgkit/netstack.Options].EnableUAPI is
// set, tun serves one unless [github.com/wgkit/wgkit/tun.Options].DisableUAPI
// is set. Both backends take the MTU rule and default of
// [github.com/wgkit/wgkit/wg.CheckMTU] and
// [github.com/wgkit/wgkit/wg.DefaultMTU].
//
// Out of scope: the WireGuard protocol itself (wireguard-go and the
// kernels implement it), configuring WireGuard interfaces that wgkit did
// not create (use wgctrl-go), and running wg-quick's
// PreUp/PostUp/PreDown/PostDown hooks, which wgkit parses and carries but
// never executes.
package wgkit
