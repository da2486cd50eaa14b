package netstack

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/wgkit/wgkit/wg"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
)

// gvisorUDPStats returns how many datagrams c's gVisor endpoint sent and
// received: those that did not take the conn's own data path.
func gvisorUDPStats(t *testing.T, c any) (sent, received uint64) {
	t.Helper()
	st := c.(*udpConn).ep.Stats().(*tcpip.TransportEndpointStats)
	return st.PacketsSent.Value(), st.PacketsReceived.Value()
}

// listenDialUDP returns a socket listening on l (on the dual-stack
// wildcard if wildcard is set) and a conn dialed to it at ip from d,
// closed at cleanup; no datagram has gone through yet.
func listenDialUDP(t *testing.T, l, d *Net, ip netip.Addr, wildcard bool) (net.PacketConn, net.Conn) {
	t.Helper()
	listen := netip.AddrPortFrom(ip, 0).String()
	if wildcard {
		listen = ":0"
	}
	pc, err := l.ListenPacket("udp", listen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	to := netip.AddrPortFrom(ip, uint16(pc.LocalAddr().(*net.UDPAddr).Port))
	c, err := d.DialContext(testContext(t, 10*time.Second), "udp", to.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return pc, c
}

// TestUDPFastPath checks which datagrams take the conns' own data path
// (udpfast.go) and which go through gVisor's endpoint, and that both
// arrive intact in both directions, over IPv4 and IPv6: datagrams that
// fit the MTU go past gVisor's endpoint, larger ones are fragmented and
// reassembled by gVisor, and datagrams to the tunnel's own address stay
// in the stack.
func TestUDPFastPath(t *testing.T) {
	a, b := openPair(t, nil)
	for _, tt := range []struct {
		name     string
		listen   netip.Addr
		wildcard bool // listen on the dual-stack wildcard, dial listen
		size     int
		fast     bool
	}{
		{name: "v4 small", listen: addrB4, size: 100, fast: true},
		{name: "v4 fits the MTU", listen: addrB4, size: a.mtu - 28, fast: true},
		{name: "v4 fragmented", listen: addrB4, size: 3000},
		{name: "v6 small", listen: addrB6, size: 100, fast: true},
		{name: "v6 fragmented", listen: addrB6, size: 3000},
		{name: "v4 to the dual-stack wildcard", listen: addrB4, wildcard: true, size: 100, fast: true},
		{name: "v6 to the dual-stack wildcard", listen: addrB6, wildcard: true, size: 100, fast: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pc, c := listenDialUDP(t, b, a, tt.listen, tt.wildcard)
			msg := bytes.Repeat([]byte("0123456789abcdef"), tt.size/16+1)[:tt.size]
			got := make([]byte, 4096)
			pc.SetReadDeadline(time.Now().Add(10 * time.Second))
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			// The first datagram waits for the handshake; one round trip
			// through both tunnels and back.
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			k, from, err := pc.ReadFrom(got)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got[:k], msg) {
				t.Fatalf("got %d bytes, want the %d sent", k, len(msg))
			}
			if from.String() != c.LocalAddr().String() {
				t.Errorf("datagram from %v, want %v", from, c.LocalAddr())
			}
			if _, err := pc.WriteTo(got[:k], from); err != nil {
				t.Fatal(err)
			}
			if k, err = c.Read(got); err != nil || !bytes.Equal(got[:k], msg) {
				t.Fatalf("echo: %d bytes, %v; want the %d sent", k, err, len(msg))
			}
			want := uint64(1)
			if tt.fast {
				want = 0
			}
			for _, side := range []struct {
				name string
				conn any
			}{{"dialed", c}, {"listening", pc}} {
				if sent, received := gvisorUDPStats(t, side.conn); sent != want || received != want {
					t.Errorf("%s conn: gVisor's endpoint sent %d and received %d datagrams, want %d", side.name, sent, received, want)
				}
			}
		})
	}

	t.Run("own address", func(t *testing.T) {
		pc, c := listenDialUDP(t, a, a, addrA4, false)
		if _, err := c.Write([]byte("local")); err != nil {
			t.Fatal(err)
		}
		pc.SetReadDeadline(time.Now().Add(10 * time.Second))
		got := make([]byte, 16)
		if k, _, err := pc.ReadFrom(got); err != nil || string(got[:k]) != "local" {
			t.Fatalf("ReadFrom = %q, %v; want \"local\"", got[:k], err)
		}
		if sent, _ := gvisorUDPStats(t, c); sent != 1 {
			t.Errorf("gVisor's endpoint sent %d datagrams, want 1: the stack delivers local traffic", sent)
		}
	})
}

// TestUDPWriteToRefused checks that datagrams gVisor's endpoint refuses
// still go to it rather than past it, with its errors: to the subnet's
// broadcast address without SO_BROADCAST, as Linux, and to port 0.
func TestUDPWriteToRefused(t *testing.T) {
	a, _ := openPair(t, nil)
	pc, err := a.ListenPacket("udp", netip.AddrPortFrom(addrA4, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	a4 := addrA4.As4() // in a /24
	for _, tt := range []struct {
		to   netip.AddrPort
		want error
	}{
		{to: netip.AddrPortFrom(netip.AddrFrom4([4]byte{a4[0], a4[1], a4[2], 255}), 9), want: syscall.EACCES},
		{to: netip.AddrPortFrom(addrB4, 0), want: syscall.EINVAL},
	} {
		if _, err := pc.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(tt.to)); !errors.Is(err, tt.want) {
			t.Errorf("WriteTo %v = %v, want %v", tt.to, err, tt.want)
		}
	}
}

// TestUDPFastReceiveBuffer checks that the conn's own receive queue is
// bounded by its receive buffer, as gVisor's is: datagrams that arrive
// while it is full are dropped (and counted), and once it is read, new
// ones queue again.
func TestUDPFastReceiveBuffer(t *testing.T) {
	a, b := openPair(t, nil)
	pc, c := udpPair(t, a, b)
	pc.(*udpConn).SetReadBuffer(minUDPBuffer)
	const sent, size = 50, 1000
	msg := make([]byte, size)
	dropped := b.stack.Stats().UDP.ReceiveBufferErrors
	before := dropped.Value()
	for range sent {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
	}
	// Wait for the drops: the queue holds at most 5 of them.
	for deadline := time.Now().Add(10 * time.Second); dropped.Value()-before < sent-minUDPBuffer/size-1; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d datagrams dropped, want all but the %d bytes the buffer holds", dropped.Value()-before, sent, minUDPBuffer)
		}
		time.Sleep(time.Millisecond)
	}
	got := 0
	buf := make([]byte, 2*size)
	for {
		pc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, _, err := pc.ReadFrom(buf); err != nil {
			if !isTimeout(err) {
				t.Fatal(err)
			}
			break
		}
		got++
	}
	// A datagram is queued while any room is left, as in gVisor.
	if max := minUDPBuffer/size + 1; got == 0 || got > max {
		t.Errorf("read %d queued datagrams, want 1 to %d", got, max)
	}
	if _, err := c.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if k, _, err := pc.ReadFrom(buf); err != nil || string(buf[:k]) != "after" {
		t.Errorf("after draining: ReadFrom = %q, %v; want \"after\"", buf[:k], err)
	}
	if _, received := gvisorUDPStats(t, pc); received != 0 {
		t.Errorf("gVisor's endpoint received %d datagrams, want 0", received)
	}
}

// TestUDPDemuxForgetsClosedConns checks that the link's demux holds the
// UDP conns while they are open and lets go of them on Close, so that a
// closed socket's datagrams go to the stack (which answers port
// unreachable) and the conn can be collected.
func TestUDPDemuxForgetsClosedConns(t *testing.T) {
	a, b := openPair(t, nil)
	pc, c := listenDialUDP(t, b, a, addrB4, false)
	pc2, err := b.ListenPacket("udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	if got := b.ep.udpConns.n.Load(); got != 2 {
		t.Errorf("B's demux holds %d conns, want 2", got)
	}
	if got := a.ep.udpConns.n.Load(); got != 1 {
		t.Errorf("A's demux holds %d conns, want 1", got)
	}
	for _, cl := range []interface{ Close() error }{pc, pc2, c} {
		if err := cl.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if got, got2 := a.ep.udpConns.n.Load(), b.ep.udpConns.n.Load(); got != 0 || got2 != 0 {
		t.Errorf("after Close the demuxes hold %d and %d conns, want none", got, got2)
	}
	b.ep.udpConns.mu.RLock()
	left := len(b.ep.udpConns.ports)
	b.ep.udpConns.mu.RUnlock()
	if left != 0 {
		t.Errorf("after Close B's demux has %d ports, want none", left)
	}
}

// TestUDPFastSourceAmongSeveral checks the own path's source address for
// a wildcard socket on a tunnel with two IPv4 addresses: the stack's
// choice, so that the answer reaches a conn dialed to that address, on
// the own path.
func TestUDPFastSourceAmongSeveral(t *testing.T) {
	second := netip.MustParseAddr("10.123.0.3")
	a, b := openPair(t, func(a, b *wg.Config) {
		a.Interface.Addresses = append(a.Interface.Addresses, netip.PrefixFrom(second, 24))
		b.Peers[0].AllowedIPs = append(b.Peers[0].AllowedIPs, netip.PrefixFrom(second, 32))
	})
	// The address gVisor's endpoint would send from (a wildcard socket
	// answers from the route's address, as on Linux without
	// IP_PKTINFO), dialed.
	r, terr := a.stack.FindRoute(0, tcpip.Address{}, tcpipAddr(addrB4), ipv4.ProtocolNumber, false)
	if terr != nil {
		t.Fatal(terr)
	}
	src := addrPortOf(r.LocalAddress(), 0).Addr()
	r.Release()
	pc, c := listenDialUDP(t, a, b, src, true)
	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 16)
	for range 2 { // the second time from the kept source
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		k, from, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pc.WriteTo(buf[:k], from); err != nil {
			t.Fatal(err)
		}
		if k, err := c.Read(buf); err != nil || string(buf[:k]) != "ping" {
			t.Fatalf("echo: %q, %v; want \"ping\" from %v", buf[:k], err, src)
		}
	}
	if sent, received := gvisorUDPStats(t, pc); sent != 0 || received != 0 {
		t.Errorf("gVisor's endpoint sent %d and received %d datagrams, want none", sent, received)
	}
}
