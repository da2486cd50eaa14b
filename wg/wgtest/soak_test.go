package wgtest

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"
)

// TestSoak opens and closes client tunnels to a server on loopback UDP
// sockets, with an echo through each, and runs partition/heal cycles
// under a live connection on an in-memory network; goroutines and file
// descriptors must end where they started (heap is reported).
//
// In CI it runs 200 cycles and one partition (a few seconds). The long
// soak runs for a duration given in WGKIT_SOAK, with a partition every
// 100 cycles and the counts checked every 1000:
//
//	WGKIT_SOAK=1h go test -run TestSoak -timeout 2h -v ./wg/wgtest/
func TestSoak(t *testing.T) {
	cycles, dur := 200, time.Duration(0)
	if s := os.Getenv("WGKIT_SOAK"); s != "" {
		var err error
		if dur, err = time.ParseDuration(s); err != nil {
			t.Fatalf("WGKIT_SOAK=%q: %v", s, err)
		}
		cycles = 0
	}
	// A /8 of client addresses: every cycle is a new client with a new
	// address. A client that reused an address could pick the port of a
	// connection the server still holds from an earlier client, which
	// closed its tunnel before the server's FIN was acknowledged: the
	// server retransmits into the void for minutes, as any TCP does.
	srv := NewServer(t, &ServerOptions{Prefix4: netip.MustParsePrefix("10.0.0.0/8")})
	ln, err := srv.Net().Listen("tcp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, ln)
	target := netip.AddrPortFrom(srv.Addr(), 7).String()
	nw := NewNetwork(t, 2, &NetworkOptions{Seed: 1})
	a, b := nw.Peer(0), nw.Peer(1)
	pl, err := b.Net().Listen("tcp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, pl)

	// The baseline is taken after a warm-up, once the server, the network
	// and the pools of both have reached their working size.
	const warmup = 10
	var base counts
	start := time.Now()
	deadline := start.Add(dur)
	for i := 0; cycles > 0 && i < cycles || dur > 0 && time.Now().Before(deadline); i++ {
		if err := soakCycle(srv, target); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		if i%100 == 0 {
			if err := soakPartition(nw, a, b); err != nil {
				t.Fatalf("partition at cycle %d: %v", i, err)
			}
		}
		if i == warmup-1 {
			base = soakCounts(t)
		}
		if dur > 0 && i%1000 == 999 {
			c := soakCounts(t)
			t.Logf("%v: %d cycles; %s", time.Since(start).Round(time.Second), i+1, c)
			if err := c.flat(base); err != nil {
				t.Fatal(err)
			}
		}
	}
	end := soakCounts(t)
	t.Logf("after %v: start %s; end %s", time.Since(start).Round(time.Millisecond), base, end)
	if err := end.flat(base); err != nil {
		t.Error(err)
	}
}

// soakCycle opens a new client of srv, echoes a line through the tunnel,
// closes the client and removes it from the server, whose engine runs
// goroutines per peer.
func soakCycle(srv *Server, target string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := srv.clientConfig()
	if err != nil {
		return err
	}
	c, err := openNet(cfg, nil, &loopbackBind{}, nil)
	if err != nil {
		return err
	}
	err = echo(ctx, c.DialContext, target)
	if err != nil {
		err = fmt.Errorf("%w (client's peers: %+v)", err, c.Device().Peers())
	}
	if cerr := c.Close(); err == nil {
		err = cerr
	}
	if rerr := srv.Device().RemovePeer(cfg.Interface.PrivateKey.PublicKey()); err == nil {
		err = rerr
	}
	return err
}

// soakPartition cuts the path between a and b for 500 ms while a
// connection waits for its echo, and checks the echo arrives after Heal.
func soakPartition(nw *Network, a, b *Peer) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := a.Net().DialContext(ctx, "tcp", netip.AddrPortFrom(b.Addr(), 7).String())
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	nw.Partition(a.Index(), b.Index())
	line := "across the partition\n"
	if _, err := io.WriteString(c, line); err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond)
	nw.Heal(a.Index(), b.Index())
	buf := make([]byte, len(line))
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("echo after heal: %w", err)
	}
	if string(buf) != line {
		return fmt.Errorf("echo %q, want %q", buf, line)
	}
	return nil
}

// counts are the process's goroutines, open file descriptors (-1 where
// /proc/self/fd is missing) and live heap.
type counts struct {
	goroutines, fds int
	heap            uint64
}

func (c counts) String() string {
	return fmt.Sprintf("%d goroutines, %d fds, %.1f MiB heap", c.goroutines, c.fds, float64(c.heap)/(1<<20))
}

// flat reports an error if c has more goroutines, descriptors or heap
// than base beyond a small slack: a connection's goroutines may still be
// winding down, and the heap holds the last few seconds' closed
// connections in TIME_WAIT and the engine's buffer pools, which the
// garbage collector empties only over several cycles.
func (c counts) flat(base counts) error {
	const goSlack, fdSlack, heapSlack = 10, 2, 32 << 20
	if c.goroutines > base.goroutines+goSlack {
		return fmt.Errorf("goroutines grew from %d to %d", base.goroutines, c.goroutines)
	}
	if c.fds >= 0 && c.fds > base.fds+fdSlack {
		return fmt.Errorf("file descriptors grew from %d to %d", base.fds, c.fds)
	}
	if c.heap > base.heap+heapSlack {
		return fmt.Errorf("heap grew from %.1f to %.1f MiB", float64(base.heap)/(1<<20), float64(c.heap)/(1<<20))
	}
	return nil
}

func soakCounts(t *testing.T) counts {
	t.Helper()
	// Let goroutines of closed tunnels finish exiting.
	var c counts
	for range 20 {
		c.goroutines = runtime.NumGoroutine()
		time.Sleep(50 * time.Millisecond)
		if runtime.NumGoroutine() == c.goroutines {
			break
		}
	}
	c.fds = -1
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		c.fds = len(ents)
	}
	// Two collections: the first moves sync.Pool contents (the engines'
	// buffer pools) to the victim cache, the second frees them.
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	c.heap = ms.HeapAlloc
	return c
}
