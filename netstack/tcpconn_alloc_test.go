package netstack

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/wgkit/wgkit/internal/udpbind"
)

// openLoopbackPair opens two Nets A and B over UDP on 127.0.0.1 with
// wgkit's default Bind, as a real program would (the in-memory switch of
// openPair allocates per packet). B knows A's endpoint; A learns B's from
// the handshake, so B must send first. Both are closed at cleanup.
func openLoopbackPair(t testing.TB) (a, b *Net) {
	t.Helper()
	cfgA, cfgB := pairConfigs(t, "", "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	loopback := netip.MustParseAddr("127.0.0.1")
	a, err := Open(ctx, cfgA, &Options{Bind: udpbind.New(&udpbind.Options{ListenAddr: loopback})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	cfgB.Peers[0].Endpoint = netip.AddrPortFrom(loopback, uint16(a.Device().ListenPort())).String()
	b, err = Open(ctx, cfgB, &Options{Bind: udpbind.New(&udpbind.Options{ListenAddr: loopback})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return a, b
}

// TestTCPRoundTripAllocs holds the TCP conns to their promise of no
// allocation per Read or Write in steady state: a 1-byte echo round trip
// through two tunnels, blocking on both sides, with and without
// deadlines. It counts every allocation of the process, the engines' and
// the stacks' too.
func TestTCPRoundTripAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items, so gVisor's and wireguard-go's buffer pools allocate")
	}
	if testing.Short() {
		t.Skip("opens two tunnels")
	}
	a, b := openLoopbackPair(t)
	l, err := a.Listen("tcp", netip.AddrPortFrom(addrA4, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	echoed := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			echoed <- err
			return
		}
		defer c.Close()
		// io.Copy's buffer would be its one allocation, before measuring;
		// a fixed buffer keeps the echo side obviously allocation-free.
		buf := make([]byte, 64)
		for {
			k, err := c.Read(buf)
			if err != nil {
				if err == io.EOF {
					err = nil
				}
				echoed <- err
				return
			}
			if _, err := c.Write(buf[:k]); err != nil {
				echoed <- err
				return
			}
		}
	}()
	c, err := b.DialContext(testContext(t, 10*time.Second), "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	one, got := []byte{42}, make([]byte, 1)
	roundTrip := func(t *testing.T, c net.Conn) {
		if _, err := c.Write(one); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		name   string
		before func(c net.Conn) // per round trip, measured too
	}{
		{name: "no deadline", before: func(net.Conn) {}},
		{name: "deadline set per round trip", before: func(c net.Conn) {
			c.SetDeadline(time.Now().Add(time.Minute))
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for range 100 { // warm up: buffers, pools, receive window
				tt.before(c)
				roundTrip(t, c)
			}
			allocs := testing.AllocsPerRun(500, func() {
				tt.before(c)
				roundTrip(t, c)
			})
			// AllocsPerRun truncates to whole allocations per run, so this
			// asks for fewer than one allocation per round trip on average
			// in the whole process: the rare refill of a pool is allowed,
			// anything per packet or per call is not.
			if allocs != 0 {
				t.Errorf("a 1-byte TCP round trip made %v allocations, want 0", allocs)
			}
		})
	}
	c.SetDeadline(time.Time{})
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-echoed:
		if err != nil {
			t.Errorf("echo side: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("echo side did not see the end of the stream")
	}
}
