package netstack

import (
	"errors"
	"net"
	"testing"
	"time"
)

// TestUDPWriteWaitsForLinkQueue fills the link's queue to the engine (no
// engine reads it here) from a UDP conn whose send buffer is larger than
// the queue, and checks that the link pushes back instead of dropping:
// Write waits, within its deadline, until the engine takes packets, and
// Close ends the wait.
func TestUDPWriteWaitsForLinkQueue(t *testing.T) {
	n, dev := newLinkTest(t)
	c := linkUDPConn(t, n, linkPeer4)
	// Room for more than the queue's bound of 1200-byte datagrams, so
	// that the queue, not the send buffer, is what fills.
	if err := c.SetWriteBuffer(maxUDPBuffer); err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, 1200)
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	for i := range maxQueuedPackets {
		if _, err := c.Write(msg); err != nil {
			t.Fatalf("Write %d of %d into an unfull queue: %v", i+1, maxQueuedPackets, err)
		}
	}

	c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := c.Write(msg); !isTimeout(err) {
		t.Errorf("Write into a full queue: %v, want a timeout after waiting", err)
	}
	if d := n.ep.dropped.Load(); d == 0 {
		t.Error("the full queue refused no packet: the test did not fill it")
	}

	c.SetWriteDeadline(time.Time{})
	written := make(chan error, 1)
	go func() { _, err := c.Write(msg); written <- err }()
	select {
	case err := <-written:
		t.Fatalf("Write into a full queue returned %v before the engine took anything", err)
	case <-time.After(50 * time.Millisecond):
	}
	// The engine takes one packet: the waiting Write goes in.
	bufs, sizes := [][]byte{make([]byte, 1500)}, []int{0}
	if k, err := dev.Read(bufs, sizes, 0); err != nil || k != 1 {
		t.Fatalf("engine Read = %d, %v; want 1 packet", k, err)
	}
	select {
	case err := <-written:
		if err != nil {
			t.Errorf("Write after the engine took a packet: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Write still waits after the engine took a packet")
	}
	n.ep.qmu.Lock()
	queued := len(n.ep.queue)
	n.ep.qmu.Unlock()
	if queued != maxQueuedPackets {
		t.Errorf("queue holds %d packets, want the bound %d", queued, maxQueuedPackets)
	}

	go func() { _, err := c.Write(msg); written <- err }()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	select {
	case err := <-written:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Write waiting at Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end a Write waiting for the queue")
	}
}
