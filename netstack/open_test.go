package netstack

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wgkit/wgkit/internal/memnet"
	"github.com/wgkit/wgkit/wg"
	"go.uber.org/goleak"
	"golang.zx2c4.com/wireguard/conn"
)

// closeCountingBind records whether Open closed the Bind it was given.
type closeCountingBind struct {
	conn.Bind
	closes atomic.Int32
}

func (b *closeCountingBind) Close() error {
	b.closes.Add(1)
	return b.Bind.Close()
}

func TestOpenErrors(t *testing.T) {
	valid := func() *wg.Config {
		cfg, _ := pairConfigs(t, "", "")
		return cfg
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		cfg  func() *wg.Config
	}{
		{"nil config", context.Background(), func() *wg.Config { return nil }},
		{"cancelled context", cancelled, valid},
		{"no private key", context.Background(), func() *wg.Config {
			c := valid()
			c.Interface.PrivateKey = wg.Key{}
			return c
		}},
		{"MTU too small for IPv6", context.Background(), func() *wg.Config {
			c := valid()
			c.Interface.MTU = 1000
			return c
		}},
		{"duplicate address", context.Background(), func() *wg.Config {
			c := valid()
			c.Interface.Addresses = append(c.Interface.Addresses, c.Interface.Addresses[0])
			return c
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sw := memnet.NewSwitch(nil)
			defer sw.Close()
			ep, err := sw.NewAddr()
			if err != nil {
				t.Fatal(err)
			}
			bind := &closeCountingBind{Bind: sw.NewBind(1, ep)}
			n, err := Open(tt.ctx, tt.cfg(), &Options{Bind: bind})
			if err == nil {
				n.Close()
				t.Fatal("Open succeeded, want an error")
			}
			if !strings.HasPrefix(err.Error(), "netstack: ") {
				t.Errorf("error %q does not start with \"netstack: \"", err)
			}
			if bind.closes.Load() == 0 {
				t.Error("the Bind was not closed after the failed Open")
			}
		})
	}
}

// TestOpenDefaults checks the defaults Open fills in.
func TestOpenDefaults(t *testing.T) {
	a, _ := openPair(t, nil)
	if a.MTU() != wg.DefaultMTU {
		t.Errorf("MTU() = %d, want %d", a.MTU(), wg.DefaultMTU)
	}
	if m, _ := newTUNDevice(a.ep, a.MTU(), defaultName("x", wg.Key{})).MTU(); m != wg.DefaultMTU {
		t.Errorf("tun MTU = %d, want %d", m, wg.DefaultMTU)
	}
	pub := a.Device().PublicKey()
	wantName := "wk" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(pub[:2])
	if a.Name() != wantName {
		t.Errorf("Name() = %q, want %q", a.Name(), wantName)
	}
	want := []netip.Addr{addrA4, addrA6}
	got := a.Addrs()
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("Addrs() = %v, want %v", got, want)
	}
}

// TestOpenReorderHold checks how Options.ReorderHold reaches the link:
// the default, off, a value taken as is, the cap, and no hold in router
// mode (link_reorder_test.go tests the hold itself).
func TestOpenReorderHold(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want time.Duration
	}{
		{"default", Options{}, reorderHold},
		{"off", Options{ReorderHold: -1}, 0},
		{"set", Options{ReorderHold: 4 * time.Millisecond}, 4 * time.Millisecond},
		{"capped", Options{ReorderHold: time.Hour}, maxReorderHold},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, _ := openPairOpts(t, nil, &tt.opts, nil)
			a.ep.gmu.Lock()
			got := a.ep.reorder.hold
			a.ep.gmu.Unlock()
			if got != tt.want {
				t.Errorf("hold = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestIPv4Only checks a tunnel without IPv6 addresses.
func TestIPv4Only(t *testing.T) {
	a, b := openPair(t, func(a, b *wg.Config) {
		a.Interface.Addresses = a.Interface.Addresses[:1]
		b.Interface.Addresses = b.Interface.Addresses[:1]
		a.Interface.MTU = 1200
	})
	if _, err := a.Ping(testContext(t, 10*time.Second), addrB4); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Ping(testContext(t, 10*time.Second), addrB6); err == nil {
		t.Error("IPv6 ping from an IPv4-only tunnel succeeded")
	}
	if _, err := a.Dial("tcp6", netip.AddrPortFrom(addrB6, 80).String()); err == nil {
		t.Error("IPv6 dial from an IPv4-only tunnel succeeded")
	}
	l, err := b.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := l.Addr().(*net.TCPAddr).IP.To4(); got == nil {
		t.Errorf("listener on an IPv4-only tunnel has address %v, want IPv4", l.Addr())
	}
}

func TestUAPI(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the UAPI is a named pipe on Windows; this test dials a Unix socket")
	}
	dir := t.TempDir()
	sw := memnet.NewSwitch(nil)
	defer sw.Close()
	ep, err := sw.NewAddr()
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := pairConfigs(t, "", "")
	n, err := Open(testContext(t, 10*time.Second), cfg, &Options{Bind: sw.NewBind(1, ep), EnableUAPI: true, UAPIDir: dir, Name: "wgtest0"})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	path := filepath.Join(dir, "wgtest0.sock")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("socket permissions %v, want 0600", perm)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "get=1\n\n"); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	sc := bufio.NewScanner(c)
	for sc.Scan() && sc.Text() != "" {
		k, v, _ := strings.Cut(sc.Text(), "=")
		if _, dup := got[k]; !dup {
			got[k] = v
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	pub := cfg.Peers[0].PublicKey
	want := map[string]string{
		"private_key": hex.EncodeToString(cfg.Interface.PrivateKey[:]),
		"public_key":  hex.EncodeToString(pub[:]),
		"errno":       "0",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("UAPI %s = %q, want %q", k, got[k], v)
		}
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still there after Close: %v", err)
	}
}

// TestOpenCloseCycles opens and closes pairs of Nets with traffic on them
// and checks that nothing is left running.
func TestOpenCloseCycles(t *testing.T) {
	defer goleak.VerifyNone(t, append(goleakOptions(), goleak.IgnoreCurrent())...)
	const cycles = 50
	deadline := time.Now().Add(30 * time.Second)
	for i := range cycles {
		if time.Now().After(deadline) {
			t.Fatalf("only %d cycles in 30s", i)
		}
		func() {
			sw := memnet.NewSwitch(nil)
			defer sw.Close()
			epA, _ := sw.NewAddr()
			epB, _ := sw.NewAddr()
			cfgA, cfgB := pairConfigs(t, epA.String(), epB.String())
			ctx := testContext(t, 10*time.Second)
			a, err := Open(ctx, cfgA, &Options{Bind: sw.NewBind(1, epA)})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b, err := Open(ctx, cfgB, &Options{Bind: sw.NewBind(2, epB)})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			l, err := b.Listen("tcp", ":0")
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				c, err := l.Accept()
				if err == nil {
					io.Copy(c, c)
					c.Close()
				}
			}()
			c, err := a.DialContext(ctx, "tcp", netip.AddrPortFrom(addrB4, uint16(l.Addr().(*net.TCPAddr).Port)).String())
			if err != nil {
				t.Fatal(err)
			}
			msg := []byte("cycle traffic")
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, make([]byte, len(msg))); err != nil {
				t.Fatal(err)
			}
			// Leave the conn and listener open on odd cycles: Close must
			// clean them up.
			if i%2 == 0 {
				c.Close()
				l.Close()
			}
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
		}()
	}
}

func TestOpenLongUAPIName(t *testing.T) {
	cfg, _ := pairConfigs(t, "", "")
	sw := memnet.NewSwitch(nil)
	defer sw.Close()
	ep, err := sw.NewAddr()
	if err != nil {
		t.Fatal(err)
	}
	n, err := Open(context.Background(), cfg, &Options{Bind: sw.NewBind(1, ep), EnableUAPI: true, UAPIDir: t.TempDir(), Name: "sixteen-bytes-xx"})
	if err == nil {
		n.Close()
		t.Fatal("Open with a 16-byte UAPI name succeeded")
	}
}
