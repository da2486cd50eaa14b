package wg

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// wgInDir returns a function that runs wg(8) with the given arguments as
// if dir were /var/run/wireguard, the only directory wg(8) looks in: in
// a private mount namespace where a fresh tmpfs covers /var/run and dir is
// bind-mounted on /var/run/wireguard, so the host's directory is neither
// used nor changed. It skips t when that is not possible.
func wgInDir(t *testing.T, dir string) func(args ...string) (string, error) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: wg(8) only looks in /var/run/wireguard, which the test covers in a private mount namespace")
	}
	wgPath, err := exec.LookPath("wg")
	if err != nil {
		t.Skip("wg(8) (wireguard-tools) is not installed")
	}
	const script = `mount -t tmpfs wgkit-test /var/run && mkdir /var/run/wireguard && mount --bind "$0" /var/run/wireguard && exec "$WG" "$@"`
	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c", script, dir}, args...)...)
		cmd.Env = append(os.Environ(), "WG="+wgPath)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", "mount -t tmpfs wgkit-test /var/run").CombinedOutput(); err != nil {
		t.Skipf("cannot make a private mount namespace with a tmpfs on /var/run: %v: %s", err, out)
	}
	return run
}

// TestWGToolsOverUAPI runs the real wg(8) against a device's socket: wg
// show sees the device, wg set changes it, and PeerFor follows.
func TestWGToolsOverUAPI(t *testing.T) {
	checkLeaks(t)
	d, path, logs := uapiTestDevice(t, 2, nil)
	dir := strings.TrimSuffix(path, "/wgserve.sock")
	wg := wgInDir(t, dir)

	out, err := wg("show", "wgserve", "dump")
	if err != nil {
		t.Fatalf("wg show: %v: %s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("wg show dump printed %d lines, want 3 (interface and 2 peers):\n%s", len(lines), out)
	}
	if f := strings.Fields(lines[0]); len(f) < 2 || f[1] != d.PublicKey().String() {
		t.Errorf("wg show dump interface line %q, want public key %v", lines[0], d.PublicKey())
	}
	if _, ok := d.PeerFor(netip.MustParseAddr("10.100.1.1")); !ok {
		t.Error("PeerFor(10.100.1.1): no peer")
	}
	built := d.routeRebuilds.Load()
	for range 3 {
		if out, err := wg("show", "wgserve"); err != nil {
			t.Fatalf("wg show: %v: %s", err, out)
		}
	}
	if _, ok := d.PeerFor(netip.MustParseAddr("10.100.1.1")); !ok {
		t.Error("PeerFor(10.100.1.1): no peer")
	}
	if got := d.routeRebuilds.Load(); got != built {
		t.Errorf("3 wg show rebuilt PeerFor's table %d times, want 0", got-built)
	}

	added := mustKey(t).PublicKey()
	if out, err := wg("set", "wgserve", "peer", added.String(), "allowed-ips", "10.88.0.0/16", "persistent-keepalive", "25"); err != nil {
		t.Fatalf("wg set: %v: %s", err, out)
	}
	if k, ok := d.PeerFor(netip.MustParseAddr("10.88.1.2")); !ok || k != added {
		t.Errorf("PeerFor(10.88.1.2) after wg set = %v, %v; want %v", k, ok, added)
	}
	var found bool
	for _, p := range d.Peers() {
		if p.PublicKey == added {
			found = true
			if p.PersistentKeepalive != 25*time.Second {
				t.Errorf("keepalive after wg set = %v, want 25s", p.PersistentKeepalive)
			}
		}
	}
	if !found {
		t.Errorf("Peers after wg set has no %v", added)
	}
	if l := logs.String(); strings.Contains(l, "wg: uapi") {
		t.Errorf("wg(8) used as intended was treated as misbehaving:\n%s", l)
	}
}
