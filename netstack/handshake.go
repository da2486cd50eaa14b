package netstack

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/wgkit/wgkit/wg"
	"golang.zx2c4.com/wireguard/device"
)

// Dials and the peer's handshakes (Options.HandshakeTimeout). TCP says
// nothing while its SYNs go unanswered; WireGuard knows why when no
// handshake completes. A dial watches the handshakes of the peer its
// destination routes to and fails early, naming the peer, when that peer
// completes none.

const (
	// defaultHandshakeTimeout is Options.HandshakeTimeout's default.
	defaultHandshakeTimeout = 20 * time.Second

	// dialQuiet is how long a peer may have sent nothing (no handshake,
	// no data) before a dial asks for a handshake as it starts: a peer
	// with a session answers data within wireguard-go's KeepaliveTimeout
	// (10 s), so longer silence means it may have restarted and lost
	// the session.
	dialQuiet = device.KeepaliveTimeout

	// dialNudgeAfter is how long a TCP dial may wait before it asks for a
	// handshake whatever the peer's state: a restarted peer drops what we
	// send with the old session, and a new one keyed by the time TCP
	// resends its SYN (after 1 s) connects within the second.
	dialNudgeAfter = 500 * time.Millisecond

	// dialNudgeEvery is how often a waiting dial asks again, so that an
	// initiation goes out soon after WireGuard allows one. The device and
	// the engine send at most one per peer per device.RekeyTimeout (5 s),
	// so asking often costs nothing more than a map lookup.
	dialNudgeEvery = 250 * time.Millisecond
)

// nudgeHandshake asks the device for a handshake with peer if it has been
// quiet for dialQuiet.
func (n *Net) nudgeHandshake(peer wg.Key) {
	last, _, err := n.dev.LastHandshake(peer)
	if err != nil {
		return // removed meanwhile, or closed: the dial finds out
	}
	if rx, err := n.dev.LastReceive(peer); err == nil && rx.After(last) {
		last = rx
	}
	if time.Since(last) >= dialQuiet {
		n.dev.StartHandshake(peer)
	}
}

// handshakeCheck follows one TCP dial's peer.
type handshakeCheck struct {
	n       *Net
	peer    wg.Key
	start   time.Time
	timeout time.Duration
}

// newHandshakeCheck returns the check for a dial to ip that starts now,
// having asked for a handshake if the peer has been quiet, or nil if the
// check is off or ip is none of the peers' (one of the tunnel's own
// addresses).
func (n *Net) newHandshakeCheck(ip netip.Addr) *handshakeCheck {
	if n.handshakeTimeout <= 0 {
		return nil
	}
	peer, ok := n.dev.PeerFor(ip)
	if !ok {
		return nil
	}
	n.nudgeHandshake(peer)
	return &handshakeCheck{n: n, peer: peer, start: time.Now(), timeout: n.handshakeTimeout}
}

// first is the delay until the first step.
func (h *handshakeCheck) first() time.Duration { return min(dialNudgeAfter, h.timeout) }

// step checks the peer at now, a while into the dial. It returns the
// dial's error if the peer has completed no handshake in time, else the
// delay until the next step, 0 meaning no more steps: a handshake since
// the dial began shows that the peer answers, and the dial's fate is
// TCP's again.
//
// The time allowed runs from the dial's start, or, if the peer completed
// a handshake in the RekeyTimeout before it, from when WireGuard allows a
// new initiation: only then can a handshake that proves the peer alive be
// asked for. Meanwhile every step asks for one.
func (h *handshakeCheck) step(now time.Time) (time.Duration, error) {
	last, ep, err := h.n.dev.LastHandshake(h.peer)
	if err != nil || last.After(h.start) {
		return 0, nil // removed or closed (the dial finds out), or alive
	}
	from := h.start
	if t := last.Add(device.RekeyTimeout); t.After(from) {
		from = t
	}
	deadline := from.Add(h.timeout)
	if !now.Before(deadline) {
		return 0, &handshakeTimeoutError{peer: h.peer, endpoint: ep, waited: now.Sub(h.start)}
	}
	h.n.dev.StartHandshake(h.peer)
	return min(dialNudgeEvery, deadline.Sub(now)), nil
}

// handshakeTimeoutError is the error of a dial whose peer completed no
// handshake in time. It wraps wg.ErrHandshakeTimeout and is a timeout
// (net.Error), as TCP's own connection timeout would be.
type handshakeTimeoutError struct {
	peer     wg.Key
	endpoint netip.AddrPort
	waited   time.Duration
}

func (e *handshakeTimeoutError) Error() string {
	ep := "no known endpoint"
	if e.endpoint.IsValid() {
		ep = "endpoint " + e.endpoint.String()
	}
	return fmt.Sprintf("netstack: %v: no handshake with peer %s (%s) in the %v since the dial began",
		wg.ErrHandshakeTimeout, e.peer, ep, e.waited.Round(100*time.Millisecond))
}

func (e *handshakeTimeoutError) Unwrap() error { return wg.ErrHandshakeTimeout }

// Timeout reports true: the dial timed out (see net.Error).
func (e *handshakeTimeoutError) Timeout() bool { return true }
