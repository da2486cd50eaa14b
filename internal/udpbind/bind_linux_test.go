package udpbind

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

func TestMmsghdrLayout(t *testing.T) {
	// struct mmsghdr { struct msghdr msg_hdr; unsigned int msg_len; }
	want := unsafe.Sizeof(unix.Msghdr{}) + 4
	if a := unsafe.Alignof(unix.Msghdr{}); want%a != 0 {
		want += a - want%a
	}
	if got := unsafe.Sizeof(mmsghdr{}); got != want {
		t.Errorf("sizeof(mmsghdr) = %d, want %d", got, want)
	}
}

// kernelOffloads reports whether the kernel has UDP GSO and can report
// UDP GRO (5.12 and later).
func kernelOffloads(t *testing.T) (gso, gro bool) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1)
	return offloads(fd, true)
}

func TestOffloadDetection(t *testing.T) {
	kgso, kgro := kernelOffloads(t)
	tests := []struct {
		name             string
		off              bool
		wantGSO, wantGRO bool
	}{
		{name: "default", wantGSO: kgso, wantGRO: kgro},
		{name: "DisableOffload", off: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _, _ := openBind(t, &Options{ListenAddr: lo4, DisableOffload: tt.off}, false, 0)
			so := b.socks.Load().all[0]
			if so.gso.Load() != tt.wantGSO || so.gro != tt.wantGRO {
				t.Errorf("gso, gro = %v, %v; want %v, %v", so.gso.Load(), so.gro, tt.wantGSO, tt.wantGRO)
			}
		})
	}
}

// TestOffloadStream sends runs of same-size datagrams, which GSO sends
// as one message and GRO may deliver as one read, and checks that every
// datagram arrives intact and in order whatever the receiver's buffers.
func TestOffloadStream(t *testing.T) {
	if gso, gro := kernelOffloads(t); !gso || !gro {
		t.Skipf("kernel without UDP GSO (%v) or GRO reporting (%v)", gso, gro)
	}
	tests := []struct {
		name         string
		rxOff, txOff bool
		nbufs        int // receiver buffers per call
		bufSize      int // receiver buffer size
		sizes        []int
	}{
		{name: "gso and gro, 16 buffers", nbufs: 16, bufSize: 1 << 16, sizes: repeat(100, 1420)},
		{name: "gso and gro, 1 buffer", nbufs: 1, bufSize: 1 << 16, sizes: repeat(70, 1420)},
		{name: "gso and gro, short buffers", nbufs: 8, bufSize: 1500, sizes: repeat(70, 1420)},
		{name: "short tail and mixed sizes", nbufs: 16, bufSize: 1 << 16,
			sizes: append(append(append(repeat(40, 1420), 77), repeat(30, 600)...), 1420, 1420, 1)},
		{name: "segments filling a datagram", nbufs: 16, bufSize: 1 << 16, sizes: repeat(64, 1000)},
		{name: "gso only", rxOff: true, nbufs: 16, bufSize: 1 << 16, sizes: repeat(100, 1420)},
		{name: "gro only", txOff: true, nbufs: 16, bufSize: 1 << 16, sizes: repeat(100, 1420)},
		{name: "no offload", rxOff: true, txOff: true, nbufs: 16, bufSize: 1 << 16, sizes: repeat(100, 1420)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rb, rfns, rport := openBind(t, &Options{ListenAddr: lo4, DisableOffload: tt.rxOff}, false, 0)
			sb, _, _ := openBind(t, &Options{ListenAddr: lo4, DisableOffload: tt.txOff, BatchSize: 128}, false, 0)
			bufs := make([][]byte, len(tt.sizes))
			for i, n := range tt.sizes {
				bufs[i] = make([]byte, n)
				copy(bufs[i], fmt.Sprintf("datagram %d of %d", i, n))
				for j := 20; j < n; j++ {
					bufs[i][j] = byte(i + j)
				}
			}
			// Queue everything, then read: GRO coalesces what waits.
			if err := sb.Send(bufs, &Endpoint{ap: netip.AddrPortFrom(lo4, rport)}); err != nil {
				t.Fatalf("Send: %v", err)
			}
			r := receiveSized(t, rb, rfns, tt.nbufs, tt.bufSize)
			got := r.collect(t, len(bufs), 5*time.Second)
			for i, d := range got {
				if d.data != string(bufs[i]) {
					t.Fatalf("datagram %d: got %d bytes %.20q, want %d bytes %.20q", i, len(d.data), d.data, len(bufs[i]), bufs[i])
				}
			}
			select {
			case d := <-r.c:
				t.Errorf("extra datagram %.20q", d.data)
			case <-time.After(20 * time.Millisecond):
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			// With GRO, reads are one message: only splitting a coalesced
			// one (sent with GSO: loopback does not coalesce) fills
			// several buffers. Without, recvmmsg takes what waits.
			if wantMulti := tt.nbufs > 1 && (tt.rxOff || !tt.txOff); wantMulti && r.multi == 0 {
				t.Error("no receive call returned more than one datagram")
			}
		})
	}
}

func repeat(n, size int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = size
	}
	return s
}

// inNetns runs f on a thread in a new, anonymous network namespace whose
// loopback is up with the given MTU. Sockets f opens stay in it; the
// namespace goes away with the thread and the last of them.
func inNetns(t *testing.T, mtu int, f func()) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		// What f leaves unsaid when a t.Fatal in it ends the goroutine.
		err := errors.New("set-up in the namespace failed")
		defer func() { errc <- err }()
		// The thread is never unlocked: it ends with the goroutine, so
		// no other goroutine runs in the namespace.
		runtime.LockOSThread()
		if e := unix.Unshare(unix.CLONE_NEWNET); e != nil {
			err = fmt.Errorf("unshare: %w", e)
			return
		}
		if e := setLoopback(mtu); e != nil {
			err = e
			return
		}
		f()
		err = nil
	}()
	if err := <-errc; err != nil {
		if errors.Is(err, unix.EPERM) {
			t.Skipf("no network namespace: %v", err)
		}
		t.Fatal(err)
	}
}

// setLoopback brings lo up with mtu in the calling thread's namespace.
func setLoopback(mtu int) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	ifr.SetUint32(uint32(mtu))
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFMTU, ifr); err != nil {
		return fmt.Errorf("set lo mtu: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}

// TestGSOFallback sends datagrams longer than the path MTU, which the
// kernel refuses to segment (EINVAL): the Bind turns GSO off and sends
// them again, fragmented, without losing or repeating any; also with a
// sticky source, where the EINVAL is first taken for the source's.
func TestGSOFallback(t *testing.T) {
	if gso, _ := kernelOffloads(t); !gso {
		t.Skip("kernel without UDP GSO")
	}
	for _, sticky := range []bool{false, true} {
		t.Run(fmt.Sprintf("sticky=%v", sticky), func(t *testing.T) {
			var rb, sb *Bind
			var rfns []conn.ReceiveFunc
			var rport uint16
			inNetns(t, 1280, func() {
				rb, rfns, rport = openBind(t, &Options{ListenAddr: lo4, StickySource: sticky}, false, 0)
				sb, _, _ = openBind(t, &Options{ListenAddr: lo4, StickySource: sticky}, false, 0)
			})
			so := sb.socks.Load().all[0]
			if !so.gso.Load() {
				t.Fatal("GSO off before the first send")
			}
			r := receive(t, rb, rfns, 16)
			bufs := payloads(10, 1400)
			ep := &Endpoint{ap: netip.AddrPortFrom(lo4, rport)}
			if sticky {
				ep.src = lo4
			}
			if err := sb.Send(bufs, ep); err != nil {
				t.Fatalf("Send: %v", err)
			}
			if so.gso.Load() {
				t.Error("GSO still on after EINVAL")
			}
			got := r.collect(t, len(bufs), 5*time.Second)
			for i, d := range got {
				if d.data != string(bufs[i]) {
					t.Fatalf("datagram %d = %.12q..., want %.12q...", i, d.data, bufs[i])
				}
			}
			select {
			case d := <-r.c:
				t.Errorf("extra datagram %.12q...", d.data)
			case <-time.After(20 * time.Millisecond):
			}
		})
	}
}

func TestSetMark(t *testing.T) {
	b := New(&Options{ListenAddr: lo4})
	if err := b.SetMark(7); err != nil {
		t.Fatalf("SetMark on a closed Bind: %v", err)
	}
	mark := func() int {
		t.Helper()
		var m int
		var serr error
		so := b.socks.Load().all[0]
		if err := so.rc.Control(func(fd uintptr) { m, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) }); err != nil {
			t.Fatal(err)
		}
		if serr != nil {
			t.Fatal(serr)
		}
		return m
	}
	if _, _, err := b.Open(0); errors.Is(err, unix.EPERM) {
		t.Skipf("SO_MARK needs CAP_NET_ADMIN: %v", err)
	} else if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer b.Close()
	if got := mark(); got != 7 {
		t.Errorf("SO_MARK after Open = %d, want 7 (set before Open)", got)
	}
	if err := b.SetMark(9); err != nil {
		t.Fatalf("SetMark: %v", err)
	}
	if got := mark(); got != 9 {
		t.Errorf("SO_MARK = %d, want 9", got)
	}
	b.Close()
	if _, _, err := b.Open(0); err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if got := mark(); got != 9 {
		t.Errorf("SO_MARK after reopen = %d, want 9", got)
	}
}

func TestEndpointScope(t *testing.T) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Skipf("no lo: %v", err)
	}
	tests := []struct {
		in   string
		want uint32
	}{
		{"[fe80::1%3]:7", 3},
		{"[fe80::1%lo]:7", uint32(lo.Index)},
		{"[fe80::1]:7", 0},
		{"127.0.0.1:7", 0},
	}
	b := New(nil)
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			ep, err := b.ParseEndpoint(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := ep.(*Endpoint).scope; got != tt.want {
				t.Errorf("scope = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestGROBatchOverflow reads coalesced messages in the batch mode a GRO
// socket enters after many uncoalesced datagrams: datagrams beyond the
// caller's buffers wait in a grown scratch buffer, are handed over in
// order, and the buffer shrinks back afterwards.
func TestGROBatchOverflow(t *testing.T) {
	if gso, gro := kernelOffloads(t); !gso || !gro {
		t.Skipf("kernel without UDP GSO (%v) or GRO reporting (%v)", gso, gro)
	}
	var sizes []int
	for _, run := range []struct{ n, size int }{
		{3, 1420}, {20, 1000}, {20, 1200}, {1, 50}, {40, 1420}, {2, 300}, {30, 1100}, {1, 1500}, {25, 900},
	} {
		sizes = append(sizes, repeat(run.n, run.size)...)
	}
	tests := []struct {
		name     string
		batch    bool // start in batch mode
		nbufs    int
		wantGrow bool // overflow beyond one message: scratch grows
	}{
		{name: "batch mode, 16 buffers", batch: true, nbufs: 16, wantGrow: true},
		{name: "batch mode, 3 buffers", batch: true, nbufs: 3},
		{name: "one message per read, 16 buffers", nbufs: 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rb, rfns, rport := openBind(t, &Options{ListenAddr: lo4, BatchSize: 16}, false, 0)
			sb, _, _ := openBind(t, &Options{ListenAddr: lo4, BatchSize: 128}, false, 0)
			so := rb.socks.Load().all[0]
			if !so.gro {
				t.Fatal("GRO off")
			}
			if tt.batch {
				so.r.singles = batchAfterSingles // no receive runs yet
			}
			out := make([][]byte, len(sizes))
			for i, n := range sizes {
				out[i] = make([]byte, n)
				copy(out[i], fmt.Sprintf("datagram %d of %d", i, n))
			}
			if err := sb.Send(out, &Endpoint{ap: netip.AddrPortFrom(lo4, rport)}); err != nil {
				t.Fatalf("Send: %v", err)
			}
			// Everything is queued: read it in this goroutine, so that
			// the state can be checked afterwards.
			bufs, ns, eps := recvBuffers(tt.nbufs, 1<<16)
			var got [][]byte
			maxScratch := 0
			for calls := 0; len(got) < len(out); calls++ {
				if calls > len(out) {
					t.Fatalf("%d calls for %d of %d datagrams", calls, len(got), len(out))
				}
				n, err := rfns[0](bufs, ns, eps)
				if err != nil {
					t.Fatal(err)
				}
				for i := range n {
					got = append(got, append([]byte(nil), bufs[i][:ns[i]]...))
				}
				maxScratch = max(maxScratch, len(so.r.scratch))
			}
			for i := range out {
				if string(got[i]) != string(out[i]) {
					t.Fatalf("datagram %d: got %d bytes %.20q, want %d bytes %.20q", i, len(got[i]), got[i], len(out[i]), out[i])
				}
			}
			if len(so.r.pending) != 0 || len(so.r.scratch) > maxDatagram {
				t.Errorf("after: %d pending, scratch %d bytes; want none pending and at most %d", len(so.r.pending), len(so.r.scratch), maxDatagram)
			}
			if tt.wantGrow && maxScratch <= maxDatagram {
				t.Errorf("scratch never grew beyond %d bytes: the batch read did not overflow", maxScratch)
			}
			t.Logf("largest scratch %d bytes", maxScratch)
		})
	}
}

// TestGROLargeMessagesViaScratch sends coalesced messages of 40 datagrams
// to a receiver with 16 buffers: after the first, each message is read
// into the scratch buffer and copied out once per datagram, not read into
// the caller's first buffer, split, and its overflow copied twice. The
// caller's first buffer past the datagram handed over shows which.
func TestGROLargeMessagesViaScratch(t *testing.T) {
	if gso, gro := kernelOffloads(t); !gso || !gro {
		t.Skipf("kernel without UDP GSO (%v) or GRO reporting (%v)", gso, gro)
	}
	const msgs, segs, size, nbufs = 4, 40, 1420, 16
	rb, rfns, rport := openBind(t, &Options{ListenAddr: lo4, BatchSize: nbufs}, false, 0)
	sb, _, _ := openBind(t, &Options{ListenAddr: lo4, BatchSize: 128}, false, 0)
	so := rb.socks.Load().all[0]
	var out [][]byte
	for m := range msgs {
		run := make([][]byte, segs)
		for i := range run {
			run[i] = make([]byte, size)
			copy(run[i], fmt.Sprintf("message %d datagram %d", m, i))
		}
		if err := sb.Send(run, &Endpoint{ap: netip.AddrPortFrom(lo4, rport)}); err != nil {
			t.Fatalf("Send: %v", err)
		}
		out = append(out, run...)
	}
	bufs, ns, eps := recvBuffers(nbufs, 1<<16)
	var got [][]byte
	viaScratch := 0
	for calls := 0; len(got) < len(out); calls++ {
		if calls > len(out) {
			t.Fatalf("%d calls for %d of %d datagrams", calls, len(got), len(out))
		}
		reads := len(so.r.pending) == 0
		wantScratch := reads && so.r.lastSegs > nbufs
		for i := range bufs[0] {
			bufs[0][i] = 0xaa
		}
		n, err := rfns[0](bufs, ns, eps)
		if err != nil {
			t.Fatal(err)
		}
		if reads && so.r.lastSegs != segs {
			t.Fatalf("message of %d datagrams, want %d: the kernel did not coalesce", so.r.lastSegs, segs)
		}
		untouched := !slices.ContainsFunc(bufs[0][ns[0]:], func(b byte) bool { return b != 0xaa })
		if wantScratch {
			viaScratch++
			if !untouched {
				t.Errorf("call %d: message read into the caller's buffer after one of %d datagrams", calls, segs)
			}
		}
		for i := range n {
			got = append(got, append([]byte(nil), bufs[i][:ns[i]]...))
		}
	}
	for i := range out {
		if string(got[i]) != string(out[i]) {
			t.Fatalf("datagram %d: got %.24q, want %.24q", i, got[i], out[i])
		}
	}
	if viaScratch != msgs-1 {
		t.Errorf("%d messages read via scratch, want %d", viaScratch, msgs-1)
	}
}
