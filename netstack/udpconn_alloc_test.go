package netstack

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestUDPRoundTripAllocs holds the UDP conns to their promise of no
// allocation per datagram in steady state: a 1-byte echo through two
// tunnels, from a dialed conn (Write, Read) to a ListenPacket socket
// (bound to an address, or to the dual-stack wildcard) that answers with
// ReadFrom and WriteTo, or with ReadFromUDPAddrPort and
// WriteToUDPAddrPort, blocking on both sides, with and without
// deadlines, allocates nothing. It counts every allocation of the
// process: the engines', the stacks' and the link's too. gVisor's UDP
// endpoint alone allocates 6 times per datagram (8 for an unconnected
// WriteTo), which the conns' own data path (udpfast.go) avoids.
func TestUDPRoundTripAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items, so gVisor's and wireguard-go's buffer pools allocate")
	}
	if testing.Short() {
		t.Skip("opens two tunnels")
	}
	a, b := openLoopbackPair(t)
	type addrPortConn interface {
		ReadFromUDPAddrPort([]byte) (int, netip.AddrPort, error)
		WriteToUDPAddrPort([]byte, netip.AddrPort) (int, error)
	}
	echoes := []struct {
		name string
		echo func(pc net.PacketConn, buf []byte) error
	}{
		{name: "ReadFrom and WriteTo", echo: func(pc net.PacketConn, buf []byte) error {
			k, from, err := pc.ReadFrom(buf)
			if err == nil {
				_, err = pc.WriteTo(buf[:k], from)
			}
			return err
		}},
		{name: "ReadFromUDPAddrPort and WriteToUDPAddrPort", echo: func(pc net.PacketConn, buf []byte) error {
			u := pc.(addrPortConn)
			k, from, err := u.ReadFromUDPAddrPort(buf)
			if err == nil {
				_, err = u.WriteToUDPAddrPort(buf[:k], from)
			}
			return err
		}},
	}
	type echoCase struct {
		name   string
		listen string
		echo   func(pc net.PacketConn, buf []byte) error
	}
	var cases []echoCase
	for _, e := range echoes {
		cases = append(cases,
			echoCase{name: e.name + "/bound", listen: netip.AddrPortFrom(addrA4, 0).String(), echo: e.echo},
			echoCase{name: e.name + "/wildcard", listen: ":0", echo: e.echo})
	}
	for _, e := range cases {
		t.Run(e.name, func(t *testing.T) {
			pc, err := a.ListenPacket("udp", e.listen)
			if err != nil {
				t.Fatal(err)
			}
			port := pc.LocalAddr().(*net.UDPAddr).Port
			echoed := make(chan error, 1)
			go func() {
				buf := make([]byte, 64)
				for {
					if err := e.echo(pc, buf); err != nil {
						echoed <- err
						return
					}
				}
			}()
			defer func() {
				pc.Close()
				<-echoed
			}()
			c, err := b.DialContext(testContext(t, 10*time.Second), "udp", netip.AddrPortFrom(addrA4, uint16(port)).String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			one, got := []byte{42}, make([]byte, 8)
			// The first datagrams wait for the handshake: send until one
			// comes back.
			for i := 0; ; i++ {
				if i == 100 {
					t.Fatal("no echo through the tunnel")
				}
				c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				c.Write(one)
				if _, err := c.Read(got); err == nil {
					break
				}
			}
			for {
				// Drain the echoes of the handshake's retries.
				c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				if _, err := c.Read(got); err != nil {
					break
				}
			}
			c.SetReadDeadline(time.Time{})
			roundTrip := func(t *testing.T) {
				if _, err := c.Write(one); err != nil {
					t.Fatal(err)
				}
				if k, err := c.Read(got); err != nil || k != 1 {
					t.Fatalf("Read = %d, %v; want the 1-byte echo", k, err)
				}
			}
			for _, tt := range []struct {
				name   string
				before func() // per round trip, measured too
			}{
				{name: "no deadline", before: func() {}},
				{name: "deadline set per round trip", before: func() {
					c.SetDeadline(time.Now().Add(time.Minute))
				}},
			} {
				t.Run(tt.name, func(t *testing.T) {
					for range 100 { // warm up: buffers, pools
						tt.before()
						roundTrip(t)
					}
					allocs := testing.AllocsPerRun(500, func() {
						tt.before()
						roundTrip(t)
					})
					// AllocsPerRun truncates to whole allocations per
					// run: the rare refill of a pool is allowed,
					// anything per datagram or per call is not.
					if allocs != 0 {
						t.Errorf("a 1-byte UDP round trip made %v allocations, want 0", allocs)
					}
				})
			}
		})
	}
}
