package netstack

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestDialDoneContext checks that a dial with a context that has already
// ended fails, as net.Dialer's does, even where nothing would wait: UDP,
// and TCP to the tunnel's own address.
func TestDialDoneContext(t *testing.T) {
	a, _ := openPair(t, nil)
	l, err := a.Listen("tcp", netip.AddrPortFrom(addrA4, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	tests := []struct {
		name, network, addr string
		ctx                 context.Context
		want                error
	}{
		{"udp cancelled", "udp", netip.AddrPortFrom(addrB4, 53).String(), cancelled, context.Canceled},
		{"udp expired", "udp6", netip.AddrPortFrom(addrB6, 53).String(), expired, context.DeadlineExceeded},
		{"tcp to self cancelled", "tcp", l.Addr().String(), cancelled, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := a.DialContext(tt.ctx, tt.network, tt.addr)
			if err == nil {
				c.Close()
				t.Fatalf("DialContext with a done context connected")
			}
			var oe *net.OpError
			if !errors.Is(err, tt.want) || !errors.As(err, &oe) || oe.Op != "dial" {
				t.Errorf("DialContext = %v, want a dial *net.OpError wrapping %v", err, tt.want)
			}
		})
	}
}
