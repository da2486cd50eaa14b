//go:build linux

package tun

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// hostHasWireGuard reports whether the running kernel has the wireguard
// module loaded. The hosts these tests run on have none; the kernel
// engine is tested in a VM (TestKernelEngineVM in vm_linux_test.go).
func hostHasWireGuard() bool {
	_, err := os.Stat("/sys/module/wireguard")
	return err == nil
}

// TestEngineAutoWithoutModule checks that EngineAuto falls back to
// wireguard-go when the kernel cannot make a `wireguard` link, and that
// Engine says so.
func TestEngineAutoWithoutModule(t *testing.T) {
	requireRoot(t)
	if hostHasWireGuard() {
		t.Skip("the host kernel has WireGuard: EngineAuto picks it (covered by TestKernelEngineVM in vm_linux_test.go)")
	}
	cfg, _ := pairConfigs(t)
	for _, e := range []Engine{EngineAuto, EngineUserspace} {
		t.Run(e.String(), func(t *testing.T) {
			h := mustOpen(t, newNetns(t), cfg, &helperOptions{Name: ifName(t), Engine: e})
			defer h.close()
			var got string
			h.must("engine", &got)
			if diff := cmp.Diff("userspace", got); diff != "" {
				t.Errorf("Engine() (-want +got):\n%s", diff)
			}
		})
	}
}

// TestEngineKernelWithoutModule checks that EngineKernel fails with an
// error that says what is missing, and leaves the namespace as it was.
func TestEngineKernelWithoutModule(t *testing.T) {
	requireRoot(t)
	if hostHasWireGuard() {
		t.Skip("the host kernel has WireGuard: EngineKernel works here (covered by TestKernelEngineVM in vm_linux_test.go)")
	}
	ns := newNetns(t)
	before := snapshot(t, ns)
	cfg, _ := pairConfigs(t)
	name := ifName(t)
	_, r := startHelper(t, ns, "open", cfg, &helperOptions{Name: name, Engine: EngineKernel})
	if r.OK {
		t.Fatal("Open with EngineKernel succeeded on a kernel without WireGuard")
	}
	t.Logf("Open: %s", r.Err)
	for _, want := range []string{"tun: open " + name + ": kernel engine: ", "is the wireguard module available?"} {
		if !strings.Contains(r.Err, want) {
			t.Errorf("Open error %q lacks %q", r.Err, want)
		}
	}
	if diff := cmp.Diff(before, snapshot(t, ns)); diff != "" {
		t.Errorf("namespace changed by the failed Open (-before +after):\n%s", diff)
	}
}

// TestEngineOptionErrors checks the engine choices Open refuses before
// it changes anything on the host (so no namespace is needed).
func TestEngineOptionErrors(t *testing.T) {
	tests := []struct {
		name string
		opts *Options
		want string
	}{
		{"unknown engine", &Options{Name: "wgkbad0", Engine: Engine(7)}, "tun: open wgkbad0: unknown engine 7"},
		{"kernel with a Bind", &Options{Name: "wgkbad0", Engine: EngineKernel, Bind: &closeBind{}}, "tun: open wgkbad0: kernel engine: Options.Bind needs the userspace engine"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _ := pairConfigs(t)
			_, err := Open(context.Background(), cfg, tt.opts)
			if err == nil {
				t.Fatal("Open succeeded")
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if b, ok := tt.opts.Bind.(*closeBind); ok && b.closed.Load() != 1 {
				t.Errorf("Bind closed %d times, want 1", b.closed.Load())
			}
		})
	}
	for e, want := range map[Engine]string{EngineAuto: "auto", EngineKernel: "kernel", EngineUserspace: "userspace", 9: "Engine(9)"} {
		if got := e.String(); got != want {
			t.Errorf("Engine(%d).String() = %q, want %q", int(e), got, want)
		}
	}
}
