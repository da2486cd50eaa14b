package netstack

import (
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
		f := newInflight()
		f.acquire(maxInflightPackets, timer)
		done := acquireAsync(f, 1)
		if !waits(done) {
			t.Fatal("acquire beyond the bound did not wait")
		}
		f.release(1)
		gets(t, done, "after a release")
	})
	t.Run("a batch larger than the bound passes alone", func(t *testing.T) {
		f := newInflight()
		gets(t, acquireAsync(f, 2*maxInflightPackets), "an empty count")
		done := acquireAsync(f, 1)
		if !waits(done) {
			t.Fatal("acquire after an oversized batch did not wait")
		}
		f.release(2 * maxInflightPackets)
		gets(t, done, "after the release")
	})
	t.Run("close ends the wait, open counts afresh", func(t *testing.T) {
		f := newInflight()
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
		f := newInflight()
		f.acquire(maxInflightPackets, timer) // never released: lost in the engine
		start := time.Now()
		gets(t, acquireAsync(f, 1), "after the leak timeout")
		if d := time.Since(start); d < inflightLeakTimeout {
			t.Errorf("acquire returned after %v, before the leak timeout %v", d, inflightLeakTimeout)
		}
	})
}
