package wg

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/device"
)

// The watcher follows the engine without changing it. Two sources:
//
//   - the engine's own log calls, which it makes at every handshake step
//     ("Sending handshake initiation", "Received handshake response",
//     "Handshake did not complete ... retrying") with the *device.Peer as
//     argument. The
//     engineLogger hook turns them into notes on a bounded channel
//     without blocking the engine's goroutine; the format string is
//     compared, never formatted, so this costs nothing per data packet.
//   - the engine's state (IpcGet), read at once after a handshake note
//     and then a few times more in the following second (the responder
//     completes only when the first data packet arrives), and otherwise
//     every watchTiming.poll, for roaming, idle peers, counters and
//     re-resolution.
//
// On an engine other than wireguard-go there are no notes: the state is
// read every watchTiming.poll only, so handshakes are seen up to that late,
// and failing handshakes (known only from the notes) are not reported.
//
// It emits Events, answers WaitHandshake and LastHandshake, starts
// handshakes for peers that stopped answering, and re-resolves host
// names (reresolve.go). It never takes Device.mu; Device methods holding
// Device.mu call into it (w.mu is taken after Device.mu, never before).

// watchTiming holds the watcher's intervals; tests shorten them.
type watchTiming struct {
	poll      time.Duration // state read when nothing happens
	idle      time.Duration // no handshake for this long: EventPeerIdle
	quiet     time.Duration // sent for this long without hearing back: new handshake
	reresolve time.Duration // no handshake for this long while wanted: resolve again
	tryWait   time.Duration // per resolved address before trying the next
}

func defaultWatchTiming() watchTiming {
	return watchTiming{
		poll:      time.Second,
		idle:      device.RejectAfterTime,
		quiet:     900 * time.Millisecond, // a poll interval, less room for timer jitter
		reresolve: 135 * time.Second,      // wireguard-tools' reresolve-dns.sh
		tryWait:   device.RekeyTimeout + time.Second,
	}
}

// hotPolls are the delays after a handshake note at which the state is
// read: the engine completes an initiated handshake within microseconds
// of "Received handshake response", a responded one when the first data
// packet arrives, one round trip after "Sending handshake response".
// Read only.
var hotPolls = [...]time.Duration{
	2 * time.Millisecond, 10 * time.Millisecond, 30 * time.Millisecond, 60 * time.Millisecond,
	100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
}

// noteLen bounds the engine notes waiting for the watcher. Notes come at
// handshake rate (the engine sends at most one initiation per peer every
// 5 s); when the channel is full a note is dropped and the next poll
// still sees the state.
const noteLen = 256

type noteKind int

const (
	noteInitiation noteKind = iota + 1 // we sent an initiation
	noteResponse                       // we received a response
	noteResponded                      // we sent a response
	noteRetry                          // an attempt failed
	noteGiveUp                         // the last attempt failed
)

type engineNote struct {
	kind noteKind
	peer *device.Peer
	at   time.Time
}

// peerWatch is what the watcher knows of one peer.
type peerWatch struct {
	ptr        *device.Peer // the engine's peer, key of watcher.byPtr
	endpoint   netip.AddrPort
	configured string // Endpoint as configured ("" or host:port, maybe a name)
	lastHS     time.Time
	rx, tx     uint64
	lastRx     time.Time // when rx was last seen to grow
	unanswered time.Time // first poll that saw tx grow since rx last did; zero if answered
	initiated  time.Time // last initiation sent
	attempts   int       // failed attempts since the last completed handshake
	idle       bool      // EventPeerIdle reported for this session
	waiters    []chan error

	// Counters for PeerStatus, from when the device saw the peer first.
	nInitiations, nFailures, nEndpointChanges uint64
	initsAtPoll                               uint64 // nInitiations at the last poll

	rr reresolveState // reresolve.go
}

type watcher struct {
	d      *Device
	engine *device.Device // wireguard-go, for its peers and initiations; nil on other engines
	events *eventQueue
	timing watchTiming

	ctx       context.Context // ended by stop: bounds the resolvers
	cancel    context.CancelFunc
	notes     chan engineNote
	kick      chan struct{} // capacity 1: read the state now
	done      chan struct{}
	wg        sync.WaitGroup // run and the resolvers (reresolve.go)
	lostNotes atomic.Uint64
	polls     atomic.Uint64 // reads of the engine's state, for tests

	mu      sync.RWMutex
	closed  bool                          // guarded by mu
	gen     uint64                        // peer set changes by Device methods; guarded by mu
	peers   map[Key]*peerWatch            // guarded by mu
	byPtr   map[*device.Peer]Key          // the engine's peers; guarded by mu
	unknown map[*device.Peer][]engineNote // notes for a peer not yet in byPtr; guarded by mu
	// ptrGen is the Device's routeGen when poll last looked up every
	// peer's pointer: the engine makes new peers only when told to,
	// through the Device (whose hooks look the new pointer up) or
	// wg(8) (which bumps routeGen), so a poll looks them all up again
	// only after the latter. Guarded by mu.
	ptrGen uint64
}

func newWatcher(d *Device, events *eventQueue, t watchTiming) *watcher {
	ctx, cancel := context.WithCancel(context.Background())
	return &watcher{
		ctx:     ctx,
		cancel:  cancel,
		d:       d,
		events:  events,
		timing:  t,
		notes:   make(chan engineNote, noteLen),
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		peers:   make(map[Key]*peerWatch),
		byPtr:   make(map[*device.Peer]Key),
		unknown: make(map[*device.Peer][]engineNote),
	}
}

// engineLog is called for each of the engine's verbose log calls, on the
// engine's goroutines, possibly under its locks: it must not block.
func (w *watcher) engineLog(format string, args []any) {
	var k noteKind
	switch format {
	case "%v - Sending handshake initiation":
		k = noteInitiation
	case "%v - Received handshake response":
		k = noteResponse
	case "%v - Sending handshake response":
		k = noteResponded
	case "%s - Handshake did not complete after %d seconds, retrying (try %d)":
		k = noteRetry
	case "%s - Handshake did not complete after %d attempts, giving up":
		k = noteGiveUp
	default:
		return
	}
	n := engineNote{kind: k, at: time.Now()}
	if len(args) > 0 {
		n.peer, _ = args[0].(*device.Peer)
	}
	if n.peer == nil {
		return
	}
	select {
	case w.notes <- n:
	default:
		w.lostNotes.Add(1)
	}
}

// start begins watching, first sending an initiation to each of
// initiate; the engine must be up.
func (w *watcher) start(initiate []Key) {
	w.wg.Add(1)
	go w.run(initiate)
}

// stop ends the watcher and its resolvers and fails every waiter.
func (w *watcher) stop() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	close(w.done)
	w.cancel()
	for _, p := range w.peers {
		failWaiters(p, errClosedWait)
	}
	w.mu.Unlock()
	w.wg.Wait()
}

func (w *watcher) poke() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *watcher) run(initiate []Key) {
	defer w.wg.Done()
	for _, k := range initiate {
		select {
		case <-w.done:
			return
		default:
		}
		w.startHandshake(k)
		w.drainNotes() // keep the notes channel from filling up
	}
	tick := time.NewTicker(w.timing.poll)
	defer tick.Stop()
	hot := time.NewTimer(time.Hour)
	hot.Stop()
	defer hot.Stop()
	hotIdx := len(hotPolls) // no hot series running
	var hotStart time.Time
	startHot := func() {
		if hotIdx < len(hotPolls) {
			// Already running: restart the series from its second step
			// so that the latest note gets its full second.
			hotIdx = 1
			hotStart = time.Now()
			return
		}
		hotIdx, hotStart = 0, time.Now()
		hot.Reset(hotPolls[0])
	}
	// Pacing: a poll costs in proportion to the number of peers (one
	// IpcGet of all of them: 4 to 8 µs per peer, BenchmarkWatchPoll), so
	// polls are kept at least paceFactor times their own duration apart:
	// a device with a few peers polls freely after a handshake, one with
	// 20 000 spends at most about a tenth of a core while handshakes come
	// and reports them later.
	pace := time.NewTimer(time.Hour)
	pace.Stop()
	defer pace.Stop()
	pacing := false
	var lastEnd time.Time
	var lastDur time.Duration
	poll := func() {
		if pacing {
			return // a paced poll is due anyway
		}
		if wait := time.Until(lastEnd.Add(paceFactor * lastDur)); wait > 0 {
			pacing = true
			pace.Reset(wait)
			return
		}
		start := time.Now()
		w.poll()
		lastEnd = time.Now()
		lastDur = lastEnd.Sub(start)
	}
	poll()
	for {
		select {
		case <-w.done:
			return
		case n := <-w.notes:
			w.handleNote(n)
			startHot()
		case <-w.kick:
			poll()
		case <-pace.C:
			pacing = false
			poll()
		case <-hot.C:
			poll()
			hotIdx++
			if hotIdx < len(hotPolls) {
				hot.Reset(max(time.Until(hotStart.Add(hotPolls[hotIdx])), time.Millisecond))
			}
		case <-tick.C:
			// The regular reads take at most about 1% of a core: with
			// thousands of peers they come less often than every tick.
			if time.Since(lastEnd) >= tickPaceFactor*lastDur {
				poll()
			}
		}
	}
}

// paceFactor: polls are at least this many times their duration apart;
// tickPaceFactor: the regular ones, this many.
const (
	paceFactor     = 10
	tickPaceFactor = 100
)

// drainNotes handles the notes waiting, without blocking.
func (w *watcher) drainNotes() {
	for {
		select {
		case n := <-w.notes:
			w.handleNote(n)
		default:
			return
		}
	}
}

// handleNote records an engine note for its peer.
func (w *watcher) handleNote(n engineNote) {
	w.mu.Lock()
	k, ok := w.byPtr[n.peer]
	if !ok {
		// A peer the watcher has not looked up yet (added by wg(8), or
		// between a change and its hook): keep the note for the next
		// poll, which looks it up. Bounded by noteLen per peer.
		if len(w.unknown[n.peer]) < noteLen {
			w.unknown[n.peer] = append(w.unknown[n.peer], n)
		}
		w.mu.Unlock()
		w.poke()
		return
	}
	w.applyNoteLocked(k, n)
	w.mu.Unlock()
}

func (w *watcher) applyNoteLocked(k Key, n engineNote) {
	p := w.peers[k]
	if p == nil {
		return
	}
	switch n.kind {
	case noteInitiation:
		p.initiated = n.at
		p.nInitiations++
	case noteRetry, noteGiveUp:
		// Counted here, not taken from the engine's "try" number, which
		// a new initiation (StartHandshake) resets.
		p.attempts++
		p.nFailures++
		cause := fmt.Errorf("no response to %d initiations", p.attempts)
		if n.kind == noteGiveUp {
			cause = fmt.Errorf("no response to %d initiations, giving up until traffic needs the peer", p.attempts)
		}
		w.emitLocked(Event{
			Kind: EventHandshakeFailing, Time: n.at, Peer: k, Endpoint: p.endpoint, Attempt: p.attempts,
			Err: fmt.Errorf("wg: handshake with peer %s at %s: %w: %w", k, endpointString(p.endpoint), ErrHandshakeTimeout, cause),
		})
	}
}

// emitLocked queues ev. Under w.mu so that events leave in the order the
// watcher saw them; the queue never blocks.
func (w *watcher) emitLocked(ev Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	w.events.push(ev)
}

// poll reads the engine's state and reports what changed. Besides the
// engine's IpcGet and its parsing, which no accessor of wireguard-go's
// spares, it costs a comparison per peer: the engine's peer pointers
// are looked up again only after wg(8) changed the engine, and the
// watched peers are checked for removal only when fewer are found.
func (w *watcher) poll() {
	w.drainNotes() // so that decisions below see the latest initiation
	w.mu.RLock()
	gen := w.gen
	// Read routeGen before the state, as rebuildRoutes does: a wg(8)
	// change after this point makes the next poll look up again.
	cfgGen := w.d.routeGen.Load()
	lookup := w.engine != nil && (cfgGen != w.ptrGen || len(w.unknown) > 0)
	w.mu.RUnlock()
	w.polls.Add(1)
	st, err := w.d.state()
	if err != nil {
		w.d.log.Debug("wg: watch engine", "err", err)
		return
	}
	// Look the engine's peers up before taking w.mu, to hold it briefly.
	var ptrs map[*device.Peer]Key
	if lookup {
		ptrs = make(map[*device.Peer]Key, len(st.peers))
		for _, ps := range st.peers {
			if ep := w.engine.LookupPeer(device.NoisePublicKey(ps.PublicKey)); ep != nil {
				ptrs[ep] = ps.PublicKey
			}
		}
	}
	now := time.Now()
	var kickHandshake []Key
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	membership := gen == w.gen // no Device method changed the peer set meanwhile
	found := 0                 // peers of the engine watched before this poll
	for _, ps := range st.peers {
		p := w.peers[ps.PublicKey]
		if p != nil {
			found++
		} else {
			if !membership {
				continue
			}
			p = w.addLocked(ps.PublicKey, "", ps.Endpoint, now)
			if !lookup && w.engine != nil {
				// Added by wg(8) after routeGen was read: the next poll
				// looks up every pointer; this one looks its own up.
				if ep := w.engine.LookupPeer(device.NoisePublicKey(ps.PublicKey)); ep != nil {
					w.setPtrLocked(ps.PublicKey, ep)
				}
			}
		}
		if w.updateLocked(ps.PublicKey, p, &ps, now) {
			kickHandshake = append(kickHandshake, ps.PublicKey)
		}
	}
	if membership && found < len(w.peers) {
		// Some watched peer is gone from the engine (st's keys are
		// distinct, so every watched peer was found otherwise).
		seen := make(map[Key]bool, len(st.peers))
		for _, ps := range st.peers {
			seen[ps.PublicKey] = true
		}
		for k := range w.peers {
			if !seen[k] {
				w.removeLocked(k, now)
			}
		}
	}
	if lookup {
		if membership {
			clear(w.byPtr)
		}
		for ptr, k := range ptrs {
			w.setPtrLocked(k, ptr)
		}
		w.ptrGen = cfgGen
	}
	for ptr, notes := range w.unknown {
		if k, ok := w.byPtr[ptr]; ok {
			for _, n := range notes {
				w.applyNoteLocked(k, n)
			}
		}
		delete(w.unknown, ptr)
	}
	resolves := w.reresolveLocked(now)
	// A peer being re-resolved gets its initiation at the new address.
	kickHandshake = slices.DeleteFunc(kickHandshake, func(k Key) bool {
		p := w.peers[k]
		return p == nil || p.rr.resolving || p.rr.trying != nil
	})
	w.mu.Unlock()
	for _, k := range kickHandshake {
		w.startHandshake(k)
	}
	w.runResolves(resolves)
}

// updateLocked compares p with the engine's ps, emits what changed and
// reports whether the peer needs a handshake now (it was sent to for
// timing.quiet without answering).
func (w *watcher) updateLocked(k Key, p *peerWatch, ps *PeerStatus, now time.Time) bool {
	if ps.Endpoint != p.endpoint {
		w.endpointLocked(k, p, ps.Endpoint, now)
	}
	if ps.LastHandshake.After(p.lastHS) {
		rekey := sessionCurrent(p.lastHS, ps.LastHandshake) && p.attempts == 0
		p.lastHS = ps.LastHandshake
		p.attempts = 0
		p.idle = false
		p.unanswered = time.Time{}
		w.rrHandshakeLocked(p)
		w.emitLocked(Event{Kind: EventHandshakeCompleted, Time: ps.LastHandshake, Peer: k, Endpoint: p.endpoint, Rekey: rekey})
		for _, c := range p.waiters {
			c <- nil // buffered, one send each
		}
		p.waiters = nil
	}
	if !p.lastHS.IsZero() && !p.idle && now.Sub(p.lastHS) >= w.timing.idle {
		p.idle = true
		w.emitLocked(Event{Kind: EventPeerIdle, Time: now, Peer: k, Endpoint: p.endpoint})
	}
	need := false
	if ps.RxBytes > p.rx {
		p.lastRx = now
		p.unanswered = time.Time{}
		w.rrHandshakeLocked(p) // the peer answers where it is now
	} else if ps.TxBytes > p.tx && ps.TxBytes-p.tx > (p.nInitiations-p.initsAtPoll)*device.MessageInitiationSize {
		// More sent than our own initiations, which must not keep this
		// going for a peer that is gone.
		if p.unanswered.IsZero() {
			p.unanswered = now
		}
		// Sending, and nothing received for timing.quiet: the peer may
		// have restarted and dropped our session. The engine would wait
		// 15 s (KeepaliveTimeout + RekeyTimeout); ask now, unless an
		// initiation is under way (the engine sends at most one per 5 s).
		// p.lastRx is the poll that saw the last growth, so the silence
		// is at least as long as measured.
		need = now.Sub(p.lastRx) >= w.timing.quiet && p.endpoint.IsValid() &&
			!w.initiationPendingLocked(p, now)
	}
	p.rx, p.tx, p.initsAtPoll = ps.RxBytes, ps.TxBytes, p.nInitiations
	return need
}

func (w *watcher) addLocked(k Key, configured string, ep netip.AddrPort, now time.Time) *peerWatch {
	p := &peerWatch{configured: configured, endpoint: ep}
	w.peers[k] = p
	w.rrAddedLocked(p, now)
	w.emitLocked(Event{Kind: EventPeerAdded, Time: now, Peer: k, Endpoint: ep})
	return p
}

func (w *watcher) endpointLocked(k Key, p *peerWatch, ep netip.AddrPort, now time.Time) {
	prev := p.endpoint
	p.endpoint = ep
	if ep.IsValid() {
		p.nEndpointChanges++
		w.emitLocked(Event{Kind: EventEndpointChanged, Time: now, Peer: k, Endpoint: ep, Previous: prev})
	}
}

func (w *watcher) removeLocked(k Key, now time.Time) {
	p := w.peers[k]
	if p == nil {
		return
	}
	failWaiters(p, errRemovedWait)
	delete(w.peers, k)
	if w.byPtr[p.ptr] == k {
		delete(w.byPtr, p.ptr)
	}
	w.emitLocked(Event{Kind: EventPeerRemoved, Time: now, Peer: k, Endpoint: p.endpoint})
}

// peerSet is the hook of SetPeer, Reconfigure and NewDevice, called after
// the engine has the peer: it records the configured endpoint and the
// address it resolved to (ep, zero if none was set), and reports the peer
// as added if it is new, or its endpoint as changed.
func (w *watcher) peerSet(k Key, configured string, ep netip.AddrPort) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.gen++
	now := time.Now()
	if p := w.peers[k]; p == nil {
		w.addLocked(k, configured, ep, now)
	} else {
		if configured != "" && configured != p.configured {
			p.configured = configured
			w.rrAddedLocked(p, now)
		}
		if ep.IsValid() && ep != p.endpoint {
			w.endpointLocked(k, p, ep, now)
		}
	}
	if w.engine != nil {
		if ptr := w.engine.LookupPeer(device.NoisePublicKey(k)); ptr != nil {
			w.setPtrLocked(k, ptr)
			// Notes the engine made for the peer before this hook ran.
			for _, n := range w.unknown[ptr] {
				w.applyNoteLocked(k, n)
			}
			delete(w.unknown, ptr)
		}
	}
	// No poll now: the peer's state is what was just set, and what
	// happens to it next (a handshake) comes with notes, which start
	// polls. A poll costs in proportion to all the peers, so a SetPeer
	// of one of 10 000 would otherwise cost some 15 ms of CPU.
}

// setPtrLocked records ptr as the engine's peer of k, if k is watched.
func (w *watcher) setPtrLocked(k Key, ptr *device.Peer) {
	p := w.peers[k]
	if p == nil {
		return
	}
	if p.ptr != nil && p.ptr != ptr && w.byPtr[p.ptr] == k {
		delete(w.byPtr, p.ptr) // the engine made a new peer for k
	}
	p.ptr = ptr
	w.byPtr[ptr] = k
}

// peerRemoved is the hook of RemovePeer and Reconfigure.
func (w *watcher) peerRemoved(k Key) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.gen++
	w.removeLocked(k, time.Now())
}

// syncInitiations is how many peers NewDevice sends its initiations to
// before it returns; the watcher sends the rest.
const syncInitiations = 16

// retryWindow is how long after an initiation the engine may still send
// its own retry (RekeyTimeout plus up to 334 ms of jitter). A new
// initiation within it would reset the engine's count of attempts, so
// that it never gives up, and race its retry timer.
const retryWindow = device.RekeyTimeout + time.Second

// initiationPendingLocked reports whether the engine may still retry an
// initiation to p: one was sent within retryWindow and no handshake
// completed since. (The engine itself still sends no new initiation
// within 5 s of the last one.)
func (w *watcher) initiationPendingLocked(p *peerWatch, now time.Time) bool {
	return now.Sub(p.initiated) < retryWindow && !p.lastHS.After(p.initiated)
}

// startHandshake asks the engine for an initiation to k unless one is
// pending (initiationPendingLocked). It reports whether k is a peer. Only
// wireguard-go takes such a request: on other engines it does nothing
// (they initiate when traffic or a keepalive needs the peer).
func (w *watcher) startHandshake(k Key) bool {
	if w.engine == nil {
		w.mu.RLock()
		defer w.mu.RUnlock()
		return w.peers[k] != nil
	}
	ep := w.engine.LookupPeer(device.NoisePublicKey(k))
	if ep == nil {
		return false
	}
	w.mu.RLock()
	p := w.peers[k]
	recent := p != nil && w.initiationPendingLocked(p, time.Now())
	w.mu.RUnlock()
	if !recent {
		// Rate-limited by the engine too; an error (no endpoint known
		// yet) is logged by the engine and leaves the peer waiting to
		// be contacted.
		_ = ep.SendHandshakeInitiation(false)
	}
	return true
}

func failWaiters(p *peerWatch, err error) {
	for _, c := range p.waiters {
		c <- err
	}
	p.waiters = nil
}

// counters copies the watcher's per-peer counters into ps.
func (w *watcher) counters(ps []PeerStatus) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	for i := range ps {
		if p := w.peers[ps[i].PublicKey]; p != nil {
			ps[i].HandshakeAttempts = p.nInitiations
			ps[i].HandshakeFailures = p.nFailures
			ps[i].EndpointChanges = p.nEndpointChanges
		}
	}
}

// startHandshakeIfNoSession initiates a handshake with k unless a
// session with it is current.
func (w *watcher) startHandshakeIfNoSession(k Key) {
	w.mu.RLock()
	p := w.peers[k]
	current := p != nil && sessionCurrent(p.lastHS, time.Now())
	w.mu.RUnlock()
	if !current {
		w.startHandshake(k)
	}
}
