//go:build !linux

package udpbind

import (
	"net"

	"golang.zx2c4.com/wireguard/conn"
)

// batching reports whether a ReceiveFunc fills more than one buffer.
const batching = false

// socket is one UDP socket of an open Bind, read and written one datagram
// per call.
type socket struct {
	c  *net.UDPConn
	v6 bool // an AF_INET6 socket; IPv4 peers appear IPv4-mapped

	cache endpointCache // owned by the goroutine calling receive
}

func (b *Bind) newSocket(c *net.UDPConn, v6 bool) (*socket, error) {
	return &socket{c: c, v6: v6}, nil
}

// receive is the ReceiveFunc of s.
func (s *socket) receive(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
	n, ap, err := s.c.ReadFromUDPAddrPort(bufs[0])
	if err != nil {
		return 0, err
	}
	sizes[0] = n
	eps[0] = s.cache.get(endpointKey{ap: unmap(ap)})
	return 1, nil
}

func (s *socket) send(bufs [][]byte, e *Endpoint) error {
	for _, b := range bufs {
		if _, err := s.c.WriteToUDPAddrPort(b, e.ap); err != nil {
			return err
		}
	}
	return nil
}

// setMark does nothing: SO_MARK is Linux's.
func (s *socket) setMark(uint32) error { return nil }

func (s *socket) close() error { return s.c.Close() }
