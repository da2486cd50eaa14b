package wintun

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// The ring's errors, as ring_windows.go maps Wintun's.
var (
	// errEmpty: no packet is waiting (ERROR_NO_MORE_ITEMS).
	errEmpty = errors.New("ring empty")
	// errFull: the send ring has no room for the packet
	// (ERROR_BUFFER_OVERFLOW).
	errFull = errors.New("ring full")
	// errEnded: the session is over, the adapter gone (ERROR_HANDLE_EOF).
	errEnded = errors.New("session ended")
)

// ring is the packet ring of one Wintun session, as Device uses it. Its
// receive side is used by one reader at a time and its send side by one
// writer at a time; the two sides may be used at once, as Wintun allows.
type ring interface {
	// receive returns the next packet the adapter has for the reader,
	// errEmpty when there is none. The slice is the ring's memory: it is
	// valid until release.
	receive() ([]byte, error)
	// release gives a packet from receive back to the ring.
	release(pkt []byte)
	// allocate reserves n bytes for a packet to the adapter, errFull when
	// the ring has no room.
	allocate(n int) ([]byte, error)
	// send hands a packet from allocate to the adapter.
	send(pkt []byte)
	// wait blocks until receive may have a packet or wake is called.
	wait()
	// wake ends a wait in progress, or the next one.
	wake()
	// end ends the session and closes the adapter; no other method is
	// called after it. Wintun removes an adapter when its last handle
	// closes.
	end()
}

// Device is a Wintun adapter as a wireguard-go tun.Device. Read and Write
// may run at the same time, one call of each at a time (as wireguard-go
// calls them); Close may be called at any time from any goroutine.
type Device struct {
	name string
	mtu  int
	luid uint64
	r    ring

	events chan wgtun.Event // closed by Close

	// mu is held shared by Read and Write while they use r, and
	// exclusively by Close to end the session once they have left.
	mu      sync.RWMutex
	closed  atomic.Bool
	dropped atomic.Uint64
}

var _ wgtun.Device = (*Device)(nil)

// newDevice returns the Device of an open ring.
func newDevice(name string, mtu int, luid uint64, r ring) *Device {
	return &Device{name: name, mtu: mtu, luid: luid, r: r, events: make(chan wgtun.Event, 1)}
}

// File returns nil: a Wintun adapter has no file.
func (d *Device) File() *os.File { return nil }

// Name returns the adapter's name, as given to Create.
func (d *Device) Name() (string, error) { return d.name, nil }

// MTU returns the MTU given to Create.
func (d *Device) MTU() (int, error) { return d.mtu, nil }

// LUID returns the adapter's locally unique identifier, the handle of the
// IP helper API.
func (d *Device) LUID() uint64 { return d.luid }

// Events returns the channel of the adapter's events. None is sent (the
// adapter's state is set through the IP helper API); it is closed by
// Close.
func (d *Device) Events() <-chan wgtun.Event { return d.events }

// BatchSize returns 1 (see the package documentation).
func (d *Device) BatchSize() int { return 1 }

// Dropped returns how many packets Read dropped because they did not fit
// its buffer and Write dropped because the send ring was full.
func (d *Device) Dropped() uint64 { return d.dropped.Load() }

// Read reads packets from the adapter into bufs[i][offset:], their
// lengths into sizes, and returns how many it read: at least one, waiting
// for the first, and at most len(bufs), taking only those already in the
// ring after the first. After Close it returns an error wrapping
// os.ErrClosed.
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	n := 0
	for n < len(bufs) {
		if d.closed.Load() {
			break
		}
		pkt, err := d.r.receive()
		switch {
		case err == nil:
			if len(pkt) > len(bufs[n])-offset {
				d.dropped.Add(1)
			} else {
				sizes[n] = copy(bufs[n][offset:], pkt)
				n++
			}
			d.r.release(pkt)
		case errors.Is(err, errEmpty):
			if n > 0 {
				return n, nil
			}
			d.r.wait()
		case errors.Is(err, errEnded):
			return n, fmt.Errorf("wintun: read %s: %w", d.name, os.ErrClosed)
		default:
			return n, fmt.Errorf("wintun: read %s: %w", d.name, err)
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("wintun: read %s: %w", d.name, os.ErrClosed)
	}
	return n, nil
}

// Write writes the packets bufs[i][offset:] to the adapter and returns how
// many it took. A packet that finds the ring full is dropped, as a full
// queue of a kernel TUN drops, and still counts as written. After Close it
// returns an error wrapping os.ErrClosed.
func (d *Device) Write(bufs [][]byte, offset int) (int, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed.Load() {
		return 0, fmt.Errorf("wintun: write %s: %w", d.name, os.ErrClosed)
	}
	for i, buf := range bufs {
		pkt, err := d.r.allocate(len(buf) - offset)
		switch {
		case err == nil:
			copy(pkt, buf[offset:])
			d.r.send(pkt)
		case errors.Is(err, errFull):
			d.dropped.Add(1)
		case errors.Is(err, errEnded):
			return i, fmt.Errorf("wintun: write %s: %w", d.name, os.ErrClosed)
		default:
			return i, fmt.Errorf("wintun: write %s: %w", d.name, err)
		}
	}
	return len(bufs), nil
}

// Close ends the session, which removes the adapter, and closes Events.
// It waits for a Read or Write in progress to return. A second Close
// returns an error wrapping net.ErrClosed.
func (d *Device) Close() error {
	if !d.closed.CompareAndSwap(false, true) {
		return fmt.Errorf("wintun: close %s: %w", d.name, net.ErrClosed)
	}
	// Order: mark closed, wake a waiting Read (it sees closed and
	// returns), wait for Read and Write to leave the ring, end the session.
	d.r.wake()
	d.mu.Lock()
	d.r.end()
	d.mu.Unlock()
	close(d.events)
	return nil
}
