package wgtest

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wgkit/wgkit/internal/memnet"
)

// fakeTB records what a helper reports and the cleanups it registers,
// so tests can check failures that would fail the real test.
type fakeTB struct {
	testing.TB
	mu       sync.Mutex
	errs     []string
	cleanups []func()
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, fmt.Sprintf(format, args...))
}
func (f *fakeTB) Error(args ...any) { f.Errorf("%s", fmt.Sprint(args...)) }
func (f *fakeTB) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }

func (f *fakeTB) runCleanups() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

func (f *fakeTB) errors() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.errs, "\n")
}

func TestLeakCheckReports(t *testing.T) {
	ftb := &fakeTB{TB: t}
	NewServer(ftb, nil)
	release := make(chan struct{})
	leaked := make(chan struct{})
	go func() {
		defer close(leaked)
		<-release
	}()
	ftb.runCleanups() // closes the server, then checks for leakGrace
	close(release)
	<-leaked
	if got := ftb.errors(); !strings.Contains(got, "goroutines leaked") || !strings.Contains(got, "TestLeakCheckReports") {
		t.Errorf("leak check reported %q, want the goroutine of TestLeakCheckReports", got)
	}
}

func TestSetFaultsInvalid(t *testing.T) {
	ftb := &fakeTB{TB: t}
	nw := NewNetwork(ftb, 1, &NetworkOptions{Faults: Faults{Loss: 0.5}})
	defer ftb.runCleanups()
	for _, f := range []Faults{{Loss: 2}, {Duplicate: -1}, {Jitter: -1}, {MTU: -5}} {
		nw.SetFaults(f)
	}
	if got, want := len(strings.Split(ftb.errors(), "\n")), 4; got != want {
		t.Errorf("%d errors reported, want %d: %s", got, want, ftb.errors())
	}
	if got := nw.Faults(); got != (Faults{Loss: 0.5, ReorderDelay: time.Millisecond}) {
		t.Errorf("faults after invalid changes = %+v, want the initial ones", got)
	}
}

func TestNewNetworkErrors(t *testing.T) {
	tests := []struct {
		name string
		n    int
		opts *NetworkOptions
	}{
		{"no peers", 0, nil},
		{"bad topology", 2, &NetworkOptions{Topology: 7}},
		{"prefix too small", 3, &NetworkOptions{Prefix4: netip.MustParsePrefix("10.1.0.0/30")}},
		{"v6 as v4", 2, &NetworkOptions{Prefix4: netip.MustParsePrefix("fd00::/64")}},
		{"bad faults", 2, &NetworkOptions{Faults: Faults{Reorder: 3}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if nw, err := newNetwork(t, tt.n, tt.opts); err == nil {
				nw.Close()
				t.Fatal("newNetwork succeeded")
			} else if !strings.HasPrefix(err.Error(), "wgtest: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestLoopbackBindRefusesOtherAddresses(t *testing.T) {
	var b loopbackBind
	if _, _, err := b.Open(0); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, s := range []string{"192.0.2.1:51820", "[::1]:51820", "[2001:db8::1]:51820"} {
		ep, err := b.ParseEndpoint(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Send([][]byte{{1}}, ep); err == nil {
			t.Errorf("Send to %s succeeded", s)
		}
	}
	if err := b.Send([][]byte{{1}}, memnet.NewEndpoint(netip.MustParseAddrPort("127.0.0.1:9"))); err != nil {
		t.Errorf("Send to loopback: %v", err)
	}
}
