package proxy_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wgkit/wgkit/netstack/proxy"
	xproxy "golang.org/x/net/proxy"
)

// startSOCKS5 serves a SOCKS5 server over e's tunnel on 127.0.0.1 and
// returns its address; it is closed at cleanup, and Serve must then
// return an error wrapping net.ErrClosed.
func startSOCKS5(t *testing.T, e *env, opts *proxy.SOCKS5Options) (*proxy.SOCKS5Server, string) {
	t.Helper()
	ln := listenLocal(t)
	s := proxy.NewSOCKS5(e.tnet, opts)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Errorf("Serve after Close = %v; want an error wrapping net.ErrClosed", err)
		}
	})
	return s, ln.Addr().String()
}

func TestSOCKS5CurlHostname(t *testing.T) {
	e := newEnv(t)
	_, open := startSOCKS5(t, e, nil)
	_, authed := startSOCKS5(t, e, &proxy.SOCKS5Options{Username: "user", Password: "pass"})
	url := "http://" + tunnelName + "/path"
	if _, err := net.DefaultResolver.LookupHost(testContext(t, 5*time.Second), tunnelName); err == nil {
		t.Fatalf("the host resolves %s; the test needs a name only the tunnel knows", tunnelName)
	}

	tests := []struct {
		name    string
		args    []string
		want    string // prefix of the body; "" when curl must fail
		wantErr string // in curl's error
	}{
		{"no auth", []string{"--socks5-hostname", open, url}, "GET /path\n", ""},
		{"password accepted", []string{"--socks5-hostname", authed, "-U", "user:pass", url}, "GET /path\n", ""},
		{"wrong password", []string{"--socks5-hostname", authed, "-U", "user:wrong", url}, "", "User was rejected by the SOCKS5 server"},
		{"no credentials offered", []string{"--socks5-hostname", authed, url}, "", "No authentication method was acceptable"},
		{"IPv6 by name", []string{"--socks5-hostname", open, "http://v6." + tunnelName + "/"}, "GET /\n", ""},
		{"unknown name", []string{"--socks5-hostname", open, "http://nosuch.wgkit.tunnel-test/"}, "", "Can't complete SOCKS5 connection to nosuch.wgkit.tunnel-test. (4)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := curl(t, tt.args...)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("curl succeeded with %q; want a failure", out)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("curl error %v; want it to say %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(out, tt.want) {
				t.Errorf("body %q; want it to start with %q", out, tt.want)
			}
		})
	}
	if !e.dns.asked(tunnelName + ".") {
		t.Errorf("the tunnel's DNS server was never asked for %s", tunnelName)
	}
}

// TestSOCKS5XNetProxy dials through the server with golang.org/x/net/proxy's
// client, by IPv4, IPv6 and name, with and without authentication.
func TestSOCKS5XNetProxy(t *testing.T) {
	e := newEnv(t)
	_, open := startSOCKS5(t, e, nil)
	_, authed := startSOCKS5(t, e, &proxy.SOCKS5Options{Username: "u", Password: "p"})
	tests := []struct {
		name   string
		server string
		auth   *xproxy.Auth
		dest   string
	}{
		{"IPv4", open, nil, e.remoteAddr(7)},
		{"IPv6", open, nil, net.JoinHostPort(e.srv.Addr6().String(), "7")},
		{"name", open, nil, tunnelName + ":7"},
		{"authenticated", authed, &xproxy.Auth{User: "u", Password: "p"}, e.remoteAddr(7)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := xproxy.SOCKS5("tcp", tt.server, tt.auth, xproxy.Direct)
			if err != nil {
				t.Fatal(err)
			}
			c, err := d.(xproxy.ContextDialer).DialContext(testContext(t, 20*time.Second), "tcp", tt.dest)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			msg := []byte("hello through " + tt.name)
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(msg), string(got)); diff != "" {
				t.Errorf("echo (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("wrong password", func(t *testing.T) {
		d, _ := xproxy.SOCKS5("tcp", authed, &xproxy.Auth{User: "u", Password: "x"}, xproxy.Direct)
		if c, err := d.Dial("tcp", e.remoteAddr(7)); err == nil {
			c.Close()
			t.Fatal("dial with a wrong password succeeded")
		}
	})
}

// socksConnect runs a CONNECT handshake on a new connection to server by
// hand and returns the connection and the reply code.
func socksConnect(t *testing.T, server string, atyp byte, addr []byte, port uint16) (net.Conn, byte) {
	t.Helper()
	c, err := net.Dial("tcp", server)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	req := []byte{5, 1, 0, 5, 1, 0, atyp}
	req = append(req, addr...)
	req = binary.BigEndian.AppendUint16(req, port)
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	var resp [2 + 4]byte
	if _, err := io.ReadFull(c, resp[:]); err != nil {
		t.Fatalf("reading the replies: %v", err)
	}
	if resp[0] != 5 || resp[1] != 0 || resp[2] != 5 {
		t.Fatalf("replies start % x; want 05 00 05", resp)
	}
	rest := 4 + 2
	if resp[5] == 4 {
		rest = 16 + 2
	}
	if _, err := io.ReadFull(c, make([]byte, rest)); err != nil {
		t.Fatalf("reading the bound address: %v", err)
	}
	return c, resp[3]
}

func ipv4(s string) []byte { a := netip.MustParseAddr(s).As4(); return a[:] }

func domain(s string) []byte { return append([]byte{byte(len(s))}, s...) }

// TestSOCKS5ReplyCodes holds the server to replies that say what
// happened.
func TestSOCKS5ReplyCodes(t *testing.T) {
	e := newEnv(t)
	_, server := startSOCKS5(t, e, &proxy.SOCKS5Options{DialTimeout: time.Second})
	v6 := e.srv.Addr6().As16()
	tests := []struct {
		name string
		atyp byte
		addr []byte
		port uint16
		want byte
	}{
		{"succeeded", 1, ipv4(e.srv.Addr().String()), 7, 0},
		{"succeeded IPv6", 4, v6[:], 7, 0},
		{"connection refused", 1, ipv4(e.srv.Addr().String()), 9, 5},
		{"network unreachable: no peer routes it", 1, ipv4("10.200.0.1"), 80, 3},
		{"network unreachable: by name", 3, domain("nowhere.wgkit.tunnel-test"), 80, 3},
		{"host unreachable: no such name", 3, domain("nosuch.wgkit.tunnel-test"), 80, 4},
		{"TTL expired: nobody answers", 1, ipv4("10.99.0.200"), 80, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, rep := socksConnect(t, server, tt.atyp, tt.addr, tt.port)
			if rep != tt.want {
				t.Errorf("reply %d; want %d", rep, tt.want)
			}
		})
	}
}

// TestSOCKS5BadInput sends malformed and unsupported handshakes: each
// gets the protocol's error reply, if it has one, and a close within the
// handshake deadline, and the server keeps serving.
func TestSOCKS5BadInput(t *testing.T) {
	checkDescriptors(t)
	e := newEnv(t)
	var logBuf syncBuffer
	_, server := startSOCKS5(t, e, &proxy.SOCKS5Options{
		HandshakeTimeout: 500 * time.Millisecond,
		Logger:           slog.New(slog.NewTextHandler(&logBuf, nil)),
	})
	_, authed := startSOCKS5(t, e, &proxy.SOCKS5Options{Username: "u", Password: "p", HandshakeTimeout: 500 * time.Millisecond})
	hdr := []byte{5, 1, 0}
	req := func(b ...byte) []byte { return append(append([]byte{}, hdr...), b...) }
	long := strings.Repeat("a", 255)
	tests := []struct {
		name   string
		server string
		send   []byte
		want   []byte // everything the server writes before it closes
	}{
		{"empty", server, nil, nil},
		{"truncated greeting", server, []byte{5}, nil},
		{"truncated methods", server, []byte{5, 3, 0}, nil},
		{"garbage", server, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), nil},
		{"SOCKS4", server, []byte{4, 1, 0, 80, 10, 99, 0, 1, 0}, []byte{0, 91, 0, 0, 0, 0, 0, 0}},
		{"unknown version", server, []byte{6, 1, 0}, nil},
		{"no acceptable method", server, []byte{5, 1, 0x80}, []byte{5, 0xFF}},
		{"no methods", server, []byte{5, 0}, []byte{5, 0xFF}},
		{"request version", server, append(req(4, 1, 0, 1), 10, 99, 0, 1, 0, 7), []byte{5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"unknown command", server, append(req(5, 9, 0, 1), 10, 99, 0, 1, 0, 7), []byte{5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"BIND", server, append(req(5, 2, 0, 1), 10, 99, 0, 1, 0, 7), []byte{5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"unknown address type", server, append(req(5, 1, 0, 9), 10, 99, 0, 1, 0, 7), []byte{5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"255-byte domain", server, append(append(req(5, 1, 0, 3), domain(long)...), 0, 80), []byte{5, 0, 5, 4, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"empty domain", server, req(5, 1, 0, 3, 0, 0, 80), []byte{5, 0, 5, 4, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"domain with a NUL", server, append(append(req(5, 1, 0, 3), domain("a\x00b")...), 0, 80), []byte{5, 0, 5, 4, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"truncated request", server, req(5, 1, 0, 1, 10, 99), []byte{5, 0}},
		{"stalled after the greeting", server, []byte{5, 1, 0}, []byte{5, 0}},
		{"auth: bad version", authed, []byte{5, 1, 2, 9, 1, 'u', 1, 'p'}, []byte{5, 2, 1, 1}},
		{"auth: wrong password", authed, []byte{5, 1, 2, 1, 1, 'u', 1, 'x'}, []byte{5, 2, 1, 1}},
		{"auth: truncated", authed, []byte{5, 1, 2, 1, 5, 'u'}, []byte{5, 2}},
		{"auth: not offered", authed, []byte{5, 1, 0}, []byte{5, 0xFF}},
	}
	// In parallel: the stalled cases each wait out the deadline. The
	// group ends when all have.
	t.Run("group", func(t *testing.T) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				c, err := net.Dial("tcp", tt.server)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				start := time.Now()
				c.SetDeadline(start.Add(10 * time.Second))
				if _, err := c.Write(tt.send); err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(c)
				if err != nil && !isClosedOrEOF(err) {
					t.Fatalf("read: %v (after %v)", err, time.Since(start))
				}
				if diff := cmp.Diff(tt.want, got, cmpBytes); diff != "" {
					t.Errorf("server wrote (-want +got):\n%s", diff)
				}
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("closed after %v; want within the 0.5 s deadline (with margin)", d)
				}
			})
		}
	})
	// Still serving.
	if _, rep := socksConnect(t, server, 1, ipv4(e.srv.Addr().String()), 7); rep != 0 {
		t.Errorf("after the bad input, a good request got reply %d", rep)
	}
	if !strings.Contains(logBuf.String(), "unknown address type 9") {
		t.Errorf("log lacks the refused request; log:\n%s", logBuf.String())
	}
}

// cmpBytes makes nil and empty byte slices equal.
var cmpBytes = cmp.Comparer(func(a, b []byte) bool { return bytes.Equal(a, b) })

// syncBuffer is a bytes.Buffer for a logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestSOCKS5OverCap opens 1000 connections at once past a cap of 10
// held connections: each is closed at once, and once the held ones go,
// the server serves again.
func TestSOCKS5OverCap(t *testing.T) {
	checkDescriptors(t)
	e := newEnv(t)
	_, server := startSOCKS5(t, e, &proxy.SOCKS5Options{MaxConns: 10, HandshakeTimeout: time.Minute})
	var held []net.Conn
	for range 10 {
		c, rep := socksConnect(t, server, 1, ipv4(e.srv.Addr().String()), 7)
		if rep != 0 {
			t.Fatalf("held connection: reply %d", rep)
		}
		held = append(held, c)
	}
	const n = 1000
	start := time.Now()
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", server)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			c.Write([]byte{5, 1, 0})
			b, err := io.ReadAll(c)
			if err != nil && !isClosedOrEOF(err) {
				errs <- err
				return
			}
			if len(b) != 0 {
				errs <- errors.New("over the cap, the server answered " + strconv.Quote(string(b)))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d connections over the cap closed in %v", n, time.Since(start))
	for _, c := range held {
		c.Close()
	}
	// The held connections' handlers end shortly after.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", server)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte{5, 1, 0})
		b := make([]byte, 2)
		_, err = io.ReadFull(c, b)
		c.Close()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server does not serve again after the held connections closed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSOCKS5Close: Close ends the joined connections and Serve; a second
// Close says the server was closed.
func TestSOCKS5Close(t *testing.T) {
	e := newEnv(t)
	s, server := startSOCKS5(t, e, nil)
	c, rep := socksConnect(t, server, 1, ipv4(e.srv.Addr().String()), 7)
	if rep != 0 {
		t.Fatalf("reply %d", rep)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || !isClosedOrEOF(err) {
		t.Errorf("read after Close: %v; want EOF", err)
	}
	if err := s.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v; want net.ErrClosed", err)
	}
	if _, err := net.Dial("tcp", server); err == nil {
		t.Error("the listener still accepts after Close")
	}
	if err := s.Serve(listenLocal(t)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve after Close = %v; want net.ErrClosed", err)
	}
}

// TestSOCKS5InvalidOptions: Serve says what is wrong.
func TestSOCKS5InvalidOptions(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name string
		opts proxy.SOCKS5Options
		want string
	}{
		{"long username", proxy.SOCKS5Options{Username: strings.Repeat("u", 256)}, "Username is 256 bytes"},
		{"long password", proxy.SOCKS5Options{Username: "u", Password: strings.Repeat("p", 256)}, "Password is 256 bytes"},
		{"password alone", proxy.SOCKS5Options{Password: "p"}, "Password without Username"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := proxy.NewSOCKS5(e.tnet, &tt.opts)
			err := s.Serve(listenLocal(t))
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "proxy: ") {
				t.Errorf("Serve = %v; want an error saying %q", err, tt.want)
			}
			s.Close()
		})
	}
}
