package netstack

import (
	"net/netip"
	"testing"
	"time"
)

// TestInflight checks the bound on packets inside the receiving engine:
// a receive waits at the bound until the stack takes packets, a batch
// larger than the bound passes alone, Close ends the wait, and counts the
// engine lost without delivering cost a pause, not a wedge.
func TestInflight(t *testing.T) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	// acquireAsync acquires n in a goroutine and returns a channel closed
	// when it has.
	acquireAsync := func(f *inflight, n int) <-chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			f.acquire(n, timer)
		}()
		return done
	}
	waits := func(done <-chan struct{}) bool {
		select {
		case <-done:
			return false
		case <-time.After(inflightLeakTimeout / 5):
			return true
		}
	}
	gets := func(t *testing.T, done <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: acquire still waits", what)
		}
	}

	t.Run("waits at the bound until a release", func(t *testing.T) {
		f := newInflight(maxInflightPackets)
		f.acquire(maxInflightPackets, timer)
		done := acquireAsync(f, 1)
		if !waits(done) {
			t.Fatal("acquire beyond the bound did not wait")
		}
		f.release(1)
		gets(t, done, "after a release")
	})
	t.Run("a batch larger than the bound passes alone", func(t *testing.T) {
		f := newInflight(maxInflightPackets)
		gets(t, acquireAsync(f, 2*maxInflightPackets), "an empty count")
		done := acquireAsync(f, 1)
		if !waits(done) {
			t.Fatal("acquire after an oversized batch did not wait")
		}
		f.release(2 * maxInflightPackets)
		gets(t, done, "after the release")
	})
	t.Run("close ends the wait, open counts afresh", func(t *testing.T) {
		f := newInflight(maxInflightPackets)
		f.acquire(maxInflightPackets, timer)
		done := acquireAsync(f, 1)
		if !waits(done) {
			t.Fatal("acquire beyond the bound did not wait")
		}
		f.close()
		gets(t, done, "after close")
		f.open()
		gets(t, acquireAsync(f, maxInflightPackets), "after open")
	})
	t.Run("lost counts cost a pause", func(t *testing.T) {
		f := newInflight(maxInflightPackets)
		f.acquire(maxInflightPackets, timer) // never released: lost in the engine
		start := time.Now()
		gets(t, acquireAsync(f, 1), "after the leak timeout")
		if d := time.Since(start); d < inflightLeakTimeout {
			t.Errorf("acquire returned after %v, before the leak timeout %v", d, inflightLeakTimeout)
		}
	})
}

// TestInflightCountsBalance sends datagrams through two Nets on their
// default Binds (over loopback) and checks that what the receiving Bind
// counted the stack took, and that what the sender's tun.Device counted
// its Bind sent: a count that drifted (a keepalive or handshake counted
// as data, a packet uncounted) would shrink or lift the bound.
func TestInflightCountsBalance(t *testing.T) {
	if testing.Short() {
		t.Skip("opens two tunnels")
	}
	cfgA, cfgB := pairConfigs(t, "", "")
	ctx := testContext(t, 10*time.Second)
	// B receives; A knows B's endpoint, so A sends first.
	b, err := Open(ctx, cfgB, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cfgA.Peers[0].Endpoint = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(b.Device().ListenPort())).String()
	a, err := Open(ctx, cfgA, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	pc, c := udpPair(t, a, b)
	const n = 2000
	msg := make([]byte, 1200)
	go func() {
		for range n {
			if _, err := c.Write(msg); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 1500)
	got := 0
	for got < n {
		pc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, _, err := pc.ReadFrom(buf); err != nil {
			break // the rest was lost; the counts must balance anyway
		}
		got++
	}
	if got == 0 {
		t.Fatal("no datagram arrived")
	}
	// The stack has taken every packet the engine delivered once reads
	// stop; give the engine a moment to finish its last batch.
	for _, side := range []struct {
		name string
		f    *inflight
	}{{"receiving", b.ep.inflight}, {"sending", a.ep.outflight}} {
		if side.f == nil {
			t.Fatalf("the %s side counts nothing: is the default Bind wrapped?", side.name)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			side.f.mu.Lock()
			used, counted := side.f.used, side.f.counted
			side.f.mu.Unlock()
			if used == 0 {
				if counted < got {
					t.Errorf("the %s side counted %d data packets, fewer than the %d datagrams that arrived: is the default Bind wrapped?", side.name, counted, got)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d packets still counted inside the %s engine after %d of %d datagrams arrived", used, side.name, got, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
