package udpbind

import (
	"bytes"
	"net/netip"
	"testing"
)

// FuzzSpread checks the GRO split without a kernel: messages of runs of
// datagrams, laid out as recvmmsg leaves them (one per buffer), come out
// of spread and then takePending whole, in order, with their endpoints,
// and the scratch buffer is back to at most 64 KiB afterwards.
//
// layout holds 3 bytes per message: datagram count, and size (the top bit
// of the first byte asks for a shorter last datagram).
func FuzzSpread(f *testing.F) {
	f.Add(uint8(16), []byte{20, 5, 0x8c, 1, 0, 100, 64, 3, 0xe8})
	f.Add(uint8(1), []byte{70, 5, 0x8c})
	f.Add(uint8(3), []byte{3, 5, 0x8c, 20, 3, 0xe8, 0x95, 4, 0xb0})
	f.Add(uint8(16), bytes.Repeat([]byte{1, 5, 0x8c}, 16))
	f.Add(uint8(4), []byte{64, 3, 0xe8, 64, 3, 0xe8, 64, 3, 0xe8, 64, 3, 0xe8})
	f.Fuzz(func(t *testing.T, nbufs uint8, layout []byte) {
		n := 1 + int(nbufs)%16
		bufs, sizes, eps := recvBuffers(n, maxDatagram)
		var r recvState
		var want []datagram
		for i := 0; i+3 <= len(layout) && len(r.msgs) < n; i += 3 {
			seg := 1 + (int(layout[i+1])<<8|int(layout[i+2]))%1500
			segs := min(1+int(layout[i]&0x7f)%70, maxDatagram/seg)
			last := seg
			if layout[i]&0x80 != 0 {
				last = 1 + int(layout[i+2])%seg
			}
			ep := &Endpoint{ap: netip.AddrPortFrom(lo4, uint16(1+len(r.msgs)))}
			j := len(r.msgs)
			m := msgInfo{seg: seg, segs: segs, ep: ep}
			for k := range segs {
				d := make([]byte, seg)
				if k == segs-1 {
					d = d[:last]
				}
				for x := range d {
					d[x] = byte(j*31 + k*7 + x)
				}
				m.n += copy(bufs[j][m.n:], d)
				want = append(want, datagram{ep.DstToString(), string(d)})
			}
			if segs == 1 {
				m.seg = m.n // as message reports an uncoalesced one
			}
			r.msgs = append(r.msgs, m)
		}
		var got []datagram
		collect := func(k int) {
			for i := range k {
				got = append(got, datagram{eps[i].DstToString(), string(bufs[i][:sizes[i]])})
			}
		}
		collect(r.spread(bufs, sizes, eps))
		for calls := 0; len(r.pending) > 0; calls++ {
			if calls > len(want) {
				t.Fatalf("pending not drained after %d calls", calls)
			}
			collect(r.takePending(bufs, sizes, eps))
		}
		if len(got) != len(want) {
			t.Fatalf("got %d datagrams, want %d", len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("datagram %d: got %d bytes from %s, want %d bytes from %s", i, len(got[i].data), got[i].from, len(want[i].data), want[i].from)
			}
		}
		if len(r.scratch) > maxDatagram {
			t.Errorf("scratch %d bytes after draining, want at most %d", len(r.scratch), maxDatagram)
		}
	})
}
