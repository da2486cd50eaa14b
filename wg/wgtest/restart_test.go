package wgtest

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// timedEcho runs echo from p to addr and returns how long it took.
func timedEcho(ctx context.Context, t *testing.T, p *Peer, addr string) time.Duration {
	t.Helper()
	start := time.Now()
	if err := echo(ctx, p.Net().DialContext, addr); err != nil {
		t.Fatalf("echo %s after %v: %v", addr, time.Since(start), err)
	}
	return time.Since(start)
}

// listenEcho starts an echo server on port 7 of p's current stack.
func listenEcho(t *testing.T, p *Peer) {
	t.Helper()
	l, err := p.Net().Listen("tcp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, l)
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
	listenEcho(t, server)
	addr := netip.AddrPortFrom(server.Addr(), 7).String()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	timedEcho(ctx, t, client, addr)

	// A restart takes longer than WireGuard's timestamp granularity
	// (about 17 ms): an initiation within it is taken for a replay.
	time.Sleep(100 * time.Millisecond)
	if err := server.Restart(); err != nil {
		t.Fatal(err)
	}
	listenEcho(t, server)
	d := timedEcho(ctx, t, client, addr)
	t.Logf("first dial after the restart: %v", d)
	if d > 2*time.Second {
		t.Errorf("dial after the peer restarted took %v, want < 2 s (31 s before)", d)
	}
}
