package proxy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/wgkit/wgkit/netstack/proxy"
)

const bulk = 32 << 20 // bytes each way

// transferResult is one side's view of a transfer.
type transferResult struct {
	sent, got []byte
	read      int64
	err       error
}

// serveTransfers runs transfer(c, bulk) on every connection accepted on
// ln and reports each result.
func serveTransfers(t *testing.T, ln net.Listener, n int64) <-chan transferResult {
	t.Helper()
	out := make(chan transferResult, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(60 * time.Second))
				var r transferResult
				r.sent, r.got, r.read, r.err = transfer(c, n)
				out <- r
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return out
}

// runForward runs ForwardTCP until the test ends and checks that it
// returns ctx's error then.
func runForward(t *testing.T, ln net.Listener, dial func(context.Context) (net.Conn, error)) {
	runUntilCleanup(t, "ForwardTCP", func(ctx context.Context) error { return proxy.ForwardTCP(ctx, ln, dial) })
}

// runUntilCleanup runs serve until the test ends, then cancels its
// context and checks that it returns context.Canceled within 20 s.
func runUntilCleanup(t *testing.T, name string, serve func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("%s = %v; want context.Canceled", name, err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("%s did not return after its context ended", name)
		}
	})
}

// checkTransfer compares both sides of a transfer of n bytes each way.
func checkTransfer(t *testing.T, client, server transferResult, n int64) {
	t.Helper()
	if client.err != nil || server.err != nil {
		t.Fatalf("client: %v; server: %v", client.err, server.err)
	}
	if server.read != n || !bytes.Equal(client.sent, server.got) {
		t.Errorf("server got %d bytes, sum %x; client sent %d, sum %x", server.read, server.got, n, client.sent)
	}
	if client.read != n || !bytes.Equal(server.sent, client.got) {
		t.Errorf("client got %d bytes, sum %x; server sent %d, sum %x", client.read, client.got, n, server.sent)
	}
}

func TestForwardTCP(t *testing.T) {
	e := newEnv(t)
	t.Run("host to tunnel", func(t *testing.T) {
		far, err := e.remote.Listen("tcp", ":9000")
		if err != nil {
			t.Fatal(err)
		}
		results := serveTransfers(t, far, bulk)
		ln := listenLocal(t)
		runForward(t, ln, func(ctx context.Context) (net.Conn, error) {
			return e.tnet.DialContext(ctx, "tcp", e.remoteAddr(9000))
		})
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		var r transferResult
		r.sent, r.got, r.read, r.err = transfer(c, bulk)
		checkTransfer(t, r, <-results, bulk)
	})
	t.Run("tunnel to host", func(t *testing.T) {
		host := listenLocal(t)
		results := serveTransfers(t, host, bulk)
		ln, err := e.tnet.Listen("tcp", ":9001")
		if err != nil {
			t.Fatal(err)
		}
		runForward(t, ln, func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", host.Addr().String())
		})
		c, err := e.remote.DialContext(testContext(t, 10*time.Second), "tcp", netip.AddrPortFrom(e.tnet.Addrs()[0], 9001).String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		var r transferResult
		r.sent, r.got, r.read, r.err = transfer(c, bulk)
		checkTransfer(t, r, <-results, bulk)
	})
}

// TestForwardTCPHalfCloseAndConcurrency: a client that half-closes still
// reads the reply, 100 at once.
func TestForwardTCPHalfCloseAndConcurrency(t *testing.T) {
	checkDescriptors(t)
	e := newEnv(t)
	ln := listenLocal(t)
	runForward(t, ln, func(ctx context.Context) (net.Conn, error) {
		return e.tnet.DialContext(ctx, "tcp", e.remoteAddr(7))
	})
	const n = 100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			msg := bytes.Repeat([]byte(fmt.Sprintf("conn %d;", i)), 1000)
			if _, err := c.Write(msg); err != nil {
				errs <- err
				return
			}
			// The echo ends (half-closes) only once our EOF has reached it.
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				errs <- err
				return
			}
			got, err := io.ReadAll(c)
			if err != nil {
				errs <- fmt.Errorf("conn %d: read after half-close: %w", i, err)
				return
			}
			if !bytes.Equal(got, msg) {
				errs <- fmt.Errorf("conn %d: echo of %d bytes, want %d", i, len(got), len(msg))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestForwardTCPListenerClosed: closing ln ends ForwardTCP after its
// connections, and a failed dial closes the client.
func TestForwardTCPListenerClosed(t *testing.T) {
	e := newEnv(t)
	ln := listenLocal(t)
	done := make(chan error, 1)
	go func() {
		done <- proxy.ForwardTCP(context.Background(), ln, func(ctx context.Context) (net.Conn, error) {
			return e.tnet.DialContext(ctx, "tcp", e.remoteAddr(7))
		})
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, "x")
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	ln.Close()
	select {
	case err := <-done:
		t.Fatalf("ForwardTCP returned %v with a connection still open", err)
	case <-time.After(100 * time.Millisecond):
	}
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("ForwardTCP = %v; want net.ErrClosed", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("ForwardTCP did not return after its listener and connection closed")
	}
}

// runForwardUDP runs ForwardUDP on pc until the test ends and checks
// that it returns ctx's error then.
func runForwardUDP(t *testing.T, pc net.PacketConn, dial func(context.Context) (net.Conn, error), opts *proxy.UDPOptions) {
	runUntilCleanup(t, "ForwardUDP", func(ctx context.Context) error { return proxy.ForwardUDP(ctx, pc, dial, opts) })
}

// udpBulk sends n bytes in numbered datagrams through c to an echo
// server, a window at a time, resending what is not echoed, and returns
// the SHA-256 of the payload sent and of the payload echoed, in order.
func udpBulk(c net.Conn, n int) (sent, got []byte, err error) {
	const size, window = 1200, 32
	payload := make([]byte, n)
	rand.Read(payload)
	count := (n + size - 1) / size
	echoed := make([][]byte, count)
	buf := make([]byte, 2048)
	deadline := time.Now().Add(60 * time.Second)
	for base := 0; base < count; base += window {
		end := min(base+window, count)
		for attempt := 0; ; attempt++ {
			if time.Now().After(deadline) || attempt > 50 {
				return nil, nil, fmt.Errorf("datagrams %d..%d not echoed", base, end)
			}
			for i := base; i < end; i++ {
				if echoed[i] != nil {
					continue
				}
				d := binary.BigEndian.AppendUint32(nil, uint32(i))
				d = append(d, payload[i*size:min((i+1)*size, n)]...)
				if _, err := c.Write(d); err != nil {
					return nil, nil, err
				}
			}
			missing := 0
			for i := base; i < end; i++ {
				if echoed[i] == nil {
					missing++
				}
			}
			for missing > 0 {
				c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				k, err := c.Read(buf)
				if err != nil {
					break // resend what is missing
				}
				if k < 4 {
					continue
				}
				i := int(binary.BigEndian.Uint32(buf))
				if i < count && echoed[i] == nil {
					echoed[i] = bytes.Clone(buf[4:k])
					if i >= base && i < end {
						missing--
					}
				}
			}
			if missing == 0 {
				break
			}
		}
	}
	s := sha256.Sum256(payload)
	h := sha256.New()
	for _, e := range echoed {
		h.Write(e)
	}
	return s[:], h.Sum(nil), nil
}

// checkUDPBulk runs udpBulk on c and compares the sums.
func checkUDPBulk(t *testing.T, c net.Conn) {
	t.Helper()
	sent, got, err := udpBulk(c, bulk)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sent, got) {
		t.Errorf("echo sum %x; sent %x", got, sent)
	}
}

func TestForwardUDP(t *testing.T) {
	e := newEnv(t)
	t.Run("host to tunnel", func(t *testing.T) {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		runForwardUDP(t, pc, func(ctx context.Context) (net.Conn, error) {
			return e.tnet.DialContext(ctx, "udp", e.remoteAddr(7))
		}, nil)
		c, err := net.Dial("udp", pc.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		checkUDPBulk(t, c)
	})
	t.Run("tunnel to host", func(t *testing.T) {
		echo, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer echo.Close()
		go func() {
			buf := make([]byte, 65536)
			for {
				n, from, err := echo.ReadFrom(buf)
				if err != nil {
					return
				}
				echo.WriteTo(buf[:n], from)
			}
		}()
		pc, err := e.tnet.ListenPacket("udp", ":9002")
		if err != nil {
			t.Fatal(err)
		}
		runForwardUDP(t, pc, func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", echo.LocalAddr().String())
		}, nil)
		c, err := e.remote.DialContext(testContext(t, 10*time.Second), "udp", netip.AddrPortFrom(e.tnet.Addrs()[0], 9002).String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		checkUDPBulk(t, c)
	})
}

// TestForwardUDPFlows: each client gets its own flow and only its own
// replies; an idle flow expires; past the cap the flow idle the longest
// goes. The upstream is a server that answers with the address it saw, so
// a new flow shows as a new source port.
func TestForwardUDPFlows(t *testing.T) {
	e := newEnv(t)
	who, err := e.remote.ListenPacket("udp", ":9003")
	if err != nil {
		t.Fatal(err)
	}
	whoDone := make(chan struct{})
	go func() {
		defer close(whoDone)
		buf := make([]byte, 2048)
		for {
			n, from, err := who.ReadFrom(buf)
			if err != nil {
				return
			}
			who.WriteTo(append([]byte(from.String()+" "), buf[:n]...), from)
		}
	}()
	defer func() { who.Close(); <-whoDone }()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const idle = 300 * time.Millisecond
	runForwardUDP(t, pc, func(ctx context.Context) (net.Conn, error) {
		return e.tnet.DialContext(ctx, "udp", e.remoteAddr(9003))
	}, &proxy.UDPOptions{IdleTimeout: idle, MaxFlows: 2})
	clients := make([]net.Conn, 3)
	for i := range clients {
		c, err := net.Dial("udp", pc.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients[i] = c
	}
	// ask sends msg from client i and returns the upstream source the
	// reply names; the reply must carry msg.
	ask := func(i int, msg string) string {
		t.Helper()
		c := clients[i]
		for attempt := 0; attempt < 10; attempt++ {
			io.WriteString(c, msg)
			c.SetReadDeadline(time.Now().Add(time.Second))
			buf := make([]byte, 2048)
			n, err := c.Read(buf)
			if err != nil {
				continue
			}
			src, got, _ := bytes.Cut(buf[:n], []byte(" "))
			if string(got) != msg {
				t.Fatalf("client %d got %q; want its own %q", i, got, msg)
			}
			return string(src)
		}
		t.Fatalf("client %d: no reply", i)
		return ""
	}
	f0 := ask(0, "zero")
	f1 := ask(1, "one")
	if f0 == f1 {
		t.Fatalf("two clients share the upstream flow %s", f0)
	}
	if again := ask(0, "zero again"); again != f0 {
		t.Errorf("client 0's flow changed from %s to %s within the idle timeout", f0, again)
	}
	// Client 1 is now idle the longest: client 2 takes its place.
	f2 := ask(2, "two")
	if again := ask(0, "zero still"); again != f0 {
		t.Errorf("client 0's flow (the most recent) was dropped for a new one: %s, then %s", f0, again)
	}
	if again := ask(1, "one again"); again == f1 {
		t.Errorf("client 1's flow %s survived past the cap of 2 flows", f1)
	}
	_ = f2
	// Idle past the timeout: a new flow.
	time.Sleep(3 * idle)
	if again := ask(0, "zero after idle"); again == f0 {
		t.Errorf("client 0's flow %s survived %v idle; the timeout is %v", f0, 3*idle, idle)
	}
}
