package wgtest

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wgkit/wgkit/netstack"
)

// TestHubRelay has spokes of a hub-and-spoke network reach each other
// through a relaying hub, TCP and ping over IPv4 and IPv6, and checks
// that nothing passes between spokes when the hub does not relay.
func TestHubRelay(t *testing.T) {
	for _, relay := range []bool{true, false} {
		name := "relay"
		if !relay {
			name = "no-relay"
		}
		t.Run(name, func(t *testing.T) {
			nw := NewNetwork(t, 3, &NetworkOptions{Topology: HubAndSpoke, Seed: 1, Relay: relay})
			hub, a, b := nw.Peer(0), nw.Peer(1), nw.Peer(2)
			ln, err := b.Net().Listen("tcp", ":7")
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
					go func() {
						defer c.Close()
						io.Copy(c, c)
					}()
				}
			}()
			for _, dst := range []netip.Addr{b.Addr(), b.Addr6()} {
				if !relay {
					pingFails(t, a.Net(), dst, "a spoke reached another through a hub that does not relay")
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					c, err := a.Net().DialContext(ctx, "tcp", netip.AddrPortFrom(dst, 7).String())
					cancel()
					if err == nil {
						c.Close()
						t.Fatalf("TCP %v through a hub that does not relay: connected", dst)
					}
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if _, err := a.Net().Ping(ctx, dst); err != nil {
					t.Errorf("ping %v through the hub: %v", dst, err)
				}
				c, err := a.Net().DialContext(ctx, "tcp", netip.AddrPortFrom(dst, 7).String())
				if err != nil {
					cancel()
					t.Fatalf("TCP %v through the hub: %v", dst, err)
				}
				got, err := roundTrip(c, "hello through the hub")
				c.Close()
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff("hello through the hub", got); diff != "" {
					t.Errorf("echo (-want +got):\n%s", diff)
				}
			}
			s := hub.Net().ForwardStats()
			if relay && s.Relayed == 0 {
				t.Errorf("hub stats %+v: nothing relayed", s)
			}
			if !relay && s != (netstack.ForwardStats{}) {
				t.Errorf("hub stats %+v without router mode, want zeros", s)
			}
		})
	}
}

func roundTrip(c net.Conn, msg string) (string, error) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(c, buf)
	return string(buf), err
}
