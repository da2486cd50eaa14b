package proxy_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wgkit/wgkit/netstack/proxy"
)

// startHTTP serves HTTPHandler over e's tunnel on 127.0.0.1 in an
// http.Server and returns the handler and the proxy URL; both are closed
// at cleanup.
func startHTTP(t *testing.T, e *env, opts *proxy.HTTPOptions) (http.Handler, string) {
	t.Helper()
	ln := listenLocal(t)
	h := proxy.HTTPHandler(e.tnet, opts)
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 2 * time.Second}
	hs.RegisterOnShutdown(func() { h.(io.Closer).Close() })
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	t.Cleanup(func() {
		hs.Close()
		h.(io.Closer).Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return h, "http://" + ln.Addr().String()
}

func TestHTTPCurl(t *testing.T) {
	e := newEnv(t)
	_, open := startHTTP(t, e, nil)
	_, authed := startHTTP(t, e, &proxy.HTTPOptions{Username: "user", Password: "pass"})
	url := "http://" + tunnelName + "/path?q=1"
	tests := []struct {
		name     string
		args     []string
		want     []string // lines the body must have
		wantNot  []string // header names the server must not see
		wantCode string   // -w output, when checked
		wantErr  string   // in curl's error; "" for success
	}{
		{
			name: "absolute form",
			args: []string{"-x", open, url},
			want: []string{"GET /path?q=1", "User-Agent: curl/"},
		},
		{
			name:    "hop-by-hop headers removed",
			args:    []string{"-x", open, "-H", "Connection: X-Secret", "-H", "X-Secret: 1", "-H", "Keep-Alive: 5", "-H", "Proxy-Connection: keep-alive", "-H", "X-Kept: yes", url},
			want:    []string{"GET /path?q=1", "X-Kept: yes"},
			wantNot: []string{"X-Secret", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization"},
		},
		{
			name: "CONNECT tunnel",
			args: []string{"-p", "-x", open, url},
			want: []string{"GET /path?q=1"},
		},
		{
			name:    "credentials accepted, and not passed on",
			args:    []string{"-x", authed, "-U", "user:pass", url},
			want:    []string{"GET /path?q=1"},
			wantNot: []string{"Proxy-Authorization"},
		},
		{
			name: "CONNECT with credentials",
			args: []string{"-p", "-x", authed, "-U", "user:pass", url},
			want: []string{"GET /path?q=1"},
		},
		{
			name:     "no credentials",
			args:     []string{"-x", authed, "-o", "/dev/null", "-w", "%{http_code}", url},
			wantCode: "407",
		},
		{
			name:     "wrong password",
			args:     []string{"-x", authed, "-U", "user:nope", "-o", "/dev/null", "-w", "%{http_code}", url},
			wantCode: "407",
		},
		{
			name:    "CONNECT without credentials",
			args:    []string{"-p", "-x", authed, url},
			wantErr: "407",
		},
		{
			name:     "unknown name",
			args:     []string{"-x", open, "-o", "/dev/null", "-w", "%{http_code}", "http://nosuch.wgkit.tunnel-test/"},
			wantCode: "502",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := curl(t, tt.args...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("curl = %q, %v; want an error saying %q", out, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantCode != "" && out != tt.wantCode {
				t.Errorf("status %q; want %q", out, tt.wantCode)
			}
			lines := strings.Split(out, "\n")
			for _, w := range tt.want {
				found := false
				for _, l := range lines {
					found = found || strings.HasPrefix(strings.TrimSpace(l), w)
				}
				if !found {
					t.Errorf("the server did not see %q; it saw:\n%s", w, out)
				}
			}
			for _, w := range tt.wantNot {
				if strings.Contains(out, w+":") {
					t.Errorf("the server saw %s; it saw:\n%s", w, out)
				}
			}
		})
	}
}

// rawRequest sends req on a new connection to the proxy and returns the
// response's status code and the connection, closed at cleanup.
func rawRequest(t *testing.T, proxyURL, req string) (int, net.Conn) {
	t.Helper()
	code, c, err := tryRequest(proxyURL, req)
	if c != nil {
		t.Cleanup(func() { c.Close() })
	}
	if err != nil {
		t.Fatal(err)
	}
	return code, c
}

// tryRequest is rawRequest for any goroutine: the caller closes c.
func tryRequest(proxyURL, req string) (int, net.Conn, error) {
	c, err := net.Dial("tcp", strings.TrimPrefix(proxyURL, "http://"))
	if err != nil {
		return 0, nil, err
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		return 0, c, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, c, fmt.Errorf("reading the response: %w", err)
	}
	resp.Body.Close()
	return resp.StatusCode, c, nil
}

func TestHTTPBadInput(t *testing.T) {
	e := newEnv(t)
	_, open := startHTTP(t, e, &proxy.HTTPOptions{DialTimeout: time.Second})
	tests := []struct {
		name string
		req  string
		want int
	}{
		{"origin form", "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"unknown scheme", "GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"CONNECT without port", "CONNECT " + tunnelName + " HTTP/1.1\r\nHost: " + tunnelName + "\r\n\r\n", 400},
		{"CONNECT refused", "CONNECT " + e.remoteAddr(9) + " HTTP/1.1\r\nHost: x\r\n\r\n", 502},
		{"CONNECT no route", "CONNECT 10.200.0.1:80 HTTP/1.1\r\nHost: x\r\n\r\n", 502},
		{"CONNECT timeout", "CONNECT 10.99.0.200:80 HTTP/1.1\r\nHost: x\r\n\r\n", 504},
		{"CONNECT ok", "CONNECT " + e.remoteAddr(7) + " HTTP/1.1\r\nHost: x\r\n\r\n", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, _ := rawRequest(t, open, tt.req); got != tt.want {
				t.Errorf("status %d; want %d", got, tt.want)
			}
		})
	}
	t.Run("stalled request", func(t *testing.T) {
		c, err := net.Dial("tcp", strings.TrimPrefix(open, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		c.SetDeadline(start.Add(20 * time.Second))
		io.WriteString(c, "CONNECT ")
		io.ReadAll(c)
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("a stalled request held its connection %v; want about the server's 2 s ReadHeaderTimeout", d)
		}
	})
}

// TestHTTPConnectBytesFirst: bytes the client sends right behind its
// CONNECT request, before the 200, reach the server.
func TestHTTPConnectBytesFirst(t *testing.T) {
	e := newEnv(t)
	_, open := startHTTP(t, e, nil)
	c, err := net.Dial("tcp", strings.TrimPrefix(open, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, "CONNECT "+e.remoteAddr(7)+" HTTP/1.1\r\nHost: x\r\n\r\nearly bytes")
	want := "HTTP/1.1 200 Connection established\r\n\r\nearly bytes"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read %q: %v", got, err)
	}
	if string(got) != want {
		t.Errorf("got %q; want %q", got, want)
	}
}

// TestHTTPOverCap: past MaxConns tunnels, 1000 requests at once get 503
// each; and Close ends the tunnels.
func TestHTTPOverCap(t *testing.T) {
	checkDescriptors(t)
	e := newEnv(t)
	h, open := startHTTP(t, e, &proxy.HTTPOptions{MaxConns: 3})
	var held []net.Conn
	for range 3 {
		code, c := rawRequest(t, open, "CONNECT "+e.remoteAddr(7)+" HTTP/1.1\r\nHost: x\r\n\r\n")
		if code != 200 {
			t.Fatalf("held tunnel: status %d", code)
		}
		held = append(held, c)
	}
	const n = 1000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, c, err := tryRequest(open, "CONNECT "+e.remoteAddr(7)+" HTTP/1.1\r\nHost: x\r\n\r\n")
			if c != nil {
				c.Close()
			}
			if err == nil && code != 503 {
				err = fmt.Errorf("over the cap: status %d; want 503", code)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := h.(io.Closer).Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range held {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || !isClosedOrEOF(err) {
			t.Errorf("tunnel read after Close: %v; want EOF", err)
		}
	}
	if err := h.(io.Closer).Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v; want net.ErrClosed", err)
	}
	if code, _ := rawRequest(t, open, "GET http://"+tunnelName+"/ HTTP/1.1\r\nHost: x\r\n\r\n"); code != 503 {
		t.Errorf("after Close: status %d; want 503", code)
	}
}

// TestHTTPAuthChallenge: a request without credentials gets 407 with a
// Basic challenge naming the realm.
func TestHTTPAuthChallenge(t *testing.T) {
	e := newEnv(t)
	_, authed := startHTTP(t, e, &proxy.HTTPOptions{Username: "u", Password: "p", Realm: "tunnel"})
	c, err := net.Dial("tcp", strings.TrimPrefix(authed, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, "GET http://"+tunnelName+"/ HTTP/1.1\r\nHost: "+tunnelName+"\r\nProxy-Authorization: Basic dTp4\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got := [2]string{resp.Status, resp.Header.Get("Proxy-Authenticate")}
	want := [2]string{"407 Proxy Authentication Required", `Basic realm="tunnel"`}
	if got != want {
		t.Errorf("got %q; want %q", got, want)
	}
}
