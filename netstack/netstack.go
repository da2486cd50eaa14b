// Package netstack runs a WireGuard tunnel entirely in process: the
// wireguard-go engine on top of a user-space TCP/IP stack (gVisor's
// netstack), with no root, no TUN device and no change to the host's
// network configuration.
//
// Open a tunnel from a wg-quick configuration and use the returned Net as
// a network: DialContext, Listen, ListenPacket, Ping, LookupHost and
// HTTPClient all go through the tunnel, and host names are resolved by the
// tunnel's DNS servers only.
//
//	cfg, err := wg.ParseConfig(file)
//	...
//	tnet, err := netstack.Open(ctx, cfg, nil)
//	...
//	defer tnet.Close()
//	resp, err := tnet.HTTPClient().Get("http://10.0.0.1/")
//
// Each Net owns its own stack, engine and sockets; any number of them may
// run in one process.
//
// Errors follow the net package: connection errors are *net.OpError values
// that wrap errnos such as syscall.ECONNREFUSED, os.ErrDeadlineExceeded
// for deadlines, and net.ErrClosed after Close; lookups fail with
// *net.DNSError. Other errors start with "netstack: ". A TCP dial to a
// peer that completes no WireGuard handshake fails after
// Options.HandshakeTimeout (20 s) with an error wrapping
// wg.ErrHandshakeTimeout that names the peer, not after TCP's two minutes.
//
// To see what goes through the tunnel, Options.Capture records its
// packets in pcap format for tcpdump and Wireshark; Options.OnEvent and
// the Logger report handshakes and peer changes.
//
// The engine and the stack meet at a tun.Device of this package that moves
// batches of packets per Read or Write call (Options.BatchSize). TCP hands
// it 64 KiB super-packets that it cuts into MTU-sized segments, and
// segments arriving together are merged before the stack sees them, so
// the stack's per-packet cost is paid a few times per 64 KiB rather than
// per 1.4 KiB. Options.MaxTCPBuffer bounds the memory a busy tunnel uses.
//
// # Router mode
//
// With Options.Forward (a ForwardOptions) the Net also carries its peers'
// traffic beyond its own addresses, as a Linux host with ip_forward=1 and
// masquerading would: a peer that routes a subnet or 0.0.0.0/0 and ::/0
// through the tunnel reaches the host's networks. Each TCP connection and
// UDP flow is dialled anew from the host (ForwardOptions.Dial, by default
// the host network) and joined to the peer's; the peer's handshake
// completes only once the upstream accepted, a refused one gets a reset
// and an unreachable or timed-out one an ICMP destination-unreachable.
// Echo requests are answered only when the host's own ping is.
// ForwardOptions.Allow decides who may reach what; by default loopback,
// link-local, multicast and the host's own addresses are refused.
// Pending dials, flows and UDP idle time are bounded, and Net.ForwardStats
// reports them. With RelayPeers the Net is a WireGuard hub: packets from
// one peer to another's AllowedIPs are relayed, TTL decremented, without
// reaching the stack.
//
// # TCP after an outage, and the memory of closed connections
//
// The stack's TCP is tuned for a tunnel whose path may vanish for a while
// (a partition, a roam, a peer re-set): loss detection without RACK, and a
// retransmission timeout between 20 ms and 1 s, so a stream is back to speed
// within about a second of the path returning, after an outage of any
// length. (A dial's SYN is the exception: gVisor resends it on its own
// schedule, 1 s and doubling, so a dial that began during an outage
// connects at its next SYN after the path returns, within its context.)
// An unacknowledged connection is aborted after about 15 minutes
// of retries, as on Linux. A closed connection stays in TIME_WAIT for 5 s
// (not 60), and one the application closed waits at most 5 s in
// FIN_WAIT_2 for the peer's FIN (not 60: gVisor strands some connections
// there whose FIN it has received), each holding about 8 KiB: the memory
// of closed connections is at most about 5 s times the closing rate
// times 8 KiB (40 MiB at 1000 connections a second). At most
// MaxHalfOpenDials (256) TCP dials of a Net are in their handshake at
// once, further ones waiting within their context: each packet in flight
// in the engine sits in a 64 KiB buffer, so 5000 dials at once to a
// listener that never accepts peak near 45 MiB (near 200 MiB without
// the cap). BENCHMARKS.md has the figures.
//
// A tunnel opened anew with the address of an earlier one (an app that
// reopens its tunnel) may dial from the source port of a connection the
// peer still holds from the earlier tunnel. If the peer holds it open
// or closing, it answers the SYN with a challenge ACK, the dial answers
// with a RST that ends the old connection, and the SYN's retransmission
// connects within milliseconds. If the peer holds it in TIME_WAIT, a
// gVisor peer (this package's included) drops a SYN below the old
// connection's sequence numbers without an answer, as half of a new
// tunnel's are, and the dial connects only at its first SYN
// retransmission after that TIME_WAIT: about 7 s after it began with this
// package's 5 s.
package netstack

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wgkit/wgkit/wg"
	"golang.zx2c4.com/wireguard/conn"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// maxUAPIName is the longest interface name wg(8) handles (IFNAMSIZ-1).
const maxUAPIName = 15

// nicID is the stack's only NIC, the WireGuard link.
const nicID tcpip.NICID = 1

// Options are the optional settings of Open. A nil *Options and every zero
// field mean the documented default.
type Options struct {
	// Logger receives the engine's log (see wg.DeviceOptions.Logger) and
	// the Net's own debug messages. nil discards them.
	Logger *slog.Logger

	// Bind is the engine's outer transport. nil means a UDP socket on all
	// host addresses at the configuration's ListenPort: wgkit's lean Bind,
	// moving BatchSize datagrams per system call, with UDP GSO and GRO
	// where Linux offers them; on Windows, wireguard-go's own Bind on the
	// Registered I/O API, which moves one datagram per call and so holds
	// little memory too. The Net owns the Bind: Close (or a failed Open)
	// closes it.
	Bind conn.Bind

	// BatchSize is the most packets the engine moves between the stack
	// and the Bind per call, and the batch of the default Bind. It trades
	// memory for throughput: wireguard-go holds 64 KiB per packet of batch
	// for its TUN reader and for each Bind receive goroutine, so an idle
	// tunnel holds about 2 x BatchSize x 64 KiB with the default Bind
	// (2 MiB at the default). Open allocates and zeroes those buffers,
	// which is much of what it costs: 8 halves them, for about 4 % of a
	// stream's throughput on loopback. 0 means 16; values above 128 are
	// lowered to 128. See BENCHMARKS.md for the throughput of other values.
	BatchSize int

	// MaxTCPBuffer caps the send and receive buffer of each TCP
	// connection of the Net, in bytes, and so the data a connection keeps
	// in flight. Under load that is what bounds memory: the engine holds
	// each in-flight packet in a 64 KiB buffer, about 48 times its size
	// (with the default Bind, at most 128 of them on the receiving side
	// and 128 on the sending side, whatever the buffers). In the
	// benchmarks one bulk connection between two tunnels peaks near
	// 28 MiB of heap with the default buffers (1 MiB, the send buffer
	// growing to 4 MiB) and near 20 MiB with 256 KiB; with a Bind of the
	// caller's the engine's share is bounded by the buffers alone. The cost is
	// throughput on long paths: gVisor offers half the receive buffer as
	// its window, and one connection moved about a quarter of
	// MaxTCPBuffer per round trip in the benchmarks (at 50 ms, 10 Mbit/s
	// with 256 KiB and 37 with 1 MiB, against 170 with the defaults, whose
	// buffers grow to 4 MiB); on short paths it
	// costs nothing measurable (see BENCHMARKS.md). 0 means gVisor's
	// defaults; values below 4096 are an error.
	MaxTCPBuffer int

	// ReorderHold is how long the link holds an inbound TCP segment that
	// arrived above a hole in its flow, waiting for the segments it
	// overtook, so that a path that merely reorders does not make the
	// sender retransmit and halve its window (gVisor's sender, without
	// RACK, takes a segment for lost as soon as two segments' worth above
	// it are acknowledged). Segments in order, retransmissions and all
	// that is not TCP data pass without delay; the cost is that a real
	// loss reaches the sender up to ReorderHold later. At most 8 flows,
	// 64 segments and 256 KiB of payload per flow are held. In the
	// benchmarks, 1 % loss with 1 ms of reordering took half the time
	// with the hold, plain 1 % loss without reordering 1.5 times as long
	// (see BENCHMARKS.md). 0 means 1.5 ms; a negative value turns the hold
	// off; values above 20 ms are lowered to 20 ms. A Net with Forward
	// set holds nothing: its link must pass each packet as it comes.
	ReorderHold time.Duration

	// Capture, if not nil, receives the tunnel's inner packets in both
	// directions as a pcap file (nanosecond time stamps, link type
	// LINKTYPE_RAW: IPv4 and IPv6 packets without a link-layer header),
	// readable by tcpdump -r and Wireshark. Packets are recorded where
	// they pass between the stack and the engine: outbound TCP as the
	// MTU-sized segments the engine encrypts, inbound packets as the
	// engine decrypted them. Each record holds at most the tunnel's MTU in
	// bytes of a packet (the snap length), with its full length.
	//
	// Writes happen on a goroutine of the Net's, through a 64 KiB buffer
	// flushed whenever no packet is waiting; the tunnel never waits for
	// them. The queue between the tunnel and that goroutine holds 1 MiB of
	// packets (738 at the default MTU): when the writer falls that far
	// behind, further packets are left out of the capture and counted
	// (Stats.CaptureDropped). The first Write error stops the capture and
	// is logged. Close writes what is still queued for at most a second,
	// waits for a Write in progress to return, and does not close Capture.
	// nil captures nothing and costs nothing.
	Capture io.Writer

	// HandshakeTimeout bounds how long a TCP dial (DialContext, Dial, and
	// so HTTPClient) waits for a peer that completes no handshake: if no
	// WireGuard handshake with the peer whose AllowedIPs cover the
	// destination completes within HandshakeTimeout of the dial's start,
	// the dial fails with an error wrapping wg.ErrHandshakeTimeout that
	// names the peer's public key and endpoint, rather than waiting out
	// TCP's connection timeout of about two minutes. Meanwhile the dial
	// asks the device for handshakes (at most one initiation per peer per
	// 5 s goes out). A handshake completed since the dial began shows
	// that the peer answers, and the dial then waits for TCP as before.
	// If the peer completed one in the 5 s before the dial, WireGuard
	// allows no new initiation until 5 s after it, and the time runs from
	// then. (The device notices a completed handshake within about
	// 100 ms.) 0 means 20 seconds; a negative value turns the check off.
	HandshakeTimeout time.Duration

	// Resolver resolves the host names of peer endpoints (see
	// wg.DeviceOptions.Resolver), at Open and whenever the device
	// resolves them again. Endpoints lie outside the tunnel, so this is a
	// resolver of the host's network, not the tunnel's DNS (for that, see
	// Net.LookupHost). nil means net.DefaultResolver.
	Resolver *net.Resolver

	// OnEvent, when set, is called for every event of the tunnel's
	// device: handshakes completed and failing, endpoint changes, peers
	// added, removed and idle; see wg.DeviceOptions.OnEvent for how calls
	// are made (one at a time, in order, from a goroutine of the device's,
	// never under a device lock, so the callback may call Net and Device
	// methods). nil: events are only logged (see Logger).
	OnEvent func(wg.Event)

	// Name is the tunnel's name: the name the engine sees, Net.Name, and
	// the name of the UAPI socket. "" means "wk<pid>-<key>", where <key> is
	// the first 4 hex digits of the interface's public key: unique among
	// the Nets of one process unless their keys share that prefix. With
	// EnableUAPI it must be at most 15 bytes, the longest interface name
	// wg(8) handles.
	Name string

	// EnableUAPI, when true, serves wg(8)'s configuration protocol under
	// Name, so `wg show NAME` and `wg set NAME ...` work on the tunnel: on
	// the Unix socket UAPIDir/NAME.sock (owner-only permissions, see
	// wg.ListenUAPI), on Windows on a named pipe. false (the default)
	// serves nothing. (tun.Options.DisableUAPI is the same switch with the
	// opposite default.)
	EnableUAPI bool

	// UAPIDir is the directory of the UAPI socket. "" means
	// wg.DefaultUAPIDir, /var/run/wireguard, the only directory wg(8)
	// searches. Windows ignores it. Setting it without EnableUAPI is an
	// error.
	UAPIDir string

	// Forward, when non-nil, makes the Net a router for its peers: their
	// TCP and UDP flows to destinations beyond the tunnel's own addresses
	// are dialled from the host, echo requests are answered when the host
	// can reach the destination, and (RelayPeers) packets between peers
	// are relayed. See ForwardOptions. nil means only the tunnel's own
	// addresses answer.
	Forward *ForwardOptions
}

// Net is a WireGuard tunnel with its own in-process TCP/IP stack. Its
// methods mirror the net package's and are safe for concurrent use.
//
// The zero Net is not usable (its methods fail with errors wrapping
// net.ErrClosed); create one with Open and release it with Close.
type Net struct {
	log    *slog.Logger
	stack  *stack.Stack
	ep     *endpoint
	dev    *wg.Device
	name   func() string // the tunnel's name; see defaultName
	mtu    int
	addrs  []netip.Addr  // the interface's addresses, immutable
	dns    []netip.Addr  // the tunnel's DNS servers, immutable
	search []string      // DNS search domains, immutable
	client *http.Client  // returned by HTTPClient
	dnsRR  atomic.Uint32 // rotates Resolver's servers
	res    *net.Resolver // returned by Resolver
	done   chan struct{} // closed when Close starts
	v4, v6 bool          // the interface has an address of that family

	maxTCPBuffer     int           // Options.MaxTCPBuffer, immutable
	handshakeTimeout time.Duration // Options.HandshakeTimeout with its default; <= 0 is off
	capture          *capture      // nil without Options.Capture

	fwd *forwarder // router mode (Options.Forward); nil if off

	mu        sync.Mutex
	closed    bool                      // guarded by mu
	listeners map[*tcpListener]struct{} // guarded by mu; shut down by Close

	dialSlots chan struct{} // TCP dials in their handshake; capacity MaxHalfOpenDials
}

// Open starts a tunnel for cfg: a gVisor stack with cfg.Interface's
// addresses (IPv4 and IPv6), its MTU (0 means wg.DefaultMTU) and its DNS
// settings, and a wg.Device running on it. It returns when the device is
// up. ctx bounds the set-up only (including the resolution of peer
// endpoint host names), not the life of the Net. nil opts means defaults.
// cfg needs at least one Address: unlike a kernel interface, which
// wg-quick may bring up without one, the stack would have nothing to send
// from or listen on.
//
// The tunnel has a default route for each address family it has an
// address of; the dial methods and Ping refuse a destination no peer's
// AllowedIPs covers at once (ErrNoRoute).
func Open(ctx context.Context, cfg *wg.Config, opts *Options) (*Net, error) {
	if opts == nil {
		opts = &Options{}
	}
	fail := func(err error) (*Net, error) {
		if opts.Bind != nil {
			opts.Bind.Close()
		}
		return nil, fmt.Errorf("netstack: open: %w", err)
	}
	if ctx == nil {
		return fail(errors.New("nil context"))
	}
	if cfg == nil {
		return fail(errors.New("nil config"))
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	// wg.NewDeviceContext validates cfg (the MTU rule is wg.CheckMTU's)
	// before it starts anything; what comes before it here holds no
	// resource but the UAPI socket, so only that waits for a validation
	// of its own. (Each validation costs an X25519 operation, 60 µs.)
	if len(cfg.Interface.Addresses) == 0 {
		// The stack would have no address to send from or listen on.
		return fail(errors.New("the config's interface has no Address"))
	}
	mtu := cfg.Interface.EffectiveMTU()
	batch := opts.BatchSize
	switch {
	case batch < 0:
		return fail(fmt.Errorf("bad BatchSize %d", batch))
	case batch == 0:
		batch = defaultBatchSize
	case batch > maxBatchSize:
		batch = maxBatchSize
	}
	if opts.MaxTCPBuffer != 0 && opts.MaxTCPBuffer < tcp.MinBufferSize {
		return fail(fmt.Errorf("bad MaxTCPBuffer %d: below %d bytes", opts.MaxTCPBuffer, tcp.MinBufferSize))
	}
	n := &Net{
		log:       opts.Logger,
		mtu:       mtu,
		dns:       slices.Clone(cfg.Interface.DNS),
		search:    slices.Clone(cfg.Interface.DNSSearch),
		done:      make(chan struct{}),
		listeners: make(map[*tcpListener]struct{}),
		dialSlots: make(chan struct{}, MaxHalfOpenDials),

		maxTCPBuffer:     opts.MaxTCPBuffer,
		handshakeTimeout: opts.HandshakeTimeout,
	}
	if n.handshakeTimeout == 0 {
		n.handshakeTimeout = defaultHandshakeTimeout
	}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	n.name = defaultName(opts.Name, cfg.Interface.PrivateKey)
	if opts.UAPIDir != "" && !opts.EnableUAPI {
		return fail(errors.New("UAPIDir set without EnableUAPI"))
	}
	if opts.EnableUAPI && len(n.name()) > maxUAPIName {
		return fail(fmt.Errorf("UAPI name %q is longer than %d bytes", n.name(), maxUAPIName))
	}
	n.ep = newEndpoint(uint32(mtu))
	n.ep.batch = batch
	switch h := opts.ReorderHold; {
	case h < 0:
		n.ep.reorder.hold = 0
	case h > maxReorderHold:
		n.ep.reorder.hold = maxReorderHold
	case h > 0:
		n.ep.reorder.hold = h
	}
	n.ep.hold() // the engine starts first; see below
	if opts.Forward != nil {
		f, err := newForwarder(n, opts.Forward, cfg.Interface.Addresses)
		if err != nil {
			return fail(err)
		}
		n.fwd = f
	}
	var uapi net.Listener
	if opts.EnableUAPI {
		// Nothing is created for a config that NewDeviceContext rejects.
		if err := cfg.Validate(); err != nil {
			return fail(err)
		}
		var err error
		uapi, err = wg.ListenUAPI(opts.UAPIDir, n.name())
		if err != nil {
			return fail(err)
		}
	}
	t := newTUNDevice(n.ep, mtu, n.name)
	bind := opts.Bind
	if bind == nil {
		n.ep.outflight = newInflight(maxOutflightPackets)
		bind = inflightBind{defaultBind(batch, n.log), n.ep.inflight, n.ep.outflight}
	}
	// NewDeviceContext owns t, the Bind and the UAPI listener from here:
	// it closes them if it fails.
	dev, err := wg.NewDeviceContext(ctx, t, cfg, &wg.DeviceOptions{
		Logger:   n.log,
		Bind:     bind,
		UAPI:     uapi,
		Resolver: opts.Resolver,
		OnEvent:  opts.OnEvent,
	})
	if err != nil {
		return nil, fmt.Errorf("netstack: open: %w", err)
	}
	n.dev = dev
	if opts.Capture != nil {
		// Set before the stack exists, so before any packet passes (the
		// config and so the MTU are valid now); started once the device
		// is up, until then packets wait queued.
		n.capture = newCapture(opts.Capture, mtu, n.log)
		n.ep.capture = n.capture
	}
	// The stack comes after the device, which has sent its first
	// handshake initiations when NewDeviceContext returns: the stack is
	// built while they travel, rather than before they leave (a first
	// dial waits for the handshake anyway). Until ep.start, packets from
	// the engine wait in deliverBatch.
	st, err := n.newStack(cfg.Interface.Addresses)
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("netstack: open: %w", err)
	}
	n.stack = st
	if n.fwd != nil {
		n.fwd.start(dev)
	}
	n.client = n.newHTTPClient()
	n.res = n.newResolver()
	n.ep.start()
	if n.capture != nil {
		n.capture.start()
	}
	if !t.setOnClose(n.deviceClosed) {
		// The engine stopped already; do not hand out a half-open Net.
		n.Close()
		return nil, fmt.Errorf("netstack: open: %w", net.ErrClosed)
	}
	if n.log.Enabled(ctx, slog.LevelDebug) {
		n.log.Debug("netstack: tunnel up", "name", n.name(), "addrs", n.addrs, "mtu", mtu)
	}
	return n, nil
}

// defaultName returns name, or, if it is "", a function that derives the
// default name ("wk<pid>-<key>", see Options.Name) from priv's public key
// when first called: the derivation is an X25519 operation (about 60 µs),
// which Open would otherwise spend before the engine starts, for a name
// that only Name, the logs and the UAPI socket use.
func defaultName(name string, priv wg.Key) func() string {
	if name != "" {
		return func() string { return name }
	}
	return sync.OnceValue(func() string {
		pub := priv.PublicKey()
		return fmt.Sprintf("wk%d-%s", os.Getpid(), hex.EncodeToString(pub[:2]))
	})
}

// newStack creates the gVisor stack on n.ep with the given interface
// addresses and fills n.addrs, n.v4 and n.v6.
func (n *Net) newStack(prefixes []netip.Prefix) (*stack.Stack, error) {
	st := stack.New(stack.Options{
		// Loopback addresses are allowed on the tunnel, which gVisor
		// drops by default as martians: the engine already lets in only
		// the sources a peer's AllowedIPs cover, so a packet from
		// 127.0.0.1 is one the configuration routes through the tunnel
		// (a router that forwards to its host's loopback), and in router
		// mode Allow alone decides whether a peer may reach it.
		NetworkProtocols: []stack.NetworkProtocolFactory{
			ipv4.NewProtocolWithOptions(ipv4.Options{AllowExternalLoopbackTraffic: true}),
			ipv6.NewProtocolWithOptions(ipv6.Options{AllowExternalLoopbackTraffic: true}),
		},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		// Connections to the interface's own addresses stay in the stack.
		// Router mode cannot have that: with a promiscuous NIC, gVisor
		// takes every source address for a local one and drops the packet.
		HandleLocal: n.fwd == nil,
	})
	fail := func(err error) (*stack.Stack, error) {
		st.Close()
		st.Wait()
		return nil, err
	}
	// SACK is off by default in gVisor; WireGuard paths lose packets like
	// any Internet path, and SACK recovers from that much faster (16 MiB
	// under 5 % loss: 2.3 s against 17.5 without). Under reordering
	// gVisor's SACK recovery resends more than NewReno does (16 MiB under
	// 1 % loss with every burst reordered took 1.35 times as long), which
	// is the lesser cost (BENCHMARKS.md, "loss with reordering, second
	// round").
	sack := tcpip.TCPSACKEnabled(true)
	if terr := st.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); terr != nil {
		return fail(fmt.Errorf("enable TCP SACK: %s", terr))
	}
	if err := setTCPRecovery(st); err != nil {
		return fail(err)
	}
	if limit := n.maxTCPBuffer; limit > 0 {
		// Min stays gVisor's; Default is clamped to Max, as gVisor
		// rejects a range whose default exceeds its maximum.
		rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: min(limit, tcp.DefaultReceiveBufferSize), Max: limit}
		if terr := st.SetTransportProtocolOption(tcp.ProtocolNumber, &rcv); terr != nil {
			return fail(fmt.Errorf("set TCP receive buffer range: %s", terr))
		}
		snd := tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: min(limit, tcp.DefaultSendBufferSize), Max: limit}
		if terr := st.SetTransportProtocolOption(tcp.ProtocolNumber, &snd); terr != nil {
			return fail(fmt.Errorf("set TCP send buffer range: %s", terr))
		}
	}
	if terr := st.CreateNICWithOptions(nicID, n.ep, stack.NICOptions{QDisc: qdisc{n.ep}}); terr != nil {
		return fail(fmt.Errorf("create NIC: %s", terr))
	}
	if n.fwd != nil {
		if err := n.fwd.install(st); err != nil {
			return fail(err)
		}
		n.ep.inbound = n.fwd.inbound
	}
	for _, p := range prefixes {
		a, bits := p.Addr().Unmap(), p.Bits()
		if p.Addr().Is4In6() {
			// The stack holds the IPv4 address; count its prefix in IPv4
			// bits, or gVisor keeps an IPv4 address with a /120.
			if bits < 96 {
				return fail(fmt.Errorf("address %s: an IPv4-mapped prefix must be /96 or longer", p))
			}
			bits -= 96
		}
		proto := ipv4.ProtocolNumber
		if a.Is6() {
			proto = ipv6.ProtocolNumber
			n.v6 = true
		} else {
			n.v4 = true
		}
		pa := tcpip.ProtocolAddress{
			Protocol: proto,
			AddressWithPrefix: tcpip.AddressWithPrefix{
				Address:   tcpip.AddrFromSlice(a.AsSlice()),
				PrefixLen: bits,
			},
		}
		if terr := st.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); terr != nil {
			return fail(fmt.Errorf("add address %s: %s", p, terr))
		}
		n.addrs = append(n.addrs, a)
	}
	var routes []tcpip.Route
	if n.v4 {
		routes = append(routes, tcpip.Route{Destination: header.IPv4EmptySubnet, NIC: nicID})
	}
	if n.v6 {
		routes = append(routes, tcpip.Route{Destination: header.IPv6EmptySubnet, NIC: nicID})
	}
	st.SetRouteTable(routes)
	if n.fwd != nil {
		if err := n.fwd.addLoopback(st); err != nil {
			return fail(err)
		}
	}
	return st, nil
}

// The stack's TCP loss recovery and connection lifetime, chosen from the
// measurements in BENCHMARKS.md ("Recovery after an outage").
const (
	// tcpMaxRTO caps the retransmission timeout (gVisor's default is
	// 120 s, and it doubles on every retry): after an outage of any
	// length a connection retransmits within a second of the path
	// returning, instead of after up to twice the outage.
	tcpMaxRTO = time.Second

	// tcpMinRTO is the least retransmission timeout (gVisor's default is
	// 200 ms, as Linux's). Without RACK, a lost retransmission is found
	// only by the timer, and under random loss that is most of the time
	// such a transfer waits: with 20 ms a 16 MiB transfer under 5 % loss
	// with reordering took 8-11 s instead of 15-38 (stock, with RACK:
	// 17-31), under 1 % 4.3-5.9 s instead of 7.6-9.3 (stock 3.6-6.6).
	// 5 and 10 ms did no better, 50 ms kept half the gain at 1 % and
	// little at 5 %. It matters only on paths whose RTO estimate (the
	// smoothed round trip plus four times its variation) is below it,
	// round trips of a few milliseconds; on such a path a peer that
	// delays its ACK past it (Linux by 40 ms or more for a lone
	// segment) costs one spurious retransmission before the estimate
	// takes in the delay (not measured here).
	tcpMinRTO = 20 * time.Millisecond

	// tcpMaxRetries is how often an unacknowledged segment is resent
	// before the connection is aborted: at one retry a second once the
	// RTO reaches tcpMaxRTO, about 15 minutes, as Linux's default
	// tcp_retries2 of 15 gives with its 120 s RTO cap. gVisor's own 15
	// would end a connection after 14 s of outage at this RTO cap.
	tcpMaxRetries = 900

	// tcpTimeWait is how long a closed connection stays in TIME_WAIT,
	// holding about 8 KiB (gVisor's default is 60 s). At 1000
	// connections closed per second that is about 40 MiB instead of
	// 500. Old duplicates it guards against outlive it only on paths
	// that delay packets by seconds, which WireGuard's replay window
	// and TCP's timestamps and random initial sequence numbers cover.
	tcpTimeWait = 5 * time.Second

	// tcpFinWait2 is how long a connection the application has closed
	// waits in FIN_WAIT_2 for the peer's FIN (gVisor's default is 60 s,
	// as Linux's tcp_fin_timeout). gVisor (the version in go.mod) also
	// strands closed connections there: a FIN retransmitted from
	// LAST_ACK or CLOSING sets the state to FIN_WAIT_1 again (the
	// sender's maybeSendSegment), the peer's ACK of it moves the
	// connection to FIN_WAIT_2, and it waits for a FIN it has already
	// received. Under -race a churn of 3000 connections left 100 to 170
	// of them so, each holding its memory and its four-tuple for a
	// minute (a dial from that port then meets a challenge ACK). Nobody
	// reads such a connection any more, so ending it after TIME_WAIT's
	// 5 s loses nothing: data the peer sends later gets a RST, as on
	// Linux after tcp_fin_timeout.
	tcpFinWait2 = 5 * time.Second
)

// setTCPRecovery sets the TCP options above and turns RACK loss
// detection off. With RACK (gVisor's default), a stream that lost a
// window of packets to an outage often stayed at a few KB/s for tens of
// seconds after the path returned (in 2 of 5 trials of a 6 s partition
// here, and every RACK variant gVisor offers did it in 20 to 40 % of
// trials; Tailscale saw the same, tailscale#9707 and #20893); without
// it, recovery uses SACK and duplicate ACKs, as Linux before RACK did.
//
// The crawl is gVisor's (the version in go.mod, and upstream as of
// 2026-08): during the recovery from a retransmission timeout, an ACK
// that finds segments RACK marked lost starts a fast recovery on top of
// the timeout's (cwnd ssthresh+3, 5 segments) in which the count of
// packets in flight stays above the window, so nothing more is sent
// until the next timeout, which resends one segment and starts it
// again: two segments per RTO until the flight, up to the 4 MiB send
// buffer, is resent. No option avoids it. gVisor patched not to start RACK's
// recovery during RTO recovery (RFC 8985 leaves the congestion response
// to the timeout there) kept RACK's speed under loss and crawled after
// none of 73 outages, run alternately with the unpatched build, which
// crawled after 4 (BENCHMARKS.md, "loss with reordering, second
// round"): worth proposing upstream, not yet proof.
//
// The cost is loss recovery on randomly lossy paths, which tcpMinRTO
// wins back in part: a 16 MiB transfer under 1 % loss with reordering
// takes 1.1 to 1.4 times as long as with gVisor's defaults and 1.6 to
// 1.7 times as long as with RACK and the same RTO bounds (a segment
// overtaken by two others is taken for lost and halves the window; RACK
// waits for it); under 5 % it takes half as long as with gVisor's
// defaults, whose RTO backs off to 120 s.
//
// Reno stays: gVisor's CUBIC (this version) lets an ACK shrink the
// window to 0, after which nothing is sent and no timer runs (a
// transfer under 1 % loss stopped for good in 3 of 9 trials); with
// upstream's fix it was slower than Reno.
func setTCPRecovery(st *stack.Stack) error {
	recovery := tcpip.TCPRecovery(0)
	minRTO := tcpip.TCPMinRTOOption(tcpMinRTO)
	maxRTO := tcpip.TCPMaxRTOOption(tcpMaxRTO)
	retries := tcpip.TCPMaxRetriesOption(tcpMaxRetries)
	timeWait := tcpip.TCPTimeWaitTimeoutOption(tcpTimeWait)
	finWait2 := tcpip.TCPLingerTimeoutOption(tcpFinWait2)
	for _, o := range []tcpip.SettableTransportProtocolOption{&recovery, &minRTO, &maxRTO, &retries, &timeWait, &finWait2} {
		if terr := st.SetTransportProtocolOption(tcp.ProtocolNumber, o); terr != nil {
			return fmt.Errorf("set TCP option %T: %s", o, terr)
		}
	}
	return nil
}

// Device returns the WireGuard device of the tunnel, for peer status and
// run-time changes. It stays valid (and closed) after Close.
//
// Closing the Device closes the Net as a whole, as Close does: the
// engine's link to the stack is gone, so Dial, Listen, Ping and lookups
// then fail with errors wrapping net.ErrClosed, open connections and
// listeners are shut down, and a later Close returns an error wrapping
// net.ErrClosed.
func (n *Net) Device() *wg.Device { return n.dev }

// Addrs returns the tunnel's own addresses, in configuration order.
func (n *Net) Addrs() []netip.Addr { return slices.Clone(n.addrs) }

// Name returns the interface name the engine and the UAPI socket use.
func (n *Net) Name() string {
	if n.name == nil {
		return "" // the zero Net
	}
	return n.name()
}

// MTU returns the tunnel's MTU in bytes.
func (n *Net) MTU() int { return n.mtu }

// Close shuts the tunnel down in order: it stops the WireGuard device
// (which closes the link between engine and stack, the outer sockets and
// the UAPI listener), ends the packet capture (see Options.Capture),
// shuts down the Net's listeners, then closes the
// gVisor stack, which aborts every connection, and waits for the stack's
// goroutines to exit. Blocked Read, Write, Accept and dial calls return
// errors wrapping net.ErrClosed. A second Close returns such an error too,
// and so does a Close after the Device was closed directly (see Device):
// the Net was closed then.
func (n *Net) Close() error {
	if n.done == nil {
		return fmt.Errorf("netstack: close: the Net was not made by Open: %w", net.ErrClosed)
	}
	listeners, ok := n.markClosed()
	if !ok {
		return fmt.Errorf("netstack: close: %w", net.ErrClosed)
	}
	err := n.dev.Close()
	n.closeStack(listeners)
	if err != nil {
		return fmt.Errorf("netstack: close: %w", err)
	}
	return nil
}

// markClosed marks the Net closed, waking every wait on n.done, and
// returns the listeners to shut down; ok is false if it was closed before.
func (n *Net) markClosed() (listeners map[*tcpListener]struct{}, ok bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, false
	}
	n.closed = true
	close(n.done)
	listeners = n.listeners
	n.listeners = nil
	return listeners, true
}

// closeStack ends the capture, shuts down listeners and forwarded flows
// and closes the stack, once the engine no longer delivers to it.
func (n *Net) closeStack(listeners map[*tcpListener]struct{}) {
	if n.capture != nil {
		n.capture.stop() // the engine is stopped: nothing more is recorded
	}
	for l := range listeners {
		l.shutdown()
	}
	n.client.CloseIdleConnections()
	if n.fwd != nil {
		// Forwarded flows end before the stack: their upstreams are
		// closed and pending dials cancelled; stack.Close then aborts the
		// handshakes still in progress, and the forwarder's goroutines end.
		n.fwd.stop()
	}
	n.stack.Close()
	n.stack.Wait()
	if n.fwd != nil {
		n.fwd.wait()
	}
}

// deviceClosed is the tun device's close hook (tunDevice.setOnClose): the
// engine closes the tun device whenever the wg.Device closes. When Close
// did it, there is nothing more to do; when someone closed Net.Device()
// directly (or the engine stopped on its own), the rest of the Net is
// closed here, so it is never left half-open. It runs inside the engine's
// Close with the engine's locks held and so must not call the engine; the
// stack no longer hears from it (the link is stopped).
func (n *Net) deviceClosed() {
	listeners, ok := n.markClosed()
	if !ok {
		return
	}
	n.log.Debug("netstack: the device was closed; closing the Net", "name", n.Name())
	n.closeStack(listeners)
}

// isClosed reports whether Close has started.
func (n *Net) isClosed() bool {
	if n.done == nil {
		return true // a zero Net, never opened
	}
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

// waitTimeout is how long Ping and the DNS client wait for one answer
// when the context has no earlier deadline.
const waitTimeout = 5 * time.Second
