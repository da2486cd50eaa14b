package netstack

import (
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// This file hides small reordering of inbound TCP segments from the
// stack. A path that reorders (jitter between datagrams sent back to
// back, a datagram held back by a millisecond) makes gVisor's receiver
// answer each segment that overtook another with a duplicate ACK and a
// SACK block above the hole, and without RACK (which this package turns
// off, see newStack) gVisor's sender starts a fast recovery on the third
// such ACK once two segments' worth above the hole are SACKed: it
// retransmits a segment that was merely late and halves its window.
// Under 1 % loss with 200 µs of jitter four of five fast recoveries were
// spurious (BENCHMARKS.md). The link holds a segment that arrives above
// a hole in its flow for reorderHold, and hands the flow's segments to
// the stack in order as soon as the hole fills; a hole still open at the
// deadline is taken for a loss, and what was held goes to the stack then,
// in order.
//
// The cost is latency on a real loss: the receiver sees (and SACKs) the
// segments above the hole up to reorderHold later, so the sender's fast
// retransmit comes that much later. Segments in order, retransmissions
// and everything that is not TCP data pass without delay.
//
// Bounds: reorderFlows flows are tracked (the least recently used gives
// way, its held segments going to the stack), each holding at most
// reorderPerFlow segments and reorderMaxBytes of payload (when full, the
// flow's segments go to the stack); a segment more than reorderMaxGap
// bytes above the hole is not held. Held segments are released at the
// deadline by a timer, on the next delivery after it, and dropped at
// closeQueue, so none stays.

const (
	// reorderHold is Options.ReorderHold's default, how long the link
	// holds segments that arrived above a hole in their flow: a
	// millisecond of reordering and some jitter on top (the loss sweep's
	// paths, BENCHMARKS.md). A hold that adapted to the holes that filled
	// did no better and sometimes shrank below what the path needed.
	reorderHold = 1500 * time.Microsecond

	// maxReorderHold is the longest Options.ReorderHold takes.
	maxReorderHold = 20 * time.Millisecond

	// reorderFlows is how many TCP flows the link tracks for reordering.
	reorderFlows = 8

	// reorderPerFlow and reorderMaxBytes bound the segments held for
	// one flow, in count and in payload bytes: at most 2 MiB of payload
	// over all flows, however large the merged runs (coalesce.go).
	reorderPerFlow  = 64
	reorderMaxBytes = 256 << 10

	// reorderMaxGap is the largest hole, in bytes, the link waits to
	// fill: a segment further above is delivered at once.
	reorderMaxGap = 256 << 10
)

// flowKey names the direction of a TCP flow: the IP version, the source
// and destination addresses (IPv4's in the first 8 bytes) and the ports.
type flowKey [1 + 32 + 4]byte

// tcpFlow returns the flow key of pkt and the offset of its TCP header,
// if pkt is a TCP packet that is not a fragment (IPv4) or carries no
// extension headers (IPv6); its length need not be checked further.
func tcpFlow(pkt []byte) (k flowKey, tcpOff int, ok bool) {
	switch header.IPVersion(pkt) {
	case header.IPv4Version:
		if len(pkt) < header.IPv4MinimumSize {
			return k, 0, false
		}
		ip := header.IPv4(pkt)
		tcpOff = int(ip.HeaderLength())
		if ip.Protocol() != uint8(header.TCPProtocolNumber) || ip.More() || ip.FragmentOffset() != 0 ||
			tcpOff < header.IPv4MinimumSize || len(pkt) < tcpOff+header.TCPMinimumSize {
			return k, 0, false
		}
		k[0] = 4
		copy(k[1:9], pkt[12:20])
	case header.IPv6Version:
		if len(pkt) < header.IPv6MinimumSize+header.TCPMinimumSize || header.IPv6(pkt).NextHeader() != uint8(header.TCPProtocolNumber) {
			return k, 0, false
		}
		tcpOff = header.IPv6MinimumSize
		k[0] = 6
		copy(k[1:33], pkt[8:40])
	default:
		return k, 0, false
	}
	copy(k[33:], pkt[tcpOff:tcpOff+4])
	return k, tcpOff, true
}

// seqBefore reports whether sequence number a comes before b (serial
// number arithmetic, RFC 1982: the distance is taken modulo 2^32).
func seqBefore(a, b uint32) bool { return int32(a-b) < 0 }

// heldSeg is a segment the link holds: its sequence numbers and the
// packet, of which the link holds one reference.
type heldSeg struct {
	seq, end uint32
	pkb      *stack.PacketBuffer
}

// reorderFlow is the state of one tracked flow.
type reorderFlow struct {
	key flowKey
	// used is the reorderer's tick at the flow's last segment; 0 means
	// the slot is free.
	used uint64
	// next is the sequence number after the highest byte handed to the
	// stack: a segment starting above it arrived above a hole.
	next uint32
	// since is when the first of the held segments, if any, was held.
	since time.Time
	// held are the segments held, sorted by sequence number; its array
	// (reorderPerFlow entries) is made at the flow slot's first hold.
	held []heldSeg
	// bytes is the payload held.
	bytes int
}

// reorderer is the link's reordering state; endpoint.gmu guards it.
type reorderer struct {
	// hold is how long segments above a hole wait; 0 turns the
	// reorderer off. Open sets it from Options.ReorderHold; tests change
	// it too.
	hold  time.Duration
	flows [reorderFlows]reorderFlow
	tick  uint64
	// timer, made at the first hold, calls endpoint.reorderExpired;
	// armed says whether it is set to fire.
	timer  *time.Timer
	armed  bool
	closed bool // set by closeQueue: nothing more is held
}

// reorderSegment hands the TCP data segment pkb (flow k, sequence
// numbers seq to end) to GRO, or holds it if it arrived above a hole in
// its flow; the segments it completes follow it in order. The caller
// keeps its reference to pkb. e.gmu is held.
func (e *endpoint) reorderSegment(pkb *stack.PacketBuffer, k flowKey, seq, end uint32) {
	r := &e.reorder
	if r.closed {
		e.gro.Enqueue(pkb)
		return
	}
	f, isNew := r.flow(k, e)
	switch {
	case isNew:
		// A new flow: this segment sets where it is.
		f.next = end
	case !seqBefore(f.next, seq):
		// In order, or a retransmission of bytes already passed on.
		e.gro.Enqueue(pkb)
		if seqBefore(f.next, end) {
			f.next = end
		}
		if len(f.held) > 0 {
			e.drainFlow(f)
		}
		return
	case seq-f.next > reorderMaxGap:
		e.flushFlow(f)
		if seqBefore(f.next, end) {
			f.next = end
		}
	case len(f.held) == reorderPerFlow || f.bytes+int(end-seq) > reorderMaxBytes:
		e.flushFlow(f)
		if seqBefore(f.next, end) {
			f.next = end
		}
	default:
		// Above a hole: hold it, in sequence order.
		if f.held == nil {
			f.held = make([]heldSeg, 0, reorderPerFlow)
		}
		i := len(f.held)
		for i > 0 && seqBefore(seq, f.held[i-1].seq) {
			i--
		}
		f.held = append(f.held, heldSeg{})
		copy(f.held[i+1:], f.held[i:])
		f.held[i] = heldSeg{seq: seq, end: end, pkb: pkb.IncRef()}
		f.bytes += int(end - seq)
		if len(f.held) == 1 {
			f.since = time.Now()
			e.armReorderTimer()
		}
		return
	}
	e.gro.Enqueue(pkb)
}

// flow returns the tracked flow k, marked used; if k is not tracked,
// a slot for it taken from a free or the least recently used flow,
// whose held segments go to GRO first, and isNew. e.gmu is held.
func (r *reorderer) flow(k flowKey, e *endpoint) (f *reorderFlow, isNew bool) {
	r.tick++
	var victim *reorderFlow
	for i := range r.flows {
		f := &r.flows[i]
		if f.used != 0 && f.key == k {
			f.used = r.tick
			return f, false
		}
		if victim == nil || f.used < victim.used {
			victim = f
		}
	}
	e.flushFlow(victim)
	victim.key = k
	victim.used = r.tick
	return victim, true
}

// drainFlow hands f's held segments that now follow on to GRO, in
// order. e.gmu is held.
func (e *endpoint) drainFlow(f *reorderFlow) {
	n := 0
	for _, h := range f.held {
		if seqBefore(f.next, h.seq) {
			break
		}
		e.gro.Enqueue(h.pkb)
		h.pkb.DecRef()
		f.bytes -= int(h.end - h.seq)
		if seqBefore(f.next, h.end) {
			f.next = h.end
		}
		n++
	}
	if n > 0 {
		rest := copy(f.held, f.held[n:])
		clear(f.held[rest:])
		f.held = f.held[:rest]
	}
	// A hole that remains above keeps since: the segments held have
	// waited since then.
}

// flushFlow hands all of f's held segments to the stack, in order,
// taking the holes below them for losses. Each goes on its own, not
// merged by GRO: the receiver answers each with a duplicate ACK, and
// gVisor's sender needs three of them to retransmit the hole (with
// SACK, too), or it waits for its timeout. e.gmu is held.
func (e *endpoint) flushFlow(f *reorderFlow) {
	for _, h := range f.held {
		e.gro.Enqueue(h.pkb)
		e.gro.Flush()
		h.pkb.DecRef()
		if seqBefore(f.next, h.end) {
			f.next = h.end
		}
	}
	clear(f.held)
	f.held = f.held[:0]
	f.bytes = 0
}

// reorderControl handles a TCP packet of flow k that is not plain data:
// a SYN, FIN or RST first takes the flow's held segments to GRO, so it
// does not overtake them, and a SYN or RST ends the flow's tracking.
// e.gmu is held.
func (e *endpoint) reorderControl(k flowKey, flags header.TCPFlags) {
	if flags&(header.TCPFlagSyn|header.TCPFlagFin|header.TCPFlagRst) == 0 {
		return
	}
	r := &e.reorder
	for i := range r.flows {
		f := &r.flows[i]
		if f.used == 0 || f.key != k {
			continue
		}
		e.flushFlow(f)
		if flags&(header.TCPFlagSyn|header.TCPFlagRst) != 0 {
			f.used = 0
		}
		return
	}
}

// expireHolds hands to GRO the held segments whose deadline is not
// after now and returns the earliest deadline left (zero if none).
// e.gmu is held.
func (e *endpoint) expireHolds(now time.Time) time.Time {
	var next time.Time
	for i := range e.reorder.flows {
		f := &e.reorder.flows[i]
		if len(f.held) == 0 {
			continue
		}
		deadline := f.since.Add(e.reorder.hold)
		if !now.Before(deadline) {
			e.flushFlow(f)
			continue
		}
		if next.IsZero() || deadline.Before(next) {
			next = deadline
		}
	}
	return next
}

// holding reports whether any segment is held. e.gmu is held.
func (r *reorderer) holding() bool {
	for i := range r.flows {
		if len(r.flows[i].held) > 0 {
			return true
		}
	}
	return false
}

// armReorderTimer makes sure the timer will fire by the deadline of a
// hold just started: all holds last r.hold, so an armed timer fires
// earlier. e.gmu is held.
func (e *endpoint) armReorderTimer() {
	r := &e.reorder
	if r.armed {
		return
	}
	r.armed = true
	if r.timer == nil {
		r.timer = time.AfterFunc(r.hold, e.reorderExpired)
		return
	}
	r.timer.Reset(r.hold)
}

// reorderExpired is the timer's function: it hands the expired holds to
// the stack and sets the timer for the next deadline.
func (e *endpoint) reorderExpired() {
	e.gmu.Lock()
	defer e.gmu.Unlock()
	r := &e.reorder
	r.armed = false
	if r.closed {
		return
	}
	next := e.expireHolds(time.Now())
	e.gro.Flush()
	if !next.IsZero() {
		r.armed = true
		r.timer.Reset(max(time.Until(next), 0))
	}
}

// closeReorder releases every held segment and stops the timer; nothing
// is held afterwards. e.gmu must not be held.
func (e *endpoint) closeReorder() {
	e.gmu.Lock()
	defer e.gmu.Unlock()
	r := &e.reorder
	r.closed = true
	if r.timer != nil {
		r.timer.Stop()
		r.armed = false
	}
	for i := range r.flows {
		f := &r.flows[i]
		for _, h := range f.held {
			h.pkb.DecRef()
		}
		clear(f.held)
		f.held = f.held[:0]
		f.bytes = 0
	}
}
