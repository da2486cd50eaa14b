package proxy

import (
	"bytes"
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// streamConn is a net.Conn that reads a fixed client stream and records
// what the server writes.
type streamConn struct {
	r *bytes.Reader
	w bytes.Buffer
}

func (c *streamConn) Read(b []byte) (int, error)       { return c.r.Read(b) }
func (c *streamConn) Write(b []byte) (int, error)      { return c.w.Write(b) }
func (c *streamConn) Close() error                     { return nil }
func (c *streamConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *streamConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *streamConn) SetDeadline(time.Time) error      { return nil }
func (c *streamConn) SetReadDeadline(time.Time) error  { return nil }
func (c *streamConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzSOCKS5Handshake feeds arbitrary client bytes to the handshake, with
// and without authentication: it must never panic, and a request it
// accepts must be one the server serves (CONNECT or UDP ASSOCIATE to a
// host it may hand to the dialler), reached only after the right
// credentials when they are required.
func FuzzSOCKS5Handshake(f *testing.F) {
	f.Add([]byte{5, 1, 0, 5, 1, 0, 1, 10, 0, 0, 1, 0, 80}, false)
	f.Add([]byte{5, 1, 0, 5, 3, 0, 3, 4, 'h', 'o', 's', 't', 0, 53}, false)
	f.Add([]byte{5, 1, 2, 1, 1, 'u', 1, 'p', 5, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 187}, true)
	f.Add([]byte{5, 1, 0, 5, 1, 0, 3, 0, 0, 80}, false)
	f.Add([]byte{4, 1, 0, 80, 1, 2, 3, 4, 0}, false)
	f.Fuzz(func(t *testing.T, in []byte, auth bool) {
		opts := &SOCKS5Options{}
		if auth {
			opts.Username, opts.Password = "u", "p"
		}
		s := NewSOCKS5(nopNetwork{}, opts)
		defer s.Close()
		c := &streamConn{r: bytes.NewReader(in)}
		req, _, err := s.handshake(c)
		if err != nil {
			return
		}
		if req.cmd != cmdConnect && req.cmd != cmdAssociate {
			t.Fatalf("accepted command %d", req.cmd)
		}
		if err := checkDomain(req.host); err != nil {
			t.Fatalf("accepted host %q: %v", req.host, err)
		}
		if auth && !bytes.Contains(in, []byte{1, 1, 'u', 1, 'p'}) {
			t.Fatalf("accepted a request without the credentials: % x", in)
		}
	})
}

// FuzzUDPDatagram feeds arbitrary datagrams to the relay's header parser:
// it must never panic, and what it accepts has a destination and a
// payload that is the datagram's tail.
func FuzzUDPDatagram(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 10, 0, 0, 1, 0, 53, 'x'})
	f.Add([]byte{0, 0, 0, 3, 4, 'h', 'o', 's', 't', 0, 53, 'x'})
	f.Add([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 53})
	f.Add([]byte{0, 0, 1, 1, 10, 0, 0, 1, 0, 53, 'x'})
	f.Fuzz(func(t *testing.T, b []byte) {
		s := NewSOCKS5(nopNetwork{}, nil)
		defer s.Close()
		a := &association{s: s, ctx: context.Background(), log: s.log, names: map[string]nameEntry{}}
		dst, payload, ok := a.parse(b)
		if !ok {
			return
		}
		if !dst.IsValid() {
			t.Fatalf("accepted %x with no destination", b)
		}
		if !bytes.HasSuffix(b, payload) || len(payload) > len(b)-4-1-2 {
			t.Fatalf("payload %x is not the tail of %x after a header", payload, b)
		}
		if b[2] != 0 {
			t.Fatalf("accepted a fragment: %x", b)
		}
	})
}

// nopNetwork resolves every name to 192.0.2.1 and dials nothing.
type nopNetwork struct{}

func (nopNetwork) DialContext(context.Context, string, string) (net.Conn, error) {
	return nil, errors.New("no network")
}

func (nopNetwork) ListenPacket(string, string) (net.PacketConn, error) {
	return nil, errors.New("no network")
}

func (nopNetwork) LookupHost(context.Context, string) ([]string, error) {
	return []string{"192.0.2.1"}, nil
}
