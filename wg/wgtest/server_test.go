package wgtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/wgkit/wgkit/wg"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoServer accepts connections on ln and echoes one line per connection
// until ln is closed; a cleanup of t closes ln and waits for the accept
// loop.
func echoServer(t testing.TB, ln net.Listener) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err == nil {
					io.WriteString(c, line)
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
}

// echo dials addr with dial, sends a line and checks it comes back.
func echo(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error), addr string) error {
	c, err := dial(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	want := fmt.Sprintf("hello %s\n", addr)
	if _, err := io.WriteString(c, want); err != nil {
		return err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("echo %q, want %q", got, want)
	}
	return nil
}

func TestServerEcho(t *testing.T) {
	srv := NewServer(t, nil)
	ln, err := srv.Net().Listen("tcp", ":7")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, ln)
	client := srv.Client()
	for _, addr := range []netip.Addr{srv.Addr(), srv.Addr6()} {
		t.Run(addr.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := echo(ctx, client.DialContext, netip.AddrPortFrom(addr, 7).String()); err != nil {
				t.Fatal(err)
			}
		})
	}
	peers := srv.Device().Peers()
	if len(peers) != 1 || peers[0].LastHandshake.IsZero() || !peers[0].Endpoint.Addr().IsLoopback() {
		t.Errorf("server peers after traffic = %+v, want one client with a handshake from loopback", peers)
	}
}

func TestServerClientConfig(t *testing.T) {
	srv := NewServer(t, &ServerOptions{
		Prefix4:             netip.MustParsePrefix("10.7.0.0/30"),
		Prefix6:             netip.MustParsePrefix("fd00:7::/120"),
		MTU:                 1280,
		PersistentKeepalive: 25 * time.Second,
	})
	cfg := srv.ClientConfig()
	want := &wg.Config{
		Interface: wg.Interface{
			PrivateKey: cfg.Interface.PrivateKey,
			Addresses:  []netip.Prefix{netip.MustParsePrefix("10.7.0.2/30"), netip.MustParsePrefix("fd00:7::2/120")},
			MTU:        1280,
		},
		Peers: []wg.Peer{{
			PublicKey:           srv.PublicKey(),
			Endpoint:            srv.Endpoint().String(),
			AllowedIPs:          []netip.Prefix{netip.MustParsePrefix("10.7.0.0/30"), netip.MustParsePrefix("fd00:7::/120")},
			PersistentKeepalive: 25 * time.Second,
		}},
	}
	if diff := cmp.Diff(want, cfg, cmpopts.EquateComparable(netip.Prefix{})); diff != "" {
		t.Errorf("ClientConfig (-want +got):\n%s", diff)
	}
	if cfg.Interface.PrivateKey.IsZero() {
		t.Errorf("ClientConfig has no private key")
	}
	if got := srv.Addr().String() + " " + srv.Addr6().String(); got != "10.7.0.1 fd00:7::1" {
		t.Errorf("server addresses = %s, want 10.7.0.1 fd00:7::1", got)
	}
	if p := srv.Device().Peers(); len(p) != 1 || p[0].PublicKey != cfg.Interface.PrivateKey.PublicKey() {
		t.Errorf("server peers = %+v, want the new client", p)
	}
	// 10.7.0.0/30 has room for one client only.
	if _, err := srv.clientConfig(); err == nil {
		t.Errorf("second client config in a /30 succeeded")
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err == nil {
		t.Errorf("second Close succeeded")
	}
}
