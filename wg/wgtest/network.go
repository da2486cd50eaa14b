package wgtest

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/wgkit/wgkit/internal/memnet"
	"github.com/wgkit/wgkit/netstack"
	"github.com/wgkit/wgkit/wg"
)

// Default tunnel prefixes of a Network: room for 65534 peers. They are
// read only; the package keeps no mutable state.
var (
	defaultNetworkPrefix4 = netip.MustParsePrefix("10.100.0.0/16")
	defaultNetworkPrefix6 = netip.MustParsePrefix("fd00:100::/64")
)

// Topology says which peers of a Network know each other.
type Topology int

const (
	// FullMesh makes every peer a WireGuard peer of every other, with
	// the other's addresses as AllowedIPs and its switch address as
	// Endpoint. n peers make n*(n-1) WireGuard peer entries.
	FullMesh Topology = iota

	// HubAndSpoke makes peer 0 the hub: it has every other peer (with
	// its addresses and switch address), and every spoke has only the
	// hub, with the whole network's prefixes as AllowedIPs. Spokes reach
	// the hub, and each other only if NetworkOptions.Relay makes the hub
	// relay.
	HubAndSpoke
)

// String returns "full-mesh" or "hub-and-spoke".
func (t Topology) String() string {
	switch t {
	case FullMesh:
		return "full-mesh"
	case HubAndSpoke:
		return "hub-and-spoke"
	}
	return fmt.Sprintf("Topology(%d)", int(t))
}

// Faults describes how a Network's transport mistreats the WireGuard
// datagrams between peers. The zero value is a perfect network.
// Probabilities are fractions in [0, 1]; each datagram is decided on
// independently.
type Faults struct {
	// Loss is the probability that a datagram is dropped.
	Loss float64
	// Delay is the one-way delay added to every datagram.
	Delay time.Duration
	// Jitter bounds a uniformly random extra delay in [0, Jitter) added
	// to every datagram; jitter alone reorders datagrams.
	Jitter time.Duration
	// Reorder is the probability that a datagram is held back by an
	// extra ReorderDelay, so that datagrams sent after it overtake it.
	Reorder float64
	// ReorderDelay is the extra delay of a reordered datagram.
	// Zero means 1ms.
	ReorderDelay time.Duration
	// Duplicate is the probability that a datagram is delivered twice.
	Duplicate float64
	// MTU is the path MTU in bytes of UDP payload (a WireGuard data
	// datagram is the inner packet plus 32 bytes): larger datagrams are
	// dropped silently. Zero means no limit.
	MTU int
}

// Stats counts what a Network's transport did with the datagrams sent
// through it. Copies made by Faults.Duplicate count as delivered.
type Stats struct {
	Sent        uint64 // datagrams sent by peers
	Delivered   uint64 // datagrams put into a peer's receive queue
	Lost        uint64 // dropped by Faults.Loss
	TooBig      uint64 // dropped by Faults.MTU
	Partitioned uint64 // dropped by a Partition
	Unreachable uint64 // sent to an address where no peer runs (stopped, roamed)
	QueueFull   uint64 // dropped because the receiver's queue was full
	Duplicated  uint64 // extra copies made by Faults.Duplicate
	Reordered   uint64 // held back by Faults.Reorder
	Delayed     uint64 // delivered late by Delay, Jitter or Reorder
}

// NetworkOptions configures NewNetwork. A nil *NetworkOptions and every
// zero field mean the documented default.
type NetworkOptions struct {
	// Topology is FullMesh (the zero value) or HubAndSpoke.
	Topology Topology

	// Seed seeds the fault decisions: one random generator per direction
	// between two peers, so the same seed and the same datagrams give the
	// same decisions. Timing (and so the datagrams themselves) still
	// varies from run to run. Zero is a valid seed.
	Seed uint64

	// Faults are the faults in effect from the start; see SetFaults.
	Faults Faults

	// Logger receives every peer's engine and stack log, with the
	// attribute "peer" set to the peer's index. nil discards it.
	Logger *slog.Logger

	// Prefix4 and Prefix6 are the tunnel's address ranges; peer i has
	// host address i+1 of each. Zero means 10.100.0.0/16 and
	// fd00:100::/64.
	Prefix4, Prefix6 netip.Prefix

	// MTU is every peer's tunnel MTU. Zero means the netstack default.
	MTU int

	// PersistentKeepalive is set on every WireGuard peer entry. Zero
	// means none.
	PersistentKeepalive time.Duration

	// QueueLen is the number of datagrams a peer's transport buffers
	// before dropping, like a socket buffer. Zero means 1024; memory is
	// taken only as the queue fills.
	QueueLen int

	// BatchSize is the transport's batch size. wireguard-go keeps a
	// 64 KiB buffer per batch slot for each peer, so the default is small.
	// Zero means 1.
	BatchSize int

	// Relay makes the hub of a HubAndSpoke network relay packets between
	// spokes, as a WireGuard hub does (netstack.ForwardOptions.RelayPeers,
	// with the hub's TTL decrement and ICMP time-exceeded), so spokes
	// reach each other through it. The hub forwards nothing else: its
	// Allow refuses every destination beyond the tunnel. false means
	// spokes reach only the hub. It is ignored in a FullMesh.
	Relay bool

	// NoLeakCheck switches off the goroutine leak check after Close;
	// see ServerOptions.NoLeakCheck for when to set it.
	NoLeakCheck bool
}

// Network is a set of WireGuard peers inside the test process, each on its
// own netstack, connected by an in-memory transport that can lose, delay,
// reorder, duplicate and truncate datagrams, partition peers and move
// them to new addresses. No socket and no port is used. Create it with
// NewNetwork; it is closed when the test ends.
//
// All methods are safe for concurrent use, also while traffic flows.
type Network struct {
	t     testing.TB
	sw    *memnet.Switch
	peers []*Peer
	check func() // the leak check, nil if off

	mu     sync.Mutex
	closed bool // guarded by mu
}

// Peer is one peer of a Network. Its keys and configuration stay the same
// across Stop and Restart.
type Peer struct {
	nw    *Network
	index int
	key   wg.Key
	pub   wg.Key // key.PublicKey(), computed once: a mesh needs it n-1 times
	addr4 netip.Addr
	addr6 netip.Addr
	cfg   *wg.Config
	log   *slog.Logger
	fwd   *netstack.ForwardOptions // router mode of the peer's netstack; nil if off

	mu       sync.Mutex
	net      *netstack.Net  // nil while stopped; guarded by mu
	bind     *memnet.Bind   // the running peer's transport; guarded by mu
	endpoint netip.AddrPort // current switch address; guarded by mu
}

// NewNetwork starts n peers (n >= 1) on the netstack backend, connected
// by an in-memory transport in the given topology. It fails the test if it
// cannot. The network is closed through t.Cleanup and, unless
// opts.NoLeakCheck, the test then fails if goroutines started since
// NewNetwork are still running.
//
// Every peer costs one netstack plus one wireguard-go device: 1.5 ms to
// start and 2.3 MB of heap when this was written (measure with
// BenchmarkNetworkStart), nearly all of it wireguard-go's TUN batch
// buffers (64 KiB per batch slot), which stay untouched and so mostly
// not resident: a 200-peer network runs in about 80 MB of RSS.
// NewNetwork must be called from the test's goroutine.
func NewNetwork(t testing.TB, n int, opts *NetworkOptions) *Network {
	t.Helper()
	nw, err := newNetwork(t, n, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := nw.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Error(err)
		}
		if nw.check != nil {
			nw.check()
		}
	})
	return nw
}

func newNetwork(t testing.TB, n int, opts *NetworkOptions) (_ *Network, err error) {
	if opts == nil {
		opts = &NetworkOptions{}
	}
	if n < 1 {
		return nil, fmt.Errorf("wgtest: new network: %d peers, want at least 1", n)
	}
	if opts.Topology != FullMesh && opts.Topology != HubAndSpoke {
		return nil, fmt.Errorf("wgtest: new network: unknown %v", opts.Topology)
	}
	p4, p6 := opts.Prefix4, opts.Prefix6
	if !p4.IsValid() {
		p4 = defaultNetworkPrefix4
	}
	if !p6.IsValid() {
		p6 = defaultNetworkPrefix6
	}
	if !p4.Addr().Is4() || !p6.Addr().Is6() {
		return nil, fmt.Errorf("wgtest: new network: Prefix4 %v must be IPv4 and Prefix6 %v IPv6", p4, p6)
	}
	nw := &Network{t: t}
	if !opts.NoLeakCheck {
		nw.check = leakCheck(t, leakGrace)
	}
	nw.sw = memnet.NewSwitch(&memnet.Options{Seed: opts.Seed, QueueLen: opts.QueueLen, BatchSize: opts.BatchSize})
	defer func() {
		if err != nil {
			nw.Close()
		}
	}()
	if err := nw.sw.SetFaults(memnet.Faults(opts.Faults)); err != nil {
		return nil, fmt.Errorf("wgtest: new network: %w", err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}

	nw.peers = make([]*Peer, n)
	for i := range nw.peers {
		p := &Peer{nw: nw, index: i, log: logger.With("peer", i)}
		if p.key, err = wg.GeneratePrivateKey(); err != nil {
			return nil, fmt.Errorf("wgtest: new network: %w", err)
		}
		p.pub = p.key.PublicKey()
		if p.addr4, err = nthAddr(p4, i+1); err != nil {
			return nil, fmt.Errorf("wgtest: new network: %w", err)
		}
		if p.addr6, err = nthAddr(p6, i+1); err != nil {
			return nil, fmt.Errorf("wgtest: new network: %w", err)
		}
		if p.endpoint, err = nw.sw.NewAddr(); err != nil {
			return nil, fmt.Errorf("wgtest: new network: %w", err)
		}
		nw.peers[i] = p
	}
	// entry is how other peers see peer q.
	entry := func(q *Peer, allowed ...netip.Prefix) wg.Peer {
		if allowed == nil {
			allowed = []netip.Prefix{hostPrefix(q.addr4), hostPrefix(q.addr6)}
		}
		return wg.Peer{
			PublicKey:           q.pub,
			Endpoint:            q.endpoint.String(),
			AllowedIPs:          allowed,
			PersistentKeepalive: opts.PersistentKeepalive,
		}
	}
	for i, p := range nw.peers {
		p.cfg = &wg.Config{Interface: wg.Interface{
			PrivateKey: p.key,
			Addresses:  []netip.Prefix{netip.PrefixFrom(p.addr4, p4.Bits()), netip.PrefixFrom(p.addr6, p6.Bits())},
			MTU:        opts.MTU,
		}}
		switch {
		case opts.Topology == HubAndSpoke && i > 0:
			p.cfg.Peers = []wg.Peer{entry(nw.peers[0], p4.Masked(), p6.Masked())}
		case opts.Topology == HubAndSpoke:
			p.cfg.Peers = make([]wg.Peer, 0, n-1)
			for _, q := range nw.peers[1:] {
				p.cfg.Peers = append(p.cfg.Peers, entry(q))
			}
		default:
			p.cfg.Peers = make([]wg.Peer, 0, n-1)
			for _, q := range nw.peers {
				if q != p {
					p.cfg.Peers = append(p.cfg.Peers, entry(q))
				}
			}
		}
	}
	if opts.Topology == HubAndSpoke && opts.Relay {
		nw.peers[0].fwd = &netstack.ForwardOptions{
			RelayPeers: true,
			Allow:      func(string, netip.AddrPort, netip.AddrPort) bool { return false },
		}
	}
	for _, p := range nw.peers {
		if err := p.start(); err != nil {
			return nil, err
		}
	}
	return nw, nil
}

// Len returns the number of peers.
func (nw *Network) Len() int { return len(nw.peers) }

// Peer returns peer i, 0 <= i < Len(). In a HubAndSpoke network peer 0 is
// the hub.
func (nw *Network) Peer(i int) *Peer { return nw.peers[i] }

// SetFaults replaces the faults on every link between peers. It may be
// called at any time, also while traffic flows; datagrams already delayed
// keep their delivery time. Invalid faults (a probability outside [0, 1],
// a negative duration) fail the test and change nothing.
func (nw *Network) SetFaults(f Faults) {
	if err := nw.sw.SetFaults(memnet.Faults(f)); err != nil {
		nw.t.Errorf("wgtest: set faults: %v", err)
	}
}

// SetLinkFaults gives the datagrams from peer from to peer to their own
// faults, which replace the network's (see SetFaults) on that one
// direction; nil returns the link to the network's faults. It may be
// called while traffic flows. Invalid faults fail the test and change
// nothing.
func (nw *Network) SetLinkFaults(from, to int, f *Faults) {
	var mf *memnet.Faults
	if f != nil {
		c := memnet.Faults(*f)
		mf = &c
	}
	if err := nw.sw.SetLinkFaults(from, to, mf); err != nil {
		nw.t.Errorf("wgtest: set link faults %d -> %d: %v", from, to, err)
	}
}

// Faults returns the faults in effect, with ReorderDelay's default filled in.
func (nw *Network) Faults() Faults { return Faults(nw.sw.Faults()) }

// Stats returns a snapshot of the transport's counters.
func (nw *Network) Stats() Stats { return Stats(nw.sw.Stats()) }

// Partition drops every datagram between peers i and j, both ways, until
// Heal(i, j). Partitions stay through Roam, Stop and Restart.
func (nw *Network) Partition(i, j int) { nw.sw.Partition(i, j) }

// Heal ends the partition between peers i and j. WireGuard's own timers
// (handshake retries, keepalives) restore traffic; the test need not act.
func (nw *Network) Heal(i, j int) { nw.sw.Heal(i, j) }

// Roam moves peer i to a new transport address, as a NAT rebinding or a
// change of network would, and returns the address. Datagrams to the old
// address are lost; the other peers follow peer i by WireGuard's roaming
// once they receive an authenticated datagram from the new address. A
// stopped peer restarts at its new address.
func (nw *Network) Roam(i int) netip.AddrPort {
	p := nw.peers[i]
	addr, err := nw.sw.NewAddr()
	if err != nil {
		nw.t.Errorf("wgtest: roam peer %d: %v", i, err)
		return netip.AddrPort{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bind != nil {
		if err := p.bind.Move(addr); err != nil {
			nw.t.Errorf("wgtest: roam peer %d: %v", i, err)
			return netip.AddrPort{}
		}
	}
	p.endpoint = addr
	return addr
}

// Close stops every peer and the transport. The test's cleanup calls it;
// calling it earlier is allowed. A second Close returns an error wrapping
// net.ErrClosed.
func (nw *Network) Close() error {
	nw.mu.Lock()
	if nw.closed {
		nw.mu.Unlock()
		return fmt.Errorf("wgtest: close network: %w", net.ErrClosed)
	}
	nw.closed = true
	nw.mu.Unlock()
	// Order: stop the peers (each closes its netstack, engine and Bind),
	// then the switch with its timer goroutine.
	var errs []error
	for _, p := range nw.peers {
		if p == nil {
			continue
		}
		if err := p.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := nw.sw.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("wgtest: close network: %w", err)
	}
	return nil
}

// Index returns the peer's index in its Network.
func (p *Peer) Index() int { return p.index }

// Net returns the peer's network stack, or nil while the peer is stopped.
// After Restart it returns the new stack.
func (p *Peer) Net() *netstack.Net {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.net
}

// Addr returns the peer's IPv4 tunnel address.
func (p *Peer) Addr() netip.Addr { return p.addr4 }

// Addr6 returns the peer's IPv6 tunnel address.
func (p *Peer) Addr6() netip.Addr { return p.addr6 }

// Key returns the peer's private key.
func (p *Peer) Key() wg.Key { return p.key }

// PublicKey returns the peer's public key.
func (p *Peer) PublicKey() wg.Key { return p.pub }

// Endpoint returns the peer's current transport address, an in-process
// address from 198.18.0.0/15 that Roam changes.
func (p *Peer) Endpoint() netip.AddrPort {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.endpoint
}

// Config returns a copy of the configuration the peer runs with. Its
// peers' Endpoints are their addresses at NewNetwork.
func (p *Peer) Config() *wg.Config { return p.cfg.Clone() }

// Stop closes the peer's netstack (its connections, engine and transport).
// Its datagrams in flight are lost. Stopping a stopped peer does nothing.
func (p *Peer) Stop() error { return p.stop() }

// Restart stops the peer if it runs and starts it again with the same
// keys, configuration and transport address, on a new netstack. Other
// peers' sessions with it end; WireGuard makes new handshakes as traffic
// needs them.
func (p *Peer) Restart() error {
	if err := p.stop(); err != nil {
		return err
	}
	return p.start()
}

func (p *Peer) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nw.mu.Lock()
	closed := p.nw.closed
	p.nw.mu.Unlock()
	if closed {
		return fmt.Errorf("wgtest: start peer %d: network: %w", p.index, net.ErrClosed)
	}
	if p.net != nil {
		return nil
	}
	bind := p.nw.sw.NewBind(p.index, p.endpoint)
	n, err := openNet(p.cfg, p.log, bind, p.fwd)
	if err != nil {
		return fmt.Errorf("wgtest: start peer %d: %w", p.index, err)
	}
	p.net, p.bind = n, bind
	return nil
}

func (p *Peer) stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.net == nil {
		return nil
	}
	err := p.net.Close()
	p.net, p.bind = nil, nil
	if err != nil {
		return fmt.Errorf("wgtest: stop peer %d: %w", p.index, err)
	}
	return nil
}
