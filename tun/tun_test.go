package tun

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/wgkit/wgkit/wg"
)

// closeBind is a conn.Bind that only counts Close calls.
type closeBind struct {
	conn.Bind
	closed atomic.Int32
}

func (b *closeBind) Close() error { b.closed.Add(1); return nil }

func TestOpenArguments(t *testing.T) {
	t.Run("nil config", func(t *testing.T) {
		if _, err := Open(context.Background(), nil, nil); err == nil || !strings.HasPrefix(err.Error(), "tun: ") {
			t.Errorf("Open(nil config) = %v, want a tun: error", err)
		}
	})
	t.Run("cancelled context closes the bind", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		b := &closeBind{}
		_, err := Open(ctx, &wg.Config{}, &Options{Bind: b})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Open with a cancelled context = %v, want context.Canceled", err)
		}
		if n := b.closed.Load(); n != 1 {
			t.Errorf("Bind closed %d times, want 1", n)
		}
	})
	t.Run("invalid config closes the bind", func(t *testing.T) {
		b := &closeBind{}
		_, err := Open(context.Background(), &wg.Config{}, &Options{Bind: b, Name: "wgkinvalid"})
		if err == nil || !strings.HasPrefix(err.Error(), "tun: open wgkinvalid: ") {
			t.Errorf("Open with no private key = %v, want a tun: open error", err)
		}
		if n := b.closed.Load(); n != 1 {
			t.Errorf("Bind closed %d times, want 1", n)
		}
	})
	t.Run("one prefix", func(t *testing.T) {
		_, err := Open(context.Background(), &wg.Config{}, &Options{Name: "wgkinvalid"})
		if !errors.Is(err, wg.ErrInvalidConfig) {
			t.Fatalf("Open with no private key = %v, want wg.ErrInvalidConfig", err)
		}
		if msg := err.Error(); !strings.HasPrefix(msg, "tun: open wgkinvalid: invalid config") {
			t.Errorf("Open with no private key = %q, want one prefix: \"tun: open wgkinvalid: invalid config...\"", msg)
		}
	})
}
