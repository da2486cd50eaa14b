package netstack

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wgkit/wgkit/wg"
	"golang.org/x/net/dns/dnsmessage"
)

// testDNS is a small authoritative DNS server on a tunnel, over UDP and
// TCP port 53. Names in records answer with their addresses; "big."
// names answer over UDP with only the TC bit, so clients must retry over
// TCP; the first UDP query of each type for a "flaky." name is dropped, so
// clients must retry; every other name is NXDOMAIN.
type testDNS struct {
	records map[string][]netip.Addr // fully qualified, lower case

	mu      sync.Mutex
	queries []string        // "udp name type" or "tcp name type"; guarded by mu
	dropped map[string]bool // flaky queries dropped once; guarded by mu
}

func (s *testDNS) log() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.queries...)
}

func (s *testDNS) answer(req []byte, transport string) []byte {
	var m dnsmessage.Message
	if err := m.Unpack(req); err != nil || len(m.Questions) != 1 {
		return nil
	}
	q := m.Questions[0]
	name := strings.ToLower(q.Name.String())
	query := fmt.Sprintf("%s %s %s", transport, name, q.Type)
	s.mu.Lock()
	s.queries = append(s.queries, query)
	drop := strings.HasPrefix(name, "flaky.") && transport == "udp" && !s.dropped[query]
	if drop {
		s.dropped[query] = true
	}
	s.mu.Unlock()
	if drop {
		return nil
	}
	resp := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: m.ID, Response: true, Authoritative: true, RecursionDesired: m.RecursionDesired},
		Questions: m.Questions,
	}
	addrs, ok := s.records[name]
	switch {
	case !ok:
		resp.RCode = dnsmessage.RCodeNameError
	case strings.HasPrefix(name, "big.") && transport == "udp":
		resp.Truncated = true
	default:
		for _, a := range addrs {
			h := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}
			switch {
			case a.Is4() && q.Type == dnsmessage.TypeA:
				h.Type = dnsmessage.TypeA
				resp.Answers = append(resp.Answers, dnsmessage.Resource{Header: h, Body: &dnsmessage.AResource{A: a.As4()}})
			case a.Is6() && q.Type == dnsmessage.TypeAAAA:
				h.Type = dnsmessage.TypeAAAA
				resp.Answers = append(resp.Answers, dnsmessage.Resource{Header: h, Body: &dnsmessage.AAAAResource{AAAA: a.As16()}})
			}
		}
	}
	b, err := resp.Pack()
	if err != nil {
		return nil
	}
	return b
}

// serve runs the server on n's every address until the test ends.
func (s *testDNS) serve(t *testing.T, n *Net) {
	t.Helper()
	s.serveOn(t, n, netip.Addr{})
}

// serveOn runs the server on n's address addr (the zero Addr: all of
// them) until the test ends.
func (s *testDNS) serveOn(t *testing.T, n *Net, addr netip.Addr) {
	t.Helper()
	host := ""
	if addr.IsValid() {
		host = addr.String()
	}
	pc, err := n.ListenPacket("udp", net.JoinHostPort(host, "53"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := n.Listen("tcp", net.JoinHostPort(host, "53"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		pc.Close()
		l.Close()
		wg.Wait()
	})
	wg.Add(2)
	go func() {
		defer wg.Done()
		buf := make([]byte, 1500)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := s.answer(buf[:k], "udp"); resp != nil {
				pc.WriteTo(resp, from)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				s.serveStream(c)
			}()
		}
	}()
}

// serveStream answers the queries of DNS over TCP (length-prefixed
// messages) on c until c fails or ends.
func (s *testDNS) serveStream(c io.ReadWriter) {
	for {
		var lb [2]byte
		if _, err := io.ReadFull(c, lb[:]); err != nil {
			return
		}
		req := make([]byte, binary.BigEndian.Uint16(lb[:]))
		if _, err := io.ReadFull(c, req); err != nil {
			return
		}
		resp := s.answer(req, "tcp")
		out := binary.BigEndian.AppendUint16(nil, uint16(len(resp)))
		if _, err := c.Write(append(out, resp...)); err != nil {
			return
		}
	}
}

func newTestDNS() *testDNS {
	big := make([]netip.Addr, 60)
	for i := range big {
		big[i] = netip.AddrFrom4([4]byte{10, 123, 1, byte(i)})
	}
	return &testDNS{records: map[string][]netip.Addr{
		"host.example.":     {addrB4, addrB6},
		"svc.corp.example.": {addrB4},
		"v6.example.":       {addrB6},
		"big.example.":      big,
		"flaky.example.":    {addrB4},
	}, dropped: map[string]bool{}}
}

// openDNSPair opens A and B, with B serving DNS for A, whose config names
// B as its DNS server and corp.example as its search domain.
func openDNSPair(t *testing.T) (a, b *Net, srv *testDNS) {
	a, b = openPair(t, func(a, b *wg.Config) {
		a.Interface.DNS = []netip.Addr{addrB4}
		a.Interface.DNSSearch = []string{"corp.example"}
	})
	srv = newTestDNS()
	srv.serve(t, b)
	return a, b, srv
}

func TestLookupHost(t *testing.T) {
	a, _, srv := openDNSPair(t)
	var bigWant []string
	for _, ip := range srv.records["big.example."] {
		bigWant = append(bigWant, ip.String())
	}
	tests := []struct {
		name        string
		host        string
		want        []string
		wantQueries []string // A queries only, in order; nil: not checked
	}{
		{"both families", "host.example", []string{"10.123.0.2", "fd00:123::2"}, []string{"udp host.example. TypeA"}},
		{"trailing dot", "host.example.", []string{"10.123.0.2", "fd00:123::2"}, []string{"udp host.example. TypeA"}},
		{"v6 only", "v6.example", []string{"fd00:123::2"}, nil},
		{"search domain", "svc", []string{"10.123.0.2"}, []string{"udp svc.corp.example. TypeA"}},
		{"dotted name tried as is first", "svc.corp.example", []string{"10.123.0.2"}, []string{"udp svc.corp.example. TypeA"}},
		{"truncated answer retried over TCP", "big.example", bigWant, []string{"udp big.example. TypeA", "tcp big.example. TypeA"}},
		{"lost UDP query retried", "flaky.example", []string{"10.123.0.2"}, []string{"udp flaky.example. TypeA", "udp flaky.example. TypeA"}},
		{"literal IPv4", "10.9.8.7", []string{"10.9.8.7"}, []string{}},
		{"literal IPv6", "fd00::7", []string{"fd00::7"}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(srv.log())
			got, err := a.LookupHost(testContext(t, 10*time.Second), tt.host)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("LookupHost(%q) (-want +got):\n%s", tt.host, diff)
			}
			if tt.wantQueries != nil {
				var gotA []string
				for _, q := range srv.log()[before:] {
					if strings.HasSuffix(q, "TypeA") {
						gotA = append(gotA, q)
					}
				}
				if diff := cmp.Diff(tt.wantQueries, gotA, cmpEmpty); diff != "" {
					t.Errorf("A queries (-want +got):\n%s", diff)
				}
			}
		})
	}
}

var cmpEmpty = cmp.Transformer("nilToEmpty", func(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
})

func TestLookupHostErrors(t *testing.T) {
	a, _, srv := openDNSPair(t)
	t.Run("not found", func(t *testing.T) {
		before := len(srv.log())
		_, err := a.LookupHost(testContext(t, 10*time.Second), "nope")
		var de *net.DNSError
		if !errors.As(err, &de) || !de.IsNotFound {
			t.Fatalf("LookupHost(nope): %v, want a not-found *net.DNSError", err)
		}
		var gotA []string
		for _, q := range srv.log()[before:] {
			if strings.HasSuffix(q, "TypeA") {
				gotA = append(gotA, q)
			}
		}
		// A single-label name: search domain first, then as is.
		want := []string{"udp nope.corp.example. TypeA", "udp nope. TypeA"}
		if diff := cmp.Diff(want, gotA); diff != "" {
			t.Errorf("A queries (-want +got):\n%s", diff)
		}
	})
	t.Run("invalid name", func(t *testing.T) {
		_, err := a.LookupHost(testContext(t, 10*time.Second), "bad name!")
		var de *net.DNSError
		if !errors.As(err, &de) || !de.IsNotFound {
			t.Errorf("LookupHost(bad name): %v, want a not-found *net.DNSError", err)
		}
	})
	t.Run("no DNS servers", func(t *testing.T) {
		_, b := openPair(t, nil)
		_, err := b.LookupHost(testContext(t, 10*time.Second), "host.example")
		var de *net.DNSError
		if !errors.As(err, &de) || !strings.Contains(err.Error(), "no DNS servers") {
			t.Errorf("LookupHost without DNS servers: %v, want a *net.DNSError saying so", err)
		}
	})
	t.Run("server not answering", func(t *testing.T) {
		c, s := openPair(t, func(a, b *wg.Config) {
			a.Interface.DNS = []netip.Addr{addrB6}
		})
		silentDNS(t, s, addrB6)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := c.LookupHost(ctx, "host.example")
		var de *net.DNSError
		if !errors.As(err, &de) || !de.IsTimeout {
			t.Errorf("LookupHost with a silent server: %v, want a timeout *net.DNSError", err)
		}
	})
}

func TestDialByName(t *testing.T) {
	a, b, _ := openDNSPair(t)
	l, err := b.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(c.LocalAddr().String()))
			c.Close()
		}
	}()
	tests := []struct {
		network, host string
		want          netip.Addr
	}{
		{"tcp", "host.example", addrB4},
		{"tcp6", "host.example", addrB6},
		{"tcp", "svc", addrB4},
		{"tcp", "v6.example", addrB6},
	}
	for _, tt := range tests {
		t.Run(tt.network+" "+tt.host, func(t *testing.T) {
			c, err := a.DialContext(testContext(t, 10*time.Second), tt.network, net.JoinHostPort(tt.host, fmt.Sprint(port)))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if want := netip.AddrPortFrom(tt.want, uint16(port)).String(); string(got) != want {
				t.Errorf("connected to %s, want %s", got, want)
			}
		})
	}
	t.Run("unknown name", func(t *testing.T) {
		_, err := a.Dial("tcp", net.JoinHostPort("nope.example", fmt.Sprint(port)))
		var de *net.DNSError
		var oe *net.OpError
		if !errors.As(err, &de) || !de.IsNotFound || !errors.As(err, &oe) {
			t.Errorf("dial unknown name: %v, want a *net.OpError around a not-found *net.DNSError", err)
		}
	})
}

func TestResolver(t *testing.T) {
	a, _, _ := openDNSPair(t)
	// A trailing dot keeps the host's search domains out of the test.
	got, err := a.Resolver().LookupHost(testContext(t, 10*time.Second), "host.example.")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"10.123.0.2", "fd00:123::2"}, got, cmp.Transformer("sort", func(s []string) []string {
		s = slices.Clone(s)
		slices.Sort(s)
		return s
	})); diff != "" {
		t.Errorf("Resolver().LookupHost (-want +got):\n%s", diff)
	}
}

func TestHTTPClient(t *testing.T) {
	a, b, _ := openDNSPair(t)
	l, err := b.Listen("tcp", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s from %s", r.RemoteAddr, r.Host)
	})}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	defer func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	}()
	t.Setenv("HTTP_PROXY", "http://127.0.0.1:1")
	for _, url := range []string{"http://host.example:8080/", "http://10.123.0.2:8080/", "http://[fd00:123::2]:8080/"} {
		resp, err := a.HTTPClient().Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(body), "hello ") {
			t.Errorf("GET %s: %q", url, body)
		}
	}
}

func TestSearchNames(t *testing.T) {
	tests := []struct {
		name   string
		host   string
		search []string
		want   []string
	}{
		{"no search", "a", nil, []string{"a."}},
		{"single label searches first", "a", []string{"x.org", "y.org."}, []string{"a.x.org.", "a.y.org.", "a."}},
		{"dotted tries as is first", "a.b", []string{"x.org"}, []string{"a.b.", "a.b.x.org."}},
		{"absolute", "a.b.", []string{"x.org"}, []string{"a.b."}},
		{"empty domains skipped", "a", []string{"", "."}, []string{"a."}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, searchNames(tt.host, tt.search)); diff != "" {
				t.Errorf("searchNames(%q, %q) (-want +got):\n%s", tt.host, tt.search, diff)
			}
		})
	}
}
