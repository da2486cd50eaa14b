package netstack

import (
	"fmt"
	"net"
	"os"
	"sync"

	"golang.zx2c4.com/wireguard/tun"
)

// tunDevice is the tun.Device the wireguard-go engine runs on: its Read
// returns what the gVisor stack sends, and its Write feeds the stack. It
// is wgkit's own implementation over endpoint (link.go).
type tunDevice struct {
	ep     *endpoint
	mtu    int
	name   string
	events chan tun.Event

	closeOnce sync.Once
}

var _ tun.Device = (*tunDevice)(nil)

// newTUNDevice returns a device over ep that reports EventUp once, so the
// engine brings itself up as soon as it starts.
func newTUNDevice(ep *endpoint, mtu int, name string) *tunDevice {
	t := &tunDevice{ep: ep, mtu: mtu, name: name, events: make(chan tun.Event, 1)}
	t.events <- tun.EventUp
	return t
}

// File implements tun.Device; there is no file descriptor.
func (*tunDevice) File() *os.File { return nil }

// Read implements tun.Device. It blocks until the stack has sent at least
// one packet and returns up to len(bufs) of them.
func (t *tunDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	return t.ep.readBatch(bufs, sizes, offset)
}

// Write implements tun.Device, delivering a batch of packets to the stack.
func (t *tunDevice) Write(bufs [][]byte, offset int) (int, error) {
	return t.ep.deliverBatch(bufs, offset)
}

// MTU implements tun.Device.
func (t *tunDevice) MTU() (int, error) { return t.mtu, nil }

// Name implements tun.Device.
func (t *tunDevice) Name() (string, error) { return t.name, nil }

// Events implements tun.Device.
func (t *tunDevice) Events() <-chan tun.Event { return t.events }

// BatchSize implements tun.Device.
func (t *tunDevice) BatchSize() int { return t.ep.batch }

// Close implements tun.Device. It stops the link in both directions and
// closes the event channel; the gVisor stack itself is closed by Net.Close.
// A second call returns an error wrapping net.ErrClosed.
func (t *tunDevice) Close() error {
	closed := false
	t.closeOnce.Do(func() {
		closed = true
		t.ep.closeQueue()
		close(t.events)
	})
	if !closed {
		return fmt.Errorf("netstack: tun device: %w", net.ErrClosed)
	}
	return nil
}
