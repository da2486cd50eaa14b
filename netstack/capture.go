package netstack

import (
	"encoding/binary"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Packet capture (Options.Capture). The link hands each packet it passes
// between the stack and the engine to capture.record, which copies it
// into one of a fixed set of slots and queues the slot for a goroutine
// that writes pcap records; when no slot is free the packet is counted as
// dropped. record never blocks and never allocates, so a slow writer costs
// the tunnel captured packets, not speed.

const (
	// pcapMagicNanos is the pcap magic number for nanosecond time stamps,
	// written in little-endian byte order (readers detect the order).
	pcapMagicNanos = 0xa1b23c4d
	// linkTypeRaw is LINKTYPE_RAW: each record is an IPv4 or IPv6 packet
	// without a link-layer header, the version nibble telling which.
	linkTypeRaw = 101

	pcapFileHeaderLen   = 24
	pcapRecordHeaderLen = 16

	// captureQueueBytes bounds the packet memory of the capture queue:
	// captureQueueBytes / snap length slots (738 at the default MTU), but
	// at least minCaptureSlots.
	captureQueueBytes = 1 << 20
	minCaptureSlots   = 16

	// captureFlushTimeout bounds how long Close keeps writing the packets
	// still queued.
	captureFlushTimeout = time.Second

	// captureBufferSize is the writer goroutine's buffer: records are
	// written to the io.Writer in chunks of at most this size, and
	// whenever the queue runs empty. It holds the largest record.
	captureBufferSize = 64<<10 + pcapRecordHeaderLen + pcapFileHeaderLen
)

// capture is the packet capture of one Net. record is safe for concurrent
// use; start and stop are called once each, by Open and Close (stop
// without start just ends the capture).
type capture struct {
	w    io.Writer
	log  *slog.Logger
	snap int // the longest part of a packet recorded, in bytes

	free chan *captureSlot // slots ready for record
	full chan *captureSlot // slots queued for the writer, in order

	captured atomic.Uint64 // packets in Writes to w that succeeded
	dropped  atomic.Uint64 // packets lost: queue full, w failed, or stop's time ran out

	started  atomic.Bool
	stopOnce sync.Once
	stopCh   chan struct{} // closed by stop
	done     chan struct{} // closed when the writer goroutine returns
}

// captureSlot holds one packet between record and the writer goroutine.
type captureSlot struct {
	nanos int64  // time stamp, Unix nanoseconds
	orig  int    // the packet's length
	n     int    // bytes of it in buf
	buf   []byte // len snap
}

// newCapture returns a capture of packets of up to snap bytes (longer ones
// are cut, their length kept) to w. Packets recorded before start wait in
// the queue.
func newCapture(w io.Writer, snap int, log *slog.Logger) *capture {
	slots := max(captureQueueBytes/snap, minCaptureSlots)
	c := &capture{
		w:      w,
		log:    log,
		snap:   snap,
		free:   make(chan *captureSlot, slots),
		full:   make(chan *captureSlot, slots),
		stopCh: make(chan struct{}),
		done:   make(chan struct{}),
	}
	arena := make([]byte, slots*snap)
	for i := range slots {
		c.free <- &captureSlot{buf: arena[i*snap : (i+1)*snap : (i+1)*snap]}
	}
	return c
}

// record queues a copy of pkt, an IP packet, for the pcap file, or counts
// it as dropped if the queue is full. It never blocks. pkt may be reused
// once record returns.
func (c *capture) record(pkt []byte) {
	var s *captureSlot
	select {
	case s = <-c.free:
	default:
		c.dropped.Add(1)
		return
	}
	s.nanos = time.Now().UnixNano()
	s.orig = len(pkt)
	s.n = copy(s.buf, pkt)
	// There are only as many slots as full has room for: this never blocks.
	c.full <- s
}

// start runs the writer goroutine: it writes the pcap file header, then a
// record per queued packet.
func (c *capture) start() {
	c.started.Store(true)
	go c.run()
}

// stop ends the writer goroutine and waits for it: packets still queued
// are written for at most captureFlushTimeout, the rest counted as
// dropped. It waits for a Write call in progress to return. Packets
// recorded after stop stay queued or are dropped; they are never written.
func (c *capture) stop() {
	c.stopOnce.Do(func() { close(c.stopCh) })
	if c.started.Load() {
		<-c.done
	}
}

func (c *capture) run() {
	defer close(c.done)
	// buf collects the file header and records for one Write; pending
	// counts the records in it, which become captured or dropped once
	// that Write returns.
	buf := make([]byte, 0, captureBufferSize)
	pending := 0
	failed := false
	flush := func() {
		if len(buf) == 0 {
			return
		}
		if _, err := c.w.Write(buf); err != nil {
			failed = true
			c.dropped.Add(uint64(pending))
			c.log.Error("netstack: packet capture stopped", "err", err)
		} else {
			c.captured.Add(uint64(pending))
		}
		buf, pending = buf[:0], 0
	}
	add := func(s *captureSlot) {
		if failed {
			c.dropped.Add(1)
		} else {
			if len(buf)+pcapRecordHeaderLen+s.n > cap(buf) {
				flush()
			}
			buf = appendRecord(buf, s)
			pending++
		}
		c.free <- s
	}

	buf = binary.LittleEndian.AppendUint32(buf, pcapMagicNanos)
	buf = binary.LittleEndian.AppendUint16(buf, 2) // version 2.4
	buf = binary.LittleEndian.AppendUint16(buf, 4)
	buf = binary.LittleEndian.AppendUint32(buf, 0) // thiszone
	buf = binary.LittleEndian.AppendUint32(buf, 0) // sigfigs
	buf = binary.LittleEndian.AppendUint32(buf, uint32(c.snap))
	buf = binary.LittleEndian.AppendUint32(buf, linkTypeRaw)
	for {
		select {
		case s := <-c.full:
			add(s)
			if len(c.full) == 0 && !failed {
				flush()
			}
		case <-c.stopCh:
			deadline := time.Now().Add(captureFlushTimeout)
			for len(c.full) > 0 {
				s := <-c.full
				if time.Now().After(deadline) {
					c.dropped.Add(1)
					c.free <- s
					continue
				}
				add(s)
			}
			if !failed {
				flush()
			}
			return
		}
	}
}

// appendRecord appends one pcap record, header and packet bytes, to b.
// A snap length of at most 65535 makes room for it in captureBufferSize.
func appendRecord(b []byte, s *captureSlot) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(s.nanos/1e9))
	b = binary.LittleEndian.AppendUint32(b, uint32(s.nanos%1e9))
	b = binary.LittleEndian.AppendUint32(b, uint32(s.n))
	b = binary.LittleEndian.AppendUint32(b, uint32(s.orig))
	return append(b, s.buf[:s.n]...)
}

// Stats are counters of a Net since Open; see Net.Stats.
type Stats struct {
	// LinkDropped counts packets the link between the stack and the
	// engine dropped: outbound packets beyond its queue of 1024 while the
	// engine fell behind or too large for the engine's buffers, and
	// inbound ones that were neither IPv4 nor IPv6.
	LinkDropped uint64

	// CapturePackets counts the packets written to Options.Capture.
	CapturePackets uint64

	// CaptureDropped counts the packets that passed the link but are
	// missing from Options.Capture: the capture queue was full because the
	// writer was slow, its Write failed (capture stops at the first error,
	// which is logged), or Close found them still queued after its flush
	// time.
	CaptureDropped uint64
}

// Stats returns the Net's counters. It is cheap (atomic loads) and safe for
// concurrent use, also after Close.
func (n *Net) Stats() Stats {
	var s Stats
	if n.ep != nil {
		s.LinkDropped = n.ep.dropped.Load()
	}
	if c := n.capture; c != nil {
		s.CapturePackets = c.captured.Load()
		s.CaptureDropped = c.dropped.Load()
	}
	return s
}
