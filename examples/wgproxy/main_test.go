package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wgkit/wgkit/internal/udpbind"
	"github.com/wgkit/wgkit/wg"
	"github.com/wgkit/wgkit/wg/wgtest"
	"go.uber.org/goleak"
	"golang.org/x/net/proxy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// farSide is a wgtest server with an HTTP server on port 80 (answering
// "hello from the tunnel: METHOD URL") and a UDP echo on port 7.
func farSide(t *testing.T) *wgtest.Server {
	t.Helper()
	srv := wgtest.NewServer(t, nil)
	ln, err := srv.Net().Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from the tunnel: %s %s", r.Method, r.URL)
	}), ReadHeaderTimeout: 10 * time.Second}
	pc, err := srv.Net().ListenPacket("udp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); hs.Serve(ln) }()
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	t.Cleanup(func() {
		hs.Close()
		pc.Close()
		wg.Wait()
	})
	return srv
}

// wgQuick returns a client configuration of srv in wg-quick form.
func wgQuick(t *testing.T, cfg *wg.Config) string {
	t.Helper()
	b, err := cfg.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// started is a running wgproxy.
type started struct {
	addrs []string
	hup   chan os.Signal
	logMu sync.Mutex
	logs  strings.Builder // guarded by logMu
}

// start runs wgproxy with args until the test ends; its WireGuard socket
// is on 127.0.0.1 only.
func start(t *testing.T, args ...string) *started {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &started{hup: make(chan os.Signal, 1)}
	ready := make(chan []string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, args, &runOptions{
			hup:    s.hup,
			stderr: lockedWriter{&s.logMu, &s.logs},
			bind:   udpbind.New(&udpbind.Options{ListenAddr: netip.MustParseAddr("127.0.0.1")}),
			ready:  func(a []string) { ready <- a },
		})
	}()
	select {
	case s.addrs = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("wgproxy: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("wgproxy did not start")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("wgproxy: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("wgproxy did not stop")
		}
	})
	return s
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func curl(t *testing.T, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed (.ci/run installs it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, append([]string{"--silent", "--show-error", "--max-time", "20", "--noproxy", ""}, args...)...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("curl %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// TestWireproxyConfig starts wgproxy with a wireproxy configuration file
// declaring every section it knows, then goes through each.
func TestWireproxyConfig(t *testing.T) {
	srv := farSide(t)
	// The host service that [TCPServerTunnel] exposes in the tunnel.
	hostLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hostHS := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from the host")
	}), ReadHeaderTimeout: 10 * time.Second}
	go hostHS.Serve(hostLn)
	defer hostHS.Close()

	cfg := srv.ClientConfig()
	web := srv.Addr().String() + ":80"
	// wireproxy's own spelling: section names in its README's case, keys
	// in mixed case, an inline comment, a quoted password.
	file := writeFile(t, "wireproxy.conf", wgQuick(t, cfg)+`
[Socks5]
BindAddress = 127.0.0.1:0

[http]
BindAddress = 127.0.0.1:0 ; the HTTP proxy
Username = user
Password = "p#ss"

[TCPClientTunnel]
BindAddress = 127.0.0.1:0
Target = `+web+`

[UDPProxyTunnel]
bindaddress = 127.0.0.1:0
target = `+srv.Addr().String()+`:7

[TCPServerTunnel]
ListenPort = 8080
Target = `+hostLn.Addr().String()+`
`)
	p := start(t, "-config", file)
	if len(p.addrs) != 4 {
		t.Fatalf("listening on %v; want 4 host addresses", p.addrs)
	}
	socks, httpProxy, tcpFwd, udpFwd := p.addrs[0], p.addrs[1], p.addrs[2], p.addrs[3]
	want := "hello from the tunnel: GET /x"
	t.Run("Socks5", func(t *testing.T) {
		if got := curl(t, "--socks5-hostname", socks, "http://"+web+"/x"); got != want {
			t.Errorf("got %q; want %q", got, want)
		}
	})
	t.Run("http", func(t *testing.T) {
		if got := curl(t, "-x", "http://"+httpProxy, "-U", "user:p#ss", "http://"+web+"/x"); got != want {
			t.Errorf("got %q; want %q", got, want)
		}
		if got := curl(t, "-x", "http://"+httpProxy, "-o", "/dev/null", "-w", "%{http_code}", "http://"+web+"/x"); got != "407" {
			t.Errorf("without credentials: status %q; want 407", got)
		}
	})
	t.Run("TCPClientTunnel", func(t *testing.T) {
		if got := curl(t, "http://"+tcpFwd+"/x"); got != want {
			t.Errorf("got %q; want %q", got, want)
		}
	})
	t.Run("UDPProxyTunnel", func(t *testing.T) {
		c, err := net.Dial("udp", udpFwd)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 100)
		for attempt := 0; ; attempt++ {
			io.WriteString(c, "ping")
			c.SetReadDeadline(time.Now().Add(time.Second))
			n, err := c.Read(buf)
			if err == nil {
				if string(buf[:n]) != "ping" {
					t.Errorf("echo %q; want ping", buf[:n])
				}
				break
			}
			if attempt == 5 {
				t.Fatal(err)
			}
		}
	})
	t.Run("TCPServerTunnel", func(t *testing.T) {
		client := &http.Client{Transport: &http.Transport{DialContext: srv.Net().DialContext}}
		defer client.CloseIdleConnections()
		resp, err := client.Get("http://" + netip.AddrPortFrom(cfg.Interface.Addresses[0].Addr(), 8080).String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "hello from the host" {
			t.Errorf("got %q", b)
		}
	})
}

// TestWGConfigAndFlags: WGConfig names the wg-quick file, and flags add
// services to a plain wg-quick file.
func TestWGConfigAndFlags(t *testing.T) {
	srv := farSide(t)
	web := srv.Addr().String() + ":80"
	want := "hello from the tunnel: GET /"
	t.Run("WGConfig", func(t *testing.T) {
		wgFile := writeFile(t, "wg0.conf", wgQuick(t, srv.ClientConfig()))
		file := writeFile(t, "wireproxy.conf", "WGConfig = "+wgFile+"\n\n[Socks5]\nBindAddress = 127.0.0.1:0\n")
		p := start(t, "-config", file)
		if got := curl(t, "--socks5-hostname", p.addrs[0], "http://"+web+"/"); got != want {
			t.Errorf("got %q; want %q", got, want)
		}
	})
	t.Run("flags", func(t *testing.T) {
		file := writeFile(t, "wg0.conf", wgQuick(t, srv.ClientConfig()))
		p := start(t, "-config", file, "-socks", "127.0.0.1:0", "-http", "127.0.0.1:0", "-forward", "tcp:127.0.0.1:0="+web)
		if got := curl(t, "--socks5-hostname", p.addrs[0], "http://"+web+"/"); got != want {
			t.Errorf("socks: got %q; want %q", got, want)
		}
		if got := curl(t, "-p", "-x", "http://"+p.addrs[1], "http://"+web+"/"); got != want {
			t.Errorf("http: got %q; want %q", got, want)
		}
		if got := curl(t, "http://"+p.addrs[2]+"/"); got != want {
			t.Errorf("forward: got %q; want %q", got, want)
		}
	})
}

// TestReload: SIGHUP applies the file's new peers to the running tunnel
// and keeps an open connection.
func TestReload(t *testing.T) {
	srv := farSide(t)
	cfg := srv.ClientConfig()
	file := writeFile(t, "wireproxy.conf", wgQuick(t, cfg)+"\n[Socks5]\nBindAddress = 127.0.0.1:0\n")
	p := start(t, "-config", file)
	d, err := proxy.SOCKS5("tcp", p.addrs[0], nil, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.Dial("tcp", srv.Addr().String()+":80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	if _, err := d.Dial("tcp", "10.250.0.9:80"); err == nil || !strings.Contains(err.Error(), "network unreachable") {
		t.Fatalf("dial before the reload: %v; want network unreachable", err)
	}

	extra, err := wg.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Peers = append(cfg.Peers, wg.Peer{PublicKey: extra.PublicKey(), AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.250.0.0/24")}})
	if err := os.WriteFile(file, []byte(wgQuick(t, cfg)+"\n[Socks5]\nBindAddress = 127.0.0.1:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.hup <- nil
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.logText(), "reload: tunnel configuration applied") {
		if time.Now().After(deadline) {
			t.Fatalf("no reload in the log:\n%s", p.logText())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The open connection still works: an HTTP request on it.
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /after HTTP/1.0\r\n\r\n")
	b, err := io.ReadAll(c)
	if err != nil || !strings.HasSuffix(string(b), "hello from the tunnel: GET /after") {
		t.Errorf("request on the connection opened before the reload: %q, %v", b, err)
	}
	// The new peer is there: a dial to its range no longer fails for
	// want of a route.
	// The new peer has no endpoint, so the dial waits until it is given
	// up; before the reload it failed at once.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err = d.(proxy.ContextDialer).DialContext(ctx, "tcp", "10.250.0.9:80")
	if err == nil || strings.Contains(err.Error(), "network unreachable") {
		t.Errorf("dial into the new peer's AllowedIPs: %v; want a failure other than network unreachable", err)
	}
}

func (s *started) logText() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.logs.String()
}

func TestConfigErrors(t *testing.T) {
	srv := wgtest.NewServer(t, nil)
	base := wgQuick(t, srv.ClientConfig())
	baseLines := strings.Count(base, "\n")
	tests := []struct {
		name string
		text string
		want string // error text after "wgproxy: FILE "
	}{
		{"no BindAddress", base + "[Socks5]\nUsername = u\n", fmt.Sprintf("line %d: [socks5] needs BindAddress", baseLines+1)},
		{"bad BindAddress", base + "[http]\nBindAddress = 1080\n", fmt.Sprintf("line %d: BindAddress: want host:port: address 1080: missing port in address", baseLines+2)},
		{"bad ListenPort", base + "[TCPServerTunnel]\nListenPort = http\nTarget = 127.0.0.1:80\n", fmt.Sprintf("line %d: ListenPort: want a port number 1..65535, got \"http\"", baseLines+2)},
		{"no Target", base + "[TCPClientTunnel]\nBindAddress = 127.0.0.1:1\n", fmt.Sprintf("line %d: [tcpclienttunnel] needs Target", baseLines+1)},
		{"wg-quick error keeps its line", "[Socks5]\nBindAddress = 127.0.0.1:0\n" + strings.Replace(base, "PrivateKey", "PrivateKye", 1), "line 4: unknown key \"PrivateKye\" in [Interface]"},
		{"missing WGConfig file", "WGConfig = /nonexistent/wg0.conf\n[Socks5]\nBindAddress = 127.0.0.1:0\n", "line 1: WGConfig: open /nonexistent/wg0.conf: no such file or directory"},
		{"bad header", base + "[Socks5\n", fmt.Sprintf("line %d: section header \"[Socks5\" lacks ']'", baseLines+1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := writeFile(t, "c.conf", tt.text)
			_, err := parseConfig(file)
			if err == nil {
				t.Fatal("no error")
			}
			var cerr *configError
			if !errors.As(err, &cerr) {
				t.Fatalf("error %v is not a *configError", err)
			}
			if diff := cmp.Diff("wgproxy: "+file+" "+tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestConfigWarnings(t *testing.T) {
	srv := wgtest.NewServer(t, nil)
	base := wgQuick(t, srv.ClientConfig())
	base = strings.Replace(base, "[Interface]\n", "[Interface]\nCheckAlive = 1.1.1.1\n", 1)
	file := writeFile(t, "c.conf", base+"[STDIOTunnel]\nTarget = a:1\n[Foo]\nBar = 1\n[Socks5]\nBindAddress = 127.0.0.1:1080\nColor = red\n")
	cfg, err := parseConfig(file)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		file + " line 2: wireproxy's CheckAlive is not supported; ignored",
	}
	if diff := cmp.Diff(want, cfg.warnings[:1]); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
	all := strings.Join(cfg.warnings, "\n")
	for _, w := range []string{"[STDIOTunnel] is not supported", "unknown section [foo]", "unknown key \"color\" in [socks5]"} {
		if !strings.Contains(all, w) {
			t.Errorf("warnings lack %q:\n%s", w, all)
		}
	}
	if diff := cmp.Diff([]server{{bind: "127.0.0.1:1080"}}, cfg.socks, cmp.AllowUnexported(server{})); diff != "" {
		t.Errorf("socks (-want +got):\n%s", diff)
	}
}

func TestIniValue(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"a # comment", "a"},
		{"a;b", "a"},
		{`"p#ss;word"`, "p#ss;word"},
		{"'single'", "single"},
		{"`back`", "back"},
		{`"unclosed`, `"unclosed`},
		{"", ""},
	}
	for _, tt := range tests {
		if got := iniValue(tt.in); got != tt.want {
			t.Errorf("iniValue(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestFlagParsing(t *testing.T) {
	tests := []struct {
		in      string
		reverse bool
		want    string // fmt of the value, or the error
	}{
		{"tcp:127.0.0.1:2222=10.0.0.5:22", false, "{tcp 127.0.0.1:2222 10.0.0.5:22}"},
		{"udp:[::1]:53=10.0.0.1:53", false, "{udp [::1]:53 10.0.0.1:53}"},
		{"sctp:1:2=3:4", false, `-forward "sctp:1:2=3:4": want tcp:BIND=TARGET or udp:BIND=TARGET`},
		{"tcp:2222", false, `-forward "tcp:2222": want tcp:BIND=TARGET or udp:BIND=TARGET`},
		{"tcp:8080=127.0.0.1:80", true, "{tcp 8080 127.0.0.1:80}"},
		{"udp:0=127.0.0.1:53", true, `-reverse "udp:0=127.0.0.1:53": want a port number 1..65535, got "0"`},
	}
	for _, tt := range tests {
		var got any
		var err error
		if tt.reverse {
			got, err = parseFlagReverse(tt.in)
		} else {
			got, err = parseFlagForward(tt.in)
		}
		s := fmt.Sprint(got)
		if err != nil {
			s = err.Error()
		}
		if s != tt.want {
			t.Errorf("%q: got %s; want %s", tt.in, s, tt.want)
		}
	}
}

// TestStartFailure: a listen address in use fails the start with an error
// naming it, after undoing what had started (the goroutine check of
// TestMain sees the rest).
func TestStartFailure(t *testing.T) {
	srv := wgtest.NewServer(t, nil)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	file := writeFile(t, "wg0.conf", wgQuick(t, srv.ClientConfig()))
	err = run(context.Background(), []string{"-config", file, "-socks", "127.0.0.1:0", "-http", busy.Addr().String()}, &runOptions{
		stderr: io.Discard,
		bind:   udpbind.New(&udpbind.Options{ListenAddr: netip.MustParseAddr("127.0.0.1")}),
	})
	if err == nil || !strings.Contains(err.Error(), "wgproxy: http: listen tcp "+busy.Addr().String()) {
		t.Errorf("run = %v; want an error naming the busy address", err)
	}
	err = run(context.Background(), []string{"-config", file}, &runOptions{stderr: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "nothing to serve") {
		t.Errorf("run without services = %v; want \"nothing to serve\"", err)
	}
}
