package netstack

import (
	"bytes"
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// This file merges a run of consecutive TCP segments of one flow, as the
// engine hands them to deliverBatch, into one packet while copying them
// out of the engine's buffers. gVisor's GRO would merge them too, but
// only after each segment got its own PacketBuffer and buffer chunk
// (a pool round trip, a cleared chunk, reference counts), its own header
// parsing and bucket search, and its own view in the merged packet,
// which every later step of the stack (clones, reads, release) walks.
// Merged here, a run costs one of each. The rules are those of gVisor's
// and Linux's GRO, or stricter: a segment continues a run only if it
// has the same IP and TCP headers as the run's first segment except for
// the lengths, the IPv4 ID and checksum, the sequence number (which must
// follow on) and the PSH flag; the run ends after a segment with PSH or
// one shorter than the first. Anything else takes the per-packet path.
// The merged packets still go through gVisor's GRO, which keeps the
// order of packets and may merge further.

// maxMergedSize is the largest packet mergeRun builds: the most an IPv4
// total length can say (and less than gVisor's GRO limit of 64 KiB).
const maxMergedSize = 1<<16 - 1

// segHeaders describes a TCP segment that may be merged: the lengths of
// its IP and TCP headers and of its payload.
type segHeaders struct {
	ipLen, tcpLen, payload int
}

// parseMergeable reports the headers of pkt if it is a TCP segment that
// mergeRun may merge: IPv4 without options and not a fragment, or IPv6
// without extension headers; lengths that match len(pkt); a payload; and
// no flag but ACK and PSH.
func parseMergeable(pkt []byte) (segHeaders, bool) {
	var s segHeaders
	switch header.IPVersion(pkt) {
	case header.IPv4Version:
		if len(pkt) < header.IPv4MinimumSize+header.TCPMinimumSize {
			return s, false
		}
		ip := header.IPv4(pkt)
		if ip.HeaderLength() != header.IPv4MinimumSize || ip.Protocol() != uint8(header.TCPProtocolNumber) ||
			int(ip.TotalLength()) != len(pkt) || ip.More() || ip.FragmentOffset() != 0 {
			return s, false
		}
		s.ipLen = header.IPv4MinimumSize
	case header.IPv6Version:
		if len(pkt) < header.IPv6MinimumSize+header.TCPMinimumSize {
			return s, false
		}
		ip := header.IPv6(pkt)
		if ip.NextHeader() != uint8(header.TCPProtocolNumber) || int(ip.PayloadLength())+header.IPv6MinimumSize != len(pkt) {
			return s, false
		}
		s.ipLen = header.IPv6MinimumSize
	default:
		return s, false
	}
	tcp := header.TCP(pkt[s.ipLen:])
	s.tcpLen = int(tcp.DataOffset())
	s.payload = len(pkt) - s.ipLen - s.tcpLen
	if s.tcpLen < header.TCPMinimumSize || s.payload <= 0 || tcp.Flags()&^header.TCPFlagPsh != header.TCPFlagAck {
		return s, false
	}
	return s, true
}

// continues reports whether pkt, a segment with headers s, continues the
// run that starts with first (headers f) and whose last segment so far,
// prev, has headers p.
func continues(first []byte, f segHeaders, prev []byte, p segHeaders, pkt []byte, s segHeaders) bool {
	if s.ipLen != f.ipLen || s.tcpLen != f.tcpLen || s.payload > f.payload {
		return false
	}
	ipLen := f.ipLen
	if ipLen == header.IPv4MinimumSize {
		// Version, header length and TOS; flags, fragment offset, TTL and
		// protocol; addresses. Not the total length, ID or checksum.
		if !bytes.Equal(first[0:2], pkt[0:2]) || !bytes.Equal(first[6:10], pkt[6:10]) || !bytes.Equal(first[12:20], pkt[12:20]) {
			return false
		}
	} else {
		// Version, traffic class and flow label; next header and hop
		// limit; addresses. Not the payload length.
		if !bytes.Equal(first[0:4], pkt[0:4]) || !bytes.Equal(first[6:40], pkt[6:40]) {
			return false
		}
	}
	ft, pt := first[ipLen:], pkt[ipLen:]
	// Ports; the ACK number and data offset; the window; the urgent
	// pointer and options. Not the checksum. Then the flags but PSH,
	// which the merged packet takes from its last segment (mergeRun).
	if !bytes.Equal(ft[0:4], pt[0:4]) || !bytes.Equal(ft[8:13], pt[8:13]) || !bytes.Equal(ft[14:16], pt[14:16]) ||
		!bytes.Equal(ft[18:f.tcpLen], pt[18:f.tcpLen]) {
		return false
	}
	if ft[13]&^uint8(header.TCPFlagPsh) != pt[13]&^uint8(header.TCPFlagPsh) {
		return false
	}
	next := binary.BigEndian.Uint32(prev[p.ipLen+4:]) + uint32(p.payload)
	return binary.BigEndian.Uint32(pt[4:]) == next
}

// runEnd returns the end of the run of mergeable segments that starts at
// bufs[i][offset:], whose headers are f: the index after its last
// segment, i+1 if the segment merges with nothing that follows. Empty
// buffers end a run.
func runEnd(bufs [][]byte, i, offset int, f segHeaders) int {
	first := bufs[i][offset:]
	prev, p := first, f
	total := len(first)
	j := i + 1
	for ; j < len(bufs); j++ {
		if p.payload < f.payload || header.TCP(prev[p.ipLen:]).Flags()&header.TCPFlagPsh != 0 {
			break // a short segment or PSH ends the run
		}
		pkt := bufs[j][offset:]
		s, ok := parseMergeable(pkt)
		if !ok || total+s.payload > maxMergedSize || !continues(first, f, prev, p, pkt, s) {
			break
		}
		total += s.payload
		prev, p = pkt, s
	}
	return j
}

// mergeRun copies the segments run[k][offset:] (a run found by runEnd,
// headers f for the first) into one packet: the first segment's headers
// with the lengths set for the whole payload, its IPv4 checksum updated,
// and the last segment's PSH flag.
func mergeRun(run [][]byte, offset int, f segHeaders) *stack.PacketBuffer {
	hdrLen := f.ipLen + f.tcpLen
	total := hdrLen
	for _, b := range run {
		total += len(b) - offset - hdrLen
	}
	v := buffer.NewView(total)
	v.Write(run[0][offset:])
	for _, b := range run[1:] {
		v.Write(b[offset+hdrLen:])
	}
	m := v.AsSlice()
	if f.ipLen == header.IPv4MinimumSize {
		ip := header.IPv4(m)
		ip.SetTotalLength(uint16(total))
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
	} else {
		header.IPv6(m).SetPayloadLength(uint16(total - header.IPv6MinimumSize))
	}
	last := run[len(run)-1][offset:]
	m[f.ipLen+13] |= last[f.ipLen+13] & uint8(header.TCPFlagPsh)
	return stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithView(v)})
}
