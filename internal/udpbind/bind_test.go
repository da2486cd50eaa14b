package udpbind

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"golang.zx2c4.com/wireguard/conn"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var (
	lo4 = netip.MustParseAddr("127.0.0.1")
	lo6 = netip.MustParseAddr("::1")
)

// have6 reports whether ::1 can be bound.
func have6() bool {
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// openBind opens a Bind with opts on port and closes it at the end of
// the test.
func openBind(t testing.TB, opts *Options, noDualStack bool, port uint16) (*Bind, []conn.ReceiveFunc, uint16) {
	t.Helper()
	b := New(opts)
	b.noDualStack = noDualStack
	fns, p, err := b.Open(port)
	if err != nil {
		t.Fatalf("Open(%d): %v", port, err)
	}
	t.Cleanup(func() { b.Close() })
	return b, fns, p
}

// datagram is one received datagram.
type datagram struct {
	from string
	data string
}

// receiver runs every ReceiveFunc in a goroutine until the Bind is
// closed, and counts the calls that returned more than one datagram.
type receiver struct {
	c     chan datagram
	wg    sync.WaitGroup
	mu    sync.Mutex
	multi int // guarded by mu
}

func receive(t testing.TB, b *Bind, fns []conn.ReceiveFunc, nbufs int) *receiver {
	return receiveSized(t, b, fns, nbufs, 1<<16)
}

// receiveSized is receive with buffers of size bytes.
func receiveSized(t testing.TB, b *Bind, fns []conn.ReceiveFunc, nbufs, size int) *receiver {
	r := &receiver{c: make(chan datagram, 4096)}
	for _, fn := range fns {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			bufs, sizes, eps := recvBuffers(nbufs, size)
			for {
				n, err := fn(bufs, sizes, eps)
				if err != nil {
					if !errors.Is(err, net.ErrClosed) {
						t.Errorf("receive: %v", err)
					}
					return
				}
				if n > 1 {
					r.mu.Lock()
					r.multi++
					r.mu.Unlock()
				}
				for i := range n {
					r.c <- datagram{eps[i].DstToString(), string(bufs[i][:sizes[i]])}
				}
			}
		}()
	}
	t.Cleanup(func() {
		b.Close()
		r.wg.Wait()
	})
	return r
}

// collect returns the next n datagrams, failing the test after timeout.
func (r *receiver) collect(t testing.TB, n int, timeout time.Duration) []datagram {
	t.Helper()
	var got []datagram
	deadline := time.After(timeout)
	for len(got) < n {
		select {
		case d := <-r.c:
			got = append(got, d)
		case <-deadline:
			t.Fatalf("received %d of %d datagrams in %v", len(got), n, timeout)
		}
	}
	return got
}

// recvBuffers returns the arguments of a ReceiveFunc: n buffers of size
// bytes, and n sizes and endpoints.
func recvBuffers(n, size int) ([][]byte, []int, []conn.Endpoint) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, size)
	}
	return bufs, make([]int, n), make([]conn.Endpoint, n)
}

// payloads returns n numbered datagrams of size bytes.
func payloads(n, size int) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		b := make([]byte, size)
		copy(b, fmt.Sprintf("datagram %d", i))
		bufs[i] = b
	}
	return bufs
}

func TestOpenClose(t *testing.T) {
	b := New(&Options{ListenAddr: lo4})
	fns, port, err := b.Open(0)
	if err != nil {
		t.Fatalf("Open(0): %v", err)
	}
	if port == 0 || len(fns) != 1 {
		t.Fatalf("Open(0) = %d fns, port %d; want 1 fn and a port", len(fns), port)
	}
	if _, _, err := b.Open(0); !errors.Is(err, conn.ErrBindAlreadyOpen) {
		t.Fatalf("second Open = %v, want conn.ErrBindAlreadyOpen", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close of a closed Bind: %v", err)
	}
	// Reopen on the port just released, as the engine does.
	fns, port2, err := b.Open(port)
	if err != nil {
		t.Fatalf("reopen on %d: %v", port, err)
	}
	if port2 != port || len(fns) != 1 {
		t.Fatalf("reopen = %d fns, port %d; want 1 fn and port %d", len(fns), port2, port)
	}
	// The port is now in use.
	other := New(&Options{ListenAddr: lo4})
	if _, _, err := other.Open(port); err == nil {
		other.Close()
		t.Fatalf("Open(%d) of a port in use succeeded", port)
	} else if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Open(%d) of a port in use = %v, want EADDRINUSE", port, err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Send([][]byte{{1}}, &Endpoint{ap: netip.AddrPortFrom(lo4, port)}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Send after Close = %v, want net.ErrClosed", err)
	}
}

func TestOpenSockets(t *testing.T) {
	tests := []struct {
		name        string
		addr        netip.Addr
		noDualStack bool
		need6       bool
		wantFns     []string // PrettyName of each ReceiveFunc
	}{
		{name: "dual-stack", wantFns: []string{"receiveDualStack"}},
		{name: "unspecified v6 is dual-stack", addr: netip.IPv6Unspecified(), wantFns: []string{"receiveDualStack"}},
		{name: "pair", noDualStack: true, need6: true, wantFns: []string{"v4", "v6"}},
		{name: "v4", addr: lo4, wantFns: []string{"v4"}},
		{name: "unspecified v4", addr: netip.IPv4Unspecified(), wantFns: []string{"v4"}},
		{name: "v6", addr: lo6, need6: true, wantFns: []string{"v6"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.need6 && !have6() {
				t.Skip("IPv6 loopback not available")
			}
			_, fns, port := openBind(t, &Options{ListenAddr: tt.addr}, tt.noDualStack, 0)
			if port == 0 {
				t.Error("Open(0) returned port 0")
			}
			var names []string
			for _, fn := range fns {
				names = append(names, fn.PrettyName())
			}
			if diff := cmp.Diff(tt.wantFns, names); diff != "" {
				t.Errorf("ReceiveFuncs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSendReceive(t *testing.T) {
	tests := []struct {
		name        string
		listen      netip.Addr // of the receiver
		noDualStack bool
		to          netip.Addr // the receiver's address to send to
	}{
		{name: "v4 to dual-stack", to: lo4},
		{name: "v6 to dual-stack", to: lo6},
		{name: "v4 to pair", noDualStack: true, to: lo4},
		{name: "v6 to pair", noDualStack: true, to: lo6},
		{name: "v4 to v4", listen: lo4, to: lo4},
		{name: "v6 to v6", listen: lo6, to: lo6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.to.Is6() && !have6() {
				t.Skip("IPv6 loopback not available")
			}
			const batch = 8
			opts := &Options{BatchSize: batch, ListenAddr: tt.listen}
			rb, rfns, rport := openBind(t, opts, tt.noDualStack, 0)
			sb, _, sport := openBind(t, &Options{BatchSize: batch, ListenAddr: tt.to}, false, 0)
			r := receive(t, rb, rfns, batch)

			ep, err := sb.ParseEndpoint(netip.AddrPortFrom(tt.to, rport).String())
			if err != nil {
				t.Fatal(err)
			}
			bufs := payloads(batch, 100)
			if err := sb.Send(bufs, ep); err != nil {
				t.Fatalf("Send: %v", err)
			}
			got := r.collect(t, batch, 5*time.Second)
			from := netip.AddrPortFrom(tt.to, sport).String()
			var want []datagram
			for _, b := range bufs {
				want = append(want, datagram{from, string(b)})
			}
			if diff := cmp.Diff(want, got, cmp.AllowUnexported(datagram{})); diff != "" {
				t.Errorf("received (-want +got):\n%s", diff)
			}
		})
	}
}

// TestBatchBoundary queues more datagrams than a receive call has buffers
// for: they arrive in order over several calls, some with several
// datagrams each.
func TestBatchBoundary(t *testing.T) {
	const batch, n = 8, 8*5 + 3
	rb, rfns, rport := openBind(t, &Options{BatchSize: batch, ListenAddr: lo4}, false, 0)
	sb, _, _ := openBind(t, &Options{BatchSize: batch, ListenAddr: lo4}, false, 0)
	ep, err := sb.ParseEndpoint(netip.AddrPortFrom(lo4, rport).String())
	if err != nil {
		t.Fatal(err)
	}
	bufs := payloads(n, 200)
	// Queue everything before anyone reads.
	for i := 0; i < n; i += batch {
		if err := sb.Send(bufs[i:min(i+batch, n)], ep); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	r := receive(t, rb, rfns, batch)
	got := r.collect(t, n, 5*time.Second)
	for i, d := range got {
		if d.data != string(bufs[i]) {
			t.Fatalf("datagram %d = %.12q..., want %.12q...", i, d.data, bufs[i])
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.multi == 0 {
		t.Errorf("no receive call returned more than one datagram")
	}
}

// TestSendMoreThanBatch sends more buffers in one call than BatchSize.
func TestSendMoreThanBatch(t *testing.T) {
	const batch, n = 4, 20
	rb, rfns, rport := openBind(t, &Options{BatchSize: batch, ListenAddr: lo4}, false, 0)
	sb, _, _ := openBind(t, &Options{BatchSize: batch, ListenAddr: lo4}, false, 0)
	r := receive(t, rb, rfns, batch)
	bufs := payloads(n, 300)
	if err := sb.Send(bufs, &Endpoint{ap: netip.AddrPortFrom(lo4, rport)}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := r.collect(t, n, 5*time.Second)
	for i, d := range got {
		if d.data != string(bufs[i]) {
			t.Fatalf("datagram %d = %.12q..., want %.12q...", i, d.data, bufs[i])
		}
	}
}

func TestCloseUnblocksReceive(t *testing.T) {
	tests := []struct {
		name        string
		noDualStack bool
	}{
		{name: "dual-stack"},
		{name: "pair", noDualStack: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, fns, _ := openBind(t, nil, tt.noDualStack, 0)
			errc := make(chan error, len(fns))
			for _, fn := range fns {
				go func() {
					bufs := [][]byte{make([]byte, 1500)}
					_, err := fn(bufs, make([]int, 1), make([]conn.Endpoint, 1))
					errc <- err
				}()
			}
			time.Sleep(20 * time.Millisecond) // let the receives block
			if err := b.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			for range fns {
				select {
				case err := <-errc:
					if !errors.Is(err, net.ErrClosed) {
						t.Errorf("receive after Close = %v, want net.ErrClosed", err)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("Close did not unblock a receive")
				}
			}
		})
	}
}

func TestParseEndpoint(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantIP  netip.Addr
		wantErr bool
	}{
		{in: "1.2.3.4:51820", want: "1.2.3.4:51820", wantIP: netip.MustParseAddr("1.2.3.4")},
		{in: "[::ffff:1.2.3.4]:51820", want: "1.2.3.4:51820", wantIP: netip.MustParseAddr("1.2.3.4")},
		{in: "[2001:db8::1]:7", want: "[2001:db8::1]:7", wantIP: netip.MustParseAddr("2001:db8::1")},
		{in: "[fe80::1%eth0]:7", want: "[fe80::1%eth0]:7", wantIP: netip.MustParseAddr("fe80::1%eth0")},
		{in: "1.2.3.4", wantErr: true},
		{in: "example.com:1", wantErr: true},
		{in: "", wantErr: true},
	}
	b := New(nil)
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			ep, err := b.ParseEndpoint(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseEndpoint(%q) = %v, want an error", tt.in, ep.DstToString())
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseEndpoint(%q): %v", tt.in, err)
			}
			if got := ep.DstToString(); got != tt.want {
				t.Errorf("DstToString() = %q, want %q", got, tt.want)
			}
			if got := ep.DstIP(); got != tt.wantIP {
				t.Errorf("DstIP() = %v, want %v", got, tt.wantIP)
			}
			if ep.SrcToString() != "" || ep.SrcIP().IsValid() {
				t.Errorf("source = %q, %v; want none", ep.SrcToString(), ep.SrcIP())
			}
			ep.ClearSrc()
			if len(ep.DstToBytes()) == 0 {
				t.Error("DstToBytes() is empty")
			}
		})
	}
}

func TestSendWrongEndpoint(t *testing.T) {
	b, _, _ := openBind(t, &Options{ListenAddr: lo4}, false, 0)
	ep, err := conn.NewDefaultBind().ParseEndpoint("127.0.0.1:9")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Send([][]byte{{1}}, ep); !errors.Is(err, conn.ErrWrongEndpointType) {
		t.Errorf("Send to a foreign endpoint = %v, want conn.ErrWrongEndpointType", err)
	}
}

// TestAllocs checks that a steady stream of sends and receives from a
// known peer allocates nothing, with and without offloads, and with a
// sticky source on both sides (where the system has it: the sender
// passes its source, the receiver reads the destination address).
func TestAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items, which allocates")
	}
	tests := []struct {
		name         string
		rxOff, txOff bool
		sticky       bool
	}{
		{name: "offload"},
		{name: "no offload", rxOff: true, txOff: true},
		// GRO reading uncoalesced datagrams, in batches after a while.
		{name: "rx offload", txOff: true},
		{name: "offload, sticky", sticky: true},
		{name: "no offload, sticky", rxOff: true, txOff: true, sticky: true},
		{name: "rx offload, sticky", txOff: true, sticky: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const batch = 8
			_, rfns, rport := openBind(t, &Options{BatchSize: batch, ListenAddr: lo4, DisableOffload: tt.rxOff, StickySource: tt.sticky}, false, 0)
			sb, _, _ := openBind(t, &Options{BatchSize: batch, ListenAddr: lo4, DisableOffload: tt.txOff, StickySource: tt.sticky}, false, 0)
			ep := &Endpoint{ap: netip.AddrPortFrom(lo4, rport)}
			if tt.sticky {
				ep.src = lo4
			}
			out := payloads(batch, 1420)
			bufs, sizes, eps := recvBuffers(batch, 1<<16)
			fn := rfns[0]
			var failed error
			round := func() {
				if err := sb.Send(out, ep); err != nil {
					failed = err
					return
				}
				for got := 0; got < batch; {
					n, err := fn(bufs, sizes, eps)
					if err != nil {
						failed = err
						return
					}
					if tt.sticky && batching && eps[0].SrcIP() != lo4 {
						failed = fmt.Errorf("received with source %v, want %v", eps[0].SrcIP(), lo4)
						return
					}
					got += n
				}
			}
			round() // warm the caches and pools
			allocs := testing.AllocsPerRun(50, round)
			if failed != nil {
				t.Fatal(failed)
			}
			if perPacket := allocs / batch; perPacket != 0 {
				t.Errorf("%.2f allocations per packet (%.1f per round of %d), want 0", perPacket, allocs, batch)
			}
		})
	}
}
