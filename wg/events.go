package wg

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// EventKind says what an [Event] reports.
type EventKind int

const (
	// EventHandshakeCompleted: a handshake with Peer completed (either
	// side initiating); Endpoint is the peer's endpoint after it.
	EventHandshakeCompleted EventKind = iota + 1

	// EventHandshakeFailing: a handshake this device initiated with Peer
	// got no answer within wireguard-go's RekeyTimeout (5 s). Attempt
	// counts the failed attempts since the last completed handshake,
	// from 1; Err wraps [ErrHandshakeTimeout]. The engine retries for
	// 90 s, then waits for traffic to need the peer again. Only
	// wireguard-go reports failing attempts: a kernel engine (see
	// [NewDeviceEngine]) never has this event, and its other events come
	// from reading its state once a second, so up to a second late.
	EventHandshakeFailing

	// EventEndpointChanged: Peer's endpoint changed, because it sent an
	// authenticated packet from another address (roaming) or because its
	// host name was resolved again. Previous is the old endpoint (zero if
	// none was known).
	EventEndpointChanged

	// EventPeerAdded: Peer was added, by the configuration the device
	// was opened with, SetPeer, Reconfigure or wg(8).
	EventPeerAdded

	// EventPeerRemoved: Peer was removed, by RemovePeer, Reconfigure or
	// wg(8).
	EventPeerRemoved

	// EventPeerIdle: no handshake with Peer has completed for
	// wireguard-go's RejectAfterTime (3 minutes) although one had: its
	// session has expired and no traffic needed a new one, or the peer is
	// gone. Reported once per session.
	EventPeerIdle

	// EventsDropped: the OnEvent callback fell so far behind that the
	// queue of undelivered events overflowed (see [DeviceOptions.OnEvent])
	// and Dropped events, the oldest, were discarded. Peer is zero.
	EventsDropped
)

// String returns the kind in the form used in log lines, such as
// "handshake-completed".
func (k EventKind) String() string {
	switch k {
	case EventHandshakeCompleted:
		return "handshake-completed"
	case EventHandshakeFailing:
		return "handshake-failing"
	case EventEndpointChanged:
		return "endpoint-changed"
	case EventPeerAdded:
		return "peer-added"
	case EventPeerRemoved:
		return "peer-removed"
	case EventPeerIdle:
		return "peer-idle"
	case EventsDropped:
		return "events-dropped"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is something that happened to a [Device] or one of its peers,
// delivered to [DeviceOptions.OnEvent]. It never holds key material other
// than the peer's public key.
type Event struct {
	// Kind says what happened; it decides which other fields are set.
	Kind EventKind
	// Time is when the device noticed it (for a completed handshake, the
	// engine's handshake time).
	Time time.Time
	// Peer is the public key of the peer concerned; zero for EventsDropped.
	Peer Key
	// Endpoint is the peer's endpoint at the time of the event; the zero
	// value means none is known.
	Endpoint netip.AddrPort
	// Previous is the endpoint before an EventEndpointChanged.
	Previous netip.AddrPort
	// Attempt is the number of failed handshake attempts since the last
	// completed one, for EventHandshakeFailing; 0 otherwise.
	Attempt int
	// Rekey is set on an EventHandshakeCompleted that replaced a session
	// still current, with no failed attempt in between: the engine makes
	// one every 2 minutes while traffic flows. These are logged at Debug,
	// so that a working tunnel does not log a line per peer every 2
	// minutes; the first handshake, and the first after a failure or an
	// idle spell, at Info.
	Rekey bool
	// Dropped is the number of events discarded, for EventsDropped.
	Dropped int
	// Err is set where an error applies (EventHandshakeFailing).
	Err error
}

// eventQueueLen bounds the events waiting for delivery: with a nil
// OnEvent they wait only for the log, which is fast.
const eventQueueLen = 1024

// eventQueue delivers events in order from one goroutine: it logs each
// one, then calls the callback. It is the only place callbacks run, so
// they never run under a device lock and may call Device methods.
type eventQueue struct {
	log *slog.Logger
	fn  func(Event) // nil: log only

	mu      sync.Mutex
	q       []Event // pending from q[head], oldest first; at most eventQueueLen; guarded by mu
	head    int     // guarded by mu
	dropped int     // events discarded since the last EventsDropped; guarded by mu
	closed  bool    // guarded by mu
	inFn    bool    // the callback is running; guarded by mu
	started bool    // run was started; guarded by mu
	notify  chan struct{}
	done    chan struct{} // closed by close: the goroutine drains nothing more
	exited  chan struct{} // closed when the goroutine returns
}

func newEventQueue(log *slog.Logger, fn func(Event)) *eventQueue {
	e := &eventQueue{
		log:    log,
		fn:     fn,
		notify: make(chan struct{}, 1),
		done:   make(chan struct{}),
		exited: make(chan struct{}),
	}
	return e
}

// start begins delivery. NewDevice calls it once the device is built, so
// that a callback never sees a Device that its constructor has not
// returned yet; events queued before are delivered first.
func (e *eventQueue) start() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || e.started {
		return
	}
	e.started = true
	go e.run()
}

// push queues ev for delivery without blocking. When eventQueueLen
// events are already waiting, the oldest is dropped and counted.
func (e *eventQueue) push(ev Event) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	if len(e.q)-e.head >= eventQueueLen {
		e.q[e.head] = Event{}
		e.head++
		e.dropped++
	}
	if e.head > 0 && len(e.q) == cap(e.q) {
		n := copy(e.q, e.q[e.head:])
		clear(e.q[n:])
		e.q, e.head = e.q[:n], 0
	}
	e.q = append(e.q, ev)
	e.mu.Unlock()
	// Before start the notification stays in the channel for run.
	select {
	case e.notify <- struct{}{}:
	default:
	}
}

// close stops the delivery goroutine and waits for it to end. Events
// still queued are discarded. It does not wait for a callback that is
// running, which may be the caller (a callback may call Device.Close):
// the goroutine then ends as soon as the callback returns.
func (e *eventQueue) close() {
	e.mu.Lock()
	if !e.closed {
		e.closed = true
		close(e.done)
	}
	inFn, started := e.inFn, e.started
	e.mu.Unlock()
	if started && !inFn {
		<-e.exited
	}
}

func (e *eventQueue) run() {
	defer close(e.exited)
	for {
		select {
		case <-e.notify:
		case <-e.done:
			return
		}
		for {
			ev, ok := e.pop()
			if !ok {
				break
			}
			e.deliver(ev)
		}
	}
}

// pop takes the next event to deliver: an EventsDropped if events were
// dropped since the last one, so that it comes before the events that
// survived, else the oldest waiting. It reports false when there is none
// or the queue is closed.
func (e *eventQueue) pop() (Event, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return Event{}, false
	}
	if e.dropped > 0 {
		ev := Event{Kind: EventsDropped, Time: time.Now(), Dropped: e.dropped}
		e.dropped = 0
		return ev, true
	}
	if e.head == len(e.q) {
		return Event{}, false
	}
	ev := e.q[e.head]
	e.q[e.head] = Event{}
	e.head++
	if e.head == len(e.q) {
		e.q, e.head = e.q[:0], 0
		if cap(e.q) > 64 {
			e.q = nil // a burst's buffer is not kept for the life of the device
		}
	}
	return ev, true
}

func (e *eventQueue) deliver(ev Event) {
	logEvent(e.log, ev)
	if e.fn == nil {
		return
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.inFn = true
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.inFn = false
		e.mu.Unlock()
	}()
	e.fn(ev)
}

// logEvent writes ev at its level: failing handshakes at Warn from the
// second attempt (a first lost initiation is routine), dropped events at
// Warn, rekeys at Debug, the rest at Info.
func logEvent(l *slog.Logger, ev Event) {
	ctx := context.Background()
	level := slog.LevelInfo
	switch {
	case ev.Kind == EventHandshakeFailing && ev.Attempt < 2, ev.Rekey:
		level = slog.LevelDebug
	case ev.Kind == EventHandshakeFailing, ev.Kind == EventsDropped:
		level = slog.LevelWarn
	}
	if !l.Enabled(ctx, level) {
		return
	}
	if ev.Kind == EventsDropped {
		l.Log(ctx, level, "wg: events dropped: OnEvent fell behind", "dropped", ev.Dropped)
		return
	}
	attrs := make([]slog.Attr, 0, 5)
	attrs = append(attrs, slog.String("peer", ev.Peer.String()), slog.String("endpoint", endpointString(ev.Endpoint)))
	switch ev.Kind {
	case EventHandshakeFailing:
		attrs = append(attrs, slog.Int("attempt", ev.Attempt))
	case EventEndpointChanged:
		attrs = append(attrs, slog.String("previous", endpointString(ev.Previous)))
	}
	msg := "wg: " + logMessage(ev.Kind)
	l.LogAttrs(ctx, level, msg, attrs...)
}

func logMessage(k EventKind) string {
	switch k {
	case EventHandshakeCompleted:
		return "handshake completed"
	case EventHandshakeFailing:
		return "handshake failing"
	case EventEndpointChanged:
		return "endpoint changed"
	case EventPeerAdded:
		return "peer added"
	case EventPeerRemoved:
		return "peer removed"
	case EventPeerIdle:
		return "peer idle"
	}
	return k.String()
}

func endpointString(ap netip.AddrPort) string {
	if !ap.IsValid() {
		return "none"
	}
	return ap.String()
}
