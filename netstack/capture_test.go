package netstack

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// syncBuffer is a bytes.Buffer safe for the capture goroutine and the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// pcapFile is a pcap file as this test reads it, independently of the
// writer in capture.go.
type pcapFile struct {
	Magic        uint32
	Major, Minor uint16
	SnapLen      uint32
	LinkType     uint32
	Records      []pcapRecord
}

type pcapRecord struct {
	Time time.Time
	Orig int // the packet's length
	Data []byte
}

// parsePcap parses a little-endian pcap file with nanosecond time stamps.
func parsePcap(t *testing.T, b []byte) pcapFile {
	t.Helper()
	if len(b) < 24 {
		t.Fatalf("pcap file of %d bytes, want at least the 24-byte header", len(b))
	}
	le := binary.LittleEndian
	f := pcapFile{
		Magic:    le.Uint32(b[0:]),
		Major:    le.Uint16(b[4:]),
		Minor:    le.Uint16(b[6:]),
		SnapLen:  le.Uint32(b[16:]),
		LinkType: le.Uint32(b[20:]),
	}
	if zone, sigfigs := le.Uint32(b[8:]), le.Uint32(b[12:]); zone != 0 || sigfigs != 0 {
		t.Errorf("thiszone, sigfigs = %d, %d; want 0, 0", zone, sigfigs)
	}
	b = b[24:]
	for len(b) > 0 {
		if len(b) < 16 {
			t.Fatalf("%d trailing bytes after record %d, want a 16-byte record header", len(b), len(f.Records))
		}
		sec, nsec := le.Uint32(b[0:]), le.Uint32(b[4:])
		incl, orig := int(le.Uint32(b[8:])), int(le.Uint32(b[12:]))
		if nsec >= 1e9 {
			t.Fatalf("record %d: %d nanoseconds", len(f.Records), nsec)
		}
		if incl > orig || incl > int(f.SnapLen) || 16+incl > len(b) {
			t.Fatalf("record %d: %d bytes of %d, snap length %d, %d bytes left", len(f.Records), incl, orig, f.SnapLen, len(b)-16)
		}
		f.Records = append(f.Records, pcapRecord{
			Time: time.Unix(int64(sec), int64(nsec)),
			Orig: orig,
			Data: b[16 : 16+incl],
		})
		b = b[16+incl:]
	}
	return f
}

// TestCaptureFormat records packets directly and reads the file back: the
// header, one record per packet, the snap length cutting long packets
// (their length kept), and time stamps of when they were recorded.
func TestCaptureFormat(t *testing.T) {
	var out syncBuffer
	c := newCapture(&out, 100, slog.New(slog.DiscardHandler))
	c.start()
	start := time.Now()
	short := echoRequest(t, linkLocal4, linkPeer4, 1, 0)
	long := append(echoRequest(t, linkLocal6, linkPeer6, 2, 0), make([]byte, 200)...)
	c.record(short)
	c.record(long)
	c.stop()
	end := time.Now()

	f := parsePcap(t, out.Bytes())
	for _, r := range f.Records {
		if r.Time.Before(start.Truncate(time.Microsecond)) || r.Time.After(end) {
			t.Errorf("time stamp %v outside the test's %v .. %v", r.Time, start, end)
		}
	}
	for i := range f.Records {
		f.Records[i].Time = time.Time{}
	}
	want := pcapFile{
		Magic: 0xa1b23c4d, Major: 2, Minor: 4, SnapLen: 100, LinkType: 101,
		Records: []pcapRecord{
			{Orig: len(short), Data: short},
			{Orig: len(long), Data: long[:100]},
		},
	}
	if diff := cmp.Diff(want, f); diff != "" {
		t.Errorf("pcap file (-want +got):\n%s", diff)
	}
	if got := (Stats{CapturePackets: c.captured.Load(), CaptureDropped: c.dropped.Load()}); got != (Stats{CapturePackets: 2}) {
		t.Errorf("counters = %+v, want 2 captured, 0 dropped", got)
	}
}

// exchangeTCP makes one TCP connection from a to b's dst: a sends payload
// and closes its side, b answers "got N bytes" and closes. It returns
// after a has read b's answer and FIN.
func exchangeTCP(t *testing.T, a, b *Net, dst netip.Addr, payload []byte) {
	t.Helper()
	l, err := b.Listen("tcp", netip.AddrPortFrom(dst, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	srvErr := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		got, err := io.ReadAll(c)
		if err != nil {
			srvErr <- err
			return
		}
		_, err = fmt.Fprintf(c, "got %d bytes", len(got))
		srvErr <- err
	}()
	c, err := a.DialContext(testContext(t, 20*time.Second), "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	reply, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-srvErr; err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("got %d bytes", len(payload)); string(reply) != want {
		t.Fatalf("reply %q, want %q", reply, want)
	}
}

// TestCaptureTCPDump captures TCP connections over IPv4 and IPv6, one
// carrying bulk data that the stack hands the link as super-packets, and
// reads the file back with tcpdump: it must show each connection's SYN,
// SYN-ACK, data and both FINs, with correct TCP checksums on every
// segment, and no outbound packet longer than the MTU.
func TestCaptureTCPDump(t *testing.T) {
	tcpdump, err := exec.LookPath("tcpdump")
	if err != nil {
		t.Skip("tcpdump is not installed (.ci/run installs it): " + err.Error())
	}
	var out syncBuffer
	a, b := openPairOpts(t, nil, &Options{Capture: &out}, nil)
	hello := []byte("hello through the tunnel")
	bulk := append(bytes.Clone(hello), patterned(256<<10)...)
	exchangeTCP(t, a, b, addrB4, hello)
	exchangeTCP(t, a, b, addrB6, bulk)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	data := out.Bytes()
	st := a.Stats()

	// The Go view: every record a whole IP packet within the MTU.
	f := parsePcap(t, data)
	if uint64(len(f.Records)) != st.CapturePackets || st.CaptureDropped != 0 {
		t.Errorf("file has %d records; Stats = %+v, want as many captured and none dropped", len(f.Records), st)
	}
	for i, r := range f.Records {
		var ipLen int
		switch header.IPVersion(r.Data) {
		case 4:
			ipLen = int(header.IPv4(r.Data).TotalLength())
		case 6:
			ipLen = header.IPv6MinimumSize + int(header.IPv6(r.Data).PayloadLength())
		default:
			t.Fatalf("record %d is not an IP packet: % x", i, r.Data[:min(len(r.Data), 20)])
		}
		if ipLen != len(r.Data) || r.Orig != len(r.Data) || len(r.Data) > a.MTU() {
			t.Errorf("record %d: %d bytes, IP length %d, original %d; want one whole packet within the MTU %d", i, len(r.Data), ipLen, r.Orig, a.MTU())
		}
	}
	if least := len(bulk) / a.MTU(); len(f.Records) < least {
		t.Errorf("%d records, want at least %d for the bulk data alone", len(f.Records), least)
	}

	path := filepath.Join(t.TempDir(), "tunnel.pcap")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tcpdump, "-r", path, "-nn", "-vv", "-A")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	dump, err := cmd.Output()
	if err != nil {
		t.Fatalf("tcpdump -r: %v\n%s", err, stderr.Bytes())
	}
	text := string(dump)
	if strings.Contains(text, "incorrect") || strings.Contains(text, "bad cksum") || strings.Contains(text, "truncated") {
		t.Errorf("tcpdump reports a bad packet:\n%s", firstLines(text, 60))
	}
	if n := strings.Count(text, "(correct)"); n < len(f.Records) {
		t.Errorf("tcpdump verified %d TCP checksums, want all %d packets'", n, len(f.Records))
	}
	for _, dst := range []netip.Addr{addrB4, addrB6} {
		src, fam := addrA4, "IP "
		if dst.Is6() {
			src, fam = addrA6, "IP6 "
		}
		out := regexp.QuoteMeta(src.String()) + `\.\d+ > ` + regexp.QuoteMeta(dst.String()) + `\.\d+: Flags \[`
		in := regexp.QuoteMeta(dst.String()) + `\.\d+ > ` + regexp.QuoteMeta(src.String()) + `\.\d+: Flags \[`
		for _, tt := range []struct{ name, re string }{
			{"SYN", out + `S\]`},
			{"SYN-ACK", in + `S\.\]`},
			{"data", out + `[FP]*\.\], .*length [1-9]`},
			{"answer", in + `[FP]*\.\], .*length 1[0-9]`},
			{"FIN out", out + `F`},
			{"FIN in", in + `F`},
		} {
			if !regexp.MustCompile(tt.re).MatchString(text) {
				t.Errorf("%s: no %s in tcpdump's output (pattern %s):\n%s", fam, tt.name, tt.re, firstLines(text, 60))
			}
		}
	}
	for _, s := range []string{string(hello), "got 24 bytes", fmt.Sprintf("got %d bytes", len(bulk))} {
		if !strings.Contains(text, s) {
			t.Errorf("tcpdump -A shows no %q", s)
		}
	}
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines[n] = "..."
	}
	return strings.Join(lines, "\n")
}

// blockedWriter blocks every Write until released.
type blockedWriter struct {
	release chan struct{}
	mu      sync.Mutex
	n       int
}

func (w *blockedWriter) Write(p []byte) (int, error) {
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n += len(p)
	return len(p), nil
}

// transfer sends size bytes from a to b over TCP and returns how long it
// took.
func transfer(t testing.TB, a, b *Net, size int) time.Duration {
	t.Helper()
	l, err := b.Listen("tcp", netip.AddrPortFrom(addrB4, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		k, _ := io.Copy(io.Discard, c)
		got <- k
	}()
	start := time.Now()
	c, err := a.DialContext(testContext(t, 20*time.Second), "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	chunk := patterned(64 << 10)
	for sent := 0; sent < size; sent += len(chunk) {
		if _, err := c.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	if k := <-got; k != int64(size) {
		t.Fatalf("received %d bytes, want %d", k, size)
	}
	return time.Since(start)
}

// TestCaptureSlowWriter captures to a writer that blocks: the tunnel must
// move data as fast as without a capture, the packets the writer could
// not take are counted, and what it takes once released is a valid file.
func TestCaptureSlowWriter(t *testing.T) {
	size := 64 << 20
	if raceEnabled {
		size = 8 << 20 // the race detector slows the transfer tenfold
	}
	a0, b0 := openPair(t, nil)
	transfer(t, a0, b0, 1<<20) // handshake and warm-up
	base := transfer(t, a0, b0, size)
	a0.Close()
	b0.Close()

	w := &blockedWriter{release: make(chan struct{})}
	a, b := openPairOpts(t, nil, &Options{Capture: w}, nil)
	transfer(t, a, b, 1<<20)
	slow := transfer(t, a, b, size)
	t.Logf("%d MiB: %v without capture, %v with a blocked capture writer", size>>20, base, slow)
	// Generous: the machine is shared, and the queue still costs a copy
	// per packet. A tunnel waiting for the writer would not finish at all.
	if slow > 5*base+5*time.Second {
		t.Errorf("transfer with a blocked capture writer took %v, without capture %v", slow, base)
	}
	st := a.Stats()
	if least := uint64(size / a.MTU()); st.CaptureDropped < least || st.CapturePackets != 0 {
		t.Errorf("Stats = %+v with the writer blocked, want none captured and at least %d dropped", st, least)
	}
	close(w.release)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	st2 := a.Stats()
	if st2.CapturePackets == 0 || st2.CapturePackets+st2.CaptureDropped < st.CaptureDropped {
		t.Errorf("Stats after Close = %+v, before %+v: want the queued packets written", st2, st)
	}
	// The queue held 1 MiB of packets, the writer one more; a few more
	// may have passed since (ACKs, keepalives).
	if most := captureQueueBytes/a.MTU() + 1 + 16; st2.CapturePackets > uint64(most) {
		t.Errorf("%d packets written after the release, want at most the queue's %d", st2.CapturePackets, most)
	}
}

// failingWriter fails every Write.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// TestCaptureWriteError checks that a failing writer stops the capture,
// not the tunnel, and that the lost packets are counted.
func TestCaptureWriteError(t *testing.T) {
	a, b := openPairOpts(t, nil, &Options{Capture: failingWriter{}}, nil)
	exchangeTCP(t, a, b, addrB4, []byte("hello"))
	a.Close()
	if st := a.Stats(); st.CapturePackets != 0 || st.CaptureDropped < 6 {
		t.Errorf("Stats = %+v, want nothing captured and every packet (at least 6) dropped", st)
	}
}

// TestCaptureAllocs holds the link to no allocation per packet, with
// Capture nil (one nil check) and with a capture running: outbound, a
// super-packet cut into the engine's buffers; inbound, a batch of
// segments delivered to the stack.
func TestCaptureAllocs(t *testing.T) {
	for _, capturing := range []bool{false, true} {
		t.Run(fmt.Sprintf("capture=%v", capturing), func(t *testing.T) {
			l := newSuperLink(t, capturing)
			e, bufs, sizes := l.e, l.bufs, l.sizes
			var segs int
			out := testing.AllocsPerRun(100, func() { segs = l.round(t) })
			if segs != 40 {
				t.Fatalf("readBatch returned %d segments, want 40", segs)
			}
			if out != 0 {
				t.Errorf("queueing and reading a super-packet made %v allocations, want 0", out)
			}

			if raceEnabled {
				return // see TestDeliverBatchAllocs
			}
			in := make([][]byte, 16)
			for i := range in {
				in[i] = bufs[i][16 : 16+sizes[i]]
			}
			var d releasingDispatcher
			e.Attach(&d)
			allocs := testing.AllocsPerRun(200, func() {
				if n, err := e.deliverBatch(in, 0); n != 16 || err != nil {
					t.Fatalf("deliverBatch = %d, %v", n, err)
				}
			})
			if allocs >= 1 {
				t.Errorf("deliverBatch made %v allocations per batch of 16, want fewer than 1", allocs)
			}
			if capturing && e.capture.captured.Load()+e.capture.dropped.Load() == 0 {
				t.Error("the capture recorded nothing")
			}
		})
	}
}

// BenchmarkCapture moves TCP data between two tunnels without a capture,
// with one to io.Discard, and with one whose writer blocks (every packet
// dropped from the capture): the capture must cost the tunnel little,
// and a stuck writer nothing.
func BenchmarkCapture(b *testing.B) {
	const size = 4 << 20
	for _, bc := range []struct {
		name string
		w    func() (io.Writer, func())
	}{
		{"capture=off", func() (io.Writer, func()) { return nil, func() {} }},
		{"capture=discard", func() (io.Writer, func()) { return io.Discard, func() {} }},
		{"capture=blocked", func() (io.Writer, func()) {
			w := &blockedWriter{release: make(chan struct{})}
			return w, func() { close(w.release) }
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			w, release := bc.w()
			var opts *Options
			if w != nil {
				opts = &Options{Capture: w}
			}
			x, y := openPairOpts(b, nil, opts, nil)
			b.Cleanup(func() {
				release() // before the Nets' Close waits for the writer
			})
			transfer(b, x, y, 1<<20)
			b.SetBytes(size)
			b.ResetTimer()
			for range b.N {
				transfer(b, x, y, size)
			}
		})
	}
}

// superLink is a link without a stack that the test hands a 40-segment
// TCP super-packet to, and the engine buffers to read it into.
type superLink struct {
	e     *endpoint
	pkt   *stack.PacketBuffer
	bufs  [][]byte
	sizes []int
}

// newSuperLink returns a superLink, with a capture to io.Discard if
// capturing; all is released at cleanup.
func newSuperLink(t testing.TB, capturing bool) *superLink {
	e := newEndpoint(1420)
	t.Cleanup(func() { e.closeQueue() })
	if capturing {
		c := newCapture(io.Discard, 1420, slog.New(slog.DiscardHandler))
		c.start()
		t.Cleanup(c.stop)
		e.capture = c
	}
	g := gsoTest{payload: patterned(40000), mss: 1000, flags: header.TCPFlagAck}
	l := &superLink{e: e, pkt: g.packet(), bufs: make([][]byte, 64), sizes: make([]int, 64)}
	t.Cleanup(func() { l.pkt.DecRef() })
	for i := range l.bufs {
		l.bufs[i] = make([]byte, 16+1500)
	}
	return l
}

// round queues the super-packet as the stack would and reads it as the
// engine would; it returns the number of segments read.
func (l *superLink) round(t testing.TB) int {
	if err := (qdisc{l.e}).WritePacket(l.pkt); err != nil {
		t.Fatal(err)
	}
	k, err := l.e.readBatch(l.bufs, l.sizes, 16)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// BenchmarkLinkCapture is the outbound link's cost per 40-segment
// super-packet without and with a capture (to io.Discard, whose writer
// keeps up or drops): the copy into the capture queue and its time stamp.
func BenchmarkLinkCapture(b *testing.B) {
	for _, capturing := range []bool{false, true} {
		b.Run(fmt.Sprintf("capture=%v", capturing), func(b *testing.B) {
			l := newSuperLink(b, capturing)
			b.SetBytes(int64(l.pkt.Size()))
			b.ReportAllocs()
			for range b.N {
				l.round(b)
			}
		})
	}
}

// FuzzCapture records arbitrary packets, as a peer could send them (the
// capture records inbound packets before anything checks them), with an
// arbitrary snap length: the file must parse, with one record per packet
// holding its first snap-length bytes and its full length.
func FuzzCapture(f *testing.F) {
	f.Add([]byte{}, uint16(1420), uint8(1))
	f.Add([]byte("\x45\x00\x00\x1c\x00\x01\x00\x00\x40\x01\x00\x00\x0a\x09\x00\x02\x0a\x09\x00\x01\x08\x00\xf7\xfe\x00\x01\x00\x00"), uint16(1420), uint8(3))
	f.Add(bytes.Repeat([]byte{0x60}, 700), uint16(0), uint8(2))
	f.Fuzz(func(t *testing.T, pkt []byte, snapSeed uint16, copies uint8) {
		// Open's snap length is the MTU: 576 to 65535 bytes.
		snap := 576 + int(snapSeed)%(65536-576)
		n := int(copies % 8)
		var out syncBuffer
		c := newCapture(&out, snap, slog.New(slog.DiscardHandler))
		c.start()
		for range n {
			c.record(pkt)
		}
		c.stop()
		got := parsePcap(t, out.Bytes())
		if got.SnapLen != uint32(snap) || len(got.Records) != n || c.captured.Load() != uint64(n) || c.dropped.Load() != 0 {
			t.Fatalf("snap %d, %d records, %d captured, %d dropped; want snap %d and %d records", got.SnapLen, len(got.Records), c.captured.Load(), c.dropped.Load(), snap, n)
		}
		want := pkt[:min(len(pkt), snap)]
		for i, r := range got.Records {
			if r.Orig != len(pkt) || !bytes.Equal(r.Data, want) {
				t.Fatalf("record %d: %d of %d bytes, want %d of %d", i, len(r.Data), r.Orig, len(want), len(pkt))
			}
		}
	})
}
