package proxy_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wgkit/wgkit/internal/udpbind"
	"github.com/wgkit/wgkit/netstack"
	"github.com/wgkit/wgkit/wg/wgtest"
	"go.uber.org/goleak"
	"golang.org/x/net/dns/dnsmessage"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// tunnelName is a name only the tunnel's DNS server knows; the host's
// resolver has never heard of the .tunnel-test domain.
const tunnelName = "web.wgkit.tunnel-test"

// env is a tunnel between a wgtest server (the far side, "remote") and a
// client Net (the proxies' Network, "tnet") whose DNS server is a tiny
// responder on the remote side. The remote side runs an HTTP server on
// port 80 answering with the request's method, URL and headers, and an
// echo server on TCP and UDP port 7.
type env struct {
	srv    *wgtest.Server
	remote *netstack.Net
	tnet   *netstack.Net
	dns    *tinyDNS
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := wgtest.NewServer(t, nil)
	cfg := srv.ClientConfig()
	cfg.Interface.DNS = []netip.Addr{srv.Addr()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tnet, err := netstack.Open(ctx, cfg, &netstack.Options{
		Bind: udpbind.New(&udpbind.Options{ListenAddr: netip.MustParseAddr("127.0.0.1")}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tnet.Close() })
	e := &env{srv: srv, remote: srv.Net(), tnet: tnet, dns: &tinyDNS{records: map[string]netip.Addr{
		tunnelName + ".":             srv.Addr(),
		"v6." + tunnelName + ".":     srv.Addr6(),
		"dns.wgkit.tunnel-test.":     srv.Addr(),
		"nowhere.wgkit.tunnel-test.": netip.MustParseAddr("10.200.0.1"), // no peer routes it
	}}}
	e.dns.serve(t, e.remote)
	e.serveHTTP(t)
	e.serveEcho(t)
	return e
}

// remoteAddr is host:port of the remote side.
func (e *env) remoteAddr(port int) string {
	return netip.AddrPortFrom(e.srv.Addr(), uint16(port)).String()
}

// serveHTTP answers every request on the remote side's port 80 with
// "METHOD URL" and the request headers, one "Key: value" a line, sorted.
func (e *env) serveHTTP(t *testing.T) {
	ln, err := e.remote.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s\n", r.Method, r.URL)
		r.Header.Write(w)
	}), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		hs.Serve(ln)
	}()
	t.Cleanup(func() {
		hs.Close()
		<-done
	})
}

// serveEcho echoes TCP on the remote side's port 7 (the echo ends, with
// a half-close, when the input does) and UDP datagrams on port 7.
func (e *env) serveEcho(t *testing.T) {
	t.Helper()
	ln, err := e.remote.Listen("tcp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := e.remote.ListenPacket("udp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		serveEchoTCP(ln)
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		pc.Close()
		wg.Wait()
	})
}

// serveEchoTCP echoes every connection accepted on ln until ln closes,
// then waits for them.
func serveEchoTCP(ln net.Listener) {
	var wg sync.WaitGroup
	defer wg.Wait()
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	defer func() {
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	for {
		c, err := ln.Accept()
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
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			}()
			io.Copy(c, c)
			if cw, ok := c.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
		}()
	}
}

// tinyDNS answers A and AAAA queries over UDP port 53 for its records
// (fully qualified, lower case) and NXDOMAIN for the rest, and logs the
// names it was asked.
type tinyDNS struct {
	records map[string]netip.Addr

	mu      sync.Mutex
	queries []string // guarded by mu
}

func (d *tinyDNS) asked(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, q := range d.queries {
		if q == name {
			return true
		}
	}
	return false
}

func (d *tinyDNS) answer(req []byte) []byte {
	var m dnsmessage.Message
	if err := m.Unpack(req); err != nil || len(m.Questions) != 1 {
		return nil
	}
	q := m.Questions[0]
	name := strings.ToLower(q.Name.String())
	d.mu.Lock()
	d.queries = append(d.queries, name)
	d.mu.Unlock()
	resp := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: m.ID, Response: true, Authoritative: true},
		Questions: m.Questions,
	}
	a, ok := d.records[name]
	h := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}
	switch {
	case !ok:
		resp.RCode = dnsmessage.RCodeNameError
	case a.Is4() && q.Type == dnsmessage.TypeA:
		h.Type = dnsmessage.TypeA
		resp.Answers = append(resp.Answers, dnsmessage.Resource{Header: h, Body: &dnsmessage.AResource{A: a.As4()}})
	case a.Is6() && q.Type == dnsmessage.TypeAAAA:
		h.Type = dnsmessage.TypeAAAA
		resp.Answers = append(resp.Answers, dnsmessage.Resource{Header: h, Body: &dnsmessage.AAAAResource{AAAA: a.As16()}})
	}
	b, err := resp.Pack()
	if err != nil {
		return nil
	}
	return b
}

func (d *tinyDNS) serve(t *testing.T, n *netstack.Net) {
	t.Helper()
	pc, err := n.ListenPacket("udp", ":53")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := d.answer(buf[:k]); resp != nil {
				pc.WriteTo(resp, from)
			}
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
}

// dnsQuery returns a query for name's A record.
func dnsQuery(t *testing.T, name string) []byte {
	t.Helper()
	m := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: 0x4242, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dnsAnswerA returns the A record of a DNS response.
func dnsAnswerA(b []byte) (netip.Addr, error) {
	var m dnsmessage.Message
	if err := m.Unpack(b); err != nil {
		return netip.Addr{}, err
	}
	for _, a := range m.Answers {
		if r, ok := a.Body.(*dnsmessage.AResource); ok {
			return netip.AddrFrom4(r.A), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no A record in %v", m.Header)
}

// curl runs curl with args, bounded by 30 s, and returns its stdout and
// its error (stderr in the message). It skips the test without curl.
func curl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	path, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed (.ci/run installs it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, append([]string{"--silent", "--show-error", "--max-time", "20", "--noproxy", ""}, args...)...)
	// No proxy settings from the environment may reach curl.
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("curl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// listenLocal listens on 127.0.0.1 at a free port.
func listenLocal(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// testContext ends with the test or after d.
func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// transfer sends n random bytes on c and at the same time reads c to its
// end; it half-closes c after sending. It returns the SHA-256 of what it
// sent and of what it read, and how much it read.
func transfer(c net.Conn, n int64) (sent, got []byte, read int64, err error) {
	errc := make(chan error, 1)
	go func() {
		h := sha256.New()
		_, err := io.Copy(c, io.TeeReader(io.LimitReader(rand.Reader, n), h))
		sent = h.Sum(nil)
		if err == nil {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		errc <- err
	}()
	h := sha256.New()
	read, err = io.Copy(h, c)
	got = h.Sum(nil)
	if werr := <-errc; err == nil {
		err = werr
	}
	return sent, got, read, err
}

// isClosedOrEOF reports an error that says the peer closed or reset.
func isClosedOrEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "reset")
}

// checkDescriptors fails the test if the process has more open file
// descriptors once every cleanup registered after it has run than when it
// was called (Linux only: it reads /proc/self/fd). Call it first.
func checkDescriptors(t *testing.T) {
	t.Helper()
	count := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			return -1
		}
		return len(ents)
	}
	before := count()
	if before < 0 {
		return // no /proc: goleak's goroutine check still runs
	}
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := count()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%d file descriptors open after the test, %d before", n, before)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}
