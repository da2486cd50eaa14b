//go:build windows

package wintun

import (
	"errors"
	"fmt"

	"golang.org/x/sys/windows"
	"golang.zx2c4.com/wintun"
)

// ringCapacity is the size of each of a session's two rings: 8 MiB, as
// wireguard-go's NativeTun asks for (Wintun takes powers of two between
// 128 KiB and 64 MiB).
const ringCapacity = 0x800000

// session is the ring of a real Wintun session.
type session struct {
	adapter  *wintun.Adapter
	s        wintun.Session
	readWait windows.Handle // owned by the session: never closed here
}

var _ ring = (*session)(nil)

// Create creates the Wintun adapter name with the tunnel type tunnelType
// ("" means "WireGuard", wireguard-go's) and the requested GUID (nil: the
// system picks one), and starts its session. mtu is what MTU reports
// (0 means 1420, wireguard-go's default). It needs wintun.dll next to the
// program and Administrator rights.
func Create(name, tunnelType string, guid *windows.GUID, mtu int) (*Device, error) {
	if tunnelType == "" {
		tunnelType = "WireGuard"
	}
	if mtu <= 0 {
		mtu = 1420
	}
	a, err := wintun.CreateAdapter(name, tunnelType, guid)
	if err != nil {
		return nil, fmt.Errorf("wintun: create adapter %s: %w", name, err)
	}
	s, err := a.StartSession(ringCapacity)
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("wintun: start session on %s: %w", name, err)
	}
	r := &session{adapter: a, s: s, readWait: s.ReadWaitEvent()}
	return newDevice(name, mtu, a.LUID(), r), nil
}

func (r *session) receive() ([]byte, error) {
	pkt, err := r.s.ReceivePacket()
	return pkt, ringError(err)
}

func (r *session) release(pkt []byte) { r.s.ReleaseReceivePacket(pkt) }

func (r *session) allocate(n int) ([]byte, error) {
	pkt, err := r.s.AllocateSendPacket(n)
	return pkt, ringError(err)
}

func (r *session) send(pkt []byte) { r.s.SendPacket(pkt) }

// wait waits on the session's read event, which Wintun sets when a packet
// arrives in an empty ring; wake sets it too. It is an auto-reset event:
// a wake before the wait is kept for it.
func (r *session) wait() { windows.WaitForSingleObject(r.readWait, windows.INFINITE) }

func (r *session) wake() { windows.SetEvent(r.readWait) }

// end ends the session and closes the adapter's handle, which removes it.
// WintunCloseAdapter returns nothing, so the wrapper's error is not one.
func (r *session) end() {
	r.s.End()
	r.adapter.Close()
}

// ringError maps Wintun's errors to the ring's.
func ringError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, windows.ERROR_NO_MORE_ITEMS):
		return errEmpty
	case errors.Is(err, windows.ERROR_BUFFER_OVERFLOW):
		return errFull
	case errors.Is(err, windows.ERROR_HANDLE_EOF):
		return errEnded
	case errors.Is(err, windows.ERROR_INVALID_DATA):
		return errors.New("ring corrupt")
	}
	return err
}
