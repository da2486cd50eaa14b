package wgtest

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/wgkit/wgkit/netstack"
)

// pingUntil pings addr from n until a reply arrives or ctx ends.
func pingUntil(ctx context.Context, n *netstack.Net, addr netip.Addr) error {
	for {
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_, err := n.Ping(pctx, addr)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		default:
		}
	}
}

// pingFails checks that a ping from n to addr gets no reply in 300ms.
func pingFails(t *testing.T, n *netstack.Net, addr netip.Addr, why string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := n.Ping(ctx, addr); err == nil {
		t.Fatal(why)
	}
}

func TestNetworkMesh(t *testing.T) {
	nw := NewNetwork(t, 4, &NetworkOptions{Seed: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range nw.Len() {
		for j := range nw.Len() {
			if i == j {
				continue
			}
			for _, addr := range []netip.Addr{nw.Peer(j).Addr(), nw.Peer(j).Addr6()} {
				if _, err := nw.Peer(i).Net().Ping(ctx, addr); err != nil {
					t.Errorf("peer %d -> %v: %v", i, addr, err)
				}
			}
		}
	}
}

// transfer sends size random bytes from a to a listener on b over TCP and
// checks the SHA-256 of what arrived.
func transfer(t *testing.T, ctx context.Context, from *netstack.Net, to *Peer, size int) {
	t.Helper()
	ln, err := to.Net().Listen("tcp", ":9000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		if d, ok := ctx.Deadline(); ok {
			c.SetDeadline(d)
		}
		// Read exactly size bytes rather than up to EOF: the goal is the
		// data arriving intact, and the end of the stream (a FIN that may
		// itself be lost and retransmitted) is not what this measures.
		h := sha256.New()
		n, err := io.CopyN(h, c, int64(size))
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		done <- r
	}()

	c, err := from.DialContext(ctx, "tcp", netip.AddrPortFrom(to.Addr(), 9000).String())
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	src := rand.NewChaCha8([32]byte{1})
	h := sha256.New()
	defer c.Close()
	if _, err := io.CopyN(io.MultiWriter(c, h), src, int64(size)); err != nil {
		t.Fatalf("send: %v", err)
	}
	var want [32]byte
	copy(want[:], h.Sum(nil))
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("receive: %v after %d bytes", r.err, r.n)
		}
		if r.n != int64(size) || r.sum != want {
			t.Fatalf("received %d bytes with sha256 %x, want %d bytes with %x", r.n, r.sum, size, want)
		}
	case <-ctx.Done():
		ln.Close()
		t.Fatalf("receive: %v", ctx.Err())
	}
}

func TestNetworkTransferUnderFaults(t *testing.T) {
	const size = 16 << 20
	nw := NewNetwork(t, 2, &NetworkOptions{Seed: 42})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Handshake first on a clean network: a lost handshake costs
	// WireGuard's 5 s retry timer, which is not what this test measures.
	if err := pingUntil(ctx, nw.Peer(0).Net(), nw.Peer(1).Addr()); err != nil {
		t.Fatal(err)
	}
	nw.SetFaults(Faults{
		Loss:      0.05,
		Reorder:   0.05,
		Jitter:    200 * time.Microsecond,
		Duplicate: 0.01,
	})
	start := time.Now()
	transfer(t, ctx, nw.Peer(0).Net(), nw.Peer(1), size)
	st := nw.Stats()
	t.Logf("16 MiB in %v; transport %+v", time.Since(start).Round(time.Millisecond), st)
	if st.Lost == 0 || st.Reordered == 0 || st.Duplicated == 0 {
		t.Errorf("faults did not happen: %+v", st)
	}
}

func TestNetworkPartitionHeal(t *testing.T) {
	nw := NewNetwork(t, 2, &NetworkOptions{Seed: 1})
	a, b := nw.Peer(0), nw.Peer(1)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()

	// A connection opened before the partition survives it: TCP
	// retransmits, WireGuard re-sends, and nobody calls anything after Heal.
	ln, err := b.Net().Listen("tcp", ":9001")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, ln)
	c, err := a.Net().DialContext(ctx, "tcp", netip.AddrPortFrom(b.Addr(), 9001).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(40 * time.Second))

	nw.Partition(0, 1)
	pingFails(t, a.Net(), b.Addr(), "ping crossed the partition")
	if _, err := io.WriteString(c, "across the partition\n"); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(500*time.Millisecond, func() { nw.Heal(0, 1) })
	buf := make([]byte, len("across the partition\n"))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read after heal: %v", err)
	}
	if got := string(buf); got != "across the partition\n" {
		t.Errorf("echo %q", got)
	}
	if st := nw.Stats(); st.Partitioned == 0 {
		t.Errorf("nothing was dropped by the partition: %+v", st)
	}
}

func TestNetworkRoam(t *testing.T) {
	nw := NewNetwork(t, 3, &NetworkOptions{Topology: HubAndSpoke, Seed: 1})
	hub, spoke := nw.Peer(0), nw.Peer(2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := spoke.Net().Ping(ctx, hub.Addr()); err != nil {
		t.Fatal(err)
	}

	old := spoke.Endpoint()
	addr := nw.Roam(2)
	if addr == old || spoke.Endpoint() != addr {
		t.Fatalf("Roam returned %v, Endpoint %v, old %v", addr, spoke.Endpoint(), old)
	}
	// The hub still sends to the old address.
	pingFails(t, hub.Net(), spoke.Addr(), "hub reached the spoke before the spoke sent from its new address")
	// One datagram from the new address is enough for the hub to follow.
	if _, err := spoke.Net().Ping(ctx, hub.Addr()); err != nil {
		t.Fatal(err)
	}
	var got netip.AddrPort
	for _, p := range hub.Net().Device().Peers() {
		if p.PublicKey == spoke.PublicKey() {
			got = p.Endpoint
		}
	}
	if got != addr {
		t.Errorf("hub's endpoint for the spoke = %v, want %v", got, addr)
	}
	ln, err := spoke.Net().Listen("tcp", ":9002")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, ln)
	if err := echo(ctx, hub.Net().DialContext, netip.AddrPortFrom(spoke.Addr(), 9002).String()); err != nil {
		t.Fatalf("hub -> roamed spoke: %v", err)
	}
}

func TestNetworkStopRestart(t *testing.T) {
	nw := NewNetwork(t, 2, &NetworkOptions{Seed: 1})
	a, b := nw.Peer(0), nw.Peer(1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.Net().Ping(ctx, b.Addr()); err != nil {
		t.Fatal(err)
	}
	oldNet := b.Net()
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	if b.Net() != nil {
		t.Errorf("Net() of a stopped peer is not nil")
	}
	if _, err := oldNet.Ping(ctx, a.Addr()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ping from the stopped stack: %v, want net.ErrClosed", err)
	}
	if err := b.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := b.Restart(); err != nil {
		t.Fatal(err)
	}
	// The restarted peer has no session and handshakes at once; peer 0
	// then uses the new session too.
	if _, err := b.Net().Ping(ctx, a.Addr()); err != nil {
		t.Fatalf("restarted -> 0: %v", err)
	}
	if _, err := a.Net().Ping(ctx, b.Addr()); err != nil {
		t.Fatalf("0 -> restarted: %v", err)
	}
}

func TestNetworkMTU(t *testing.T) {
	nw := NewNetwork(t, 2, &NetworkOptions{Seed: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := nw.Peer(0).Net(), nw.Peer(1)
	if _, err := a.Ping(ctx, b.Addr()); err != nil {
		t.Fatal(err)
	}
	pc, err := b.Net().ListenPacket("udp", ":9003")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, err := a.DialContext(ctx, "udp", netip.AddrPortFrom(b.Addr(), 9003).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// 1000 bytes of UDP payload: 1028 bytes of IPv4 packet, 1060 bytes
	// of WireGuard datagram (32 bytes of header and tag) padded to 1072.
	nw.SetFaults(Faults{MTU: 1071})
	if _, err := c.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, _, err := pc.ReadFrom(make([]byte, 2000)); err == nil {
		t.Fatal("a datagram above the path MTU arrived")
	}
	nw.SetFaults(Faults{MTU: 1072})
	if _, err := c.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _, err := pc.ReadFrom(make([]byte, 2000)); err != nil || n != 1000 {
		t.Fatalf("datagram at the path MTU: %d bytes, %v", n, err)
	}
	if st := nw.Stats(); st.TooBig != 1 {
		t.Errorf("TooBig = %d, want 1", st.TooBig)
	}
}

// TestHubAndSpoke starts a large hub-and-spoke network and has every spoke
// open a TCP connection to the hub.
func TestHubAndSpoke(t *testing.T) {
	n := 200
	if testing.Short() {
		// 200 peers start in under a second (8 s with -race) and the
		// test binary peaks at about 80 MB of RSS (460 MB of heap
		// allocated, mostly untouched batch buffers); -short spares both.
		n = 20
	}
	nw := NewNetwork(t, n, &NetworkOptions{Topology: HubAndSpoke, Seed: 1})
	hub := nw.Peer(0)
	ln, err := hub.Net().Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, ln)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	target := netip.AddrPortFrom(hub.Addr(), 80).String()
	var wg sync.WaitGroup
	errs := make([]error, n)
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				errs[i] = echo(ctx, nw.Peer(i).Net().DialContext, target)
			}
		})
	}
	for i := 1; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, err := range errs[1:] {
		if err != nil {
			t.Errorf("spoke %d -> hub: %v", i+1, err)
		}
	}
}

// TestNetworkRoamKeepalive has the hub follow a roamed spoke with no
// traffic from the test: the spoke's persistent keepalives carry the new
// address.
func TestNetworkRoamKeepalive(t *testing.T) {
	nw := NewNetwork(t, 2, &NetworkOptions{Topology: HubAndSpoke, PersistentKeepalive: time.Second})
	hub, spoke := nw.Peer(0), nw.Peer(1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := spoke.Net().Ping(ctx, hub.Addr()); err != nil {
		t.Fatal(err)
	}
	addr := nw.Roam(1)
	endpoint := func() netip.AddrPort { return hub.Net().Device().Peers()[0].Endpoint }
	for endpoint() != addr {
		select {
		case <-ctx.Done():
			t.Fatalf("hub's endpoint for the spoke is %v, want %v", endpoint(), addr)
		case <-time.After(50 * time.Millisecond):
		}
	}
	if _, err := hub.Net().Ping(ctx, spoke.Addr()); err != nil {
		t.Fatal(err)
	}
}

func TestNetworkFaultsPing(t *testing.T) {
	tests := []struct {
		name   string
		faults Faults
		check  func(t *testing.T, rtt time.Duration, err error, st Stats)
	}{
		{
			name:   "delay",
			faults: Faults{Delay: 40 * time.Millisecond, Jitter: 5 * time.Millisecond},
			check: func(t *testing.T, rtt time.Duration, err error, st Stats) {
				if err != nil || rtt < 80*time.Millisecond {
					t.Errorf("ping: %v after %v, want a reply after at least 80ms", err, rtt)
				}
			},
		},
		{
			name:   "duplicate",
			faults: Faults{Duplicate: 1},
			check: func(t *testing.T, rtt time.Duration, err error, st Stats) {
				if err != nil || st.Duplicated < 2 {
					t.Errorf("ping: %v, Duplicated %d, want a reply and 2 copies", err, st.Duplicated)
				}
			},
		},
		{
			name:   "loss",
			faults: Faults{Loss: 1},
			check: func(t *testing.T, rtt time.Duration, err error, st Stats) {
				if err == nil || st.Lost < 1 {
					t.Errorf("ping: %v, Lost %d, want no reply", err, st.Lost)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nw := NewNetwork(t, 2, &NetworkOptions{Seed: 3})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := nw.Peer(0).Net().Ping(ctx, nw.Peer(1).Addr()); err != nil {
				t.Fatal(err)
			}
			nw.SetFaults(tt.faults)
			pctx, pcancel := context.WithTimeout(ctx, time.Second)
			defer pcancel()
			rtt, err := nw.Peer(0).Net().Ping(pctx, nw.Peer(1).Addr())
			tt.check(t, rtt, err, nw.Stats())
		})
	}
}

func TestNetworkLinkFaults(t *testing.T) {
	nw := NewNetwork(t, 3, &NetworkOptions{Seed: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, i := range []int{1, 2} {
		if _, err := nw.Peer(0).Net().Ping(ctx, nw.Peer(i).Addr()); err != nil {
			t.Fatal(err)
		}
	}
	// Only the replies from peer 2 to peer 0 are lost.
	nw.SetLinkFaults(2, 0, &Faults{Loss: 1})
	if _, err := nw.Peer(0).Net().Ping(ctx, nw.Peer(1).Addr()); err != nil {
		t.Errorf("0 -> 1 through a clean link: %v", err)
	}
	pingFails(t, nw.Peer(0).Net(), nw.Peer(2).Addr(), "a reply crossed a link with 100% loss")
	nw.SetLinkFaults(2, 0, nil)
	if _, err := nw.Peer(0).Net().Ping(ctx, nw.Peer(2).Addr()); err != nil {
		t.Errorf("0 -> 2 after clearing the link's faults: %v", err)
	}
}
