//go:build linux

package tun

import (
	"context"
	"testing"
)

// TestOpenUAPIDirWithDisable checks that a UAPIDir with DisableUAPI is
// refused before anything on the host changes (so no root is needed).
func TestOpenUAPIDirWithDisable(t *testing.T) {
	cfg, _ := pairConfigs(t)
	name := ifName(t)
	b := &closeBind{}
	_, err := Open(context.Background(), cfg, &Options{Name: name, Bind: b, DisableUAPI: true, UAPIDir: t.TempDir()})
	if want := "tun: open " + name + ": UAPIDir set with DisableUAPI"; err == nil || err.Error() != want {
		t.Errorf("Open = %v, want %q", err, want)
	}
	if n := b.closed.Load(); n != 1 {
		t.Errorf("Bind closed %d times, want 1", n)
	}
}
