package wg

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/wgkit/wgkit/internal/engine"
)

// Endpoint re-resolution (dynamic DNS), as wireguard-tools'
// reresolve-dns.sh does it: a peer configured with a host name is
// resolved again when no handshake has completed for 135 s
// (watchTiming.reresolve) while the engine is trying to make one, and,
// with DeviceOptions.ReresolveInterval, at that interval while no
// handshake succeeds. Every address of the answer, IPv4 first, is tried
// in turn for watchTiming.tryWait each until a handshake completes. A
// peer whose handshakes succeed is never moved, so an endpoint it roamed
// to on its own is kept.

// resolveTimeout bounds one re-resolution.
const resolveTimeout = 10 * time.Second

// reresolveState is the re-resolution state of one peer; guarded by
// watcher.mu.
type reresolveState struct {
	host      string    // the configured host name; "" for none or an IP literal
	port      uint16    // the configured port
	since     time.Time // last resolution (or configuration): 135 s count from here too
	resolving bool      // a resolver goroutine runs for this peer
	trying    []netip.AddrPort
	tryIdx    int
	tryAt     time.Time
}

// resolveJob is work for runResolves: resolve host (set == false) or
// move the peer to addr and initiate (set == true).
type resolveJob struct {
	peer     Key
	host     string
	port     uint16
	periodic bool
	set      bool
	addr     netip.AddrPort
}

// rrAddedLocked parses the configured endpoint of a new or changed peer.
func (w *watcher) rrAddedLocked(p *peerWatch, now time.Time) {
	p.rr = reresolveState{since: now}
	host, portStr, err := net.SplitHostPort(p.configured)
	if err != nil || host == "" {
		return
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return // a literal: nothing to resolve
	}
	port, err := net.LookupPort("udp", portStr)
	if err != nil {
		return // SetPeer already refused it; keep what the engine has
	}
	p.rr.host, p.rr.port = host, uint16(port)
}

// rrHandshakeLocked ends a series of tries: the current address works
// (a handshake completed or the peer's packets arrive).
func (w *watcher) rrHandshakeLocked(p *peerWatch) {
	p.rr.trying = nil
}

// reresolveLocked returns the re-resolution work due at now.
func (w *watcher) reresolveLocked(now time.Time) []resolveJob {
	var jobs []resolveJob
	interval := w.d.reresolveInterval
	for k, p := range w.peers {
		rr := &p.rr
		if rr.host == "" || rr.resolving {
			continue
		}
		if rr.trying != nil {
			if now.Sub(rr.tryAt) < w.timing.tryWait {
				continue
			}
			rr.tryIdx++
			if rr.tryIdx >= len(rr.trying) {
				rr.trying = nil
				rr.since = now
				continue
			}
			rr.tryAt = now
			jobs = append(jobs, resolveJob{peer: k, set: true, addr: rr.trying[rr.tryIdx]})
			continue
		}
		failing := now.Sub(latest(p.lastHS, rr.since)) >= w.timing.reresolve
		// Wanted: an initiation went unanswered, or the device has sent
		// for timing.quiet without hearing back. Not merely an old
		// handshake: an idle tunnel needs none.
		wanted := p.attempts > 0 || (!p.unanswered.IsZero() && now.Sub(p.unanswered) >= w.timing.quiet)
		periodic := interval > 0 && now.Sub(rr.since) >= interval && now.Sub(p.lastHS) >= w.timing.reresolve
		if (failing && wanted) || periodic {
			rr.resolving = true
			jobs = append(jobs, resolveJob{peer: k, host: rr.host, port: rr.port, periodic: !(failing && wanted)})
		}
	}
	return jobs
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// runResolves starts the jobs; each resolution runs on its own goroutine
// (one per peer at most), ended by stop through w.done.
func (w *watcher) runResolves(jobs []resolveJob) {
	for _, j := range jobs {
		if j.set {
			w.moveTo(j.peer, j.addr)
			continue
		}
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.resolve(j)
		}()
	}
}

func (w *watcher) resolve(j resolveJob) {
	ctx, cancel := context.WithTimeout(w.ctx, resolveTimeout)
	defer cancel()
	ips, err := w.d.resolver.LookupNetIP(ctx, "ip", j.host)
	addrs := make([]netip.AddrPort, 0, len(ips))
	for _, ip := range ips {
		addrs = append(addrs, netip.AddrPortFrom(ip.Unmap(), j.port))
	}
	// IPv4 first, as the initial resolution prefers it; stable otherwise.
	slices.SortStableFunc(addrs, func(a, b netip.AddrPort) int {
		switch {
		case a.Addr().Is4() == b.Addr().Is4():
			return 0
		case a.Addr().Is4():
			return -1
		}
		return 1
	})
	addrs = slices.Compact(addrs)
	now := time.Now()
	w.mu.Lock()
	p := w.peers[j.peer]
	if w.closed || p == nil || p.rr.host != j.host {
		if p != nil {
			p.rr.resolving = false
		}
		w.mu.Unlock()
		return
	}
	p.rr.resolving = false
	p.rr.since = now
	if err == nil && len(addrs) == 0 {
		err = &net.DNSError{Err: "no addresses", Name: j.host, IsNotFound: true}
	}
	if err != nil {
		w.mu.Unlock()
		w.d.log.Warn("wg: re-resolve endpoint", "peer", j.peer.String(), "host", j.host, "err", err)
		return
	}
	if j.periodic && slices.Contains(addrs, p.endpoint) {
		w.mu.Unlock()
		return // still one of the name's addresses
	}
	if now.Sub(p.lastHS) < w.timing.reresolve {
		w.mu.Unlock()
		return // a handshake completed meanwhile: keep the endpoint that works
	}
	// Try the current endpoint last: it is the one that stopped answering.
	if i := slices.Index(addrs, p.endpoint); i >= 0 && len(addrs) > 1 {
		addrs = append(slices.Delete(addrs, i, i+1), p.endpoint)
	}
	p.rr.trying, p.rr.tryIdx, p.rr.tryAt = addrs, 0, now
	w.mu.Unlock()
	w.moveTo(j.peer, addrs[0])
}

// moveTo sets the engine's endpoint of peer to addr, unless the peer is
// gone, and initiates a handshake there.
func (w *watcher) moveTo(peer Key, addr netip.AddrPort) {
	c := &engine.Config{Peers: []engine.PeerConfig{{PublicKey: engine.Key(peer), UpdateOnly: true, Endpoint: addr}}}
	if err := w.d.eng.Configure(c); err != nil {
		w.d.log.Warn("wg: re-resolve endpoint: set", "peer", peer.String(), "endpoint", addr.String(), "err", err)
		return
	}
	w.mu.Lock()
	if p := w.peers[peer]; p != nil {
		// Let the new address have its own initiation now.
		p.initiated = time.Time{}
	}
	w.mu.Unlock()
	w.poke()
	w.startHandshake(peer)
}
