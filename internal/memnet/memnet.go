// Package memnet is an in-memory datagram network for WireGuard devices: a
// [Switch] connects any number of [Bind]s (wireguard-go conn.Binds without
// sockets) and applies configurable faults to the datagrams between them.
//
// Every Bind has a node id, chosen by the caller, and an address on the
// switch (an IPv4 netip.AddrPort that exists only in the process). Faults
// that concern two nodes (partitions, the per-link random numbers) follow the
// node ids, so a node keeps its partitions when it moves to a new address
// ([Bind.Move]) or when a new Bind takes its place after a restart.
//
// Fault decisions come from one PCG random generator per directed link,
// seeded from the switch's seed and the two node ids, so for the same seed
// and the same sequence of datagrams on a link the decisions are the same.
// Delayed datagrams wait in one timer heap per switch, served by a single
// goroutine; no goroutine is started per datagram.
//
// All methods are safe for concurrent use.
package memnet

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// Faults describes how a switch mistreats datagrams. The zero value is a
// perfect network. Probabilities are fractions in [0, 1].
type Faults struct {
	// Loss is the probability that a datagram is dropped.
	Loss float64
	// Delay is the one-way delay added to every datagram.
	Delay time.Duration
	// Jitter is the upper bound of a uniformly random extra delay in
	// [0, Jitter) added to every datagram; jitter alone reorders datagrams.
	Jitter time.Duration
	// Reorder is the probability that a datagram is held back by an extra
	// ReorderDelay, so that datagrams sent after it overtake it.
	Reorder float64
	// ReorderDelay is the extra delay of a reordered datagram.
	// Zero means 1ms.
	ReorderDelay time.Duration
	// Duplicate is the probability that a datagram is delivered twice
	// (each copy with its own delay).
	Duplicate float64
	// MTU is the path MTU in bytes of UDP payload: larger datagrams are
	// dropped silently, as a router that does not fragment would. Zero
	// means no limit.
	MTU int
}

// normalize checks f and fills in defaults.
func (f *Faults) normalize() error {
	if f.ReorderDelay == 0 {
		f.ReorderDelay = time.Millisecond
	}
	for _, p := range []struct {
		name string
		v    float64
	}{{"loss", f.Loss}, {"reorder", f.Reorder}, {"duplicate", f.Duplicate}} {
		if !(p.v >= 0 && p.v <= 1) {
			return fmt.Errorf("memnet: %s probability %v not in [0, 1]", p.name, p.v)
		}
	}
	if f.Delay < 0 || f.Jitter < 0 || f.ReorderDelay < 0 || f.MTU < 0 {
		return errors.New("memnet: negative delay, jitter, reorder delay or MTU")
	}
	return nil
}

// Stats counts what a switch did with the datagrams sent through it.
type Stats struct {
	Sent        uint64 // datagrams passed to Send
	Delivered   uint64 // datagrams put into a receive queue (copies included)
	Lost        uint64 // dropped by Faults.Loss
	TooBig      uint64 // dropped by Faults.MTU
	Partitioned uint64 // dropped by a partition
	Unreachable uint64 // no open Bind at the destination address
	QueueFull   uint64 // dropped because the receive queue was full
	Duplicated  uint64 // extra copies made by Faults.Duplicate
	Reordered   uint64 // held back by Faults.Reorder
	Delayed     uint64 // passed through the timer heap
}

type counters struct {
	sent, delivered, lost, tooBig, partitioned, unreachable, queueFull, duplicated, reordered, delayed atomic.Uint64
}

// Options configures a Switch. The zero value (or nil) means defaults.
type Options struct {
	// Seed seeds the fault random generators. Zero is a valid seed.
	Seed uint64
	// QueueLen is the number of datagrams a Bind buffers before further
	// datagrams to it are dropped, as a full socket buffer would.
	// Zero means 1024. The buffer grows only as needed.
	QueueLen int
	// BatchSize is the BatchSize of every Bind: the number of datagrams a
	// receive call returns at most. wireguard-go preallocates a 64 KiB
	// buffer per batch slot and receive goroutine, so small is cheap.
	// Zero means 1.
	BatchSize int
}

// Switch is an in-memory datagram network. Create it with [NewSwitch] and
// release it with [Switch.Close].
type Switch struct {
	seed      uint64
	queueLen  int
	batchSize int
	faults    atomic.Pointer[Faults]
	stats     counters

	mu       sync.Mutex
	addrs    map[netip.AddrPort]*Bind // open binds by address; guarded by mu
	parts    map[[2]int]bool          // partitioned node pairs, lower id first; guarded by mu
	links    map[[2]int]*link         // directed links by (src, dst) id; guarded by mu
	ovr      int                      // links with their own faults; guarded by mu
	nextAddr uint32                   // guarded by mu
	closed   bool                     // guarded by mu

	sched scheduler
}

// link holds the random generator of one direction between two nodes and
// the faults that replace the switch's on it.
type link struct {
	mu  sync.Mutex
	rng *rand.Rand // guarded by mu

	faults *Faults // nil: the switch's faults; guarded by Switch.mu
}

// NewSwitch returns a running switch. Its timer goroutine runs until Close.
func NewSwitch(opts *Options) *Switch {
	if opts == nil {
		opts = &Options{}
	}
	s := &Switch{
		seed:      opts.Seed,
		queueLen:  opts.QueueLen,
		batchSize: opts.BatchSize,
		addrs:     make(map[netip.AddrPort]*Bind),
		parts:     make(map[[2]int]bool),
		links:     make(map[[2]int]*link),
	}
	if s.queueLen <= 0 {
		s.queueLen = 1024
	}
	if s.batchSize <= 0 {
		s.batchSize = 1
	}
	s.faults.Store(&Faults{})
	s.sched.start()
	return s
}

// Close stops the timer goroutine, drops the datagrams still in flight and
// closes every open Bind. A second Close returns an error wrapping
// net.ErrClosed.
func (s *Switch) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("memnet: switch: %w", net.ErrClosed)
	}
	s.closed = true
	binds := make([]*Bind, 0, len(s.addrs))
	for _, b := range s.addrs {
		binds = append(binds, b)
	}
	s.mu.Unlock()
	// Order: stop deliveries first, then close the binds so that their
	// receive functions return net.ErrClosed.
	s.sched.stop()
	for _, b := range binds {
		b.Close()
	}
	return nil
}

// SetFaults replaces the faults of every link without faults of its own
// (see SetLinkFaults). It may be called while
// traffic flows; datagrams already delayed keep their delivery time.
func (s *Switch) SetFaults(f Faults) error {
	if err := f.normalize(); err != nil {
		return err
	}
	s.faults.Store(&f)
	return nil
}

// Faults returns the current faults.
func (s *Switch) Faults() Faults { return *s.faults.Load() }

// SetLinkFaults gives the datagrams from node src to node dst their own
// faults, which replace (not add to) the switch's. nil returns the link to
// the switch's faults. It may be called while traffic flows.
func (s *Switch) SetLinkFaults(src, dst int, f *Faults) error {
	if f != nil {
		c := *f
		if err := c.normalize(); err != nil {
			return err
		}
		f = &c
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.linkForLocked(src, dst)
	switch {
	case l.faults == nil && f != nil:
		s.ovr++
	case l.faults != nil && f == nil:
		s.ovr--
	}
	l.faults = f
	return nil
}

// Stats returns a snapshot of the switch's counters.
func (s *Switch) Stats() Stats {
	c := &s.stats
	return Stats{
		Sent: c.sent.Load(), Delivered: c.delivered.Load(), Lost: c.lost.Load(),
		TooBig: c.tooBig.Load(), Partitioned: c.partitioned.Load(),
		Unreachable: c.unreachable.Load(), QueueFull: c.queueFull.Load(),
		Duplicated: c.duplicated.Load(), Reordered: c.reordered.Load(), Delayed: c.delayed.Load(),
	}
}

func pair(a, b int) [2]int {
	if a > b {
		a, b = b, a
	}
	return [2]int{a, b}
}

// Partition drops every datagram between nodes a and b, both ways, until Heal.
func (s *Switch) Partition(a, b int) {
	s.mu.Lock()
	s.parts[pair(a, b)] = true
	s.mu.Unlock()
}

// Heal ends a partition between nodes a and b. Healing a pair that is not
// partitioned does nothing.
func (s *Switch) Heal(a, b int) {
	s.mu.Lock()
	delete(s.parts, pair(a, b))
	s.mu.Unlock()
}

// NewAddr returns an unused switch address: an IPv4 address from the
// benchmarking range 198.18.0.0/15 with port 51820. It exists only in the
// process; nothing is ever sent to it on a real network.
func (s *Switch) NewAddr() (netip.AddrPort, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	const size = 1 << 17 // 198.18.0.0/15
	if s.nextAddr >= size-2 {
		return netip.AddrPort{}, errors.New("memnet: switch addresses exhausted")
	}
	s.nextAddr++
	n := uint32(198)<<24 | uint32(18)<<16 | s.nextAddr
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), 51820), nil
}

// NewBind returns a closed Bind for node id at addr. The device opens it;
// only then is addr taken on the switch.
func (s *Switch) NewBind(id int, addr netip.AddrPort) *Bind {
	return &Bind{sw: s, id: id, addr: addr, self: &Endpoint{addr: addr}}
}

// linkFor returns the directed link from src to dst, creating it.
func (s *Switch) linkForLocked(src, dst int) *link {
	k := [2]int{src, dst}
	l := s.links[k]
	if l == nil {
		// Mix the ids into the second PCG word so every link has its own stream.
		l = &link{rng: rand.New(rand.NewPCG(s.seed, uint64(uint32(src))<<32|uint64(uint32(dst))))}
		s.links[k] = l
	}
	return l
}

// send routes one datagram (already copied) from b to dst.
func (s *Switch) send(from *Bind, fromEP *Endpoint, dst netip.AddrPort, data []byte) {
	c := &s.stats
	c.sent.Add(1)
	f := s.faults.Load()
	s.mu.Lock()
	to := s.addrs[dst]
	if to == nil || s.closed {
		s.mu.Unlock()
		c.unreachable.Add(1)
		return
	}
	if len(s.parts) > 0 && s.parts[pair(from.id, to.id)] {
		s.mu.Unlock()
		c.partitioned.Add(1)
		return
	}
	var l *link
	if s.ovr > 0 {
		l = s.linkForLocked(from.id, to.id)
		if l.faults != nil {
			f = l.faults
		}
	}
	if *f == (Faults{ReorderDelay: f.ReorderDelay}) {
		l = nil // a perfect link: no random numbers needed
	} else if l == nil {
		l = s.linkForLocked(from.id, to.id)
	}
	s.mu.Unlock()

	p := packet{data: data, from: fromEP, dst: dst}
	if l == nil {
		to.enqueue(p)
		return
	}
	if f.MTU > 0 && len(data) > f.MTU {
		c.tooBig.Add(1)
		return
	}
	// Always draw the same number of values per datagram so that a change
	// of one fault does not shift the decisions of the others.
	var delays [2]time.Duration
	var reordered [2]bool
	l.mu.Lock()
	loss, dup := l.rng.Float64(), l.rng.Float64()
	for i := range delays {
		j, r := l.rng.Float64(), l.rng.Float64()
		delays[i] = f.Delay + time.Duration(j*float64(f.Jitter))
		if r < f.Reorder {
			delays[i] += f.ReorderDelay
			reordered[i] = true
		}
	}
	l.mu.Unlock()
	if loss < f.Loss {
		c.lost.Add(1)
		return
	}
	copies := 1
	if dup < f.Duplicate {
		copies = 2
		c.duplicated.Add(1)
	}
	for i, d := range delays[:copies] {
		if reordered[i] {
			c.reordered.Add(1)
		}
		if d <= 0 {
			to.enqueue(p)
			continue
		}
		c.delayed.Add(1)
		if !s.sched.add(time.Now().Add(d), to, p) {
			return // switch closed
		}
	}
}

// packet is a datagram in flight. data is never written after Send copied it,
// so duplicates share it.
type packet struct {
	data []byte
	from *Endpoint
	dst  netip.AddrPort
}

// Endpoint is the address of a Bind on a switch, as a conn.Endpoint.
type Endpoint struct {
	addr netip.AddrPort
}

var _ conn.Endpoint = (*Endpoint)(nil)

// AddrPort returns the endpoint's switch address.
func (e *Endpoint) AddrPort() netip.AddrPort { return e.addr }

// ClearSrc does nothing: a switch has no source address choice.
func (e *Endpoint) ClearSrc() {}

// SrcToString returns "".
func (e *Endpoint) SrcToString() string { return "" }

// DstToString returns the address as ip:port.
func (e *Endpoint) DstToString() string { return e.addr.String() }

// DstToBytes returns the address and port, as wireguard-go's cookie MACs use them.
func (e *Endpoint) DstToBytes() []byte {
	b, _ := e.addr.MarshalBinary()
	return b
}

// DstIP returns the address.
func (e *Endpoint) DstIP() netip.Addr { return e.addr.Addr() }

// SrcIP returns the zero Addr.
func (e *Endpoint) SrcIP() netip.Addr { return netip.Addr{} }

// NewEndpoint returns the Endpoint of addr, for Binds outside this package
// that want the same plain ip:port endpoint.
func NewEndpoint(addr netip.AddrPort) *Endpoint { return &Endpoint{addr: addr} }
