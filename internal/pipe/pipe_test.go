package pipe

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// tcpPair returns the two ends of a TCP connection on 127.0.0.1.
func tcpPair(t testing.TB) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.AcceptTCP()
	if err != nil {
		client.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// joined is a client and a server whose connections a proxy joins: the
// client's conn ends at a, the server's at b.
type joined struct {
	client, server *net.TCPConn
	done           chan result
}

type result struct {
	aToB, bToA int64
	err        error
}

func startJoin(t testing.TB) *joined {
	t.Helper()
	client, a := tcpPair(t)
	b, server := tcpPair(t)
	j := &joined{client: client, server: server, done: make(chan result, 1)}
	go func() {
		var r result
		r.aToB, r.bToA, r.err = Join(a, b)
		j.done <- r
	}()
	t.Cleanup(func() {
		client.Close()
		server.Close()
		j.wait(t)
	})
	return j
}

func (j *joined) wait(t testing.TB) result {
	t.Helper()
	select {
	case r := <-j.done:
		j.done <- r
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("Join did not return")
		return result{}
	}
}

// sendSum writes n random bytes to c, half-closes it and returns their
// SHA-256.
func sendSum(c *net.TCPConn, n int64) ([]byte, error) {
	h := sha256.New()
	if _, err := io.Copy(c, io.TeeReader(io.LimitReader(rand.Reader, n), h)); err != nil {
		return nil, err
	}
	return h.Sum(nil), c.CloseWrite()
}

// recvSum reads c to its end and returns the byte count and SHA-256.
func recvSum(c net.Conn) (int64, []byte, error) {
	h := sha256.New()
	n, err := io.Copy(h, c)
	return n, h.Sum(nil), err
}

// TestJoinBothWays sends different data each way at once and checks
// that both arrive whole and that Join counts them.
func TestJoinBothWays(t *testing.T) {
	const up, down = 8 << 20, 5<<20 + 17
	j := startJoin(t)
	type got struct {
		sent, recv []byte
		n          int64
		err        error
	}
	side := func(c *net.TCPConn, send int64, out chan<- got) {
		var g got
		errc := make(chan error, 1)
		go func() {
			var err error
			g.sent, err = sendSum(c, send)
			errc <- err
		}()
		g.n, g.recv, g.err = recvSum(c)
		if err := <-errc; g.err == nil {
			g.err = err
		}
		out <- g
	}
	cc, sc := make(chan got, 1), make(chan got, 1)
	go side(j.client, up, cc)
	go side(j.server, down, sc)
	c, s := <-cc, <-sc
	if c.err != nil || s.err != nil {
		t.Fatalf("client: %v; server: %v", c.err, s.err)
	}
	if !bytes.Equal(c.sent, s.recv) || s.n != up {
		t.Errorf("server got %d bytes, sum %x; client sent %d, sum %x", s.n, s.recv, up, c.sent)
	}
	if !bytes.Equal(s.sent, c.recv) || c.n != down {
		t.Errorf("client got %d bytes, sum %x; server sent %d, sum %x", c.n, c.recv, down, s.sent)
	}
	r := j.wait(t)
	if r.err != nil {
		t.Errorf("Join: %v", r.err)
	}
	if diff := cmp.Diff([2]int64{up, down}, [2]int64{r.aToB, r.bToA}); diff != "" {
		t.Errorf("Join's counts (-want +got):\n%s", diff)
	}
}

// TestJoinHalfClose is a client that shuts its write side down after the
// request and still reads the whole reply: the EOF reaches the server as
// an EOF, not as a closed connection.
func TestJoinHalfClose(t *testing.T) {
	j := startJoin(t)
	if _, err := j.client.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	if err := j.client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	req, err := io.ReadAll(j.server)
	if err != nil {
		t.Fatalf("server read: %v", err)
	}
	if _, err := j.server.Write(append([]byte("reply to "), req...)); err != nil {
		t.Fatalf("server write after the client's half-close: %v", err)
	}
	j.server.CloseWrite()
	reply, err := io.ReadAll(j.client)
	if err != nil {
		t.Fatalf("client read: %v", err)
	}
	if diff := cmp.Diff("reply to request", string(reply)); diff != "" {
		t.Errorf("reply (-want +got):\n%s", diff)
	}
	if r := j.wait(t); r.err != nil || r.aToB != 7 || r.bToA != 16 {
		t.Errorf("Join = %d, %d, %v; want 7, 16, nil", r.aToB, r.bToA, r.err)
	}
}

// TestJoinWithoutCloseWrite joins conns that cannot half-close
// (net.Pipe): an EOF from one side closes the other.
func TestJoinWithoutCloseWrite(t *testing.T) {
	client, a := net.Pipe()
	b, server := net.Pipe()
	done := make(chan error, 1)
	go func() {
		_, _, err := Join(a, b)
		done <- err
	}()
	go func() {
		client.Write([]byte("hello"))
		client.Close()
	}()
	got, err := io.ReadAll(server)
	if err != nil || string(got) != "hello" {
		t.Errorf("server read %q, %v; want hello, nil", got, err)
	}
	server.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Join: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Join did not return")
	}
}

// TestJoinReset: a reset on one side ends both directions and is
// reported; the other side sees its conn closed.
func TestJoinReset(t *testing.T) {
	j := startJoin(t)
	if _, err := j.client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(j.server, buf); err != nil {
		t.Fatal(err)
	}
	j.server.SetLinger(0)
	j.server.Close() // sends RST
	r := j.wait(t)
	if r.err == nil {
		t.Error("Join returned no error after a reset")
	}
	j.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := j.client.Read(buf); err == nil {
		t.Errorf("client read %d bytes after the other side was reset; want an error or EOF", n)
	}
}

// TestJoinCloseEnds: closing a conn from outside ends Join without an
// error to report.
func TestJoinCloseEnds(t *testing.T) {
	client, a := tcpPair(t)
	b, _ := tcpPair(t)
	_ = client
	done := make(chan error, 1)
	go func() {
		_, _, err := Join(a, b)
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	a.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Join after Close: %v; want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Join did not return after Close")
	}
}

// TestJoinAllocs holds Join to its promise of no allocation per buffer:
// joining and moving 32 MiB more costs no more allocations than moving
// 1 MiB, beyond a small margin for the runtime (a per-buffer allocation
// would add at least 512).
func TestJoinAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items, so buffers are allocated again")
	}
	measure := func(n int64) uint64 {
		j := startJoin(t)
		go func() {
			io.Copy(io.Discard, j.server)
		}()
		src := make([]byte, 32<<10)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for sent := int64(0); sent < n; sent += int64(len(src)) {
			if _, err := j.client.Write(src); err != nil {
				t.Fatal(err)
			}
		}
		j.client.CloseWrite()
		j.server.CloseWrite()
		j.wait(t)
		runtime.ReadMemStats(&after)
		return after.Mallocs - before.Mallocs
	}
	measure(1 << 20) // warm the pool and the runtime
	small := measure(1 << 20)
	large := measure(33 << 20)
	t.Logf("allocations: %d for 1 MiB, %d for 33 MiB", small, large)
	if large > small+100 {
		t.Errorf("moving 32 MiB more took %d more allocations; want at most 100 (no allocation per buffer)", large-small)
	}
}

// readSizes is a conn that records the size of the buffer each Read is
// given and counts the bytes its Reads return.
type readSizes struct {
	net.Conn
	mu    sync.Mutex
	sizes []int // guarded by mu
	n     int64 // guarded by mu
}

func (c *readSizes) Read(p []byte) (int, error) {
	c.mu.Lock()
	c.sizes = append(c.sizes, len(p))
	c.mu.Unlock()
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.n += int64(n)
	c.mu.Unlock()
	return n, err
}

// TestJoinIdleHoldsSmallBuffer: a direction waits for data with the
// small buffer, reads bulk data with the large one, and waits with the
// small one again once the data has passed, so an idle flow does not
// hold BufferSize bytes per direction.
func TestJoinIdleHoldsSmallBuffer(t *testing.T) {
	const size = 1 << 20
	client, a := net.Pipe()
	b, server := net.Pipe()
	ra := &readSizes{Conn: a}
	done := make(chan error, 1)
	go func() {
		_, _, err := Join(ra, b)
		done <- err
	}()
	defer func() {
		client.Close()
		server.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Join did not return")
		}
	}()
	// pending waits until the Reads have returned want bytes in all and
	// the Read after them (the one that waits) has started with the
	// small buffer, and returns the size of the last Read's buffer.
	pending := func(want int64) int {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			ra.mu.Lock()
			n, last := ra.n, 0
			if len(ra.sizes) > 0 {
				last = ra.sizes[len(ra.sizes)-1]
			}
			ra.mu.Unlock()
			if n == want && last == IdleBufferSize {
				return last
			}
			if time.Now().After(deadline) {
				if n != want {
					t.Fatalf("the Reads returned %d bytes; want %d", n, want)
				}
				return last
			}
			time.Sleep(time.Millisecond)
		}
	}
	if got := pending(0); got != IdleBufferSize {
		t.Errorf("a new Join waits for data with a %d-byte buffer; want %d", got, IdleBufferSize)
	}
	go func() {
		client.Write(make([]byte, size))
	}()
	if n, err := io.ReadFull(server, make([]byte, size)); err != nil {
		t.Fatalf("server read %d bytes: %v", n, err)
	}
	if got := pending(size); got != IdleBufferSize {
		t.Errorf("after a bulk transfer Join waits with a %d-byte buffer; want %d", got, IdleBufferSize)
	}
	ra.mu.Lock()
	biggest := slices.Max(ra.sizes)
	ra.mu.Unlock()
	if biggest != BufferSize {
		t.Errorf("the bulk transfer read into at most %d bytes at once; want %d", biggest, BufferSize)
	}
}

// BenchmarkJoin moves bulk data one way through a Join between two
// loopback TCP connections.
func BenchmarkJoin(b *testing.B) {
	j := startJoin(b)
	go io.Copy(io.Discard, j.server)
	src := make([]byte, 128<<10)
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := j.client.Write(src); err != nil {
			b.Fatal(err)
		}
	}
	j.client.CloseWrite()
	j.server.CloseWrite()
	j.wait(b)
}
