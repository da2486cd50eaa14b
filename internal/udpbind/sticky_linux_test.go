package udpbind

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

// udpPeer is a plain UDP socket standing for a peer: it writes to a Bind
// and reads the replies with their source address.
type udpPeer struct {
	c *net.UDPConn
}

func newUDPPeer(t *testing.T, addr netip.Addr) *udpPeer {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, 0)))
	if err != nil {
		t.Fatalf("listen on %v: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &udpPeer{c}
}

func (p *udpPeer) addr() netip.AddrPort { return unmap(p.c.LocalAddr().(*net.UDPAddr).AddrPort()) }

func (p *udpPeer) send(t *testing.T, to netip.AddrPort, data string) {
	t.Helper()
	if _, err := p.c.WriteToUDPAddrPort([]byte(data), to); err != nil {
		t.Fatalf("write to %v: %v", to, err)
	}
}

// replies reads n datagrams and returns the address each came from.
func (p *udpPeer) replies(t *testing.T, n int) []netip.AddrPort {
	t.Helper()
	var from []netip.AddrPort
	buf := make([]byte, 1<<16)
	if err := p.c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for range n {
		_, ap, err := p.c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("read reply %d of %d: %v", len(from)+1, n, err)
		}
		from = append(from, unmap(ap))
	}
	return from
}

// receiveOne reads one datagram with fns (in turn, with a short deadline
// each, so that a pair of sockets can be read from one goroutine) and
// returns its payload and Endpoint.
func receiveOne(t *testing.T, b *Bind, fns []conn.ReceiveFunc) (string, *Endpoint) {
	t.Helper()
	bufs, sizes, eps := recvBuffers(4, 1<<16)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for i, fn := range fns {
			so := b.socks.Load().all[i]
			if err := so.c.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			n, err := fn(bufs, sizes, eps)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if err != nil {
				t.Fatalf("receive: %v", err)
			}
			if n != 1 {
				t.Fatalf("receive returned %d datagrams, want 1", n)
			}
			return string(bufs[0][:sizes[0]]), eps[0].(*Endpoint)
		}
	}
	t.Fatal("no datagram in 5s")
	return "", nil
}

// checkFrom fails t unless every reply came from want.
func checkFrom(t *testing.T, what string, got []netip.AddrPort, want netip.AddrPort) {
	t.Helper()
	for i, ap := range got {
		if ap != want {
			t.Errorf("%s: reply %d of %d from %v, want %v", what, i+1, len(got), ap, want)
		}
	}
}

// TestStickySource writes to an address of the host other than the one
// the routing table would pick as the source of the replies (127.0.0.2:
// replies to 127.0.0.1 leave from 127.0.0.1): with StickySource the
// Endpoint carries it and every reply, one datagram or a GSO run, leaves
// from it; without, from the routing table's choice.
func TestStickySource(t *testing.T) {
	lo4b := netip.MustParseAddr("127.0.0.2")
	tests := []struct {
		name        string
		listen      netip.Addr
		noDualStack bool
		sticky      bool
		peer, to    netip.Addr
		wantSrc     netip.Addr // the zero Addr: none, replies from peer's address
	}{
		{name: "dual-stack v4", sticky: true, peer: lo4, to: lo4b, wantSrc: lo4b},
		{name: "pair v4", noDualStack: true, sticky: true, peer: lo4, to: lo4b, wantSrc: lo4b},
		{name: "v4 socket", listen: netip.IPv4Unspecified(), sticky: true, peer: lo4, to: lo4b, wantSrc: lo4b},
		{name: "dual-stack v6", sticky: true, peer: lo6, to: lo6, wantSrc: lo6},
		{name: "pair v6", noDualStack: true, sticky: true, peer: lo6, to: lo6, wantSrc: lo6},
		{name: "off", peer: lo4, to: lo4b},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.to.Is6() && !have6() {
				t.Skip("IPv6 loopback not available")
			}
			b, fns, port := openBind(t, &Options{ListenAddr: tt.listen, StickySource: tt.sticky, BatchSize: 16}, tt.noDualStack, 0)
			p := newUDPPeer(t, tt.peer)
			to := netip.AddrPortFrom(tt.to, port)
			p.send(t, to, "hello")
			data, ep := receiveOne(t, b, fns)
			if data != "hello" || ep.AddrPort() != p.addr() {
				t.Fatalf("received %q from %v, want %q from %v", data, ep.AddrPort(), "hello", p.addr())
			}
			if got := ep.SrcIP(); got != tt.wantSrc {
				t.Fatalf("SrcIP() = %v, want %v", got, tt.wantSrc)
			}
			wantStr := ""
			if tt.wantSrc.IsValid() {
				wantStr = tt.wantSrc.String()
			}
			if got := ep.SrcToString(); got != wantStr {
				t.Errorf("SrcToString() = %q, want %q", got, wantStr)
			}
			from := to
			if !tt.wantSrc.IsValid() {
				from = netip.AddrPortFrom(tt.peer, port)
			}
			// One datagram, then a run of 8 (one GSO message where the
			// kernel has it).
			for _, n := range []int{1, 8} {
				if err := b.Send(payloads(n, 1200), ep); err != nil {
					t.Fatalf("Send %d: %v", n, err)
				}
				checkFrom(t, "Send", p.replies(t, n), from)
			}
			p.send(t, to, "again")
			if _, ep2 := receiveOne(t, b, fns); ep2 != ep {
				t.Errorf("second datagram: a new Endpoint, want the cached one")
			}
			if !tt.sticky {
				return
			}
			// ClearSrc: the routing table's source, until the next
			// datagram brings a new Endpoint with the source again.
			ep.ClearSrc()
			if ep.SrcIP().IsValid() || ep.SrcToString() != "" {
				t.Errorf("after ClearSrc: SrcIP() = %v, SrcToString() = %q; want none", ep.SrcIP(), ep.SrcToString())
			}
			if err := b.Send(payloads(1, 100), ep); err != nil {
				t.Fatalf("Send after ClearSrc: %v", err)
			}
			checkFrom(t, "Send after ClearSrc", p.replies(t, 1), netip.AddrPortFrom(tt.peer, port))
			p.send(t, to, "third")
			_, ep3 := receiveOne(t, b, fns)
			if ep3 == ep || ep3.SrcIP() != tt.wantSrc {
				t.Errorf("after ClearSrc, next datagram: same Endpoint %v, SrcIP() = %v; want a new one with %v", ep3 == ep, ep3.SrcIP(), tt.wantSrc)
			}
		})
	}
}

// TestStickyRefusedSource sends from a source that is no address of the
// host: the kernel refuses it (EINVAL), and Send clears it and sends
// again from the routing table's choice, losing and repeating nothing,
// without turning GSO off.
func TestStickyRefusedSource(t *testing.T) {
	tests := []struct {
		name   string
		peer   netip.Addr
		src    netip.Addr
		listen netip.Addr
	}{
		{name: "v4", peer: lo4, src: netip.MustParseAddr("192.0.2.1")},
		{name: "v4 socket", listen: netip.IPv4Unspecified(), peer: lo4, src: netip.MustParseAddr("192.0.2.1")},
		{name: "v6", peer: lo6, src: netip.MustParseAddr("2001:db8::1")},
	}
	for _, tt := range tests {
		for _, n := range []int{1, 8} {
			t.Run(fmt.Sprintf("%s/%d datagrams", tt.name, n), func(t *testing.T) {
				if tt.peer.Is6() && !have6() {
					t.Skip("IPv6 loopback not available")
				}
				b, _, port := openBind(t, &Options{ListenAddr: tt.listen, StickySource: true}, false, 0)
				p := newUDPPeer(t, tt.peer)
				ep := &Endpoint{ap: p.addr(), src: tt.src}
				gso := b.socks.Load().all[0].gso.Load()
				out := payloads(n, 1200)
				if err := b.Send(out, ep); err != nil {
					t.Fatalf("Send: %v", err)
				}
				checkFrom(t, "Send", p.replies(t, n), netip.AddrPortFrom(tt.peer, port))
				if ep.SrcIP().IsValid() {
					t.Errorf("SrcIP() = %v after the kernel refused it, want none", ep.SrcIP())
				}
				if got := b.socks.Load().all[0].gso.Load(); got != gso {
					t.Errorf("GSO %v after the refused source, want %v", got, gso)
				}
				if err := p.c.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
					t.Fatal(err)
				}
				if _, ap, err := p.c.ReadFromUDPAddrPort(make([]byte, 1<<16)); err == nil {
					t.Errorf("extra datagram from %v", ap)
				}
			})
		}
	}
}

// TestStickyAddressGone receives on an address, removes it, and replies:
// the first Send finds the source refused and sends from the address that
// is left. It needs a network namespace (root).
func TestStickyAddressGone(t *testing.T) {
	tests := []struct {
		name     string
		peer, to netip.Prefix
	}{
		{name: "v4", peer: netip.MustParsePrefix("10.99.0.1/32"), to: netip.MustParsePrefix("10.99.0.2/32")},
		{name: "v6", peer: netip.MustParsePrefix("fd00:99::1/128"), to: netip.MustParsePrefix("fd00:99::2/128")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var (
				b    *Bind
				fns  []conn.ReceiveFunc
				port uint16
				p    *udpPeer
				ep   *Endpoint
				del  func() error
			)
			inNetns(t, 65536, func() {
				lo, err := netlink.LinkByName("lo")
				if err != nil {
					t.Errorf("lo: %v", err)
					return
				}
				for _, a := range []netip.Prefix{tt.peer, tt.to} {
					addr := &netlink.Addr{IPNet: prefixNet(a), Flags: unix.IFA_F_NODAD}
					if err := netlink.AddrAdd(lo, addr); err != nil {
						t.Errorf("add %v: %v", a, err)
						return
					}
				}
				if err := waitAddrsReady(lo, tt.peer, tt.to); err != nil {
					t.Error(err)
					return
				}
				b, fns, port = openBind(t, &Options{StickySource: true}, false, 0)
				p = newUDPPeer(t, tt.peer.Addr())
				p.send(t, netip.AddrPortFrom(tt.to.Addr(), port), "hello")
				_, ep = receiveOne(t, b, fns)
				to := &netlink.Addr{IPNet: prefixNet(tt.to)}
				del = func() error { return netlink.AddrDel(lo, to) }
				// Replies from the address, while it is there.
				if err := b.Send(payloads(1, 100), ep); err != nil {
					t.Errorf("Send: %v", err)
					return
				}
				if err := del(); err != nil {
					t.Errorf("delete %v: %v", tt.to, err)
				}
			})
			if t.Failed() {
				return
			}
			if ep.SrcIP() != tt.to.Addr() {
				t.Fatalf("SrcIP() = %v, want %v", ep.SrcIP(), tt.to.Addr())
			}
			checkFrom(t, "Send", p.replies(t, 1), netip.AddrPortFrom(tt.to.Addr(), port))
			for _, n := range []int{1, 8} {
				if err := b.Send(payloads(n, 1200), ep); err != nil {
					t.Fatalf("Send %d after the address is gone: %v", n, err)
				}
				checkFrom(t, "Send after the address is gone", p.replies(t, n), netip.AddrPortFrom(tt.peer.Addr(), port))
			}
			if ep.SrcIP().IsValid() {
				t.Errorf("SrcIP() = %v after the address is gone, want none", ep.SrcIP())
			}
		})
	}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// waitAddrsReady waits up to 5s until every address of ps is usable: no
// longer tentative, and with its route in the local table. Even without
// DAD, the kernel completes a new IPv6 address (and adds its local route)
// from a work queue, a little later.
func waitAddrsReady(link netlink.Link, ps ...netip.Prefix) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		as, err := netlink.AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		rs, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_LOCAL}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		var missing []netip.Prefix
		for _, p := range ps {
			ready := slices.ContainsFunc(as, func(a netlink.Addr) bool {
				return a.IPNet.String() == prefixNet(p).String() && a.Flags&unix.IFA_F_TENTATIVE == 0
			}) && slices.ContainsFunc(rs, func(r netlink.Route) bool {
				return r.Dst != nil && r.Dst.String() == prefixNet(netip.PrefixFrom(p.Addr(), p.Addr().BitLen())).String()
			})
			if !ready {
				missing = append(missing, p)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("addresses %v not usable after 5s", missing)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
