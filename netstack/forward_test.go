package netstack

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wgkit/wgkit/internal/memnet"
)

// The router tests run a router Net R (addrA4, addrA6) in router mode and
// a peer Net P (addrB4, addrB6) that sends 0.0.0.0/0 and ::/0 to R, both
// in process over an in-memory switch. Every destination R dials is a
// service the test runs on 127.0.0.1; TEST-NET addresses (192.0.2.0/24,
// 198.51.100.0/24, 203.0.113.0/24) exist only inside the tunnel and are
// mapped to loopback services by the test's Dial, never dialled.

var (
	testNet1 = netip.MustParseAddr("192.0.2.1")
	testNet2 = netip.MustParseAddr("198.51.100.7")
	testNet3 = netip.MustParseAddr("203.0.113.9")
	testNet6 = netip.MustParseAddr("2001:db8::80") // IPv6 documentation prefix
)

// openRouter opens R with fo and P, and returns them; both close at cleanup.
func openRouter(t testing.TB, fo *ForwardOptions) (r, p *Net) {
	t.Helper()
	sw := memnet.NewSwitch(nil)
	t.Cleanup(func() { sw.Close() })
	epR, err := sw.NewAddr()
	if err != nil {
		t.Fatal(err)
	}
	epP, err := sw.NewAddr()
	if err != nil {
		t.Fatal(err)
	}
	cfgR, cfgP := pairConfigs(t, epR.String(), epP.String())
	cfgP.Peers[0].AllowedIPs = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err = Open(ctx, cfgR, &Options{Bind: sw.NewBind(1, epR), Forward: fo})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	p, err = Open(ctx, cfgP, &Options{Bind: sw.NewBind(2, epP)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return r, p
}

// mapDial returns a Dial that sends flows to the TEST-NET address from to
// the loopback address to (keeping other destinations) and refuses any
// destination that is not loopback, so that a test never reaches beyond
// the host.
func mapDial(m map[netip.Addr]netip.AddrPort) func(ctx context.Context, network string, src, dst netip.AddrPort) (net.Conn, error) {
	return func(ctx context.Context, network string, src, dst netip.AddrPort) (net.Conn, error) {
		if to, ok := m[dst.Addr()]; ok {
			if to.Port() == 0 {
				to = netip.AddrPortFrom(to.Addr(), dst.Port())
			}
			dst = to
		}
		if !dst.Addr().IsLoopback() {
			return nil, fmt.Errorf("test dial: %v is not loopback: %w", dst, syscall.EHOSTUNREACH)
		}
		var d net.Dialer
		return d.DialContext(ctx, network, dst.String())
	}
}

func allowAll(string, netip.AddrPort, netip.AddrPort) bool { return true }

func loopbackOnly(_ string, _, dst netip.AddrPort) bool { return dst.Addr().IsLoopback() }

func httpGet(ctx context.Context, p *Net, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return "", err
	}
	resp, err := p.HTTPClient().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestForwardHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	}))
	defer srv.Close()
	svc := netip.MustParseAddrPort(srv.Listener.Addr().String())
	tests := []struct {
		name string
		fo   *ForwardOptions
		url  string
		want string
	}{
		{"loopback-default-dial", &ForwardOptions{Allow: loopbackOnly}, "http://" + svc.String() + "/direct", "hello /direct"},
		{"test-net-mapped", &ForwardOptions{Allow: allowAll, Dial: mapDial(map[netip.Addr]netip.AddrPort{testNet1: svc})}, "http://192.0.2.1:80/mapped", "hello /mapped"},
		{"ipv6-documentation-mapped", &ForwardOptions{Allow: allowAll, Dial: mapDial(map[netip.Addr]netip.AddrPort{testNet6: svc})}, "http://[2001:db8::80]:80/six", "hello /six"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, p := openRouter(t, tt.fo)
			ctx := testContext(t, 10*time.Second)
			got, err := httpGet(ctx, p, tt.url)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
			p.HTTPClient().CloseIdleConnections()
			if s := r.ForwardStats(); s.DialErrors != 0 || s.Refused != 0 {
				t.Errorf("stats %+v: want no dial errors or refusals", s)
			}
		})
	}
}

// TestForwardBulk moves 32 MiB each way at once through one forwarded
// connection, with half-close: each side closes its writes after its
// 32 MiB and reads the other's to EOF; both compare SHA-256 sums.
func TestForwardBulk(t *testing.T) {
	const size = 32 << 20
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	srvGot := make(chan result, 1)
	srvSent := make(chan [32]byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvGot <- result{err: err}
			return
		}
		defer c.Close()
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			h := sha256.New()
			io.Copy(io.MultiWriter(c, h), io.LimitReader(newPattern(2), size))
			c.(*net.TCPConn).CloseWrite()
			srvSent <- [32]byte(h.Sum(nil))
		}()
		h := sha256.New()
		n, err := io.Copy(h, c)
		srvGot <- result{[32]byte(h.Sum(nil)), n, err}
		<-wrote // keep c open until the other way is done
	}()
	svc := netip.MustParseAddrPort(ln.Addr().String())
	_, p := openRouter(t, &ForwardOptions{Allow: allowAll, Dial: mapDial(map[netip.Addr]netip.AddrPort{testNet2: svc})})
	ctx := testContext(t, 60*time.Second)
	c, err := p.DialContext(ctx, "tcp", netip.AddrPortFrom(testNet2, svc.Port()).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	sent := make(chan [32]byte, 1)
	go func() {
		h := sha256.New()
		io.Copy(io.MultiWriter(c, h), io.LimitReader(newPattern(1), size))
		c.(interface{ CloseWrite() error }).CloseWrite()
		sent <- [32]byte(h.Sum(nil))
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil || n != size {
		t.Fatalf("peer read %d bytes, %v; want %d", n, err, size)
	}
	peerSent := <-sent
	got := <-srvGot
	if got.err != nil || got.n != size || got.sum != peerSent {
		t.Errorf("server got %d bytes (%v), sum match %v; want %d", got.n, got.err, got.sum == peerSent, size)
	}
	srvSum := <-srvSent
	if [32]byte(h.Sum(nil)) != srvSum {
		t.Error("peer's received sum differs from the server's sent sum")
	}
}

// pattern is a cheap deterministic byte stream.
type pattern struct{ x uint64 }

func newPattern(seed uint64) *pattern { return &pattern{x: seed*0x9e3779b97f4a7c15 + 1} }

func (p *pattern) Read(b []byte) (int, error) {
	for i := range b {
		p.x ^= p.x << 13
		p.x ^= p.x >> 7
		p.x ^= p.x << 17
		b[i] = byte(p.x)
	}
	return len(b), nil
}

// udpEcho runs a UDP echo server on 127.0.0.1 until the test ends.
func udpEcho(t testing.TB) netip.AddrPort {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	return netip.MustParseAddrPort(pc.LocalAddr().String())
}

func TestForwardUDPEcho(t *testing.T) {
	echo := udpEcho(t)
	r, p := openRouter(t, &ForwardOptions{Allow: allowAll, Dial: mapDial(map[netip.Addr]netip.AddrPort{testNet3: echo, testNet6: echo})})
	ctx := testContext(t, 10*time.Second)
	for _, dst := range []netip.AddrPort{netip.AddrPortFrom(testNet3, 53), netip.AddrPortFrom(testNet6, 53)} {
		udpEchoVia(t, ctx, p, dst)
	}
	if got := r.ForwardStats().UDPFlows; got != 2 {
		t.Errorf("UDPFlows = %d, want 2 (one flow per source and destination)", got)
	}
}

func udpEchoVia(t *testing.T, ctx context.Context, p *Net, dst netip.AddrPort) {
	t.Helper()
	c, err := p.DialContext(ctx, "udp", dst.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, size := range []int{1, 512, 1200, 8000} {
		msg := make([]byte, size)
		newPattern(uint64(i)).Read(msg)
		got, err := udpRoundTrip(c, msg)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if diff := cmp.Diff(msg, got); diff != "" {
			t.Errorf("size %d: echo differs", size)
		}
		if from := c.RemoteAddr().String(); from != dst.String() {
			t.Errorf("reply from %s, want %v", from, dst)
		}
	}
}

// udpRoundTrip sends msg on c until an answer comes (UDP may lose it),
// within 5 seconds.
func udpRoundTrip(c net.Conn, msg []byte) ([]byte, error) {
	buf := make([]byte, 65535)
	end := time.Now().Add(5 * time.Second)
	for time.Now().Before(end) {
		if _, err := c.Write(msg); err != nil {
			return nil, err
		}
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
	return nil, errors.New("no answer within 5s")
}

func TestForwardUDPExpires(t *testing.T) {
	echo := udpEcho(t)
	r, p := openRouter(t, &ForwardOptions{Allow: allowAll, Dial: mapDial(map[netip.Addr]netip.AddrPort{testNet3: echo}), UDPIdleTimeout: 200 * time.Millisecond})
	ctx := testContext(t, 10*time.Second)
	for i := range 3 {
		c, err := p.DialContext(ctx, "udp", netip.AddrPortFrom(testNet3, uint16(1000+i)).String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := udpRoundTrip(c, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if got := r.ForwardStats().UDPFlows; got != 3 {
		t.Fatalf("UDPFlows = %d, want 3", got)
	}
	waitFor(t, 3*time.Second, "UDP flows to expire", func() bool { return r.ForwardStats().UDPFlows == 0 })
}

// waitFor polls cond every 10ms until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestForwardDialErrors(t *testing.T) {
	// A loopback port with nothing listening: refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	blackhole := func(ctx context.Context, network string, src, dst netip.AddrPort) (net.Conn, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	var dials atomic.Int32
	counting := func(ctx context.Context, network string, src, dst netip.AddrPort) (net.Conn, error) {
		dials.Add(1)
		return nil, errors.New("test dial: must not be called")
	}
	tests := []struct {
		name    string
		fo      *ForwardOptions
		dst     netip.AddrPort
		wantErr syscall.Errno
		within  time.Duration
	}{
		{"refused", &ForwardOptions{Allow: loopbackOnly}, closed, syscall.ECONNREFUSED, time.Second},
		{"allow-refuses", &ForwardOptions{Allow: func(string, netip.AddrPort, netip.AddrPort) bool { return false }, Dial: counting}, netip.AddrPortFrom(testNet1, 80), syscall.EHOSTUNREACH, time.Second},
		{"blackhole", &ForwardOptions{Allow: allowAll, Dial: blackhole, DialTimeout: 500 * time.Millisecond}, netip.AddrPortFrom(testNet1, 80), syscall.EHOSTUNREACH, 2 * time.Second},
		{"default-allow-loopback", &ForwardOptions{Dial: counting}, closed, syscall.EHOSTUNREACH, time.Second},
		{"default-allow-loopback6", &ForwardOptions{Dial: counting}, netip.MustParseAddrPort("[::1]:80"), syscall.ENETUNREACH, time.Second},
		{"tunnel-inner6", &ForwardOptions{Allow: allowAll, Dial: counting}, netip.MustParseAddrPort("[fd00:123::77]:80"), syscall.ENETUNREACH, time.Second},
		{"tunnel-inner", &ForwardOptions{Allow: allowAll, Dial: counting}, netip.MustParseAddrPort("10.123.0.77:80"), syscall.EHOSTUNREACH, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dials.Store(0)
			r, p := openRouter(t, tt.fo)
			ctx := testContext(t, 30*time.Second)
			start := time.Now()
			c, err := p.DialContext(ctx, "tcp", tt.dst.String())
			took := time.Since(start)
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded")
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("dial error %v, want %v", err, tt.wantErr)
			}
			if took > tt.within {
				t.Errorf("dial failed after %v, want within %v", took, tt.within)
			}
			if n := dials.Load(); n != 0 {
				t.Errorf("Dial called %d times for a refused destination", n)
			}
			// The router forgets the request right after answering it.
			waitFor(t, time.Second, "no pending dials or flows", func() bool {
				s := r.ForwardStats()
				return s.PendingDials == 0 && s.TCPFlows == 0
			})
		})
	}
}

// TestForwardDefaultAllowHostAddrs checks that the default Allow refuses
// the host's own interface addresses (where services bound to all
// addresses listen); the test's Dial records any call and dials nothing.
func TestForwardDefaultAllowHostAddrs(t *testing.T) {
	var hostAddrs []netip.Addr
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Skipf("cannot list host addresses: %v", err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok && publicDest(ip) {
				hostAddrs = append(hostAddrs, ip.Unmap())
			}
		}
	}
	if len(hostAddrs) == 0 {
		t.Skip("the host has no non-loopback address")
	}
	var mu sync.Mutex
	var dialled []netip.AddrPort
	_, p := openRouter(t, &ForwardOptions{Dial: func(ctx context.Context, network string, src, dst netip.AddrPort) (net.Conn, error) {
		mu.Lock()
		dialled = append(dialled, dst)
		mu.Unlock()
		return nil, syscall.ECONNREFUSED
	}})
	ctx := testContext(t, 10*time.Second)
	for _, a := range hostAddrs {
		want := syscall.EHOSTUNREACH
		if a.Is6() {
			want = syscall.ENETUNREACH // see icmpTypeCode
		}
		if _, err := p.DialContext(ctx, "tcp", netip.AddrPortFrom(a, 22).String()); !errors.Is(err, want) {
			t.Errorf("dial %v: %v, want %v", a, err, want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(dialled) != 0 {
		t.Errorf("Dial called for %v", dialled)
	}
}

func TestForwardPing(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	t.Run("reachable", func(t *testing.T) {
		ctx := testContext(t, 5*time.Second)
		if err := hostPing(ctx, lo, 1, []byte("probe")); err != nil {
			t.Skipf("the host cannot ping 127.0.0.1 (no unprivileged ICMP in net.ipv4.ping_group_range, no raw socket): %v", err)
		}
		_, p := openRouter(t, &ForwardOptions{Allow: loopbackOnly})
		if _, err := p.Ping(ctx, lo); err != nil {
			t.Errorf("ping 127.0.0.1 through the router: %v", err)
		}
		lo6 := netip.MustParseAddr("::1")
		if err := hostPing(ctx, lo6, 1, []byte("probe")); err != nil {
			t.Logf("the host cannot ping ::1, IPv6 not checked: %v", err)
			return
		}
		if _, err := p.Ping(ctx, lo6); err != nil {
			t.Errorf("ping ::1 through the router: %v", err)
		}
	})
	t.Run("host-unreachable", func(t *testing.T) {
		// The host's ping fails: the router must not answer.
		r, p := openRouter(t, &ForwardOptions{Allow: allowAll})
		var asked atomic.Int32
		r.fwd.ping = func(ctx context.Context, dst netip.Addr, seq uint16, data []byte) error {
			asked.Add(1)
			return errors.New("test: no answer")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		if _, err := p.Ping(ctx, testNet1); err == nil {
			t.Error("ping answered for a destination the host cannot reach")
		}
		if asked.Load() == 0 {
			t.Error("the router never tried the host's ping")
		}
	})
	t.Run("default-allow-link-local", func(t *testing.T) {
		// Not even the promiscuous stack may answer for it.
		r, p := openRouter(t, &ForwardOptions{})
		r.fwd.ping = func(ctx context.Context, dst netip.Addr, seq uint16, data []byte) error {
			t.Errorf("host ping of %v, which the default Allow refuses", dst)
			return nil
		}
		for _, a := range []string{"169.254.1.1", "fe80::1", "127.0.0.1"} {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			if _, err := p.Ping(ctx, netip.MustParseAddr(a)); err == nil {
				t.Errorf("ping %s answered", a)
			}
			cancel()
		}
	})
	t.Run("allow-refuses", func(t *testing.T) {
		r, p := openRouter(t, &ForwardOptions{Allow: func(network string, _, _ netip.AddrPort) bool { return network != "icmp" }})
		r.fwd.ping = func(ctx context.Context, dst netip.Addr, seq uint16, data []byte) error {
			t.Error("host ping for a refused destination")
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		if _, err := p.Ping(ctx, testNet1); err == nil {
			t.Error("ping answered for a refused destination")
		}
		if got := r.ForwardStats().Refused; got == 0 {
			t.Error("Refused = 0 after a refused echo request")
		}
	})
}

// TestForwardOwnAddresses checks that router mode keeps the tunnel's own
// addresses working as without it: the peer reaches the router's
// listener and is refused on a closed port, the router reaches itself,
// and both ping the router's addresses.
func TestForwardOwnAddresses(t *testing.T) {
	r, p := openRouter(t, &ForwardOptions{Allow: allowAll, Dial: mapDial(nil)})
	ln, err := r.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("router"))
			c.Close()
		}
	}()
	ctx := testContext(t, 10*time.Second)
	for _, a := range []netip.Addr{addrA4, addrA6} {
		for _, n := range []struct {
			name string
			n    *Net
		}{{"peer", p}, {"router", r}} {
			c, err := n.n.DialContext(ctx, "tcp", netip.AddrPortFrom(a, 80).String())
			if err != nil {
				t.Fatalf("%s: dial %v: %v", n.name, a, err)
			}
			got, err := io.ReadAll(c)
			c.Close()
			if err != nil || string(got) != "router" {
				t.Errorf("%s: read from %v: %q, %v", n.name, a, got, err)
			}
			if _, err := n.n.Ping(ctx, a); err != nil {
				t.Errorf("%s: ping %v: %v", n.name, a, err)
			}
			if _, err := n.n.DialContext(ctx, "tcp", netip.AddrPortFrom(a, 81).String()); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("%s: dial closed port on %v: %v, want ECONNREFUSED", n.name, a, err)
			}
		}
	}
	if s := r.ForwardStats(); s.TCPFlows != 0 || s.DialErrors != 0 {
		t.Errorf("stats %+v: traffic to the router's own addresses was forwarded", s)
	}
}

func TestForwardOptionsBad(t *testing.T) {
	tests := []struct {
		name string
		fo   ForwardOptions
		want string
	}{
		{"max-flows", ForwardOptions{MaxFlows: -1}, "netstack: open: bad Forward.MaxFlows -1"},
		{"max-pending", ForwardOptions{MaxPendingDials: -2}, "netstack: open: bad Forward.MaxPendingDials -2"},
		{"udp-idle", ForwardOptions{UDPIdleTimeout: -time.Second}, "netstack: open: bad Forward.UDPIdleTimeout -1s"},
		{"dial-timeout", ForwardOptions{DialTimeout: -time.Millisecond}, "netstack: open: bad Forward.DialTimeout -1ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _ := pairConfigs(t, "127.0.0.1:1", "127.0.0.1:2")
			sw := memnet.NewSwitch(nil)
			defer sw.Close()
			ep, err := sw.NewAddr()
			if err != nil {
				t.Fatal(err)
			}
			fo := tt.fo
			n, err := Open(context.Background(), cfg, &Options{Bind: sw.NewBind(1, ep), Forward: &fo})
			if err == nil {
				n.Close()
				t.Fatal("Open succeeded")
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestForwardCloseTwice(t *testing.T) {
	r, _ := openRouter(t, &ForwardOptions{})
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v, want net.ErrClosed", err)
	}
}
