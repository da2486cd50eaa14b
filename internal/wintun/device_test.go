package wintun

import (
	"bytes"
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// memRing is a ring in memory: the adapter's packets to the reader in in,
// the writer's packets in out (at most room of them), and wait and wake
// over a channel that keeps one wake-up, as Wintun's auto-reset event does.
type memRing struct {
	mu     sync.Mutex
	in     [][]byte
	inErr  error // returned by receive once in is empty, if set
	out    [][]byte
	room   int
	outErr error
	held   int // packets received and not yet released
	ended  int
	wakeup chan struct{}
}

func newMemRing(room int) *memRing { return &memRing{room: room, wakeup: make(chan struct{}, 1)} }

func (r *memRing) push(pkts ...[]byte) {
	r.mu.Lock()
	r.in = append(r.in, pkts...)
	r.mu.Unlock()
	r.wake()
}

func (r *memRing) receive() ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.in) == 0 {
		if r.inErr != nil {
			return nil, r.inErr
		}
		return nil, errEmpty
	}
	p := r.in[0]
	r.in = r.in[1:]
	r.held++
	return p, nil
}

func (r *memRing) release([]byte) {
	r.mu.Lock()
	r.held--
	r.mu.Unlock()
}

func (r *memRing) allocate(n int) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.outErr != nil {
		return nil, r.outErr
	}
	if len(r.out) >= r.room {
		return nil, errFull
	}
	return make([]byte, n), nil
}

func (r *memRing) send(pkt []byte) {
	r.mu.Lock()
	r.out = append(r.out, pkt)
	r.mu.Unlock()
}

func (r *memRing) wait() { <-r.wakeup }

func (r *memRing) wake() {
	select {
	case r.wakeup <- struct{}{}:
	default:
	}
}

func (r *memRing) end() {
	r.mu.Lock()
	r.ended++
	r.mu.Unlock()
}

func bufs(n, size int) ([][]byte, []int) {
	b := make([][]byte, n)
	for i := range b {
		b[i] = make([]byte, size)
	}
	return b, make([]int, n)
}

func TestReadBatch(t *testing.T) {
	r := newMemRing(0)
	d := newDevice("t", 1420, 7, r)
	defer d.Close()
	r.push([]byte("one"), []byte("two"), []byte("three"))
	b, sizes := bufs(2, 32)
	const off = 16
	n, err := d.Read(b, sizes, off)
	if err != nil || n != 2 {
		t.Fatalf("Read = %d, %v; want 2 packets", n, err)
	}
	if got := string(b[0][off : off+sizes[0]]); got != "one" {
		t.Errorf("first packet %q, want %q", got, "one")
	}
	if got := string(b[1][off : off+sizes[1]]); got != "two" {
		t.Errorf("second packet %q, want %q", got, "two")
	}
	// Only what is already in the ring joins a batch: one packet now.
	n, err = d.Read(b, sizes, off)
	if err != nil || n != 1 || string(b[0][off:off+sizes[0]]) != "three" {
		t.Fatalf("second Read = %d, %v, %q; want the third packet alone", n, err, b[0][off:off+sizes[0]])
	}
	if r.held != 0 {
		t.Errorf("%d packets not released to the ring", r.held)
	}
}

func TestReadDropsOversized(t *testing.T) {
	r := newMemRing(0)
	d := newDevice("t", 1420, 0, r)
	defer d.Close()
	r.push(bytes.Repeat([]byte{1}, 40), []byte("fits"))
	b, sizes := bufs(1, 20)
	n, err := d.Read(b, sizes, 4)
	if err != nil || n != 1 || string(b[0][4:4+sizes[0]]) != "fits" {
		t.Fatalf("Read = %d, %v; want only the packet that fits", n, err)
	}
	if d.Dropped() != 1 || r.held != 0 {
		t.Errorf("Dropped() = %d, held %d; want 1 dropped, none held", d.Dropped(), r.held)
	}
}

func TestReadWaitsForPacket(t *testing.T) {
	r := newMemRing(0)
	d := newDevice("t", 1420, 0, r)
	defer d.Close()
	done := make(chan int, 1)
	go func() {
		b, sizes := bufs(4, 64)
		n, err := d.Read(b, sizes, 0)
		if err != nil {
			t.Error(err)
		}
		done <- n
	}()
	select {
	case n := <-done:
		t.Fatalf("Read returned %d packets from an empty ring", n)
	case <-time.After(20 * time.Millisecond):
	}
	r.push([]byte("late"))
	select {
	case n := <-done:
		if n != 1 {
			t.Errorf("Read = %d packets, want 1", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read did not return after a packet arrived")
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	r := newMemRing(0)
	d := newDevice("t", 1420, 0, r)
	done := make(chan error, 1)
	go func() {
		b, sizes := bufs(1, 64)
		_, err := d.Read(b, sizes, 0)
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Read after Close = %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
	if r.ended != 1 {
		t.Errorf("session ended %d times, want 1", r.ended)
	}
	if err := d.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
	if r.ended != 1 {
		t.Errorf("second Close ended the session again (%d)", r.ended)
	}
	if _, ok := <-d.Events(); ok {
		t.Error("Events not closed by Close")
	}
	if _, err := d.Write([][]byte{[]byte("x")}, 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write after Close = %v, want os.ErrClosed", err)
	}
	b, sizes := bufs(1, 8)
	if _, err := d.Read(b, sizes, 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read after Close = %v, want os.ErrClosed", err)
	}
}

func TestReadErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		closed bool
	}{
		{"ended", errEnded, true},
		{"corrupt", errors.New("ring corrupt"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newMemRing(0)
			r.inErr = tc.err
			d := newDevice("t", 1420, 0, r)
			defer d.Close()
			b, sizes := bufs(1, 8)
			_, err := d.Read(b, sizes, 0)
			if tc.closed && !errors.Is(err, os.ErrClosed) {
				t.Errorf("Read = %v, want os.ErrClosed", err)
			}
			if !tc.closed && (!errors.Is(err, tc.err) || errors.Is(err, os.ErrClosed)) {
				t.Errorf("Read = %v, want it to wrap %v", err, tc.err)
			}
		})
	}
}

func TestWrite(t *testing.T) {
	r := newMemRing(2)
	d := newDevice("t", 1420, 0, r)
	defer d.Close()
	pkts := [][]byte{[]byte("hdr|a"), []byte("hdr|bb"), []byte("hdr|ccc")}
	n, err := d.Write(pkts, 4)
	if err != nil || n != 3 {
		t.Fatalf("Write = %d, %v; want all 3 taken", n, err)
	}
	if len(r.out) != 2 || string(r.out[0]) != "a" || string(r.out[1]) != "bb" {
		t.Errorf("ring holds %q, want [a bb] without the offset", r.out)
	}
	if d.Dropped() != 1 {
		t.Errorf("Dropped() = %d, want 1 (the ring had room for 2)", d.Dropped())
	}
	r.outErr = errEnded
	if n, err := d.Write(pkts, 4); n != 0 || !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write on an ended session = %d, %v; want 0, os.ErrClosed", n, err)
	}
}

// TestCloseDuringTraffic runs Read and Write while Close comes: under
// -race it checks that Close waits for both to leave the ring.
func TestCloseDuringTraffic(t *testing.T) {
	r := newMemRing(1 << 20)
	d := newDevice("t", 1420, 0, r)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		b, sizes := bufs(1, 64)
		for i := 0; i < 100000; i++ {
			r.push([]byte("p"))
			if _, err := d.Read(b, sizes, 0); err != nil {
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < 100000; i++ {
			if _, err := d.Write([][]byte{[]byte("q")}, 0); err != nil {
				return
			}
		}
	}()
	time.Sleep(5 * time.Millisecond)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended != 1 || r.held != 0 {
		t.Errorf("ended %d, held %d; want the session ended once with nothing held", r.ended, r.held)
	}
}
