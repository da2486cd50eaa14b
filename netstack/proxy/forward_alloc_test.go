package proxy_test

import (
	"context"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestForwardTCPAllocs holds ForwardTCP to no allocation per forwarded
// buffer: host to tunnel, moving 8 MiB more costs no more allocations
// made by the forward (any allocation with the forward's copy loops on
// its stack, the tunnel's Write included) than moving
// 1 MiB, beyond a margin for connection set-up; a per-buffer allocation
// would add at least 128, one per 64 KiB. It counts with the memory
// profiler at a rate of 1, because the process's total is dominated by
// gVisor's SACK recovery, which allocates per segment on the TCP
// processor's goroutine whenever the test tunnel drops a packet.
func TestForwardTCPAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items, so buffers are allocated again")
	}
	if testing.Short() {
		t.Skip("moves 10 MiB through a tunnel")
	}
	e := newEnv(t)
	sink, err := e.remote.Listen("tcp", ":9100")
	if err != nil {
		t.Fatal(err)
	}
	acks := make(chan error, 1)
	go func() {
		for {
			c, err := sink.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, err := io.Copy(io.Discard, c)
				if err == nil {
					_, err = c.Write([]byte{1})
				}
				acks <- err
			}()
		}
	}()
	defer sink.Close()
	ln := listenLocal(t)
	runForward(t, ln, func(ctx context.Context) (net.Conn, error) {
		return e.tnet.DialContext(ctx, "tcp", e.remoteAddr(9100))
	})
	buf := make([]byte, 128<<10)
	measure := func(n int) int64 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		// Warm up the connection and the pools, then count.
		for range 8 {
			if _, err := c.Write(buf); err != nil {
				t.Fatal(err)
			}
		}
		before := forwardAllocs()
		for sent := 0; sent < n; sent += len(buf) {
			if _, err := c.Write(buf); err != nil {
				t.Fatal(err)
			}
		}
		c.(*net.TCPConn).CloseWrite()
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatalf("ack: %v", err)
		}
		if err := <-acks; err != nil {
			t.Fatal(err)
		}
		return forwardAllocs() - before
	}
	defer func(rate int) { runtime.MemProfileRate = rate }(runtime.MemProfileRate)
	runtime.MemProfileRate = 1
	small := measure(1 << 20)
	large := measure(9 << 20)
	t.Logf("allocations: %d for 1 MiB, %d for 9 MiB", small, large)
	if large > small+50 {
		t.Errorf("forwarding 8 MiB more took %d more allocations in the forward; want at most 50 (none per buffer)", large-small)
	}
}

// forwardAllocs returns the objects allocated so far, as the memory
// profile records them, with a frame of internal/pipe (the forward's copy
// loops, and the tunnel's Write called from them) on their stack. The
// dial's allocations, once per connection, are left out: they vary with
// the tunnel's handshake; so are sync.Pool refills (gVisor's buffer pools
// refilling after the collections this function itself runs).
func forwardAllocs() int64 {
	// The profile is as of the last completed collection cycle.
	runtime.GC()
	runtime.GC()
	var recs []runtime.MemProfileRecord
	n, _ := runtime.MemProfile(nil, true)
	for {
		recs = make([]runtime.MemProfileRecord, n+100)
		var ok bool
		if n, ok = runtime.MemProfile(recs, true); ok {
			recs = recs[:n]
			break
		}
	}
	var total int64
	for _, r := range recs {
		var ours, refill bool
		frames := runtime.CallersFrames(r.Stack())
		for {
			f, more := frames.Next()
			ours = ours || strings.HasPrefix(f.Function, "github.com/wgkit/wgkit/internal/pipe.")
			refill = refill || f.Function == "sync.(*Pool).Get"
			if !more {
				break
			}
		}
		if ours && !refill {
			total += r.AllocObjects
		}
	}
	return total
}
