package netstack

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/device"
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
