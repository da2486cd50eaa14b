package benchmarks

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/wgkit/wgkit/wg"
)

// tunnel is one in-process WireGuard tunnel, whichever implementation runs it.
type tunnel interface {
	dial(ctx context.Context, addr netip.AddrPort) (net.Conn, error)
	listen(addr netip.AddrPort) (net.Listener, error)
	listenPort() int
	close()
}

// impl opens tunnels of one implementation.
type impl struct {
	name string
	open func(tb testing.TB, cfg *wg.Config) tunnel
}

// impls are compared in every benchmark, in this order.
var impls = []impl{
	{"stock", openStock},
	{"wgkit", openWgkit},
}

var (
	serverAddr = netip.MustParseAddr("10.77.0.1")
	clientAddr = netip.MustParseAddr("10.77.0.2")
	loopback   = netip.MustParseAddr("127.0.0.1")
)

// keys are generated once per pair of tunnels.
type keys struct{ server, client wg.Key }

func newKeys(tb testing.TB) keys {
	tb.Helper()
	s, err := wg.GeneratePrivateKey()
	if err != nil {
		tb.Fatal(err)
	}
	c, err := wg.GeneratePrivateKey()
	if err != nil {
		tb.Fatal(err)
	}
	return keys{s, c}
}

func serverConfig(k keys) *wg.Config {
	return &wg.Config{
		Interface: wg.Interface{
			PrivateKey: k.server,
			Addresses:  []netip.Prefix{netip.PrefixFrom(serverAddr, 24)},
		},
		Peers: []wg.Peer{{
			PublicKey:  k.client.PublicKey(),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(clientAddr, 32)},
		}},
	}
}

func clientConfig(k keys, serverPort int) *wg.Config {
	return &wg.Config{
		Interface: wg.Interface{
			PrivateKey: k.client,
			Addresses:  []netip.Prefix{netip.PrefixFrom(clientAddr, 24)},
		},
		Peers: []wg.Peer{{
			PublicKey:  k.server.PublicKey(),
			Endpoint:   netip.AddrPortFrom(loopback, uint16(serverPort)).String(),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(serverAddr, 32)},
		}},
	}
}

// openPair opens a server and a client tunnel that know each other.
func openPair(tb testing.TB, im impl) (server, client tunnel) {
	tb.Helper()
	k := newKeys(tb)
	server = im.open(tb, serverConfig(k))
	tb.Cleanup(server.close)
	client = im.open(tb, clientConfig(k, server.listenPort()))
	tb.Cleanup(client.close)
	return server, client
}

// serve runs handle for every connection accepted on l until stop is
// called, which closes l and every open connection and waits for the
// handlers: a peer tunnel that went away never sends a FIN.
func serve(l net.Listener, handle func(net.Conn)) (stop func()) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = make(map[net.Conn]bool) // guarded by mu
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					// Forget the conn, or a benchmark of many short
					// connections keeps every one of them alive.
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				handle(c)
			}()
		}
	}()
	return func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}
}

// sinkServer reads exactly want bytes from each connection and answers one
// byte, so that the sender knows they all arrived.
func sinkServer(l net.Listener, want int64) (stop func()) {
	return serve(l, func(c net.Conn) {
		if _, err := io.CopyN(io.Discard, c, want); err == nil {
			c.Write([]byte{1})
		}
	})
}

// echoServer echoes what each connection sends.
func echoServer(l net.Listener) (stop func()) {
	return serve(l, func(c net.Conn) { io.Copy(c, c) })
}

func dialServer(tb testing.TB, client tunnel, port uint16) net.Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.dial(ctx, netip.AddrPortFrom(serverAddr, port))
	if err != nil {
		tb.Fatalf("dial through the tunnel: %v", err)
	}
	return c
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func forEachImpl(b *testing.B, f func(b *testing.B, im impl)) {
	for _, im := range impls {
		b.Run("impl="+im.name, func(b *testing.B) { f(b, im) })
	}
}

// heapInUse returns the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// heapSampler records the largest HeapAlloc seen while it runs.
type heapSampler struct {
	done chan struct{}
	peak chan uint64
}

// startHeapSampler samples the heap every 10 ms until stop. Reading the
// memory statistics stops the world for a few microseconds, which is noise
// next to a bulk transfer.
func startHeapSampler() *heapSampler {
	s := &heapSampler{done: make(chan struct{}), peak: make(chan uint64, 1)}
	go func() {
		var ms runtime.MemStats
		var peak uint64
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			select {
			case <-s.done:
				s.peak <- peak
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// stop ends the sampling and returns the peak.
func (s *heapSampler) stop() uint64 {
	close(s.done)
	return <-s.peak
}

func mustNoErr(tb testing.TB, err error, what string) {
	tb.Helper()
	if err != nil {
		tb.Fatal(fmt.Errorf("%s: %w", what, err))
	}
}
