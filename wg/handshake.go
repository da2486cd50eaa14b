package wg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/device"
)

// ErrHandshakeTimeout means that a handshake with a peer did not complete
// in time. It is wrapped by the Err of every [EventHandshakeFailing]
// event, by [Device.WaitHandshake] when its context's deadline passes,
// and by the netstack backend's dial errors when no handshake completed
// with the destination's peer within netstack.Options.HandshakeTimeout.
// The errors wrapping it name the peer's public key and endpoint.
var ErrHandshakeTimeout = errors.New("handshake timeout")

// errNoPeer is wrapped when a method names a peer the device does not have.
var errNoPeer = errors.New("no such peer")

var (
	errClosedWait  = fmt.Errorf("device closed: %w", net.ErrClosed)
	errRemovedWait = errors.New("peer removed")
)

// sessionCurrent reports whether a handshake at t still keys a session:
// the engine uses a session for RejectAfterTime (3 minutes).
func sessionCurrent(t, now time.Time) bool {
	return !t.IsZero() && now.Sub(t) < device.RejectAfterTime
}

// WaitHandshake waits for a handshake with peer to complete and returns
// its time. It returns at once if the last handshake still keys a session
// (it is less than 3 minutes old); otherwise it asks the engine to
// initiate one, unless one is under way, and waits for the first one
// that completes, whoever initiated it. A handshake is seen within about
// 100 ms of the engine completing it. On a kernel engine (NewDeviceEngine)
// the device cannot ask for an initiation (the kernel initiates when
// traffic or a persistent keepalive needs the peer) and sees a handshake
// only at its next read of the engine's state, up to a second later.
//
// It fails when ctx ends, with an error wrapping ctx.Err() (and
// [ErrHandshakeTimeout] too if ctx's deadline passed), when the peer is
// removed, for a peer the device does not have, and after Close (an
// error wrapping net.ErrClosed). The errors name the peer, and when ctx
// ends its endpoint ("none" if unknown). It is safe for concurrent use.
func (d *Device) WaitHandshake(ctx context.Context, peer Key) (time.Time, error) {
	w := d.watch
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return time.Time{}, fmt.Errorf("wg: wait handshake with peer %s: %w", peer, net.ErrClosed)
	}
	p := w.peers[peer]
	if p == nil {
		w.mu.Unlock()
		return time.Time{}, fmt.Errorf("wg: wait handshake with peer %s: %w", peer, errNoPeer)
	}
	if last := p.lastHS; sessionCurrent(last, time.Now()) {
		w.mu.Unlock()
		return last, nil
	}
	if err := ctx.Err(); err != nil {
		ep := p.endpoint
		w.mu.Unlock()
		return time.Time{}, waitCtxError(peer, ep, err)
	}
	c := make(chan error, 1)
	p.waiters = append(p.waiters, c)
	w.mu.Unlock()
	// The handshake may have completed between the last poll and now:
	// read the state at once rather than at the next tick.
	w.poke()
	w.startHandshake(peer)

	select {
	case err := <-c:
		if err != nil {
			return time.Time{}, fmt.Errorf("wg: wait handshake with peer %s: %w", peer, err)
		}
		w.mu.RLock()
		var last time.Time
		if p := w.peers[peer]; p != nil {
			last = p.lastHS
		}
		w.mu.RUnlock()
		return last, nil
	case <-ctx.Done():
		w.mu.Lock()
		var ep netip.AddrPort
		if p := w.peers[peer]; p != nil {
			ep = p.endpoint
			for i, wc := range p.waiters {
				if wc == c {
					p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
					break
				}
			}
		}
		w.mu.Unlock()
		return time.Time{}, waitCtxError(peer, ep, ctx.Err())
	}
}

// waitCtxError is WaitHandshake's error for an ended context.
func waitCtxError(peer Key, ep netip.AddrPort, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("wg: wait handshake with peer %s at %s: %w: %w", peer, endpointString(ep), ErrHandshakeTimeout, err)
	}
	return fmt.Errorf("wg: wait handshake with peer %s at %s: %w", peer, endpointString(ep), err)
}

// LastHandshake returns the time of the last completed handshake with
// peer (the zero Time if none yet) and the peer's current endpoint (zero
// if unknown), as the device last read them from the engine: within about
// 100 ms of a handshake, within a second otherwise. It is cheap (a map
// lookup, no call into the engine), so a backend may call it on every
// dial, and safe for concurrent use. It fails for a peer the device does
// not have and after Close (wrapping net.ErrClosed).
func (d *Device) LastHandshake(peer Key) (time.Time, netip.AddrPort, error) {
	w := d.watch
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return time.Time{}, netip.AddrPort{}, fmt.Errorf("wg: last handshake of peer %s: %w", peer, net.ErrClosed)
	}
	p := w.peers[peer]
	if p == nil {
		return time.Time{}, netip.AddrPort{}, fmt.Errorf("wg: last handshake of peer %s: %w", peer, errNoPeer)
	}
	return p.lastHS, p.endpoint, nil
}

// LastReceive returns when the device last saw the bytes received from
// peer grow (the zero Time if never), to within a second. A backend can
// call [Device.StartHandshake] when it is about to send to a peer it has
// not heard from for a while, so that a peer that restarted (and lost
// its session) is keyed again within one round trip instead of after the
// engine's 15 s. Cheap and safe for concurrent use, like LastHandshake.
func (d *Device) LastReceive(peer Key) (time.Time, error) {
	w := d.watch
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return time.Time{}, fmt.Errorf("wg: last receive of peer %s: %w", peer, net.ErrClosed)
	}
	p := w.peers[peer]
	if p == nil {
		return time.Time{}, fmt.Errorf("wg: last receive of peer %s: %w", peer, errNoPeer)
	}
	return p.lastRx, nil
}

// StartHandshake asks the engine to initiate a handshake with peer now,
// unless it sent an initiation to it in the last 5 s (wireguard-go's
// RekeyTimeout; the engine enforces the same limit), so calling it often
// costs little: it never blocks on the network and sends at most one
// initiation per peer per 5 s. The current session, if any, keeps
// carrying traffic until the new one completes. A peer with no known
// endpoint cannot be contacted: the call then does nothing. It fails for
// a peer the device does not have and after Close (wrapping
// net.ErrClosed). Safe for concurrent use.
//
// The device itself starts a handshake when it is opened and on SetPeer
// for each peer with an endpoint, and when it has sent to a peer for a second
// without hearing back. On a kernel engine (NewDeviceEngine) there is no
// way to ask for an initiation: StartHandshake checks the peer and does
// nothing else.
func (d *Device) StartHandshake(peer Key) error {
	w := d.watch
	w.mu.RLock()
	closed := w.closed
	w.mu.RUnlock()
	if closed {
		return fmt.Errorf("wg: start handshake with peer %s: %w", peer, net.ErrClosed)
	}
	if !w.startHandshake(peer) {
		return fmt.Errorf("wg: start handshake with peer %s: %w", peer, errNoPeer)
	}
	return nil
}
