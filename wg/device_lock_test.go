package wg

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// stallingResolver returns a resolver whose DNS queries block until
// release is closed or their context ends, and a channel that receives a
// value each time a query starts.
func stallingResolver(release <-chan struct{}) (*net.Resolver, <-chan struct{}) {
	started := make(chan struct{}, 16)
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		select {
		case started <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, &net.OpError{Op: "dial", Err: net.ErrClosed}
	}}, started
}

// TestResolveDoesNotBlockDevice checks that a slow endpoint name lookup in
// SetPeer or Reconfigure does not hold the device's lock: status calls,
// Close and the dial path's route check go on meanwhile.
func TestResolveDoesNotBlockDevice(t *testing.T) {
	checkLeaks(t)
	tests := []struct {
		name   string
		change func(d *Device, p Peer) error
	}{
		{"SetPeer", func(d *Device, p Peer) error { return d.SetPeer(p) }},
		{"Reconfigure", func(d *Device, p Peer) error {
			cfg := d.Config()
			cfg.Peers = append(cfg.Peers, p)
			return d.Reconfigure(cfg)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			res, started := stallingResolver(release)
			tn := tuntest.NewChannelTUN()
			d, err := NewDevice(tn.TUN(), &Config{Interface: Interface{PrivateKey: mustKey(t)}}, &DeviceOptions{Resolver: res})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			changed := make(chan error, 1)
			go func() {
				changed <- tt.change(d, Peer{
					PublicKey:  mustKey(t).PublicKey(),
					Endpoint:   "stall.invalid:51820",
					AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.5.0.0/16")},
				})
			}()
			select {
			case <-started:
			case <-time.After(10 * time.Second):
				close(release)
				t.Fatal("the resolver was never asked")
			}
			status := make(chan struct{})
			go func() {
				d.Peers()
				d.Config()
				d.ListenPort()
				close(status)
			}()
			select {
			case <-status:
			case <-time.After(5 * time.Second):
				t.Error("Peers, Config and ListenPort blocked while an endpoint name was being resolved")
			}
			close(release)
			<-status
			if err := <-changed; err == nil {
				t.Error("change with an unresolvable endpoint succeeded")
			}
		})
	}
}

// flakyListener fails its first failures Accept calls, as a listener does
// when the process is out of file descriptors.
type flakyListener struct {
	net.Listener
	failures atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.failures.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestUAPIAcceptErrorRetried checks that a failed Accept does not end
// wg(8) support for the life of the device.
func TestUAPIAcceptErrorRetried(t *testing.T) {
	checkLeaks(t)
	dir := t.TempDir()
	l, err := ListenUAPI(dir, "wgflaky")
	if err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: l}
	fl.failures.Store(3)
	key := mustKey(t)
	d, err := NewDevice(tuntest.NewChannelTUN().TUN(), &Config{Interface: Interface{PrivateKey: key}}, &DeviceOptions{UAPI: fl})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c, err := net.Dial("unix", filepath.Join(dir, "wgflaky.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("get=1\n\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if want := "private_key=" + hexKey(key) + "\n"; line != want {
		t.Fatalf("wg get after failed Accepts: first line %q (%v), want %q", line, err, want)
	}
}

// TestNewDeviceNilTUNReleases checks that NewDevice releases the Bind and
// the UAPI listener it was given when it fails for want of a tun.Device.
func TestNewDeviceNilTUNReleases(t *testing.T) {
	checkLeaks(t)
	dir := t.TempDir()
	l, err := ListenUAPI(dir, "wgnil")
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewDevice(nil, &Config{Interface: Interface{PrivateKey: mustKey(t)}}, &DeviceOptions{UAPI: l})
	if err == nil || !strings.HasPrefix(err.Error(), "wg: new device: ") {
		t.Fatalf("NewDevice(nil tun) = %v, want a wg: new device error", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "wgnil.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("UAPI socket left behind after NewDevice failed: %v", err)
	}
}

// TestListenUAPIKeepsOtherFiles checks that ListenUAPI replaces only a
// stale socket, never another kind of file at the socket's path.
func TestListenUAPIKeepsOtherFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "wgfile.sock")
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := ListenUAPI(dir, "wgfile")
	if err == nil {
		l.Close()
	}
	if !errors.Is(err, os.ErrExist) {
		t.Errorf("ListenUAPI over a regular file = %v, want os.ErrExist", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "keep me" {
		t.Errorf("the regular file was replaced: %q, %v", b, err)
	}
}

// TestCloseWithStalledUAPISet checks that Close returns while a wg(8)
// client has started a "set" and stalls, holding the engine's lock, and
// another call waits for that lock.
func TestCloseWithStalledUAPISet(t *testing.T) {
	checkLeaks(t)
	tests := []struct {
		name string
		call func(d *Device)
	}{
		{"PeerFor", func(d *Device) { d.PeerFor(netip.MustParseAddr("10.0.0.1")) }},
		{"Peers", func(d *Device) { d.Peers() }},
		{"SetPeer", func(d *Device) { d.SetPeer(Peer{PublicKey: mustKey(t).PublicKey()}) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l, err := ListenUAPI(dir, "wgstall")
			if err != nil {
				t.Fatal(err)
			}
			d, err := NewDevice(tuntest.NewChannelTUN().TUN(), &Config{Interface: Interface{PrivateKey: mustKey(t)}}, &DeviceOptions{UAPI: l})
			if err != nil {
				t.Fatal(err)
			}
			c, err := net.Dial("unix", filepath.Join(dir, "wgstall.sock"))
			if err != nil {
				d.Close()
				t.Fatal(err)
			}
			defer c.Close()
			// A set without its closing blank line: the engine waits for more.
			if _, err := c.Write([]byte("set=1\nlisten_port=0\n")); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
			called := make(chan struct{})
			go func() {
				tt.call(d)
				close(called)
			}()
			time.Sleep(100 * time.Millisecond)
			closed := make(chan error, 1)
			go func() { closed <- d.Close() }()
			select {
			case err := <-closed:
				if err != nil {
					t.Errorf("Close: %v", err)
				}
			case <-time.After(10 * time.Second):
				c.Close() // let Close finish, so that nothing leaks
				<-closed
				t.Errorf("Close blocked by a stalled wg(8) set and a %s call waiting for it", tt.name)
			}
			<-called
		})
	}
}
