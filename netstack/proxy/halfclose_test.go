package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestHalfCloseThroughProxies: a client of the SOCKS5 server and of an
// HTTP CONNECT tunnel that shuts its write side down still reads the whole
// reply; the server in the tunnel answers only after it has read the
// client's end of stream, so a close instead of a half-close would lose
// the reply.
func TestHalfCloseThroughProxies(t *testing.T) {
	e := newEnv(t)
	ln, err := e.remote.Listen("tcp", ":17")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(20 * time.Second))
			if b, err := io.ReadAll(c); err == nil {
				c.Write(b)
			}
			c.Close()
		}
	}()
	defer func() { ln.Close(); <-done }()
	_, socks := startSOCKS5(t, e, nil)
	_, httpProxy := startHTTP(t, e, nil)
	msg := strings.Repeat("half-close ", 10000)
	check := func(t *testing.T, c net.Conn, r io.Reader) {
		t.Helper()
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("read after half-close: %v", err)
		}
		if string(got) != msg {
			t.Errorf("echo of %d bytes; want %d", len(got), len(msg))
		}
	}
	t.Run("SOCKS5", func(t *testing.T) {
		c, rep := socksConnect(t, socks, 1, ipv4(e.srv.Addr().String()), 17)
		if rep != 0 {
			t.Fatalf("reply %d", rep)
		}
		check(t, c, c)
	})
	t.Run("HTTP CONNECT", func(t *testing.T) {
		c, err := net.Dial("tcp", strings.TrimPrefix(httpProxy, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		io.WriteString(c, "CONNECT "+e.remoteAddr(17)+" HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("CONNECT: %v, %v", resp, err)
		}
		check(t, c, br)
	})
}
