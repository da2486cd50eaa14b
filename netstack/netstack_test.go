package netstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wgkit/wgkit/wg"
	"golang.org/x/net/nettest"
)

// TestTCP moves data over TCP in both directions and both families, and
// one 32 MiB stream with a checksum.
func TestTCP(t *testing.T) {
	a, b := openPair(t, nil)
	tests := []struct {
		name         string
		server, peer *Net
		addr         netip.Addr
		network      string
		size         int
	}{
		{"v4 a-to-b 32MiB", b, a, addrB4, "tcp", 32 << 20},
		{"v4 b-to-a", a, b, addrA4, "tcp4", 1 << 20},
		{"v6 a-to-b", b, a, addrB6, "tcp", 1 << 20},
		{"v6 b-to-a", a, b, addrA6, "tcp6", 1 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := tt.server.Listen(tt.network, ":0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			port := l.Addr().(*net.TCPAddr).Port
			type result struct {
				sum [32]byte
				n   int64
				err error
			}
			done := make(chan result, 1)
			go func() {
				c, err := l.Accept()
				if err != nil {
					done <- result{err: err}
					return
				}
				defer c.Close()
				h := sha256.New()
				n, err := io.Copy(h, c)
				var r result
				copy(r.sum[:], h.Sum(nil))
				r.n, r.err = n, err
				// Answer with the byte count so the sender knows all arrived.
				c.Write([]byte(strconv.FormatInt(n, 10)))
				done <- r
			}()
			ctx := testContext(t, 30*time.Second)
			c, err := tt.peer.DialContext(ctx, tt.network, netip.AddrPortFrom(tt.addr, uint16(port)).String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(); got != tt.addr {
				t.Errorf("RemoteAddr = %v, want %v", got, tt.addr)
			}
			h := sha256.New()
			if _, err := io.Copy(io.MultiWriter(c, h), io.LimitReader(rand.Reader, int64(tt.size))); err != nil {
				t.Fatal(err)
			}
			if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			ack, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			var want [32]byte
			copy(want[:], h.Sum(nil))
			if r.n != int64(tt.size) || r.sum != want {
				t.Errorf("server got %d bytes with sum %x, want %d bytes with sum %x", r.n, r.sum, tt.size, want)
			}
			if string(ack) != strconv.Itoa(tt.size) {
				t.Errorf("ack = %q, want %q", ack, strconv.Itoa(tt.size))
			}
		})
	}
}

// TestUDP sends datagrams both ways over both families and checks the
// source addresses.
func TestUDP(t *testing.T) {
	a, b := openPair(t, nil)
	tests := []struct {
		name         string
		server, peer *Net
		serverAddr   netip.Addr
		peerAddr     netip.Addr
		network      string
	}{
		{"v4 a-to-b", b, a, addrB4, addrA4, "udp"},
		{"v4 b-to-a", a, b, addrA4, addrB4, "udp4"},
		{"v6 a-to-b", b, a, addrB6, addrA6, "udp"},
		{"v6 b-to-a", a, b, addrA6, addrB6, "udp6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pc, err := tt.server.ListenPacket(tt.network, ":0")
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			port := pc.LocalAddr().(*net.UDPAddr).Port
			c, err := tt.peer.DialContext(testContext(t, 10*time.Second), tt.network, netip.AddrPortFrom(tt.serverAddr, uint16(port)).String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			deadline := time.Now().Add(10 * time.Second)
			pc.SetDeadline(deadline)
			c.SetDeadline(deadline)
			// The first datagram also starts the handshake; WireGuard
			// queues it until the handshake completes.
			want := []byte("datagram over " + tt.name)
			if _, err := c.Write(want); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 1500)
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, buf[:k]); diff != "" {
				t.Errorf("server got (-want +got):\n%s", diff)
			}
			if got := from.(*net.UDPAddr).AddrPort(); got.Addr() != tt.peerAddr {
				t.Errorf("datagram from %v, want address %v", got, tt.peerAddr)
			}
			if _, err := pc.WriteTo([]byte("x"), nil); err == nil {
				t.Error("WriteTo a nil address succeeded")
			}
			reply := []byte("reply")
			// Any net.Addr naming an IP and port will do, as with net.UDPConn.
			if _, err := pc.WriteTo(reply, addrPortAddr(from.(*net.UDPAddr).AddrPort())); err != nil {
				t.Fatal(err)
			}
			k, err = c.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(reply, buf[:k]); diff != "" {
				t.Errorf("client got (-want +got):\n%s", diff)
			}
		})
	}
}

// addrPortAddr is a net.Addr that is not a *net.UDPAddr.
type addrPortAddr netip.AddrPort

func (a addrPortAddr) Network() string { return "udp" }
func (a addrPortAddr) String() string  { return netip.AddrPort(a).String() }

func TestPing(t *testing.T) {
	a, b := openPair(t, nil)
	tests := []struct {
		name string
		from *Net
		to   netip.Addr
	}{
		{"v4 a-to-b", a, addrB4},
		{"v6 a-to-b", a, addrB6},
		{"v4 b-to-a", b, addrA4},
		{"v6 b-to-a", b, addrA6},
		{"v4 self", a, addrA4},
		{"v6 self", a, addrA6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rtt, err := tt.from.Ping(testContext(t, 10*time.Second), tt.to)
			if err != nil {
				t.Fatal(err)
			}
			if rtt <= 0 {
				t.Errorf("rtt = %v, want > 0", rtt)
			}
		})
	}
}

func TestDialErrors(t *testing.T) {
	a, b := openPair(t, nil)
	// One round trip so the handshake is done and timings below are not
	// about it.
	if _, err := a.Ping(testContext(t, 10*time.Second), addrB4); err != nil {
		t.Fatal(err)
	}

	t.Run("refused", func(t *testing.T) {
		for _, addr := range []netip.Addr{addrB4, addrB6} {
			_, err := a.DialContext(testContext(t, 10*time.Second), "tcp", netip.AddrPortFrom(addr, 1).String())
			var oe *net.OpError
			if !errors.As(err, &oe) || !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("dial %v port 1: %v (%T), want *net.OpError wrapping ECONNREFUSED", addr, err, err)
			}
		}
	})

	t.Run("outside AllowedIPs", func(t *testing.T) {
		for _, network := range []string{"tcp", "udp"} {
			start := time.Now()
			_, err := a.DialContext(testContext(t, 10*time.Second), network, "10.123.0.99:80")
			if err == nil || !errors.Is(err, ErrNoRoute) {
				t.Fatalf("dial %s outside AllowedIPs: %v, want the no-route error", network, err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("dial outside AllowedIPs took %v, want it to fail at once", d)
			}
		}
		if _, err := a.Ping(testContext(t, 10*time.Second), netip.MustParseAddr("10.123.0.99")); !errors.Is(err, ErrNoRoute) {
			t.Errorf("ping outside AllowedIPs: %v, want the no-route error", err)
		}
	})

	t.Run("peers changed at run time", func(t *testing.T) {
		peer := a.Device().Config().Peers[0]
		peer.AllowedIPs = append(peer.AllowedIPs, netip.MustParsePrefix("10.123.0.99/32"))
		if err := a.Device().SetPeer(peer); err != nil {
			t.Fatal(err)
		}
		// Now routed to B, which does not answer for .99: the dial times
		// out instead of failing at once.
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := a.DialContext(ctx, "tcp", "10.123.0.99:80")
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || errors.Is(err, ErrNoRoute) {
			t.Errorf("dial after adding the route: %v, want a timeout", err)
		}
		if err := a.Device().RemovePeer(peer.PublicKey); err != nil {
			t.Fatal(err)
		}
		if _, err := a.DialContext(testContext(t, 10*time.Second), "tcp", netip.AddrPortFrom(addrB4, 80).String()); !errors.Is(err, ErrNoRoute) {
			t.Errorf("dial after removing the peer: %v, want the no-route error", err)
		}
	})
	_ = b
}

func TestDialCancelAndTimeout(t *testing.T) {
	// B's AllowedIPs at A cover the whole /24, so a dial to .50 goes to B,
	// whose stack does not answer: the dial hangs until its context ends.
	a, _ := openPair(t, func(a, b *wg.Config) {
		a.Peers[0].AllowedIPs = append(a.Peers[0].AllowedIPs, netip.MustParsePrefix("10.123.0.0/24"))
	})
	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		start := time.Now()
		_, err := a.DialContext(ctx, "tcp", "10.123.0.50:80")
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled dial: %v, want context.Canceled", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("cancelled dial returned after %v", d)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := a.DialContext(ctx, "tcp", "10.123.0.50:80")
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("dial past its deadline: %v, want a net.Error with Timeout()", err)
		}
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "dial" {
			t.Errorf("dial past its deadline: %v (%T), want a *net.OpError", err, err)
		}
	})
	t.Run("bad network", func(t *testing.T) {
		if _, err := a.Dial("ip4", "10.123.0.2:1"); err == nil {
			t.Error("dial ip4 succeeded")
		}
	})
}

func TestDeadlines(t *testing.T) {
	a, b := openPair(t, nil)
	l, err := b.Listen("tcp", netip.AddrPortFrom(addrB4, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			// Hold the conn open and silent until the client is done.
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	c, err := a.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Read past deadline: %v, want a timeout", err)
	}
	// Clearing the deadline makes the conn usable again.
	c.SetReadDeadline(time.Time{})
	if _, err := c.Write([]byte("x")); err != nil {
		t.Errorf("Write after a read timeout: %v", err)
	}

	pc, err := b.ListenPacket("udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, _, err := pc.ReadFrom(make([]byte, 10)); !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("ReadFrom past deadline: %v, want a timeout", err)
	}
}

// TestNettestConn runs x/net/nettest's conformance tests on a TCP conn
// pair over the tunnel.
func TestNettestConn(t *testing.T) {
	a, b := openPair(t, nil)
	l, err := b.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		accepted := make(chan net.Conn, 1)
		go func() {
			c, err := l.Accept()
			if err != nil {
				accepted <- nil
				return
			}
			accepted <- c
		}()
		c1, err = a.Dial("tcp", netip.AddrPortFrom(addrB4, uint16(port)).String())
		if err != nil {
			<-accepted
			return nil, nil, nil, err
		}
		c2 = <-accepted
		if c2 == nil {
			c1.Close()
			return nil, nil, nil, errors.New("accept failed")
		}
		return c1, c2, func() { c1.Close(); c2.Close() }, nil
	})
}

// TestCloseUnblocks closes a Net while calls on it are blocked.
func TestCloseUnblocks(t *testing.T) {
	a, b := openPair(t, func(a, b *wg.Config) {
		a.Peers[0].AllowedIPs = append(a.Peers[0].AllowedIPs, netip.MustParsePrefix("10.123.0.0/24"))
	})
	l, err := a.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	lb, err := b.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	go func() {
		c, err := lb.Accept()
		if err == nil {
			defer c.Close()
			io.Copy(io.Discard, c)
		}
	}()
	conn, err := a.Dial("tcp", netip.AddrPortFrom(addrB4, uint16(lb.Addr().(*net.TCPAddr).Port)).String())
	if err != nil {
		t.Fatal(err)
	}
	pc, err := a.ListenPacket("udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	// A conn whose peer never reads, so that writes block on a full window.
	lsilent, err := b.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer lsilent.Close()
	stopSilent := make(chan struct{})
	defer close(stopSilent)
	go func() {
		c, err := lsilent.Accept()
		if err == nil {
			<-stopSilent
			c.Close()
		}
	}()
	wconn, err := a.Dial("tcp", netip.AddrPortFrom(addrB4, uint16(lsilent.Addr().(*net.TCPAddr).Port)).String())
	if err != nil {
		t.Fatal(err)
	}
	defer wconn.Close()

	calls := map[string]func() error{
		"Write": func() error {
			buf := make([]byte, 64<<10)
			for range 1000 { // 64 MiB: far beyond any window
				if _, err := wconn.Write(buf); err != nil {
					return err
				}
			}
			return nil
		},
		"Accept":   func() error { _, err := l.Accept(); return err },
		"Read":     func() error { _, err := conn.Read(make([]byte, 10)); return err },
		"ReadFrom": func() error { _, _, err := pc.ReadFrom(make([]byte, 10)); return err },
		"Dial":     func() error { _, err := a.Dial("tcp", "10.123.0.50:80"); return err },
		"Ping": func() error {
			_, err := a.Ping(context.Background(), netip.MustParseAddr("10.123.0.50"))
			return err
		},
	}
	errs := make(chan error, len(calls))
	for name, call := range calls {
		go func() {
			err := call()
			if err == nil {
				err = errors.New("no error")
			}
			errs <- &namedErr{name, err}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	timeout := time.After(5 * time.Second)
	for range calls {
		select {
		case err := <-errs:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("%v, want an error wrapping net.ErrClosed", err)
			}
		case <-timeout:
			t.Fatal("Close did not unblock every call")
		}
	}
	if err := a.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v, want an error wrapping net.ErrClosed", err)
	}
	if _, err := conn.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v, want net.ErrClosed", err)
	}
	if _, err := a.Dial("tcp", netip.AddrPortFrom(addrB4, 80).String()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Dial after Close: %v, want net.ErrClosed", err)
	}
	if _, err := a.Listen("tcp", ":0"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Listen after Close: %v, want net.ErrClosed", err)
	}
	conn.Close()
	pc.Close()
	if err := l.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("listener Close after Net.Close: %v, want net.ErrClosed", err)
	}
}

type namedErr struct {
	name string
	err  error
}

func (e *namedErr) Error() string { return e.name + ": " + e.err.Error() }
func (e *namedErr) Unwrap() error { return e.err }

func TestListenerClose(t *testing.T) {
	_, b := openPair(t, nil)
	l, err := b.Listen("tcp6", ":0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { _, err := l.Accept(); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
	if err := l.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v, want net.ErrClosed", err)
	}
}

func TestListenAddresses(t *testing.T) {
	a, b := openPair(t, nil)
	tests := []struct {
		name, network, address string
		dial                   []netip.Addr
		wantErr                bool
	}{
		{"all", "tcp", ":0", []netip.Addr{addrB4, addrB6}, false},
		{"v4 only", "tcp4", ":0", []netip.Addr{addrB4}, false},
		{"v6 only", "tcp6", ":0", []netip.Addr{addrB6}, false},
		{"one address", "tcp", netip.AddrPortFrom(addrB6, 0).String(), []netip.Addr{addrB6}, false},
		{"not ours", "tcp", "10.123.0.77:0", nil, true},
		{"self dial", "tcp4", netip.AddrPortFrom(addrB4, 0).String(), []netip.Addr{addrB4}, false},
		{"host name", "tcp", "localhost:0", nil, true},
		{"udp network", "udp", ":0", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := b.Listen(tt.network, tt.address)
			if tt.wantErr {
				if err == nil {
					l.Close()
					t.Fatal("Listen succeeded, want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					c.Write([]byte("hi"))
					c.Close()
				}
			}()
			port := uint16(l.Addr().(*net.TCPAddr).Port)
			dialer := a
			if tt.name == "self dial" {
				dialer = b
			}
			for _, ip := range tt.dial {
				c, err := dialer.Dial("tcp", netip.AddrPortFrom(ip, port).String())
				if err != nil {
					t.Fatalf("dial %v: %v", ip, err)
				}
				got, err := io.ReadAll(c)
				c.Close()
				if err != nil || !bytes.Equal(got, []byte("hi")) {
					t.Errorf("from %v: %q, %v; want \"hi\"", ip, got, err)
				}
			}
		})
	}
}
