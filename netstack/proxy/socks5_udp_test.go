package proxy_test

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wgkit/wgkit/netstack/proxy"
)

// udpAssociate is a UDP ASSOCIATE client written from RFC 1928 section 7:
// the control connection and the relay's address.
type udpAssociate struct {
	control net.Conn
	relay   netip.AddrPort
}

func associate(t *testing.T, server string) *udpAssociate {
	t.Helper()
	c, err := net.Dial("tcp", server)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	// Greeting (no auth), then UDP ASSOCIATE with DST 0.0.0.0:0: the
	// client does not know the port it will send from.
	if _, err := c.Write([]byte{5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	var resp [2 + 10]byte
	if _, err := io.ReadFull(c, resp[:]); err != nil {
		t.Fatal(err)
	}
	if resp[3] != 0 || resp[5] != 1 {
		t.Fatalf("reply % x; want success with an IPv4 relay address", resp)
	}
	c.SetDeadline(time.Time{})
	relay := netip.AddrPortFrom(netip.AddrFrom4([4]byte(resp[6:10])), binary.BigEndian.Uint16(resp[10:12]))
	return &udpAssociate{control: c, relay: relay}
}

// datagram wraps payload in the UDP request header for dst (atyp, addr
// as in a request).
func datagram(frag, atyp byte, addr []byte, port uint16, payload []byte) []byte {
	b := append([]byte{0, 0, frag, atyp}, addr...)
	b = binary.BigEndian.AppendUint16(b, port)
	return append(b, payload...)
}

// TestSOCKS5UDPAssociate queries the DNS server inside the tunnel through
// a UDP association, by address and by name, and checks that the relay
// listens on the client's address only and drops datagrams from anyone
// else and fragments.
func TestSOCKS5UDPAssociate(t *testing.T) {
	checkDescriptors(t)
	e := newEnv(t)
	_, server := startSOCKS5(t, e, nil)
	a := associate(t, server)
	if want := netip.MustParseAddr("127.0.0.1"); a.relay.Addr() != want {
		t.Errorf("relay bound to %v; want the address the client connected to, %v", a.relay.Addr(), want)
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	relay := net.UDPAddrFromAddrPort(a.relay)
	exchange := func(req []byte, wait time.Duration) ([]byte, error) {
		if _, err := pc.WriteToUDP(req, relay); err != nil {
			return nil, err
		}
		pc.SetReadDeadline(time.Now().Add(wait))
		buf := make([]byte, 2048)
		n, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return nil, err
		}
		if from != a.relay {
			t.Errorf("reply from %v; want the relay %v", from, a.relay)
		}
		return buf[:n], nil
	}
	dns := ipv4(e.srv.Addr().String())
	tests := []struct {
		name string
		atyp byte
		addr []byte
	}{
		{"by address", 1, dns},
		{"by name", 3, domain("dns.wgkit.tunnel-test")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := exchange(datagram(0, tt.atyp, tt.addr, 53, dnsQuery(t, tunnelName+".")), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			// The reply's header names the DNS server as its source.
			wantHdr := append([]byte{0, 0, 0, 1}, dns...)
			wantHdr = binary.BigEndian.AppendUint16(wantHdr, 53)
			if len(resp) < len(wantHdr) {
				t.Fatalf("reply of %d bytes", len(resp))
			}
			if diff := cmp.Diff(wantHdr, resp[:len(wantHdr)]); diff != "" {
				t.Errorf("reply header (-want +got):\n%s", diff)
			}
			ip, err := dnsAnswerA(resp[len(wantHdr):])
			if err != nil {
				t.Fatal(err)
			}
			if ip != e.srv.Addr() {
				t.Errorf("DNS answer %v; want %v", ip, e.srv.Addr())
			}
		})
	}

	// Dropped: a fragment, and datagrams from another port and another
	// address than the client's. The echo server would answer each.
	echo := func(b string) []byte { return datagram(0, 1, dns, 7, []byte(b)) }
	other, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	otherIP, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Skipf("no 127.0.0.2 on this host: %v", err)
	}
	defer otherIP.Close()
	other.WriteToUDP(echo("from another port"), relay)
	otherIP.WriteToUDP(echo("from another address"), relay)
	pc.WriteToUDP(datagram(1, 1, dns, 7, []byte("fragment")), relay)
	for _, c := range []*net.UDPConn{other, otherIP} {
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if n, _, err := c.ReadFromUDP(make([]byte, 100)); err == nil {
			t.Errorf("a stranger %v got a %d-byte reply through the relay", c.LocalAddr(), n)
		}
	}
	// The client's own next datagram is answered, and nothing before it:
	// the fragment was dropped.
	resp, err := exchange(echo("mine"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(resp[10:]); got != "mine" {
		t.Errorf("echo %q; want %q (a dropped datagram came through?)", got, "mine")
	}

	// The association ends with the control connection.
	a.control.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := exchange(echo("after"), 200*time.Millisecond); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the relay still relays after the control connection closed")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSOCKS5UDPAssociateClose: Close ends a live association.
func TestSOCKS5UDPAssociateClose(t *testing.T) {
	e := newEnv(t)
	s, server := startSOCKS5(t, e, &proxy.SOCKS5Options{})
	a := associate(t, server)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	a.control.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := a.control.Read(make([]byte, 1)); err == nil || !isClosedOrEOF(err) {
		t.Errorf("control read after Close: %v; want EOF", err)
	}
}

// stuckDNS is a Network whose LookupHost waits for its context to end,
// telling when it starts and when it ends.
type stuckDNS struct {
	proxy.Network
	started, ended chan struct{}
}

func (n *stuckDNS) LookupHost(ctx context.Context, host string) ([]string, error) {
	n.started <- struct{}{}
	<-ctx.Done()
	close(n.ended)
	return nil, ctx.Err()
}

// TestSOCKS5UDPAssociateEndsLookup: closing the control connection ends
// a name lookup of the association in progress, rather than leaving it
// to run out DialTimeout.
func TestSOCKS5UDPAssociateEndsLookup(t *testing.T) {
	e := newEnv(t)
	n := &stuckDNS{Network: e.tnet, started: make(chan struct{}, 1), ended: make(chan struct{})}
	ln := listenLocal(t)
	s := proxy.NewSOCKS5(n, &proxy.SOCKS5Options{DialTimeout: 10 * time.Minute})
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		<-done
	})
	a := associate(t, ln.Addr().String())
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, net.UDPAddrFromAddrPort(a.relay))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	name := "stuck.wgkit.tunnel-test"
	if _, err := c.Write(datagram(0, 3, append([]byte{byte(len(name))}, name...), 53, []byte("query"))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the association did not look the name up")
	}
	a.control.Close()
	select {
	case <-n.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the lookup still runs 10 s after the control connection closed")
	}
}
