package netstack

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// udpPair returns a socket listening on B and a conn dialed from A to it,
// with a datagram already through (so the handshake is done). Both are
// closed at cleanup.
func udpPair(t *testing.T, a, b *Net) (pc net.PacketConn, c net.Conn) {
	t.Helper()
	pc, err := b.ListenPacket("udp", netip.AddrPortFrom(addrB4, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	c, err = a.DialContext(testContext(t, 10*time.Second), "udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// WireGuard queues the first datagram until the handshake is done.
	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := pc.ReadFrom(make([]byte, 16)); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Time{})
	return pc, c
}

// TestUDPConn checks the UDP conns against what net.UDPConn does:
// datagram boundaries, deadlines (past, future, on pending calls, reset),
// Close unblocking pending calls, and the errors the net package reports.
func TestUDPConn(t *testing.T) {
	a, b := openPair(t, nil)
	pc, c := udpPair(t, a, b)
	buf := make([]byte, 64)

	t.Run("datagram boundaries and truncation", func(t *testing.T) {
		for _, m := range []string{"0123456789", "ab", ""} {
			if _, err := c.Write([]byte(m)); err != nil {
				t.Fatal(err)
			}
		}
		pc.SetReadDeadline(time.Now().Add(10 * time.Second))
		defer pc.SetReadDeadline(time.Time{})
		var got []string
		for _, size := range []int{4, 64, 64} {
			k, from, err := pc.ReadFrom(buf[:size])
			if err != nil {
				t.Fatal(err)
			}
			if from.String() != c.LocalAddr().String() {
				t.Errorf("datagram from %v, want %v", from, c.LocalAddr())
			}
			got = append(got, string(buf[:k]))
		}
		// The rest of a datagram that does not fit is discarded.
		if diff := cmp.Diff([]string{"0123", "ab", ""}, got); diff != "" {
			t.Errorf("datagrams read (-want +got):\n%s", diff)
		}
	})

	t.Run("ReadFrom reuses the address of the same source", func(t *testing.T) {
		pc.SetReadDeadline(time.Now().Add(10 * time.Second))
		defer pc.SetReadDeadline(time.Time{})
		var froms []net.Addr
		for range 2 {
			c.Write([]byte("x"))
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				t.Fatal(err)
			}
			froms = append(froms, from)
		}
		if froms[0] != froms[1] {
			t.Errorf("two datagrams from %v gave different addresses", froms[0])
		}
		u := pc.(interface {
			ReadFromUDPAddrPort([]byte) (int, netip.AddrPort, error)
			WriteToUDPAddrPort([]byte, netip.AddrPort) (int, error)
		})
		c.Write([]byte("y"))
		k, ap, err := u.ReadFromUDPAddrPort(buf)
		if err != nil || string(buf[:k]) != "y" || ap.String() != c.LocalAddr().String() {
			t.Errorf("ReadFromUDPAddrPort = %q, %v, %v; want \"y\" from %v", buf[:k], ap, err, c.LocalAddr())
		}
		if _, err := u.WriteToUDPAddrPort([]byte("z"), ap); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		defer c.SetReadDeadline(time.Time{})
		if k, err := c.Read(buf); err != nil || string(buf[:k]) != "z" {
			t.Errorf("Read after WriteToUDPAddrPort = %q, %v; want \"z\"", buf[:k], err)
		}
	})

	t.Run("past deadline", func(t *testing.T) {
		c.SetDeadline(time.Now().Add(-time.Second))
		defer c.SetDeadline(time.Time{})
		if _, err := c.Read(buf); !isTimeout(err) {
			t.Errorf("Read: %v, want a timeout", err)
		}
		if _, err := c.Write([]byte("x")); !isTimeout(err) {
			t.Errorf("Write: %v, want a timeout", err)
		}
	})

	t.Run("deadline ends a pending read, and a reset one is lifted", func(t *testing.T) {
		errc := make(chan error, 1)
		go func() { _, _, err := pc.ReadFrom(buf); errc <- err }()
		time.Sleep(20 * time.Millisecond)
		pc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		select {
		case err := <-errc:
			if !isTimeout(err) {
				t.Errorf("pending ReadFrom: %v, want a timeout", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the deadline did not end the pending ReadFrom")
		}
		pc.SetReadDeadline(time.Time{})
		go func() { _, _, err := pc.ReadFrom(buf); errc <- err }()
		c.Write([]byte("x"))
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("ReadFrom after the deadline was cleared: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("ReadFrom after the deadline was cleared got nothing")
		}
	})

	t.Run("Write without a destination", func(t *testing.T) {
		_, err := pc.(net.Conn).Write([]byte("x"))
		if !errors.Is(err, syscall.EDESTADDRREQ) {
			t.Errorf("Write on a ListenPacket socket: %v, want EDESTADDRREQ", err)
		}
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "write" || oe.Net != "udp" {
			t.Errorf("Write on a ListenPacket socket: %#v, want a *net.OpError for write udp", err)
		}
	})

	t.Run("WriteTo on a dialed conn", func(t *testing.T) {
		_, err := c.(net.PacketConn).WriteTo([]byte("x"), pc.LocalAddr())
		if !errors.Is(err, net.ErrWriteToConnected) {
			t.Errorf("WriteTo on a dialed conn: %v, want net.ErrWriteToConnected", err)
		}
	})

	t.Run("SetReadBuffer", func(t *testing.T) {
		for _, size := range []int{0, 1 << 20, 1 << 30} {
			if err := pc.(interface{ SetReadBuffer(int) error }).SetReadBuffer(size); err != nil {
				t.Errorf("SetReadBuffer(%d): %v", size, err)
			}
			if err := pc.(interface{ SetWriteBuffer(int) error }).SetWriteBuffer(size); err != nil {
				t.Errorf("SetWriteBuffer(%d): %v", size, err)
			}
		}
	})

	t.Run("Close unblocks and later calls fail", func(t *testing.T) {
		pc2, c2 := udpPair(t, a, b)
		errc := make(chan error, 2)
		go func() { _, _, err := pc2.ReadFrom(buf); errc <- err }()
		go func() { _, err := c2.Read(make([]byte, 8)); errc <- err }()
		time.Sleep(20 * time.Millisecond)
		if err := pc2.Close(); err != nil {
			t.Fatal(err)
		}
		if err := c2.Close(); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			select {
			case err := <-errc:
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("pending read: %v, want net.ErrClosed", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Close did not unblock a pending read")
			}
		}
		for name, err := range map[string]error{
			"second Close": c2.Close(),
			"Read":         func() error { _, err := c2.Read(buf); return err }(),
			"Write":        func() error { _, err := c2.Write(buf); return err }(),
			"WriteTo":      func() error { _, err := pc2.WriteTo(buf, c.LocalAddr()); return err }(),
		} {
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("%s after Close: %v, want net.ErrClosed", name, err)
			}
		}
		if pc2.LocalAddr() == nil {
			t.Error("LocalAddr after Close is nil")
		}
	})
}

// TestUDPConnRefused checks that a dialed conn reports ECONNREFUSED, as a
// kernel socket does, when the destination port has no socket: the peer's
// stack answers with an ICMP port unreachable.
func TestUDPConnRefused(t *testing.T) {
	a, b := openPair(t, nil)
	pc, c := udpPair(t, a, b)
	// A port that was open a moment ago and is closed now.
	closedAddr := pc.LocalAddr().String()
	pc.Close()
	c.Close()
	c, err := a.DialContext(testContext(t, 10*time.Second), "udp", closedAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("anyone?")); err != nil {
		t.Fatal(err)
	}
	_, err = c.Read(make([]byte, 8))
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("Read after sending to a closed port: %v, want ECONNREFUSED", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" {
		t.Errorf("Read after sending to a closed port: %#v, want a *net.OpError for read", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() && errors.Is(err, os.ErrDeadlineExceeded)
}
