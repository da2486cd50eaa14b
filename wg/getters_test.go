package wg

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// uapiSetText sends one wg(8) "set" through the UAPI socket and checks the reply.
func uapiSetText(t *testing.T, sock, body string) {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("set=1\n" + body + "\n")); err != nil {
		t.Fatal(err)
	}
	if line, _ := bufio.NewReader(c).ReadString('\n'); line != "errno=0\n" {
		t.Fatalf("set %q: reply %q, want errno=0", body, line)
	}
}

// TestGettersFollowUAPI: what wg(8) changes behind the Device's back,
// PublicKey and Config report.
func TestGettersFollowUAPI(t *testing.T) {
	checkLeaks(t)
	dir := filepath.Join(t.TempDir(), "run")
	l, err := ListenUAPI(dir, "wgk1")
	if err != nil {
		t.Fatal(err)
	}
	key := mustKey(t)
	// Configured with a port, so that a Config that reports the
	// configured rather than the bound port shows.
	d, err := NewDevice(tuntest.NewChannelTUN().TUN(), &Config{Interface: Interface{PrivateKey: key, ListenPort: freeUDPPort(t)}}, &DeviceOptions{UAPI: l})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	sock := filepath.Join(dir, "wgk1.sock")
	if got := d.PublicKey(); got != key.PublicKey() {
		t.Fatalf("PublicKey() = %v, want %v", got, key.PublicKey())
	}

	key2 := mustKey(t)
	uapiSetText(t, sock, "private_key="+hexKey(key2)+"\n")
	if got := d.PublicKey(); got != key2.PublicKey() {
		t.Errorf("after wg set private-key: PublicKey() = %v, want %v", got, key2.PublicKey())
	}
	if got := d.Config().Interface.PrivateKey; got != key2 {
		t.Error("after wg set private-key: Config() has the old private key")
	}

	port := freeUDPPort(t)
	uapiSetText(t, sock, fmt.Sprintf("listen_port=%d\n", port))
	if got := d.Config().Interface.ListenPort; got != port {
		t.Errorf("after wg set listen-port %d: Config().Interface.ListenPort = %d", port, got)
	}
	if got := d.ListenPort(); got != port {
		t.Errorf("after wg set listen-port %d: ListenPort() = %d", port, got)
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	key := mustKey(t)
	good := filepath.Join(dir, "wg0.conf")
	if err := os.WriteFile(good, []byte("[Interface]\nPrivateKey = "+key.String()+"\nAddress = 10.0.0.2/32\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(good)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Interface.PrivateKey != key || cfg.Interface.Addresses[0] != netip.MustParsePrefix("10.0.0.2/32") {
		t.Errorf("LoadConfig = %+v", cfg.Interface)
	}

	bad := filepath.Join(dir, "bad.conf")
	if err := os.WriteFile(bad, []byte("[Interface]\nPrivateKey = "+key.String()+"\n\nFoo = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadConfig(bad)
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Line != 4 {
		t.Fatalf("LoadConfig(bad) = %v, want a *ConfigError at line 4", err)
	}
	if want := "wg: load config " + bad + " line 4: "; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q does not start with %q", err, want)
	}
	if strings.Count(err.Error(), "wg:") != 1 {
		t.Errorf("error %q has more than one prefix", err)
	}

	missing := filepath.Join(dir, "none.conf")
	if _, err := LoadConfig(missing); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("LoadConfig(missing) = %v, want os.ErrNotExist naming the file", err)
	}
	if _, err := LoadConfig(dir); err == nil || !strings.Contains(err.Error(), dir) || strings.Count(err.Error(), "wg:") != 1 {
		t.Errorf("LoadConfig(a directory) = %v, want an error naming it, one prefix", err)
	}
}

// freeUDPPort returns a UDP port that was free a moment ago.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// TestContextBoundsResolution: SetPeerContext and ReconfigureContext give
// up on a name server that does not answer when their context ends.
func TestContextBoundsResolution(t *testing.T) {
	checkLeaks(t)
	release := make(chan struct{})
	defer close(release)
	r, _ := stallingResolver(release)
	key := mustKey(t)
	d, err := NewDevice(tuntest.NewChannelTUN().TUN(), &Config{Interface: Interface{PrivateKey: key}}, &DeviceOptions{Resolver: r, Bind: newSwitch(t).NewBind(0, netip.MustParseAddrPort("198.18.0.1:51820"))})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	p := Peer{PublicKey: mustKey(t).PublicKey(), Endpoint: "stalls.wgkit.test.:51820", AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24")}}
	for _, tc := range []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"SetPeerContext", func(ctx context.Context) error { return d.SetPeerContext(ctx, p) }},
		{"ReconfigureContext", func(ctx context.Context) error {
			return d.ReconfigureContext(ctx, &Config{Interface: Interface{PrivateKey: key}, Peers: []Peer{p}})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			start := time.Now()
			err := tc.call(ctx)
			if err == nil || !strings.Contains(err.Error(), "stalls.wgkit.test") {
				t.Fatalf("%s = %v, want an error naming the endpoint", tc.name, err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("%s returned after %v, want near its 200ms deadline", tc.name, d)
			}
		})
	}
	if got := d.Peers(); len(got) != 0 {
		t.Errorf("Peers() = %v, want none: nothing applied", got)
	}
}
