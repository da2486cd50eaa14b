package wgtest_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/wgkit/wgkit/netstack"
	"github.com/wgkit/wgkit/wg"
	"github.com/wgkit/wgkit/wg/wgtest"
)

// fetch stands for the application code under test: it opens its own
// tunnel from a configuration and fetches a URL through it.
func fetch(ctx context.Context, cfg *wg.Config, url string) (string, error) {
	tnet, err := netstack.Open(ctx, cfg, nil)
	if err != nil {
		return "", err
	}
	defer tnet.Close()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return "", err
	}
	resp, err := tnet.HTTPClient().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestExampleServer is the package documentation's example, run: an
// application test against an in-process WireGuard server.
func TestExampleServer(t *testing.T) {
	srv := wgtest.NewServer(t, nil)
	ln, err := srv.Net().Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	}))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got, err := fetch(ctx, srv.ClientConfig(), "http://"+srv.Addr().String()+"/")
	if err != nil {
		t.Fatal(err)
	}
	if got != "hello" {
		t.Errorf("fetch = %q, want %q", got, "hello")
	}
}

// TestExampleNetwork shows a test of behaviour under packet loss.
func TestExampleNetwork(t *testing.T) {
	nw := wgtest.NewNetwork(t, 2, &wgtest.NetworkOptions{Seed: 1})
	ln, err := nw.Peer(1).Net().Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s", nw.Peer(1).Addr())
	}))

	nw.SetFaults(wgtest.Faults{Loss: 0.02, Reorder: 0.05})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+nw.Peer(1).Addr().String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	client := nw.Peer(0).Net().HTTPClient()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if want := "hello from 10.100.0.2"; string(b) != want {
		t.Errorf("got %q, want %q", b, want)
	}
	client.CloseIdleConnections()
}
