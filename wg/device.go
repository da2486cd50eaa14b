package wg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/wgkit/wgkit/internal/engine"
)

// DeviceOptions are the optional settings of NewDevice. A nil *DeviceOptions
// and every zero field mean the documented default.
type DeviceOptions struct {
	// Logger receives the device's log: the events (see OnEvent) at
	// slog.LevelInfo, failing handshakes from the second failed attempt
	// at slog.LevelWarn, each with the attributes "peer" (the base64
	// public key) and "endpoint"; the engine's own lines, errors
	// included, and routine rekeys (Event.Rekey) at slog.LevelDebug. A
	// working tunnel logs a few Info lines when it starts, nothing per
	// packet and nothing per rekey. No line holds a private or preshared key. nil discards it.
	Logger *slog.Logger

	// Bind is the engine's outer transport. nil means conn.NewDefaultBind(),
	// UDP sockets on all addresses at the config's ListenPort. The device
	// owns the Bind: Close closes it.
	Bind conn.Bind

	// UAPI, when set, is a listener on which the device serves wg(8)'s
	// configuration protocol, so that `wg show` and `wg set` work on it
	// (see ListenUAPI). The device owns the listener: Close closes it and
	// every connection accepted from it. nil serves nothing.
	//
	// No client can hold up the device: each request is read whole, within
	// 10 s, before the engine sees it (lines of at most 4 KiB, requests of
	// at most 16 MiB, enough for a `wg setconf` of 10 000 peers), each
	// reply is written within 10 s, and at most 4 connections are served
	// at once. A client that breaks a bound is disconnected.
	//
	// Only the wireguard-go engine serves UAPI: with NewDeviceEngine a
	// non-nil UAPI is an error.
	UAPI net.Listener

	// Resolver resolves peer endpoint host names, when the device is
	// configured and when it re-resolves them (see ReresolveInterval).
	// nil means net.DefaultResolver.
	Resolver *net.Resolver

	// OnEvent, when set, is called for every [Event]: handshakes
	// completed and failing, endpoint changes, peers added, removed and
	// idle. Calls come one at a time, in order, from one goroutine the
	// device owns, never while a device lock is held: the callback may
	// call Device methods (Close included). Each event is also logged
	// (see Logger), by the same goroutine just before the call, so a
	// slow callback delays the log lines too, never the tunnel's
	// traffic. Up to 1024 events wait for delivery; beyond that the
	// oldest waiting event is discarded, and the next call receives an
	// [EventsDropped] event with the count before the events that
	// survived. Events still waiting at Close are discarded; Close does
	// not wait for a callback that is running. nil: events are only
	// logged.
	OnEvent func(Event)

	// ReresolveInterval, when positive, makes the device resolve every
	// peer's host-name Endpoint again at this interval (in addition to
	// re-resolving it when no handshake has completed for 135 s while
	// one is wanted, which it always does), and move the peer to the
	// name's addresses if its current endpoint is not one of them and no
	// handshake with it has completed for 135 s: an endpoint the peer
	// roamed to on its own is kept while handshakes with it succeed.
	// Zero means no periodic re-resolution.
	ReresolveInterval time.Duration

	timing *watchTiming // tests only: nil means defaultWatchTiming()
}

// Device is a running WireGuard engine with a typed configuration:
// wireguard-go on a tun.Device (NewDevice), or one of wgkit's kernel
// engines (NewDeviceEngine, used by the tun backend). Create one with
// NewDevice; backends such as netstack and tun create theirs and hand it
// out for status and run-time changes. Every method works on every
// engine.
//
// All methods are safe for concurrent use. After Close, every method that
// changes the device returns an error wrapping net.ErrClosed.
type Device struct {
	eng      engine.Engine // the engine; closed by Close
	wgo      *userspace    // eng when it is wireguard-go; nil otherwise
	routeTTL time.Duration // PeerFor's table expiry; 0: none (routes.go)
	log      *slog.Logger
	resolver *net.Resolver

	events            *eventQueue // OnEvent's goroutine (events.go)
	watch             *watcher    // follows the engine's state (watch.go)
	reresolveInterval time.Duration

	uapiState  // wg(8) connections (uapi_serve.go)
	routeState // PeerFor's table (routes.go)

	mu     sync.Mutex // serializes configuration changes and Close
	closed bool       // guarded by mu
	// iface holds the Interface fields the engine does not keep (addresses,
	// DNS, MTU, hooks...). Guarded by mu.
	iface Interface
	// ownPub is the public key of ownPriv, a copy of iface.PrivateKey as
	// last derived (ownPublicKeyLocked): deriving it costs a scalar
	// multiplication, more than the rest of a SetPeer. Guarded by mu.
	ownPriv, ownPub Key
	// endpoints holds each peer's Endpoint as configured, which may be a
	// host name, so that Config can return it and Reconfigure can tell
	// whether it changed. Guarded by mu.
	endpoints map[Key]string
	// rank is each configured peer's place in the configured order, for
	// stable output: a map, so that noting one peer of thousands costs
	// one lookup. nextRank is the place of the next peer noted. Guarded
	// by mu.
	rank     map[Key]int
	nextRank int
	// applied holds at each place of the configured order the peer as
	// configured there, what Reconfigure compares a new config with
	// place by place (see appliedPeers). Guarded by mu.
	applied appliedPeers
	// engineHook is the watcher as wireguard-go's logger reaches it;
	// emptied by Close (see NewDeviceContext). nil on other engines.
	engineHook *atomic.Pointer[watcher]

	// model is the engine's configuration as Reconfigure diffs against
	// it. Guarded by mu.
	model      engineModel
	modelReads int // times the model was read from the engine; guarded by mu
}

// NewDevice runs the wireguard-go engine on t, applies cfg and brings the
// device up. Endpoint host names are resolved here; use NewDeviceContext to
// bound that in time.
//
// NewDevice takes ownership of t and of opts.Bind and opts.UAPI: they are
// closed if NewDevice fails (whatever the reason, a nil t included), and
// by Close otherwise.
func NewDevice(t tun.Device, cfg *Config, opts *DeviceOptions) (*Device, error) {
	return NewDeviceContext(context.Background(), t, cfg, opts)
}

// NewDeviceContext is NewDevice with a context that bounds the set-up
// (endpoint name resolution), not the life of the device.
func NewDeviceContext(ctx context.Context, t tun.Device, cfg *Config, opts *DeviceOptions) (*Device, error) {
	if opts == nil {
		opts = &DeviceOptions{}
	}
	if t == nil {
		releaseOptions(opts)
		return nil, errors.New("wg: new device: nil tun.Device")
	}
	d, err := newDevice(cfg, opts)
	if err != nil {
		t.Close()
		releaseOptions(opts)
		return nil, err
	}
	bind := opts.Bind
	if bind == nil {
		bind = conn.NewDefaultBind()
	}
	// From here on the engine owns t and bind: closing it closes both.
	// The engine's logger reaches the watcher through a hook that Close
	// empties: wireguard-go's per-peer queues carry finalizers bound to
	// the engine, so a path from the engine (its logger) to the
	// watcher, which holds the engine's peers, would be a cycle through
	// a finalizer, never collected: a closed device of 10 000 peers
	// would keep its 230 MB.
	hook := new(atomic.Pointer[watcher])
	hook.Store(d.watch)
	d.engineHook = hook
	note := func(format string, args []any) {
		if w := hook.Load(); w != nil {
			w.engineLog(format, args)
		}
	}
	u := &userspace{dev: device.NewDevice(t, bind, engineLogger(d.log, note))}
	d.wgo = u
	d.watch.engine = u.dev
	return d.run(ctx, u, cfg, opts)
}

// NewDeviceEngine runs a Device on e, one of wgkit's own engines (the
// kernel's WireGuard on Linux, WireGuardNT on Windows): it is how wgkit's
// backends put those engines behind the same Device API; its parameter
// type is internal, so only wgkit calls it. It applies cfg, brings e up
// and takes ownership of e and opts.UAPI, closing them if it fails.
//
// opts.Bind must be nil (the engine has its own sockets), and opts.UAPI
// too: such an engine serves no UAPI (wg(8) reaches a kernel engine
// through netlink or the driver). On such an engine the device learns
// what happens by reading the engine's state once a second (see
// [Device.WaitHandshake]), PeerFor's table is read again when a second
// old, and Reconfigure reads the engine's configuration each time, since
// wg(8)'s changes come with no notification.
func NewDeviceEngine(ctx context.Context, e engine.Engine, cfg *Config, opts *DeviceOptions) (*Device, error) {
	if opts == nil {
		opts = &DeviceOptions{}
	}
	fail := func(err error) (*Device, error) {
		if e != nil {
			e.Close()
		}
		releaseOptions(opts)
		return nil, fmt.Errorf("wg: new device: %w", err)
	}
	switch {
	case e == nil:
		return fail(errors.New("nil engine"))
	case opts.Bind != nil:
		return fail(errors.New("a Bind needs the wireguard-go engine"))
	case opts.UAPI != nil:
		return fail(errors.New("the engine serves no UAPI (wg(8) reaches it by its own means)"))
	}
	d, err := newDevice(cfg, opts)
	if err != nil {
		e.Close()
		return nil, err
	}
	d.routeTTL = engineRouteTTL
	return d.run(ctx, e, cfg, opts)
}

// engineRouteTTL is how long PeerFor trusts its table on an engine that
// does not serve UAPI: wg(8) changes such an engine with no word to the
// Device.
const engineRouteTTL = time.Second

// releaseOptions closes what the caller handed over in opts.
func releaseOptions(opts *DeviceOptions) {
	if opts.Bind != nil {
		opts.Bind.Close()
	}
	if opts.UAPI != nil {
		opts.UAPI.Close()
	}
}

// newDevice validates cfg and builds a Device without an engine. It takes
// nothing from opts that needs closing.
func newDevice(cfg *Config, opts *DeviceOptions) (*Device, error) {
	if cfg == nil {
		return nil, errors.New("wg: new device: nil config")
	}
	own := cfg.Interface.PrivateKey.PublicKey() // derived once: Validate and the device need it
	if err := cfg.validate(own); err != nil {
		return nil, err // already "wg: invalid config: ..."
	}
	d := &Device{
		ownPriv:           cfg.Interface.PrivateKey,
		ownPub:            own,
		log:               opts.Logger,
		resolver:          opts.Resolver,
		endpoints:         make(map[Key]string),
		rank:              make(map[Key]int),
		reresolveInterval: max(opts.ReresolveInterval, 0),
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.resolver == nil {
		d.resolver = net.DefaultResolver
	}
	timing := defaultWatchTiming()
	if opts.timing != nil {
		timing = *opts.timing
	}
	d.events = newEventQueue(d.log, opts.OnEvent)
	d.watch = newWatcher(d, d.events, timing)
	return d, nil
}

// run is the rest of NewDevice on engine e, which it owns: it resolves
// the endpoints, applies cfg, brings e up and starts the watcher, the
// events and the UAPI server.
func (d *Device) run(ctx context.Context, e engine.Engine, cfg *Config, opts *DeviceOptions) (*Device, error) {
	d.eng = e
	// fail closes the engine (which closes the TUN and Bind it owns).
	fail := func(err error) (*Device, error) {
		d.eng.Close()
		d.watch.stop()
		d.events.close()
		if opts.UAPI != nil {
			opts.UAPI.Close()
		}
		return nil, fmt.Errorf("wg: new device: %w", err)
	}
	resolved, err := d.resolveAll(ctx, cfg.Peers)
	if err != nil {
		return fail(err)
	}
	priv := engine.Key(cfg.Interface.PrivateKey)
	port := cfg.Interface.ListenPort
	mark := cfg.Interface.FwMark
	ec := &engine.Config{PrivateKey: &priv, ListenPort: &port, ReplacePeers: true}
	if mark != 0 || d.wgo != nil {
		// Other engines than Linux's reject a mark; 0 is theirs already.
		ec.FwMark = &mark
	}
	for i := range cfg.Peers {
		ec.Peers = append(ec.Peers, peerConfig(&cfg.Peers[i], resolved[i]))
	}
	if err := d.eng.Configure(ec); err != nil {
		return fail(fmt.Errorf("apply config: %w", err))
	}
	if err := d.eng.Up(); err != nil {
		return fail(fmt.Errorf("up: %w", err))
	}
	// The tun.Device's own EventUp may bring the engine up before the
	// config is applied, and wireguard-go falls back to a random port
	// when binding the configured one fails; a device on another port
	// than asked for is an error, not a surprise. The one read of the
	// engine's state here also gives Reconfigure its model.
	m, err := d.modelLocked()
	if err != nil {
		return fail(err)
	}
	if want := cfg.Interface.ListenPort; want != 0 && m.listenPort != want {
		return fail(fmt.Errorf("listen port %d: bound port %d instead (is the port in use?)", want, m.listenPort))
	}
	d.iface = cfg.Clone().Interface
	for i, p := range cfg.Peers {
		d.endpoints[p.PublicKey] = p.Endpoint
		d.noteRankLocked(p.PublicKey)
		d.watch.peerSet(p.PublicKey, p.Endpoint, resolved[i])
	}
	d.applied.reset(cfg.Peers)
	d.applied.verified(d.modelReads)
	// Key every peer we can reach now rather than at the first packet,
	// so that the first dial finds a session. The first few here, before
	// NewDevice returns (as the engine would for a first packet); the
	// rest from the watcher's goroutine: with many peers they take a
	// while (about 100 µs each). (Only wireguard-go takes such requests.)
	var reachable []Key
	for i, p := range cfg.Peers {
		if resolved[i].IsValid() {
			reachable = append(reachable, p.PublicKey)
		}
	}
	now := reachable[:min(len(reachable), syncInitiations)]
	for _, k := range now {
		d.watch.startHandshake(k)
	}
	d.watch.start(reachable[len(now):])
	d.log.Info("wg: device up", "public_key", d.ownPub.String(), // derived once, in newDevice
		"listen_port", m.listenPort, "peers", len(cfg.Peers))
	d.events.start()
	d.startUAPI(opts.UAPI)
	return d, nil
}

// engineLogger adapts an slog.Logger to wireguard-go's printf-style logger,
// formatting only when the level is enabled. Every verbose line is first
// shown to note (the watcher's hook), unformatted. The engine's error
// lines go to Debug too: the ones that matter (a failed handshake, a
// changed endpoint) are reported as events at Info and Warn, and the rest
// (a garbage datagram from the Internet) must not flood a production log.
func engineLogger(l *slog.Logger, note func(format string, args []any)) *device.Logger {
	ctx := context.Background()
	logf := func(watch bool) func(string, ...any) {
		return func(format string, args ...any) {
			if watch {
				note(format, args)
			}
			if l.Enabled(ctx, slog.LevelDebug) {
				l.Log(ctx, slog.LevelDebug, fmt.Sprintf(format, args...))
			}
		}
	}
	return &device.Logger{Verbosef: logf(true), Errorf: logf(false)}
}

// resolveAll resolves every peer's endpoint (the zero AddrPort where none).
func (d *Device) resolveAll(ctx context.Context, peers []Peer) ([]netip.AddrPort, error) {
	out := make([]netip.AddrPort, len(peers))
	for i, p := range peers {
		ap, err := d.resolve(ctx, p.Endpoint)
		if err != nil {
			return nil, fmt.Errorf("peer %s: %w", p.PublicKey, err)
		}
		out[i] = ap
	}
	return out, nil
}

// resolve turns "host:port" into an address; an empty endpoint gives the
// zero AddrPort. Like wg(8), it takes the first address, preferring IPv4.
func (d *Device) resolve(ctx context.Context, endpoint string) (netip.AddrPort, error) {
	if endpoint == "" {
		return netip.AddrPort{}, nil
	}
	if ap, err := netip.ParseAddrPort(endpoint); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	host, portStr, err := net.SplitHostPort(endpoint)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("endpoint %q: %w", endpoint, err)
	}
	port, err := net.LookupPort("udp", portStr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("endpoint %q: bad port: %w", endpoint, err)
	}
	if ctx.Err() == nil {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
		}
	}
	addrs, err := d.resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("endpoint %q: resolve: %w", endpoint, err)
	}
	if len(addrs) == 0 {
		return netip.AddrPort{}, fmt.Errorf("endpoint %q: resolve: no addresses", endpoint)
	}
	best := addrs[0]
	for _, a := range addrs {
		if a.Unmap().Is4() {
			best = a
			break
		}
	}
	return netip.AddrPortFrom(best.Unmap(), uint16(port)), nil
}

// state reads the engine's current state.
func (d *Device) state() (*engineState, error) {
	if d.wgo != nil {
		return d.wgo.uapiState() // no detour through engine.State
	}
	st, err := d.eng.State()
	if err != nil {
		return nil, fmt.Errorf("wg: read engine state: %w", err)
	}
	return fromEngineState(st), nil
}

// errClosedLocked returns the error for a call after Close, or nil.
func (d *Device) errClosedLocked(op string) error {
	if d.closed {
		return fmt.Errorf("wg: %s: %w", op, net.ErrClosed)
	}
	return nil
}

// PeerStatus is the state of one peer as the engine reports it.
type PeerStatus struct {
	// PublicKey identifies the peer.
	PublicKey Key
	// Endpoint is the peer's current outer address: the configured one, or
	// the one it last sent an authenticated packet from (roaming). The zero
	// value means unknown.
	Endpoint netip.AddrPort
	// AllowedIPs are the inner prefixes routed to this peer, masked.
	AllowedIPs []netip.Prefix
	// LastHandshake is the time of the last completed handshake; the zero
	// Time means none yet.
	LastHandshake time.Time
	// RxBytes and TxBytes count the bytes received from and sent to the
	// peer, including WireGuard overhead.
	RxBytes, TxBytes uint64
	// PersistentKeepalive is the keepalive interval; 0 means off.
	PersistentKeepalive time.Duration
	// HandshakeAttempts counts the handshake initiations the device sent
	// to the peer, HandshakeFailures the ones that got no answer in time
	// (each an EventHandshakeFailing), and EndpointChanges the times the
	// peer's endpoint changed (each an EventEndpointChanged), since the
	// device first saw the peer. They are counted by watching the
	// engine, so they may lag the other fields by up to a second. A
	// kernel engine (NewDeviceEngine) does not tell of its initiations:
	// there HandshakeAttempts and HandshakeFailures stay 0.
	HandshakeAttempts, HandshakeFailures, EndpointChanges uint64
}

// Peers returns the status of every peer, in configured order (peers added
// through wg(8) come last, ordered by key). It returns nil after Close.
func (d *Device) Peers() []PeerStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	st, err := d.state()
	if err != nil {
		d.log.Error("wg: peers", "err", err)
		return nil
	}
	ps := d.sortLocked(st.peers)
	d.watch.counters(ps)
	return ps
}

// sortLocked orders peers by configured order, then by key (peers that
// have no place in it, added through wg(8), after the others). It looks
// each peer's place up once and sorts small records, not PeerStatus
// values: with thousands of peers the lookups and the moves of a
// comparison sort cost more than the rest of Peers.
func (d *Device) sortLocked(peers []PeerStatus) []PeerStatus {
	type place struct {
		rank int // d.rank's, or -1 for none
		i    int // index in peers
	}
	places := make([]place, len(peers))
	for i := range peers {
		r, ok := d.rank[peers[i].PublicKey]
		if !ok {
			r = -1
		}
		places[i] = place{r, i}
	}
	slices.SortFunc(places, func(a, b place) int {
		switch {
		case a.rank >= 0 && b.rank >= 0:
			return a.rank - b.rank
		case a.rank >= 0:
			return -1
		case b.rank >= 0:
			return 1
		}
		return slices.Compare(peers[a.i].PublicKey[:], peers[b.i].PublicKey[:])
	})
	out := make([]PeerStatus, len(peers))
	for j, pl := range places {
		out[j] = peers[pl.i]
	}
	return out
}

// PublicKey returns the device's public key, derived from the private key
// the engine has now (which `wg set private-key` may have changed; the
// zero Key if it was removed). After Close it returns the public key of
// the last configured private key.
func (d *Device) PublicKey() Key {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return d.iface.PrivateKey.PublicKey()
	}
	st, err := d.state()
	if err != nil {
		d.log.Error("wg: public key", "err", err)
		return d.iface.PrivateKey.PublicKey()
	}
	if st.privateKey.IsZero() {
		return Key{}
	}
	return st.privateKey.PublicKey()
}

// ListenPort returns the UDP port the device is bound to, which is the
// chosen one when the config's ListenPort was 0. It returns 0 after Close
// or with a Bind that has no ports.
func (d *Device) ListenPort() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0
	}
	st, err := d.state()
	if err != nil {
		return 0
	}
	return st.listenPort
}

// Config returns a copy of the running configuration: the Interface as
// last applied, with the private key, port and firewall mark the engine
// has now (ListenPort is the bound port, also after `wg set listen-port`,
// unless the Bind has none), and the peers as the engine has them now,
// including changes made through wg(8). A peer's
// Endpoint is the configured string (which may name a host), or the
// engine's current endpoint for a peer configured without one.
func (d *Device) Config() *Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	cfg := &Config{Interface: d.iface}
	cfg = cfg.Clone()
	if d.closed {
		return cfg
	}
	st, err := d.state()
	if err != nil {
		d.log.Error("wg: config", "err", err)
		return cfg
	}
	cfg.Interface.PrivateKey = st.privateKey
	cfg.Interface.FwMark = st.fwMark
	if st.listenPort != 0 {
		cfg.Interface.ListenPort = st.listenPort
	}
	for _, ps := range d.sortLocked(st.peers) {
		p := Peer{
			PublicKey:           ps.PublicKey,
			PresharedKey:        st.psk[ps.PublicKey],
			Endpoint:            d.endpoints[ps.PublicKey],
			AllowedIPs:          ps.AllowedIPs,
			PersistentKeepalive: ps.PersistentKeepalive,
		}
		if p.Endpoint == "" && ps.Endpoint.IsValid() {
			p.Endpoint = ps.Endpoint.String()
		}
		cfg.Peers = append(cfg.Peers, p)
	}
	return cfg
}

// SetPeer adds p, or updates the peer with p's public key, while traffic to
// the other peers keeps flowing. An update replaces the peer's allowed IPs,
// preshared key and keepalive; its endpoint changes only when p.Endpoint is
// set. Host names in p.Endpoint are resolved here; use SetPeerContext to
// bound that in time. A peer with an endpoint and no current session is
// sent a handshake initiation at once.
func (d *Device) SetPeer(p Peer) error {
	return d.SetPeerContext(context.Background(), p)
}

// ownPublicKeyLocked returns the public key of iface.PrivateKey, derived
// once per private key.
func (d *Device) ownPublicKeyLocked() Key {
	return d.publicKeyLocked(d.iface.PrivateKey)
}

// publicKeyLocked returns priv's public key, derived again only when
// priv is not the key last derived.
func (d *Device) publicKeyLocked(priv Key) Key {
	if d.ownPriv != priv || d.ownPub == (Key{}) {
		d.ownPriv, d.ownPub = priv, priv.PublicKey()
	}
	return d.ownPub
}

// SetPeerContext is SetPeer with a context that bounds the resolution of
// a host name in p.Endpoint (30 s when ctx has no deadline), not the life
// of the peer.
func (d *Device) SetPeerContext(ctx context.Context, p Peer) error {
	d.mu.Lock()
	err := d.errClosedLocked("set peer")
	own := d.ownPublicKeyLocked()
	d.mu.Unlock()
	if err != nil {
		return err
	}
	if err := p.validate(own); err != nil {
		return fmt.Errorf("wg: set peer: %w: %w", ErrInvalidConfig, err)
	}
	// Resolve without the lock: a slow name server must not stall status
	// calls, Close or the backends' route checks.
	ap, err := d.resolve(ctx, p.Endpoint)
	if err != nil {
		return fmt.Errorf("wg: set peer %s: %w", p.PublicKey, err)
	}
	kick := false
	defer func() { // after d.mu is released
		if kick {
			d.watch.startHandshakeIfNoSession(p.PublicKey)
		}
	}()
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.errClosedLocked("set peer"); err != nil {
		return err
	}
	if err := d.eng.Configure(&engine.Config{Peers: []engine.PeerConfig{peerConfig(&p, ap)}}); err != nil {
		d.routesChanged() // a failed set may have applied part of its lines
		return fmt.Errorf("wg: set peer %s: %w", p.PublicKey, err)
	}
	d.routesSet(p.PublicKey, p.AllowedIPs)
	d.notePeerLocked(p)
	if m := d.modelCurrentLocked(); m != nil {
		d.modelSetLocked(m, &p)
	}
	d.watch.peerSet(p.PublicKey, p.Endpoint, ap)
	kick = ap.IsValid()
	return nil
}

// notePeerLocked records p's configured endpoint and order, and p as
// applied at its place (SetPeer's semantics: an empty Endpoint keeps the
// configured one).
func (d *Device) notePeerLocked(p Peer) {
	if p.Endpoint != "" {
		d.endpoints[p.PublicKey] = p.Endpoint
	}
	d.noteRankLocked(p.PublicKey)
	d.applied.set(d.rank[p.PublicKey], &p, d.endpoints[p.PublicKey])
}

// RemovePeer removes the peer with the given public key. Removing a peer
// the device does not have is not an error.
func (d *Device) RemovePeer(pub Key) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.errClosedLocked("remove peer"); err != nil {
		return err
	}
	if err := d.eng.Configure(&engine.Config{Peers: []engine.PeerConfig{{PublicKey: engine.Key(pub), Remove: true}}}); err != nil {
		d.routesChanged()
		return fmt.Errorf("wg: remove peer %s: %w", pub, err)
	}
	d.routesRemoved(pub)
	if m := d.modelCurrentLocked(); m != nil {
		m.remove(pub)
	}
	d.forgetPeerLocked(pub)
	d.watch.peerRemoved(pub)
	return nil
}

func (d *Device) forgetPeerLocked(pub Key) {
	if r, ok := d.rank[pub]; ok {
		d.applied.remove(r)
	}
	delete(d.endpoints, pub)
	delete(d.rank, pub)
}

// noteRankLocked gives pub the next place in the configured order, unless
// it has one.
func (d *Device) noteRankLocked(pub Key) {
	if _, ok := d.rank[pub]; !ok {
		d.rank[pub] = d.nextRank
		d.nextRank++
	}
}

// Reconfigure makes the device run cfg, applying only the differences:
// unchanged peers keep their sessions and learned endpoints, the private
// key and listen port are set only when they change, and a ListenPort of 0
// keeps the port the device is bound to. Interface fields the engine does
// not use (addresses, DNS, MTU...) are recorded for Config but change
// nothing on a running backend. The host names of the endpoints that
// changed are resolved here (an unchanged endpoint is kept as the engine
// has it, and its name is not looked up); use ReconfigureContext to bound
// that in time.
//
// It compares cfg with the configuration the device applied, and sends
// the engine only the peers that differ: with thousands of peers, a
// Reconfigure that changes one costs a pass over cfg in memory (a
// comparison of each unchanged peer with the one applied at its place,
// tens of nanoseconds), not a read of every peer from the engine. After
// wg(8) changed the engine through the UAPI socket it reads the engine's
// configuration again first, and on a kernel engine (see
// [NewDeviceEngine]), which wg(8) changes unseen, it does so every time.
func (d *Device) Reconfigure(cfg *Config) error {
	return d.ReconfigureContext(context.Background(), cfg)
}

// ReconfigureContext is Reconfigure with a context that bounds the
// resolution of the peers' endpoint host names (30 s each when ctx has no
// deadline), not the life of the configuration.
func (d *Device) ReconfigureContext(ctx context.Context, cfg *Config) error {
	if cfg == nil {
		return errors.New("wg: reconfigure: nil config")
	}
	// Each attempt validates cfg and resolves, without the lock, the
	// endpoints that changed (the others are kept as the engine has
	// them). A change of the applied peers meanwhile (a concurrent
	// SetPeer) makes it try again; the last attempt resolves every
	// endpoint.
	for attempt := 0; ; attempt++ {
		full := attempt == reconfigureAttempts-1
		d.mu.Lock()
		err := d.errClosedLocked("reconfigure")
		var changed []int
		if err == nil {
			changed, err = d.checkConfigLocked(cfg, full)
		}
		resolve := make([]bool, len(changed))
		for j, i := range changed {
			p := &cfg.Peers[i]
			resolve[j] = p.Endpoint != "" && (full || p.Endpoint != d.endpoints[p.PublicKey])
		}
		ver := d.applied.ver
		d.mu.Unlock()
		if err != nil {
			return err // "wg: invalid config: ..." or closed
		}
		// Resolve without the lock, as SetPeer does.
		resolved := make([]netip.AddrPort, len(changed))
		for j, i := range changed {
			p := &cfg.Peers[i]
			if !resolve[j] {
				continue
			}
			if resolved[j], err = d.resolve(ctx, p.Endpoint); err != nil {
				return fmt.Errorf("wg: reconfigure: peer %s: %w", p.PublicKey, err)
			}
		}
		switch again, err := d.reconfigure(cfg, changed, resolved, ver, full); again {
		case retryNone:
			return err
		case retryAll:
			attempt = reconfigureAttempts - 2 // the next one is the last
		}
	}
}

// What ReconfigureContext does after an attempt.
type retry int

const (
	retryNone retry = iota // done, with the error returned
	retrySome              // try again: the applied peers changed meanwhile
	retryAll               // try again resolving every endpoint
)

// reconfigureAttempts bounds ReconfigureContext's attempts.
const reconfigureAttempts = 3

// checkConfigLocked is cfg.Validate for Reconfigure, made cheap for the
// peers identical to the ones applied at the same place, which were
// valid when applied: it checks their keys against the interface's and
// against the others, and everything else of the peers that differ. It
// returns the places of the peers that differ (all, if full), in order.
// When it finds a problem it runs the full validation for Validate's
// error, which names the first problem.
func (d *Device) checkConfigLocked(cfg *Config, full bool) ([]int, error) {
	own := d.publicKeyLocked(cfg.Interface.PrivateKey)
	if full {
		if err := cfg.validate(own); err != nil {
			return nil, err
		}
		all := make([]int, len(cfg.Peers))
		for i := range all {
			all[i] = i
		}
		return all, nil
	}
	if cfg.Interface.validate() != nil || len(cfg.Peers) > MaxPeers {
		return nil, cfg.validate(own)
	}
	var changed []int
	allowed := 0 // validateCounts' sum, in the same pass
	for i := range cfg.Peers {
		p := &cfg.Peers[i]
		allowed += len(p.AllowedIPs)
		if p.PublicKey == own {
			return nil, cfg.validate(own)
		}
		if d.applied.same(i, p) {
			continue
		}
		if p.validate(own) != nil {
			return nil, cfg.validate(own)
		}
		changed = append(changed, i)
	}
	if allowed > MaxAllowedIPs {
		return nil, cfg.validate(own)
	}
	// Duplicates: the peers at their own places have distinct keys (they
	// were applied so), so a duplicate involves a changed peer; an
	// unchanged one with its key sits at the key's rank.
	seen := newKeySet(len(changed))
	byPlace := make([]Peer, 0, len(changed))
	for _, i := range changed {
		k := cfg.Peers[i].PublicKey
		if r, ok := d.rank[k]; ok && r != i && r < len(cfg.Peers) && cfg.Peers[r].PublicKey == k {
			return nil, cfg.validate(own)
		}
		byPlace = append(byPlace, Peer{PublicKey: k})
		if _, dup := seen.add(byPlace, len(byPlace)-1); dup {
			return nil, cfg.validate(own)
		}
	}
	return changed, nil
}

// reconfigure is the locked part of ReconfigureContext: it applies cfg,
// of which the peers at the places changed (in order) differ from the
// applied ones, with their endpoints resolved where they changed (the
// zero AddrPort where not). It asks for another
// attempt, having changed nothing, when the applied peers changed since
// checkConfigLocked (their version is no longer ver) or a peer needs an
// endpoint it was not given.
func (d *Device) reconfigure(cfg *Config, changed []int, resolved []netip.AddrPort, ver uint64, full bool) (retry, error) {
	var kick []Key
	defer func() { // after d.mu is released
		for _, k := range kick {
			d.watch.startHandshakeIfNoSession(k)
		}
	}()
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.errClosedLocked("reconfigure"); err != nil {
		return retryNone, err
	}
	if !full && d.applied.ver != ver {
		return retrySome, nil
	}
	// Diff against the model of the engine's configuration, not the
	// engine's state: reading every peer back costs far more than the
	// change of one (the model is read again after wg(8) changed the
	// engine, and always on a kernel engine; see engineModel).
	reads := d.modelReads
	st, err := d.modelLocked()
	if err != nil {
		return retryNone, fmt.Errorf("wg: reconfigure: %w", err)
	}
	// The peers identical to the applied ones at their places are as the
	// engine has them, unless the model was read again since they were
	// applied (wg(8) may have changed them) or another peer took some of
	// their allowed IPs (stale).
	trusted := d.applied.reads == d.modelReads
	var ec engine.Config
	in := cfg.Interface
	if in.PrivateKey != st.privateKey {
		k := engine.Key(in.PrivateKey)
		ec.PrivateKey = &k
	}
	if in.ListenPort != 0 && in.ListenPort != st.listenPort {
		ec.ListenPort = &in.ListenPort
	}
	if in.FwMark != st.fwMark {
		ec.FwMark = &in.FwMark
	}
	// The peers not at their places or not trusted cost a few map
	// lookups each; the others nothing more here (checkConfigLocked
	// compared them already).
	var sentIdx []int           // indexes in cfg.Peers of the peers sent, in order
	var sentEp []netip.AddrPort // the endpoints they were sent with
	var fresh []Key             // peers new to the engine, with an endpoint
	kept := 0                   // peers of cfg the engine has
	// diff compares cfg.Peers[i] with the model and queues it if it
	// differs; endpoint is its resolved endpoint, or zero. It reports
	// false if the peer needs an endpoint it was not given.
	diff := func(i int, endpoint netip.AddrPort) bool {
		p := &cfg.Peers[i]
		cur, ok := st.peers[p.PublicKey]
		if ok && p.Endpoint == d.endpoints[p.PublicKey] {
			endpoint = netip.AddrPort{} // unchanged: keep what the engine learned
		} else if p.Endpoint != "" && !endpoint.IsValid() {
			return false // not resolved, but needed: gone from the engine (wg(8))
		}
		if ok {
			kept++
			if !endpoint.IsValid() && cur.psk == p.PresharedKey &&
				cur.keepalive == p.PersistentKeepalive.Truncate(time.Second) &&
				prefixesEqual(st.ips.byPeer[p.PublicKey], p.AllowedIPs) {
				return true
			}
		} else if endpoint.IsValid() {
			fresh = append(fresh, p.PublicKey)
		}
		ec.Peers = append(ec.Peers, peerConfig(p, endpoint))
		sentIdx = append(sentIdx, i)
		sentEp = append(sentEp, endpoint)
		return true
	}
	if trusted && d.applied.nstale == 0 {
		// Every unchanged peer is as the engine has it (the common case).
		kept = len(cfg.Peers) - len(changed)
		for j, i := range changed {
			if !diff(i, resolved[j]) {
				return retryAll, nil
			}
		}
	} else {
		next := 0 // index in changed
		for i := range cfg.Peers {
			var endpoint netip.AddrPort
			if next < len(changed) && changed[next] == i {
				endpoint = resolved[next]
				next++
			} else if trusted && !d.applied.peers[i].stale {
				kept++
				continue
			}
			if !diff(i, endpoint) {
				return retryAll, nil
			}
		}
	}
	var removed []Key
	if kept < len(st.peers) { // cfg's keys are distinct (validated)
		wanted := make(map[Key]bool, len(cfg.Peers))
		for i := range cfg.Peers {
			wanted[cfg.Peers[i].PublicKey] = true
		}
		for k := range st.peers {
			if !wanted[k] {
				ec.Peers = append(ec.Peers, engine.PeerConfig{PublicKey: engine.Key(k), Remove: true})
				removed = append(removed, k)
			}
		}
	}
	// Whether the watcher has seen every peer of the engine: not when the
	// model was just read back after a change by wg(8).
	watched := reads == d.modelReads
	if ec.PrivateKey != nil || ec.ListenPort != nil || ec.FwMark != nil || len(ec.Peers) > 0 {
		if err := d.eng.Configure(&ec); err != nil {
			d.routesChanged() // part of it may be applied: PeerFor and the model read the engine again
			return retryNone, fmt.Errorf("wg: reconfigure: %w", err)
		}
	}
	// The engine took all of ec, in order: so do PeerFor's table and the
	// model (unless wg(8) changed the engine meanwhile, which makes both
	// stale). A private key change makes the engine drop a peer with
	// its public key, but validation keeps such a peer out of cfg and
	// the removals above take any other.
	d.iface = (&Config{Interface: cfg.Interface}).Clone().Interface
	for _, k := range removed {
		d.forgetPeerLocked(k)
	}
	if d.applied.aligned(cfg.Peers, changed) && len(d.rank) == len(cfg.Peers) {
		// Same peers in the same order (the common case): only the
		// changed ones need recording.
		for _, i := range changed {
			p := &cfg.Peers[i]
			setEndpoint(d.endpoints, p)
			d.applied.set(i, p, p.Endpoint)
		}
	} else {
		clear(d.rank)
		d.nextRank = 0
		clear(d.endpoints)
		for i := range cfg.Peers {
			p := &cfg.Peers[i]
			d.noteRankLocked(p.PublicKey)
			setEndpoint(d.endpoints, p)
		}
		d.applied.reset(cfg.Peers)
	}
	m := d.modelCurrentLocked()
	if m != nil {
		m.privateKey = in.PrivateKey
		if ec.ListenPort != nil {
			m.listenPort = in.ListenPort
		}
		m.fwMark = in.FwMark
		d.applied.verified(d.modelReads)
	}
	for _, i := range sentIdx {
		p := &cfg.Peers[i]
		d.routesSet(p.PublicKey, p.AllowedIPs)
		if m != nil {
			d.modelSetLocked(m, p)
		}
	}
	for _, k := range removed {
		d.routesRemoved(k)
		if m != nil {
			m.remove(k)
		}
	}
	for _, k := range removed {
		d.watch.peerRemoved(k)
	}
	// The watcher follows the peers sent; the others it knows already,
	// with their configured endpoints, unless wg(8) added them.
	for j, i := range sentIdx {
		p := &cfg.Peers[i]
		d.watch.peerSet(p.PublicKey, p.Endpoint, sentEp[j])
	}
	if !watched {
		for i := range cfg.Peers {
			if _, ok := slices.BinarySearch(sentIdx, i); !ok {
				p := &cfg.Peers[i]
				d.watch.peerSet(p.PublicKey, p.Endpoint, netip.AddrPort{})
			}
		}
	}
	kick = fresh
	return retryNone, nil
}

// setEndpoint records p's configured endpoint in endpoints (none if empty).
func setEndpoint(endpoints map[Key]string, p *Peer) {
	if p.Endpoint != "" {
		endpoints[p.PublicKey] = p.Endpoint
	} else {
		delete(endpoints, p.PublicKey)
	}
}

// Close stops the engine and releases everything the device holds: its
// goroutines, the Bind's sockets, the tun.Device and the UAPI listener with
// its connections (a kernel engine: its interface). An engine that fails
// to close is reported, after everything else is released. It is safe to call more than once; calls after the first
// return an error wrapping net.ErrClosed.
func (d *Device) Close() error {
	// Order: first stop taking UAPI connections and close those open, so
	// that nobody reconfigures a closing engine. This takes no d.mu, which
	// a method may hold while a UAPI request holds the engine's lock (for
	// no longer than the engine takes to apply it). Then close
	// the engine (which closes the tun.Device and the Bind and waits for
	// its workers), then wait for the UAPI handlers, which return once
	// their connections are closed, then the watcher (its resolvers
	// included) and the events' goroutine, which does not wait for a
	// callback that is running: the callback may be what calls Close.
	d.closeUAPI()
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.errClosedLocked("close"); err != nil {
		return err
	}
	d.closed = true
	d.closeRoutes()      // PeerFor reports no peer from now on
	err := d.eng.Close() // waits for wireguard-go's goroutines
	if d.engineHook != nil {
		d.engineHook.Store(nil)
	}
	d.uapiWG.Wait()
	d.watch.stop()
	d.events.close()
	if err != nil {
		// A kernel engine that could not remove its interface, say.
		return fmt.Errorf("wg: close: %w", err)
	}
	return nil
}

// engineModel is the part of the engine's configuration Reconfigure
// diffs against: the interface's keys, port and mark, and each peer's
// preshared key, keepalive and allowed IPs, as the Device applied them
// (SetPeer, RemovePeer, Reconfigure) or last read them from the engine.
// It saves Reconfigure reading every peer back from the engine to change
// one.
//
// It is valid while gen equals routeGen, which everything that changes
// the engine in a way the model does not follow bumps: a wg(8) "set"
// through the UAPI socket (serveUAPIConn, after the engine applied it)
// and every failed change (which may have applied part of its lines).
// On an engine other than wireguard-go (NewDeviceEngine), wg(8) reaches
// the engine through netlink or the driver with no word to the Device:
// there the model is never trusted, and Reconfigure reads the engine's
// state each time. Guarded by Device.mu.
type engineModel struct {
	valid      bool
	gen        uint64 // routeGen when the model was last known right
	privateKey Key
	listenPort int
	fwMark     uint32
	peers      map[Key]peerModel
	ips        *routeTable // each peer's allowed IPs, moved between peers as the engine moves them
}

// peerModel is what engineModel keeps of one peer besides its allowed IPs.
type peerModel struct {
	psk       Key
	keepalive time.Duration // whole seconds, as the engine keeps it
}

// modelLocked returns the engine model, read again from the engine unless
// it is still valid.
func (d *Device) modelLocked() (*engineModel, error) {
	// Read gen before the state, as rebuildRoutes does: a wg(8) change
	// after this point bumps routeGen and makes the model stale, never
	// wrongly valid.
	gen := d.routeGen.Load()
	if m := &d.model; d.wgo != nil && m.valid && m.gen == gen {
		return m, nil
	}
	st, err := d.state()
	if err != nil {
		return nil, err
	}
	d.modelReads++
	d.model = engineModel{
		valid:      true,
		gen:        gen,
		privateKey: st.privateKey,
		listenPort: st.listenPort,
		fwMark:     st.fwMark,
		peers:      make(map[Key]peerModel, len(st.peers)),
		ips:        newRouteTable(0, st.peers),
	}
	for _, ps := range st.peers {
		d.model.peers[ps.PublicKey] = peerModel{psk: st.psk[ps.PublicKey], keepalive: ps.PersistentKeepalive}
	}
	return &d.model, nil
}

// modelCurrentLocked returns the model if it is valid now, for a change
// to update in place; nil if the next Reconfigure reads the engine anyway.
func (d *Device) modelCurrentLocked() *engineModel {
	if m := &d.model; m.valid && m.gen == d.routeGen.Load() {
		return m
	}
	return nil
}

// set records that the engine applied pc (not a removal) to its peer.
func (m *engineModel) set(p *Peer) {
	m.peers[p.PublicKey] = peerModel{psk: p.PresharedKey, keepalive: p.PersistentKeepalive.Truncate(time.Second)}
	m.ips.set(p.PublicKey, p.AllowedIPs)
}

// remove records that the engine removed peer.
func (m *engineModel) remove(peer Key) {
	delete(m.peers, peer)
	m.ips.remove(peer)
}

// modelSetLocked records in m that the engine applied p: p takes its
// allowed IPs from any peer that had them, whose applied entry no longer
// says what the engine has.
func (d *Device) modelSetLocked(m *engineModel, p *Peer) {
	for _, pfx := range p.AllowedIPs {
		if owner, ok := prefixOwner(m.ips, pfx); ok && owner != p.PublicKey {
			if r, ok := d.rank[owner]; ok {
				d.applied.markStale(r)
			}
		}
	}
	m.set(p)
}

// prefixOwner returns the peer that has pfx in t.
func prefixOwner(t *routeTable, pfx netip.Prefix) (Key, bool) {
	if !pfx.IsValid() {
		return Key{}, false
	}
	pfx = pfx.Masked()
	for _, l := range *t.levels(pfx) {
		if l.bits == pfx.Bits() {
			k, ok := l.peers[pfx]
			return k, ok
		}
	}
	return Key{}, false
}

// appliedPeers holds, at each place of the configured order (Device.rank),
// the peer as configured there, for Reconfigure to compare a new config
// with place by place: a peer equal to the one at its place costs a
// comparison, not map lookups and validation. Invariant: for each key in
// Device.rank, the entry at its rank is live and has that key, and there
// are Device.nextRank entries; an entry that is not live is the place of
// a removed peer.
//
// Entries are valid configurations (they passed validation when
// applied). Whether the engine has them as they say is a second matter:
// it does for the entries not stale when reads equals Device.modelReads,
// which Reconfigure checks (set once every peer was compared with the
// model; a read of the model again, after wg(8) changed the engine or
// on a kernel engine every time, ends that).
type appliedPeers struct {
	peers  []appliedPeer
	nstale int    // entries stale
	reads  int    // Device.modelReads when the entries were last verified; -1: not verified
	ver    uint64 // bumped at every change of peers
}

// appliedPeer is one peer as applied. It owns its ips.
type appliedPeer struct {
	key       Key
	psk       Key
	keepalive time.Duration  // as configured
	endpoint  string         // as configured; Device.endpoints' value
	ips       []netip.Prefix // as configured
	live      bool           // false: the place of a removed peer
	stale     bool           // another peer took some of ips in the engine
}

// same reports whether p is the peer applied at place i.
func (a *appliedPeers) same(i int, p *Peer) bool {
	if i >= len(a.peers) {
		return false
	}
	e := &a.peers[i]
	return e.live && e.key == p.PublicKey && e.psk == p.PresharedKey &&
		e.keepalive == p.PersistentKeepalive && e.endpoint == p.Endpoint &&
		slices.Equal(e.ips, p.AllowedIPs)
}

// aligned reports whether the live entries are peers' keys in order,
// knowing that the entries at the places not in changed are.
func (a *appliedPeers) aligned(peers []Peer, changed []int) bool {
	if len(a.peers) != len(peers) {
		return false
	}
	for _, i := range changed {
		if e := &a.peers[i]; !e.live || e.key != peers[i].PublicKey {
			return false
		}
	}
	return true
}

// set records p at place i, with the configured endpoint given.
func (a *appliedPeers) set(i int, p *Peer, endpoint string) {
	for len(a.peers) <= i {
		a.peers = append(a.peers, appliedPeer{})
	}
	e := &a.peers[i]
	if e.stale {
		a.nstale--
	}
	*e = appliedPeer{
		key: p.PublicKey, psk: p.PresharedKey, keepalive: p.PersistentKeepalive,
		endpoint: endpoint, ips: slices.Clone(p.AllowedIPs), live: true,
	}
	a.ver++
}

// remove marks place i as a removed peer's.
func (a *appliedPeers) remove(i int) {
	if i < len(a.peers) {
		if a.peers[i].stale {
			a.nstale--
		}
		a.peers[i] = appliedPeer{}
		a.ver++
	}
}

// markStale records that the engine no longer has entry i's allowed IPs.
func (a *appliedPeers) markStale(i int) {
	if i < len(a.peers) && !a.peers[i].stale {
		a.peers[i].stale = true
		a.nstale++
		a.ver++
	}
}

// reset makes peers, in order, the applied ones, not verified.
func (a *appliedPeers) reset(peers []Peer) {
	n := 0
	for i := range peers {
		n += len(peers[i].AllowedIPs)
	}
	ips := make([]netip.Prefix, 0, n) // one allocation for all
	a.peers = make([]appliedPeer, len(peers))
	for i := range peers {
		p := &peers[i]
		start := len(ips)
		ips = append(ips, p.AllowedIPs...)
		a.peers[i] = appliedPeer{
			key: p.PublicKey, psk: p.PresharedKey, keepalive: p.PersistentKeepalive,
			endpoint: p.Endpoint, ips: ips[start:len(ips):len(ips)], live: true,
		}
	}
	a.nstale = 0
	a.reads = -1
	a.ver++
}

// verified records that the engine has every entry as it says, as of
// the model read reads.
func (a *appliedPeers) verified(reads int) {
	if a.nstale > 0 {
		for i := range a.peers {
			a.peers[i].stale = false
		}
		a.nstale = 0
	}
	a.reads = reads
}
