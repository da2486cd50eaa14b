//go:build linux

package tun

// The namespace side of the root tests runs in a child process started
// with `ip netns exec NS <this test binary> -test.run=^TestHelperProcess$`,
// because every socket wireguard-go opens later, from its own goroutines,
// must be created inside the namespace. The protocol between parent and
// child is internal/nettest's: one command per line on the child's stdin,
// one JSON reply per line on its stdout (lines starting with replyPrefix);
// the child's log goes to stderr, which the parent prints when a test
// fails or WGKIT_TEST_DEBUG is set.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/wgkit/wgkit/internal/nettest"
	"github.com/wgkit/wgkit/internal/udpbind"
	"github.com/wgkit/wgkit/wg"
)

const (
	helperEnv   = "WGKIT_TUN_HELPER"         // "open" (tun.Open) or other roles
	configEnv   = "WGKIT_TUN_HELPER_CONFIG"  // wg-quick text
	optionsEnv  = "WGKIT_TUN_HELPER_OPTIONS" // JSON helperOptions
	replyPrefix = "wgkit-helper: "
	// helperLifetime bounds a child that the parent forgot or lost.
	helperLifetime = 60 * time.Second
)

// helperOptions are the Options a child passes to Open.
type helperOptions struct {
	Name        string
	SetDNS      bool
	DisableUAPI bool
	Engine      Engine
	// PlainBind passes Open a Bind of the caller's: internal/udpbind
	// without a sticky source.
	PlainBind bool
}

// TestHelperProcess is not a test: it is the child process of the root
// tests (see the comment at the top of this file). It does nothing unless
// started by one of them.
func TestHelperProcess(t *testing.T) {
	role := os.Getenv(helperEnv)
	if role == "" {
		t.Skip("not a test: the child process the namespace tests re-execute")
	}
	os.Exit(runHelper(role))
}

// helperRoles maps roles other than "open" to their set-up; each returns
// the command handler and a closer. Other files add roles (netstack).
type helperRole func(ctx context.Context, cfg *wg.Config, log *slog.Logger) (handler func(cmd, arg string) (any, error), closer func() error, err error)

func runHelper(role string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	child := nettest.NewChild(replyPrefix)
	cfg, err := wg.ParseConfig(strings.NewReader(os.Getenv(configEnv)))
	if err != nil {
		child.Send(nil, fmt.Errorf("helper: config: %w", err))
		return 1
	}
	var ho helperOptions
	if s := os.Getenv(optionsEnv); s != "" {
		if err := json.Unmarshal([]byte(s), &ho); err != nil {
			child.Send(nil, fmt.Errorf("helper: options: %w", err))
			return 1
		}
	}
	// Goroutines alive now (the test framework's, the stdin reader) are
	// not the tunnel's; any other one alive after Close is a leak.
	baseline := goleak.IgnoreCurrent()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	var handle func(cmd, arg string) (any, error)
	var closer func() error
	switch role {
	case "open":
		handle, closer, err = openRole(ctx, cfg, &ho, log)
	default:
		r, ok := extraRoles()[role]
		if !ok {
			err = fmt.Errorf("helper: unknown role %q", role)
		} else {
			handle, closer, err = r(ctx, cfg, log)
		}
	}
	cancel()
	if err != nil {
		// A failed Open must not leave goroutines behind either.
		var res closeResult
		if lerr := goleak.Find(baseline); lerr != nil {
			res.Leaks = lerr.Error()
		}
		child.Send(res, err)
		return 0
	}
	child.Send(nil, nil)
	child.Serve(helperLifetime, log, handle, func() (any, error) { return closeAndCheck(closer, baseline) }, closer)
	return 0
}

// closeResult is what a child reports on "close".
type closeResult struct {
	CloseErr       string
	SecondCloseErr string
	SecondIsClosed bool
	Leaks          string
}

// closeAndCheck closes twice and looks for leaked goroutines, from the
// child's side (the parent cannot see the child's goroutines).
func closeAndCheck(closer func() error, baseline goleak.Option) (any, error) {
	var res closeResult
	if err := closer(); err != nil {
		res.CloseErr = err.Error()
	}
	err := closer()
	if err != nil {
		res.SecondCloseErr = err.Error()
	}
	res.SecondIsClosed = errors.Is(err, net.ErrClosed)
	if err := goleak.Find(baseline); err != nil {
		res.Leaks = err.Error()
	}
	return res, nil
}

func openRole(ctx context.Context, cfg *wg.Config, ho *helperOptions, log *slog.Logger) (func(cmd, arg string) (any, error), func() error, error) {
	o := &Options{Name: ho.Name, Logger: log, SetDNS: ho.SetDNS, DisableUAPI: ho.DisableUAPI, Engine: ho.Engine}
	if ho.PlainBind {
		o.Bind = udpbind.New(&udpbind.Options{BatchSize: 128, Logger: log})
	}
	ifc, err := Open(ctx, cfg, o)
	if err != nil {
		return nil, nil, err
	}
	var tcp tcpEcho
	handle := func(cmd, arg string) (any, error) {
		switch cmd {
		case "peers":
			return ifc.Device().Peers(), nil
		case "config":
			b, err := ifc.Device().Config().MarshalText()
			return string(b), err
		case "name":
			return ifc.Name(), nil
		case "engine":
			return ifc.Engine().String(), nil
		case "mtu":
			return ifc.MTU(), nil
		case "addrs":
			return ifc.Addrs(), nil
		default:
			return commonCommand(&tcp, nil, cmd, arg)
		}
	}
	closer := func() error {
		err := ifc.Close()
		tcp.close()
		return err
	}
	return handle, closer, nil
}

// dialer is what the TCP commands dial with; nil is the host's stack.
type dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// commonCommand runs the commands every role understands: ping ADDR,
// listen ADDR (a TCP echo server, replying with the bound address) and
// dial ADDR (a TCP echo round trip).
func commonCommand(tcp *tcpEcho, d dialer, cmd, arg string) (any, error) {
	switch cmd {
	case "ping":
		addr, err := netip.ParseAddr(arg)
		if err != nil {
			return nil, err
		}
		return nil, ping(addr, 10*time.Second)
	case "listen":
		return tcp.listen(arg)
	case "dial":
		if d == nil {
			d = &net.Dialer{}
		}
		return nil, echoRoundTrip(d, arg)
	}
	return nil, fmt.Errorf("helper: unknown command %q", cmd)
}

// ping sends ICMP echo requests to addr until one is answered or timeout
// passes, one every 200ms.
func ping(addr netip.Addr, timeout time.Duration) error {
	network, laddr, proto := "ip4:icmp", "0.0.0.0", 1
	var typ, replyTyp icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if addr.Is6() {
		network, laddr, proto = "ip6:ipv6-icmp", "::", 58
		typ, replyTyp = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	c, err := icmp.ListenPacket(network, laddr)
	if err != nil {
		return err
	}
	defer c.Close()
	id := os.Getpid() & 0xffff
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	for seq := 1; time.Now().Before(deadline); seq++ {
		msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("wgkit")}}
		b, err := msg.Marshal(nil)
		if err != nil {
			return err
		}
		if _, err := c.WriteTo(b, &net.IPAddr{IP: addr.AsSlice()}); err != nil {
			return fmt.Errorf("ping %s: %w", addr, err)
		}
		wait := time.Now().Add(200 * time.Millisecond)
		c.SetReadDeadline(wait)
		for time.Now().Before(wait) {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				break
			}
			m, err := icmp.ParseMessage(proto, buf[:n])
			if err != nil || m.Type != replyTyp {
				continue
			}
			if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && from.String() == addr.String() {
				return nil
			}
		}
	}
	return fmt.Errorf("ping %s: no reply in %v", addr, timeout)
}

// tcpEcho runs TCP echo servers, each for one connection at a time.
type tcpEcho struct {
	mu    sync.Mutex
	lns   []net.Listener // guarded by mu
	conns []net.Conn     // guarded by mu
	wg    sync.WaitGroup
}

func (e *tcpEcho) listen(addr string) (any, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return e.serve(ln), nil
}

// serve echoes on ln until close and returns ln's address.
func (e *tcpEcho) serve(ln net.Listener) string {
	e.mu.Lock()
	e.lns = append(e.lns, ln)
	e.mu.Unlock()
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.mu.Lock()
			e.conns = append(e.conns, c)
			e.mu.Unlock()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			io.Copy(c, c)
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// close stops the servers. It closes open connections too: the peer's
// FIN may never arrive once its tunnel is down.
func (e *tcpEcho) close() {
	e.mu.Lock()
	for _, ln := range e.lns {
		ln.Close()
	}
	for _, c := range e.conns {
		c.Close()
	}
	e.lns, e.conns = nil, nil
	e.mu.Unlock()
	e.wg.Wait()
}

// echoRoundTrip sends 1 MiB to an echo server at addr and checks that it
// comes back.
func echoRoundTrip(d dialer, addr string) error {
	return echoRoundTripN(d, addr, 1<<20, 15*time.Second)
}

// echoRoundTripN sends size random bytes to an echo server at addr within
// timeout and checks that the same come back (their SHA-256).
func echoRoundTripN(d dialer, addr string, size int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	want := make([]byte, size)
	rand.Read(want)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		werr <- err
	}()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if sha256.Sum256(got) != sha256.Sum256(want) {
		return errors.New("echo differs from what was sent (SHA-256)")
	}
	return nil
}

// helperProc is the parent's handle on a child.
type helperProc struct {
	t *testing.T
	*nettest.Proc
}

// startHelper starts a child in namespace ns in the given role and waits
// for its first reply (the outcome of opening the tunnel), which it
// returns. The child is stopped and reaped in t.Cleanup.
func startHelper(t *testing.T, ns, role string, cfg *wg.Config, ho *helperOptions, extraEnv ...string) (*helperProc, nettest.Reply) {
	t.Helper()
	cfgText, err := cfg.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	if ho == nil {
		ho = &helperOptions{}
	}
	hoJSON, err := json.Marshal(ho)
	if err != nil {
		t.Fatal(err)
	}
	env := append([]string{helperEnv + "=" + role, configEnv + "=" + string(cfgText), optionsEnv + "=" + string(hoJSON)}, extraEnv...)
	h := &helperProc{t: t, Proc: nettest.Start(t, ns, "TestHelperProcess", replyPrefix,
		&nettest.Options{Env: env, LogStderr: os.Getenv("WGKIT_TEST_DEBUG") != ""})}
	r, err := h.Next(30 * time.Second)
	if err != nil {
		t.Fatalf("helper in %s: %v\nstderr:\n%s", ns, err, h.Stderr())
	}
	return h, r
}

// do sends a command and decodes its reply's data into out. It returns the
// error of an error reply and fails the test when the child does not answer.
func (h *helperProc) do(cmd string, out any) error {
	h.t.Helper()
	if err := h.Send(cmd); err != nil {
		h.t.Fatal(err)
	}
	r, err := h.Next(30 * time.Second)
	if err != nil {
		h.t.Fatalf("command %q: %v\nstderr:\n%s", cmd, err, h.Stderr())
	}
	if err := r.ErrorOf(); err != nil {
		return err
	}
	if out != nil {
		if err := json.Unmarshal(r.Data, out); err != nil {
			h.t.Fatalf("command %q: decode %s: %v", cmd, r.Data, err)
		}
	}
	return nil
}

// must is do that fails the test on an error reply.
func (h *helperProc) must(cmd string, out any) {
	h.t.Helper()
	if err := h.do(cmd, out); err != nil {
		h.t.Fatalf("command %q: %v", cmd, err)
	}
}

// close asks the child to close its tunnel and checks the outcome: Close
// succeeded, a second Close wraps net.ErrClosed, and no goroutine leaked.
func (h *helperProc) close() {
	h.t.Helper()
	var res closeResult
	h.must("close", &res)
	if res.CloseErr != "" {
		h.t.Errorf("Close: %s", res.CloseErr)
	}
	if !res.SecondIsClosed {
		h.t.Errorf("second Close = %q, want an error wrapping net.ErrClosed", res.SecondCloseErr)
	}
	if res.Leaks != "" {
		h.t.Errorf("goroutines leaked in the child after Close:\n%s", res.Leaks)
	}
	select {
	case <-h.Done():
	case <-time.After(10 * time.Second):
		h.t.Errorf("helper did not exit after close")
	}
}

// extraRoles are the child roles besides "open".
func extraRoles() map[string]helperRole {
	return map[string]helperRole{"netstack": netstackRole, "holdport": holdPortRole}
}

// holdPortRole holds the UDP port cfg.Interface.ListenPort on all IPv4 and
// IPv6 addresses, to make an engine's bind fail.
func holdPortRole(_ context.Context, cfg *wg.Config, _ *slog.Logger) (func(cmd, arg string) (any, error), func() error, error) {
	port := fmt.Sprint(cfg.Interface.ListenPort)
	c4, err := net.ListenPacket("udp4", ":"+port)
	if err != nil {
		return nil, nil, err
	}
	c6, err := net.ListenPacket("udp6", ":"+port)
	if err != nil {
		c4.Close()
		return nil, nil, err
	}
	handle := func(cmd, _ string) (any, error) { return nil, fmt.Errorf("holdport: unknown command %q", cmd) }
	closer := func() error { return errors.Join(c4.Close(), c6.Close()) }
	return handle, closer, nil
}

// config returns the child's Device().Config().
func (h *helperProc) config() *wg.Config {
	h.t.Helper()
	var text string
	h.must("config", &text)
	cfg, err := wg.ParseConfig(strings.NewReader(text))
	if err != nil {
		h.t.Fatalf("parse config from helper: %v\n%s", err, text)
	}
	return cfg
}
