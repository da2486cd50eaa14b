package netstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Ping sends one ICMP (IPv4) or ICMPv6 echo request to addr through the
// tunnel and returns the round-trip time of the matching reply. ctx bounds
// the wait; without a deadline Ping waits at most 5 seconds. The tunnel's
// own addresses answer too (the stack replies to echo requests to them).
func (n *Net) Ping(ctx context.Context, addr netip.Addr) (time.Duration, error) {
	addr = addr.Unmap().WithZone("")
	fail := func(err error) (time.Duration, error) {
		return 0, &pingError{addr: addr, err: err}
	}
	if !addr.IsValid() {
		return fail(errors.New("invalid address"))
	}
	if n.isClosed() {
		return fail(net.ErrClosed)
	}
	if addr.Is4() && !n.v4 || addr.Is6() && !n.v6 {
		return fail(fmt.Errorf("the tunnel has no address of that family (%s)", n.familyText()))
	}
	if err := n.checkRoute(addr); err != nil {
		return fail(err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, waitTimeout)
		defer cancel()
	}

	fa, proto := fullAddr(netip.AddrPortFrom(addr, 0))
	transport, echo, reply := icmp.ProtocolNumber4, uint8(header.ICMPv4Echo), uint8(header.ICMPv4EchoReply)
	if addr.Is6() {
		transport, echo, reply = icmp.ProtocolNumber6, uint8(header.ICMPv6EchoRequest), uint8(header.ICMPv6EchoReply)
	}
	var wq waiter.Queue
	ep, terr := n.stack.NewEndpoint(transport, proto, &wq)
	if terr != nil {
		return fail(convertErr("socket", terr))
	}
	defer ep.Close()
	entry, notify := waiter.NewChannelEntry(waiter.ReadableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	if terr := ep.Connect(fa); terr != nil {
		return fail(convertErr("connect", terr))
	}

	// The ICMPv4 and ICMPv6 echo headers share a layout: type, code,
	// checksum, identifier, sequence. The stack sets the identifier (the
	// endpoint's "port") and the checksum.
	msg := make([]byte, header.ICMPv4MinimumSize+16)
	msg[0] = echo
	var seq [2]byte
	rand.Read(seq[:])
	copy(msg[6:8], seq[:])
	rand.Read(msg[header.ICMPv4MinimumSize:])
	start := time.Now()
	var r bytes.Reader
	r.Reset(msg)
	if _, terr := ep.Write(&r, tcpip.WriteOptions{}); terr != nil {
		return fail(convertErr("sendto", terr))
	}
	buf := make([]byte, len(msg)+64)
	for {
		w := tcpip.SliceWriter(buf)
		res, terr := ep.Read(&w, tcpip.ReadOptions{})
		if _, ok := terr.(*tcpip.ErrWouldBlock); ok {
			select {
			case <-notify:
				continue
			case <-ctx.Done():
				return fail(ctx.Err())
			case <-n.done:
				return fail(net.ErrClosed)
			}
		}
		if terr != nil {
			if n.isClosed() {
				return fail(net.ErrClosed)
			}
			return fail(convertErr("recvfrom", terr))
		}
		got := buf[:res.Count]
		if len(got) == len(msg) && got[0] == reply && bytes.Equal(got[6:8], seq[:]) &&
			bytes.Equal(got[header.ICMPv4MinimumSize:], msg[header.ICMPv4MinimumSize:]) {
			return time.Since(start), nil
		}
	}
}

// pingError is Ping's error: "netstack: ping ADDR: " and the cause, whose
// own "netstack: " prefix (ErrNoRoute's, a gVisor error's) is left out so
// that the message has one.
type pingError struct {
	addr netip.Addr
	err  error
}

func (e *pingError) Error() string {
	return "netstack: ping " + e.addr.String() + ": " + strings.TrimPrefix(e.err.Error(), "netstack: ")
}

func (e *pingError) Unwrap() error { return e.err }
