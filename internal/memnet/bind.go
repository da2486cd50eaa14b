package memnet

import (
	"fmt"
	"net"
	"net/netip"
	"sync"

	"golang.zx2c4.com/wireguard/conn"
)

// Bind is a conn.Bind on a Switch. It can be opened again after Close, as
// wireguard-go does when the listen port changes. Create it with
// [Switch.NewBind].
type Bind struct {
	sw *Switch
	id int

	mu     sync.Mutex
	addr   netip.AddrPort // guarded by mu
	self   *Endpoint      // endpoint of addr, the source of sent datagrams; guarded by mu
	open   bool           // guarded by mu
	done   chan struct{}  // closed by Close; made by Open; guarded by mu
	notify chan struct{}  // capacity 1: a datagram was queued; guarded by mu
	queue  []packet       // received datagrams, oldest first; guarded by mu
}

var _ conn.Bind = (*Bind)(nil)

// ID returns the node id the Bind was created with.
func (b *Bind) ID() int { return b.id }

// Addr returns the Bind's current switch address.
func (b *Bind) Addr() netip.AddrPort {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addr
}

// Open takes the Bind's address on the switch. The port argument is
// ignored; the returned port is the address's port. One receive function
// is returned.
func (b *Bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	s := b.sw
	s.mu.Lock()
	defer s.mu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	if s.closed {
		return nil, 0, fmt.Errorf("memnet: open %v: switch: %w", b.addr, net.ErrClosed)
	}
	if other := s.addrs[b.addr]; other != nil {
		return nil, 0, fmt.Errorf("memnet: open %v: address in use by node %d", b.addr, other.id)
	}
	s.addrs[b.addr] = b
	b.open = true
	b.done = make(chan struct{})
	b.notify = make(chan struct{}, 1)
	b.queue = nil
	return []conn.ReceiveFunc{b.makeReceiveFunc(b.done, b.notify)}, b.addr.Port(), nil
}

// Close releases the Bind's address; its receive functions return
// net.ErrClosed. Closing a closed Bind does nothing, as wireguard-go
// expects of a Bind.
func (b *Bind) Close() error {
	s := b.sw
	s.mu.Lock()
	defer s.mu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open {
		return nil
	}
	if s.addrs[b.addr] == b {
		delete(s.addrs, b.addr)
	}
	b.open = false
	close(b.done)
	b.queue = nil
	return nil
}

// Move gives the Bind a new switch address, as a NAT rebinding or a
// network change would: datagrams it sends come from addr from now on and
// datagrams to its old address are lost.
func (b *Bind) Move(addr netip.AddrPort) error {
	s := b.sw
	s.mu.Lock()
	defer s.mu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	if other := s.addrs[addr]; other != nil && other != b {
		return fmt.Errorf("memnet: move to %v: address in use by node %d", addr, other.id)
	}
	if b.open {
		if s.addrs[b.addr] == b {
			delete(s.addrs, b.addr)
		}
		s.addrs[addr] = b
	}
	b.addr = addr
	b.self = &Endpoint{addr: addr}
	return nil
}

// SetMark does nothing.
func (b *Bind) SetMark(mark uint32) error { return nil }

// BatchSize returns the switch's batch size.
func (b *Bind) BatchSize() int { return b.sw.batchSize }

// ParseEndpoint parses an ip:port. Host names are not resolved.
func (b *Bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, fmt.Errorf("memnet: parse endpoint: %w", err)
	}
	return &Endpoint{addr: ap}, nil
}

// Send copies bufs and hands them to the switch. Datagrams to an address
// without an open Bind vanish without an error, as UDP datagrams do.
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*Endpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	b.mu.Lock()
	open, self := b.open, b.self
	b.mu.Unlock()
	if !open {
		return fmt.Errorf("memnet: send: %w", net.ErrClosed)
	}
	for _, buf := range bufs {
		data := make([]byte, len(buf))
		copy(data, buf)
		b.sw.send(b, self, e.addr, data)
	}
	return nil
}

// enqueue appends p to the receive queue if the Bind is open at p.dst.
func (b *Bind) enqueue(p packet) {
	b.mu.Lock()
	if !b.open || b.addr != p.dst {
		b.mu.Unlock()
		b.sw.stats.unreachable.Add(1)
		return
	}
	if len(b.queue) >= b.sw.queueLen {
		b.mu.Unlock()
		b.sw.stats.queueFull.Add(1)
		return
	}
	b.queue = append(b.queue, p)
	notify := b.notify
	b.mu.Unlock()
	b.sw.stats.delivered.Add(1)
	select {
	case notify <- struct{}{}:
	default:
	}
}

func (b *Bind) makeReceiveFunc(done, notify chan struct{}) conn.ReceiveFunc {
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		for {
			select {
			case <-done:
				return 0, net.ErrClosed
			default:
			}
			b.mu.Lock()
			if n := len(b.queue); n > 0 && b.done == done {
				k := min(n, len(bufs))
				for i, p := range b.queue[:k] {
					sizes[i] = copy(bufs[i], p.data)
					eps[i] = p.from
					b.queue[i] = packet{}
				}
				if k == n {
					b.queue = b.queue[:0]
				} else {
					b.queue = b.queue[k:]
				}
				b.mu.Unlock()
				return k, nil
			}
			b.mu.Unlock()
			select {
			case <-done:
				return 0, net.ErrClosed
			case <-notify:
			}
		}
	}
}
