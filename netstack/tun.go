package netstack

import (
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/tun"
)

// tunDevice is the tun.Device the wireguard-go engine runs on: its Read
// returns what the gVisor stack sends, and its Write feeds the stack. It
// is wgkit's own implementation over endpoint (link.go).
type tunDevice struct {
	ep     *endpoint
	mtu    int
	name   func() string // see defaultName
	events chan tun.Event

	mu      sync.Mutex
	closed  bool   // guarded by mu
	onClose func() // guarded by mu; see setOnClose

	// wmu is held shared by Write while it delivers to the stack and
	// exclusively by Close to set stopped, so that once Close has the
	// lock no delivery is in progress or starts: the close hook may then
	// close the stack under the engine's feet.
	wmu     sync.RWMutex
	stopped bool // guarded by wmu

	// outTimer is Read's timer for waiting on ep.outflight; the engine
	// calls Read from one goroutine.
	outTimer *time.Timer
}

var _ tun.Device = (*tunDevice)(nil)

// newTUNDevice returns a device over ep that reports EventUp once, so the
// engine brings itself up as soon as it starts.
func newTUNDevice(ep *endpoint, mtu int, name func() string) *tunDevice {
	t := &tunDevice{ep: ep, mtu: mtu, name: name, events: make(chan tun.Event, 1)}
	t.events <- tun.EventUp
	return t
}

// File implements tun.Device; there is no file descriptor.
func (*tunDevice) File() *os.File { return nil }

// Read implements tun.Device. It blocks until the stack has sent at least
// one packet and returns up to len(bufs) of them.
//
// With the Net's default Bind, Read counts the packets it returns and
// waits, before returning, while maxOutflightPackets are inside the
// engine; meanwhile the stack's packets wait in the link's queue.
func (t *tunDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := t.ep.readBatch(bufs, sizes, offset)
	if out := t.ep.outflight; out != nil && n > 0 {
		if t.outTimer == nil {
			// The engine reads from one goroutine; rmu would not be
			// held here, so the timer is guarded by that alone.
			t.outTimer = time.NewTimer(time.Hour)
			t.outTimer.Stop()
		}
		out.acquire(n, t.outTimer)
	}
	return n, err
}

// Write implements tun.Device, delivering a batch of packets to the stack.
func (t *tunDevice) Write(bufs [][]byte, offset int) (int, error) {
	t.wmu.RLock()
	defer t.wmu.RUnlock()
	if t.stopped {
		return 0, os.ErrClosed
	}
	return t.ep.deliverBatch(bufs, offset)
}

// MTU implements tun.Device.
func (t *tunDevice) MTU() (int, error) { return t.mtu, nil }

// Name implements tun.Device.
func (t *tunDevice) Name() (string, error) { return t.name(), nil }

// Events implements tun.Device.
func (t *tunDevice) Events() <-chan tun.Event { return t.events }

// BatchSize implements tun.Device.
func (t *tunDevice) BatchSize() int { return t.ep.batch }

// setOnClose makes Close call f once the link is stopped. The engine
// closes its tun.Device whenever the wg.Device closes, also when the user
// closes Net.Device() directly; f is how the Net learns of it. It reports
// false, and keeps nothing, if the device is closed already.
func (t *tunDevice) setOnClose(f func()) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.onClose = f
	return true
}

// Close implements tun.Device. It stops the link in both directions,
// waits for a delivery to the stack in progress, closes the event channel
// and then calls the hook set by setOnClose. The engine calls it while
// closing, with its own locks held, so the hook must not call into the
// engine. A second call returns an error wrapping net.ErrClosed.
func (t *tunDevice) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return fmt.Errorf("netstack: tun device: %w", net.ErrClosed)
	}
	t.closed = true
	onClose := t.onClose
	t.onClose = nil
	t.mu.Unlock()

	t.ep.closeQueue()
	t.wmu.Lock()
	t.stopped = true
	t.wmu.Unlock()
	close(t.events)
	if onClose != nil {
		onClose()
	}
	return nil
}
