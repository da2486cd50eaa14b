package wgtest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/wgkit/wgkit/internal/memnet"
	"golang.zx2c4.com/wireguard/conn"
)

// loopbackBind is a conn.Bind on one UDP socket bound to 127.0.0.1, so a
// test peer is reachable from the test process only and sends nothing
// beyond loopback. wireguard-go's default Bind listens on every address.
type loopbackBind struct {
	mu sync.Mutex
	uc *net.UDPConn // nil while closed; guarded by mu
}

var _ conn.Bind = (*loopbackBind)(nil)

var loopback4 = netip.AddrFrom4([4]byte{127, 0, 0, 1})

// Open binds 127.0.0.1:port (0: a free port chosen by the kernel).
func (b *loopbackBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.uc != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	uc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback4, port)))
	if err != nil {
		return nil, 0, fmt.Errorf("wgtest: open loopback bind: %w", err)
	}
	b.uc = uc
	recv := func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, ap, err := uc.ReadFromUDPAddrPort(bufs[0])
		if err != nil {
			return 0, err // wraps net.ErrClosed after Close
		}
		sizes[0] = n
		eps[0] = memnet.NewEndpoint(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
		return 1, nil
	}
	return []conn.ReceiveFunc{recv}, uint16(uc.LocalAddr().(*net.UDPAddr).Port), nil
}

// Close closes the socket; closing a closed bind does nothing.
func (b *loopbackBind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.uc == nil {
		return nil
	}
	err := b.uc.Close()
	b.uc = nil
	return err
}

// SetMark does nothing.
func (b *loopbackBind) SetMark(uint32) error { return nil }

// BatchSize is 1: a test server needs no batching and saves the memory.
func (b *loopbackBind) BatchSize() int { return 1 }

// ParseEndpoint parses ip:port.
func (b *loopbackBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, fmt.Errorf("wgtest: parse endpoint: %w", err)
	}
	return memnet.NewEndpoint(ap), nil
}

// Send writes bufs to ep, which must be a loopback address.
func (b *loopbackBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	e, ok := ep.(*memnet.Endpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	ap := e.AddrPort()
	if !ap.Addr().Unmap().Is4() || !ap.Addr().IsLoopback() {
		return fmt.Errorf("wgtest: send to %v: only 127.0.0.0/8 is allowed", ap)
	}
	b.mu.Lock()
	uc := b.uc
	b.mu.Unlock()
	if uc == nil {
		return fmt.Errorf("wgtest: send: %w", net.ErrClosed)
	}
	var errs []error
	for _, buf := range bufs {
		if _, err := uc.WriteToUDPAddrPort(buf, ap); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
