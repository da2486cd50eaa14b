//go:build !windows

package netstack

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/wgkit/wgkit/internal/memnet"
)

// TestDialWithStalledUAPIClient checks that a wg(8) client that starts a
// "set" and stalls does not hold up DialContext beyond its context: the
// dial's route check must not wait for the engine's configuration lock.
func TestDialWithStalledUAPIClient(t *testing.T) {
	dir := t.TempDir()
	sw := memnet.NewSwitch(nil)
	defer sw.Close()
	ep, err := sw.NewAddr()
	if err != nil {
		t.Fatal(err)
	}
	// The peer has no endpoint: a dial to it can only time out.
	cfg, _ := pairConfigs(t, "", "")
	n, err := Open(testContext(t, 10*time.Second), cfg, &Options{Bind: sw.NewBind(1, ep), EnableUAPI: true, UAPIDir: dir, Name: "wgstall0"})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	path := filepath.Join(dir, "wgstall0.sock")

	// A wg show first: it must not leave the route table to be rebuilt
	// (it did, and the rebuild then waited for the stalled set).
	show, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer show.Close()
	show.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(show, "get=1\n\n"); err != nil {
		t.Fatal(err)
	}
	for sc := bufio.NewScanner(show); sc.Scan() && sc.Text() != "errno=0"; {
	}

	stalled, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	if _, err := io.WriteString(stalled, "set=1\nlisten_port=0\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let the server take the bytes

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := n.DialContext(ctx, "tcp", netip.AddrPortFrom(addrB4, 80).String())
		done <- result{c, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		stalled.Close() // let the dial return, so that nothing leaks
		r = <-done
	}
	elapsed := time.Since(start)
	if r.c != nil {
		r.c.Close()
		t.Fatal("dial to a peer without an endpoint succeeded")
	}
	if !errors.Is(r.err, context.DeadlineExceeded) {
		t.Errorf("dial error %v, want the context's deadline", r.err)
	}
	// 1 s of context; the margin is for a loaded machine.
	if elapsed > 2500*time.Millisecond {
		t.Errorf("DialContext with a 1s context returned after %v while a wg(8) set stalled", elapsed.Round(time.Millisecond))
	}
}
