package netstack

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// TestUDPRoundTripAllocs holds the UDP conns to their promise of no
// allocation of their own per datagram in steady state: a 1-byte echo
// through two tunnels, from a dialed conn (Write, Read) to a ListenPacket
// socket that answers with ReadFrom and WriteTo, or with
// ReadFromUDPAddrPort and WriteToUDPAddrPort, blocking on both sides,
// with and without deadlines, allocates no more than the same echo made
// with the bare gVisor endpoints. It counts every allocation of the
// process: gVisor's UDP endpoint itself allocates per datagram (the
// packet's release callback and its payload's reader on send, the queued
// packet and its header views on receive; see BENCHMARKS.md), which no
// conn over it can avoid, so the bare endpoints are the floor.
func TestUDPRoundTripAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items, so gVisor's and wireguard-go's buffer pools allocate")
	}
	if testing.Short() {
		t.Skip("opens two tunnels")
	}
	a, b := openLoopbackPair(t)
	floor := rawUDPRoundTripAllocs(t, a, b)
	t.Logf("bare gVisor endpoints: %v allocations per round trip", floor)
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
	for _, e := range echoes {
		t.Run(e.name, func(t *testing.T) {
			pc, err := a.ListenPacket("udp", netip.AddrPortFrom(addrA4, 0).String())
			if err != nil {
				t.Fatal(err)
			}
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
			c, err := b.DialContext(testContext(t, 10*time.Second), "udp", pc.LocalAddr().String())
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
					if allocs > floor {
						t.Errorf("a 1-byte UDP round trip made %v allocations, want at most the bare endpoints' %v", allocs, floor)
					}
				})
			}
		})
	}
}

// rawUDPRoundTripAllocs measures the allocations of a 1-byte UDP echo from
// b to a made with bare gVisor endpoints after the handshake. Each waits
// for its datagrams on a wait queue entry registered once, so that
// waiting allocates nothing.
func rawUDPRoundTripAllocs(t *testing.T, a, b *Net) float64 {
	t.Helper()
	type rawEP struct {
		ep    tcpip.Endpoint
		ready chan struct{}
	}
	newEP := func(n *Net) rawEP {
		wq := new(waiter.Queue)
		ep, terr := n.stack.NewEndpoint(udp.ProtocolNumber, ipv4.ProtocolNumber, wq)
		if terr != nil {
			t.Fatal(terr)
		}
		entry, ready := waiter.NewChannelEntry(waiter.ReadableEvents)
		wq.EventRegister(&entry)
		t.Cleanup(func() {
			wq.EventUnregister(&entry)
			ep.Close()
		})
		return rawEP{ep, ready}
	}
	echo, client := newEP(a), newEP(b)
	if terr := echo.ep.Bind(tcpip.FullAddress{Addr: tcpip.AddrFrom4(addrA4.As4())}); terr != nil {
		t.Fatal(terr)
	}
	local, terr := echo.ep.GetLocalAddress()
	if terr != nil {
		t.Fatal(terr)
	}
	if terr := client.ep.Connect(local); terr != nil {
		t.Fatal(terr)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	defer func() { close(stop); <-done }()
	go func() {
		defer close(done)
		buf := make([]byte, 64)
		var w tcpip.SliceWriter
		var r bytes.Reader
		var to tcpip.FullAddress
		for {
			w = buf
			res, terr := echo.ep.Read(&w, tcpip.ReadOptions{NeedRemoteAddr: true})
			if terr != nil {
				select {
				case <-echo.ready:
				case <-stop:
					return
				}
				continue
			}
			to = res.RemoteAddr
			r.Reset(buf[:res.Count])
			echo.ep.Write(&r, tcpip.WriteOptions{To: &to})
		}
	}()
	one, got := []byte{42}, make([]byte, 8)
	var w tcpip.SliceWriter
	var r bytes.Reader
	timer := time.NewTimer(time.Hour)
	// roundTrip sends one datagram and waits for the echo, for at most
	// wait; it reports whether the echo came.
	roundTrip := func(wait time.Duration) bool {
		r.Reset(one)
		client.ep.Write(&r, tcpip.WriteOptions{})
		timer.Reset(wait)
		defer timer.Stop()
		for {
			w = got
			if _, terr := client.ep.Read(&w, tcpip.ReadOptions{}); terr == nil {
				return true
			}
			select {
			case <-client.ready:
			case <-timer.C:
				return false
			}
		}
	}
	for i := 0; !roundTrip(100 * time.Millisecond); i++ { // the handshake
		if i == 100 {
			t.Fatal("no echo through the tunnel with bare endpoints")
		}
	}
	for range 100 {
		roundTrip(time.Second)
	}
	return testing.AllocsPerRun(500, func() {
		if !roundTrip(10 * time.Second) {
			t.Fatal("no echo through the tunnel with bare endpoints")
		}
	})
}
