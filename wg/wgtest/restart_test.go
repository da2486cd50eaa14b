package wgtest

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// echoOnce accepts connections on l and echoes what each sends, until l
// is closed.
func echoOnce(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}

// roundTrip dials addr from n, sends a line and reads it back, and
// returns how long it took.
func roundTrip(ctx context.Context, t *testing.T, p *Peer, addr string) time.Duration {
	t.Helper()
	start := time.Now()
	c, err := p.Net().DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("dial %s after %v: %v", addr, time.Since(start), err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

// TestDialAfterPeerRestart is issue 9's finding 4: a fresh dial to a peer
// that just restarted, without keepalive, took 31 s: the dialer kept
// the old session, which the restarted peer cannot read, until the
// engine's 15 s timer, and TCP's SYN back-off did the rest. Now the
// restarted peer initiates when it opens (it knows the dialer's
// endpoint in a mesh); wg's TestRestartedPeerWithoutEndpoint covers the
// dialer's side.
func TestDialAfterPeerRestart(t *testing.T) {
	t.Parallel()
	nw := NewNetwork(t, 2, &NetworkOptions{Seed: 7})
	client, server := nw.Peer(0), nw.Peer(1)
	listen := func() {
		l, err := server.Net().Listen("tcp", ":7")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go echoOnce(l)
	}
	listen()
	addr := netip.AddrPortFrom(server.Addr(), 7).String()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	roundTrip(ctx, t, client, addr)

	// A restart takes longer than WireGuard's timestamp granularity
	// (about 17 ms): an initiation within it is taken for a replay.
	time.Sleep(100 * time.Millisecond)
	if err := server.Restart(); err != nil {
		t.Fatal(err)
	}
	listen()
	d := roundTrip(ctx, t, client, addr)
	t.Logf("first dial after the restart: %v", d)
	if d > 2*time.Second {
		t.Errorf("dial after the peer restarted took %v, want < 2 s (31 s before)", d)
	}
}

// TestDialAfterPeerRestartWithin2s is the goal of issue 9 (reachable
// within 2 s of coming back); it needs the netstack dial to start a
// handshake when the destination's peer has been silent
// (wg.Device.LastReceive, wg.Device.StartHandshake).
func TestDialAfterPeerRestartWithin2s(t *testing.T) {
	t.Skip("needs netstack's dial to call wg.Device.StartHandshake for a silent peer (the obsns change)")
	nw := NewNetwork(t, 2, &NetworkOptions{Seed: 7})
	client, server := nw.Peer(0), nw.Peer(1)
	l, err := server.Net().Listen("tcp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	go echoOnce(l)
	addr := netip.AddrPortFrom(server.Addr(), 7).String()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	roundTrip(ctx, t, client, addr)
	l.Close()
	if err := server.Restart(); err != nil {
		t.Fatal(err)
	}
	l, err = server.Net().Listen("tcp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go echoOnce(l)
	time.Sleep(3 * time.Second) // the client has heard nothing for a while
	if d := roundTrip(ctx, t, client, addr); d > 2*time.Second {
		t.Errorf("dial after the peer restarted took %v, want < 2 s", d)
	}
}
