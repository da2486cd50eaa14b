package netstack

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/wgkit/wgkit/internal/memnet"
	"golang.zx2c4.com/wireguard/device"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// TestDialReachesRestartedPeer restarts B, which lost its session and
// does not know A's endpoint, so only A can make a new one. A still holds
// the old session and sends B's new instance packets it cannot decrypt.
// A's dial asks for a handshake once it has waited half a second, and
// TCP's first SYN retransmission (after 1 s) then connects: within 2 s,
// not after the engine's own 5 to 15 s (issue 9).
func TestDialReachesRestartedPeer(t *testing.T) {
	t.Parallel() // it mostly sleeps
	sw, epA, epB := newSwitch(t)
	cfgA, cfgB := pairConfigs(t, epA.String(), epB.String())
	// A has no endpoint for B: the first handshake is B's, so that A's
	// only handshake message is its response.
	cfgA.Peers[0].Endpoint = ""
	ctx := testContext(t, 20*time.Second)
	a, err := Open(ctx, cfgA, &Options{Bind: sw.NewBind(1, epA)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err := Open(ctx, cfgB, &Options{Bind: sw.NewBind(2, epB)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Ping(ctx, addrB4); err != nil {
		t.Fatal(err)
	}
	b.Close()
	// WireGuard sends no handshake message within RekeyTimeout (5 s) of
	// the last one, A's response included: a peer restarting sooner can
	// be keyed again only then, whatever anyone asks. The device keeps
	// its own count of that time, read from the engine to within a
	// second.
	time.Sleep(device.RekeyTimeout + time.Second)

	// B's new instance: same key and address, no session, no endpoint for A.
	cfgB.Peers[0].Endpoint = ""
	b, err = Open(ctx, cfgB, &Options{Bind: sw.NewBind(3, epB)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	l, err := b.Listen("tcp", netip.AddrPortFrom(addrB4, 80).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	c, err := a.DialContext(dctx, "tcp", l.Addr().String())
	took := time.Since(start)
	if err != nil {
		t.Fatalf("dial to the restarted peer after %v: %v", took, err)
	}
	c.Close()
	t.Logf("connected to the restarted peer in %v", took)
	if took > 2*time.Second {
		t.Errorf("connecting to the restarted peer took %v, want at most 2 s", took)
	}
}

// TestDialPortHeldByPeer dials from a tunnel opened anew, with the same
// key and address (an app that reopens its tunnel and dials the same
// server), from the source port of a connection the server still holds:
// the old tunnel was closed without telling the server, as its engine
// stops before its stack, so no RST leaves. The server answers the new
// SYN with a challenge ACK (RFC 5961, 4.2), the dialling SYN-SENT answers
// that with a RST, the server drops its old connection and the SYN that
// follows connects. The link used to drop that RST (a handshake segment
// with GSO options and MSS 0, see writePacket), and the dial then
// retransmitted its SYN until its deadline, the server answering with a
// challenge ACK once per 500 ms, gVisor's rate limit. Each case holds
// the old connection in another state. In SYN-RCVD the server's
// challenge ACK itself was dropped too (the same kind of segment).
//
// A server connection in TIME_WAIT is not among them: gVisor drops,
// without an answer, a SYN below the old connection's sequence numbers
// (half of a new tunnel's, whose initial sequence numbers are random),
// so such a dial connects only when TIME_WAIT (5 s) has ended, at its
// SYN retransmission 7 s after the start.
func TestDialPortHeldByPeer(t *testing.T) {
	tests := []struct {
		name string
		// before runs while the old tunnel is up, after once it is
		// closed; either may be nil. reset says whether the server's
		// old conn is left to be read, and must then fail with
		// ECONNRESET.
		before, after func(t *testing.T, server, client net.Conn)
		reset         bool
		// synRcvd: the port is another one, whose SYN the old tunnel
		// sent but whose SYN-ACK it never received, so the server
		// holds a half-open connection in SYN-RCVD.
		synRcvd bool
	}{
		{name: "established", reset: true},
		{
			name: "server wrote", reset: true,
			after: func(t *testing.T, server, _ net.Conn) {
				if _, err := server.Write([]byte("unacknowledged")); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "server closed", // FIN_WAIT_1, resending its FIN
			after: func(t *testing.T, server, _ net.Conn) {
				server.Close()
			},
		},
		{
			name: "close wait",
			before: func(t *testing.T, server, client net.Conn) {
				if err := client.(*tcpConn).CloseWrite(); err != nil {
					t.Fatal(err)
				}
				server.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := server.Read(make([]byte, 1)); err != io.EOF {
					t.Fatalf("server read %v, want io.EOF", err)
				}
			},
		},
		{name: "syn received", synRcvd: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t, 20*time.Second)
			s := openServerTunnel(t, ctx)
			dst := netip.AddrPortFrom(addrA4, 80)
			old := s.openClient(t, ctx, 2) // closed below; at cleanup after a failure before
			client, err := old.DialContext(ctx, "tcp", dst.String())
			if err != nil {
				t.Fatal(err)
			}
			port := uint16(client.LocalAddr().(*net.TCPAddr).Port)
			server := s.accept(t)
			if tt.before != nil {
				tt.before(t, server, client)
			}
			if tt.synRcvd {
				// The old tunnel (switch node 2) hears nothing more
				// from A: its SYN from another port reaches A, A's
				// SYN-ACK is lost.
				if err := s.sw.SetLinkFaults(1, 2, &memnet.Faults{Loss: 1}); err != nil {
					t.Fatal(err)
				}
				port = port%60000 + 1024
				hctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
				c, err := dialFromPort(hctx, old, port, dst)
				cancel()
				if err == nil {
					c.Close()
					t.Fatal("a dial whose SYN-ACK is lost connected")
				}
			}
			if err := old.Close(); err != nil {
				t.Fatal(err)
			}
			if tt.after != nil {
				tt.after(t, server, client)
			}

			// A refuses an initiation within HandshakeInitationRate
			// (20 ms) of the last it took, the old tunnel's; the new
			// tunnel's would then wait 5 s for its next.
			time.Sleep(2 * device.HandshakeInitationRate)
			b := s.openClient(t, ctx, 3)
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			start := time.Now()
			c, err := dialFromPort(dctx, b, port, dst)
			took := time.Since(start)
			if err != nil {
				t.Fatalf("dial from port %d, held by the server: %v after %v", port, err, took)
			}
			defer c.Close()
			t.Logf("connected from port %d in %v", port, took)
			if took > 2*time.Second {
				t.Errorf("dial from port %d took %v, want at most 2 s", port, took)
			}
			if got := s.accept(t).RemoteAddr().(*net.TCPAddr).Port; got != int(port) {
				t.Errorf("accepted a connection from port %d, want %d", got, port)
			}
			if tt.reset {
				server.SetReadDeadline(time.Now().Add(2 * time.Second))
				if _, err := server.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("the server's old conn read %v, want ECONNRESET", err)
				}
			}
		})
	}
}

// dialFromPort is Net.DialContext for TCP from the local port port of
// n's IPv4 address, which DialContext does not offer.
func dialFromPort(ctx context.Context, n *Net, port uint16, dst netip.AddrPort) (net.Conn, error) {
	wq := new(waiter.Queue)
	ep, terr := n.stack.NewEndpoint(tcp.ProtocolNumber, ipv4.ProtocolNumber, wq)
	if terr != nil {
		return nil, convertErr("socket", terr)
	}
	if terr := ep.Bind(tcpip.FullAddress{Addr: tcpip.AddrFromSlice(n.addrs[0].AsSlice()), Port: port}); terr != nil {
		ep.Close()
		return nil, convertErr("bind", terr)
	}
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	fa, _ := fullAddr(dst)
	terr = ep.Connect(fa)
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-notify:
			terr = ep.LastError()
		case <-ctx.Done():
			ep.Close()
			return nil, ctx.Err()
		}
	}
	if terr != nil {
		ep.Close()
		return nil, convertErr("connect", terr)
	}
	return newTCPConn(n, ep, wq), nil
}
