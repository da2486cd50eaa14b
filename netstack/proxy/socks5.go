package proxy

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/wgkit/wgkit/internal/pipe"
	"github.com/wgkit/wgkit/netstack"
)

// SOCKS5Options configures a SOCKS5Server. A nil *SOCKS5Options and every
// zero field mean the documented default.
type SOCKS5Options struct {
	// Username and Password, when Username is not empty, require RFC 1929
	// username/password authentication: a client that does not offer it
	// is refused (method 0xFF), and a wrong pair gets status 1 and a
	// close. Username must be 1 to 255 bytes and Password at most 255.
	// Empty Username (the default) means no authentication (method 0).
	Username, Password string

	// HandshakeTimeout bounds a client's greeting, authentication and
	// request, from the accept on, and the write of each reply; a client
	// that is silent or slow for longer is disconnected. Zero means 10 s.
	HandshakeTimeout time.Duration

	// DialTimeout bounds each CONNECT's dial through the tunnel, name
	// resolution included; past it the client gets reply 6 (TTL
	// expired). Zero means 30 s.
	DialTimeout time.Duration

	// MaxConns caps the connections served at once (UDP associations
	// included, each counting its control connection). Connections
	// accepted past the cap are closed at once and logged. Zero means
	// 1024.
	MaxConns int

	// ListenPacket opens a UDP ASSOCIATE relay socket on the network the
	// clients come from, bound to the address the client connected to
	// (an "ip:0" address). nil means the host's (net.ListenConfig); set it
	// to a Network's ListenPacket when Serve's listener is on that network.
	ListenPacket func(network, address string) (net.PacketConn, error)

	// Logger receives one line per refused or failed connection or
	// request. nil discards them.
	Logger *slog.Logger
}

// SOCKS5Server is a SOCKS5 server (RFC 1928) whose CONNECT and UDP
// ASSOCIATE commands go through a Network; see NewSOCKS5. Its methods are
// safe for concurrent use.
type SOCKS5Server struct {
	n      Network
	user   string
	pass   string
	auth   bool
	hsTO   time.Duration
	dialTO time.Duration
	listen func(network, address string) (net.PacketConn, error)
	log    *slog.Logger
	optErr error // from the options; Serve returns it
	t      *tracker
}

// NewSOCKS5 returns a SOCKS5 server that dials through n; call Serve to
// run it. Host names in requests are resolved by n (the tunnel's DNS),
// never by the host. Invalid options make every Serve fail with the
// reason.
func NewSOCKS5(n Network, opts *SOCKS5Options) *SOCKS5Server {
	if opts == nil {
		opts = &SOCKS5Options{}
	}
	s := &SOCKS5Server{
		n:      n,
		user:   opts.Username,
		pass:   opts.Password,
		auth:   opts.Username != "",
		hsTO:   orDefault(opts.HandshakeTimeout, defaultHandshakeTimeout),
		dialTO: orDefault(opts.DialTimeout, defaultDialTimeout),
		listen: opts.ListenPacket,
		log:    orDiscard(opts.Logger),
		t:      newTracker(orDefault(opts.MaxConns, defaultMaxConns)),
	}
	if s.listen == nil {
		s.listen = func(network, address string) (net.PacketConn, error) {
			return (&net.ListenConfig{}).ListenPacket(context.Background(), network, address)
		}
	}
	switch {
	case n == nil:
		s.optErr = errors.New("proxy: socks5: nil Network")
	case len(opts.Username) > 255:
		s.optErr = fmt.Errorf("proxy: socks5: Username is %d bytes; RFC 1929 allows at most 255", len(opts.Username))
	case len(opts.Password) > 255:
		s.optErr = fmt.Errorf("proxy: socks5: Password is %d bytes; RFC 1929 allows at most 255", len(opts.Password))
	case !s.auth && opts.Password != "":
		s.optErr = errors.New("proxy: socks5: Password without Username")
	}
	return s
}

// Serve accepts connections on ln and serves each on its own goroutine,
// until ln fails or Close is called, as http.Server.Serve does. It closes
// ln before it returns. After Close it returns an error wrapping
// net.ErrClosed; otherwise the listener's error. Serve may be called for
// several listeners at once.
func (s *SOCKS5Server) Serve(ln net.Listener) error {
	defer ln.Close()
	if s.optErr != nil {
		return s.optErr
	}
	if !s.t.addListener(ln) {
		return fmt.Errorf("proxy: socks5: serve: %w", net.ErrClosed)
	}
	defer s.t.removeListener(ln)
	if err := s.t.acceptLoop(ln, s.log, s.handle); err != nil {
		return fmt.Errorf("proxy: socks5: serve %v: %w", ln.Addr(), err)
	}
	return nil
}

// Close stops the server: it closes the listeners, ends every connection
// and UDP association and waits for their goroutines. Serve calls then
// return. A second Close returns an error wrapping net.ErrClosed.
func (s *SOCKS5Server) Close() error {
	if !s.t.close() {
		return fmt.Errorf("proxy: socks5: close: %w", net.ErrClosed)
	}
	return nil
}

// SOCKS5 protocol numbers (RFC 1928, RFC 1929).
const (
	socksVersion = 5
	authVersion  = 1 // RFC 1929's subnegotiation version

	methodNone     = 0x00
	methodPassword = 0x02
	methodNoneOK   = 0xFF

	cmdConnect   = 1
	cmdBind      = 2
	cmdAssociate = 3

	atypIPv4   = 1
	atypDomain = 3
	atypIPv6   = 4
)

// Reply codes of RFC 1928 section 6.
const (
	repSucceeded          = 0x00
	repGeneralFailure     = 0x01
	repNetUnreachable     = 0x03
	repHostUnreachable    = 0x04
	repConnRefused        = 0x05
	repTTLExpired         = 0x06
	repCmdNotSupported    = 0x07
	repAddrNotSupported   = 0x08
	socks4RequestRejected = 91 // SOCKS4's reply to a SOCKS4 client
)

// errBadRequest marks a malformed handshake: logged, answered when the
// protocol has an answer, and closed.
var errBadRequest = errors.New("malformed SOCKS5 handshake")

// request is a parsed SOCKS5 request.
type request struct {
	cmd  byte
	host string // an IP literal or a domain name
	port uint16
}

func (r request) address() string { return net.JoinHostPort(r.host, strconv.Itoa(int(r.port))) }

// handle serves one client connection. It runs on the tracker's goroutine
// and closes c before it returns.
func (s *SOCKS5Server) handle(c net.Conn) {
	// Close (the tracker's context) closes the client conn, which ends
	// every wait below; upstream conns are closed by Join or the
	// association, which end with it.
	stop := context.AfterFunc(s.t.ctx, func() { c.Close() })
	defer stop()
	defer c.Close()
	log := s.log.With("client", c.RemoteAddr().String())
	c.SetDeadline(time.Now().Add(s.hsTO))
	req, rep, err := s.handshake(c)
	if err != nil {
		if rep != 0 {
			writeReply(c, rep, netip.AddrPort{})
		}
		log.Info("socks5: refused", "err", err)
		return
	}
	switch req.cmd {
	case cmdConnect:
		s.connect(c, req, log)
	case cmdAssociate:
		s.associate(c, req, log)
	}
}

// handshake reads the greeting, authenticates and reads the request. On
// failure it has written the method or authentication reply the protocol
// asks for; rep, if not 0, is the request reply still to send.
func (s *SOCKS5Server) handshake(c net.Conn) (_ request, rep byte, _ error) {
	// The longest message is RFC 1929's: 1+1+255+1+255 bytes.
	var buf [513]byte
	if _, err := io.ReadFull(c, buf[:2]); err != nil {
		return request{}, 0, fmt.Errorf("greeting: %w", err)
	}
	switch buf[0] {
	case socksVersion:
	case 4:
		// A SOCKS4 client understands this rejection; SOCKS5 it does not.
		c.Write([]byte{0, socks4RequestRejected, 0, 0, 0, 0, 0, 0})
		return request{}, 0, fmt.Errorf("%w: SOCKS version 4, only 5 is served", errBadRequest)
	default:
		return request{}, 0, fmt.Errorf("%w: version %d in greeting", errBadRequest, buf[0])
	}
	methods := buf[2 : 2+int(buf[1])]
	if _, err := io.ReadFull(c, methods); err != nil {
		return request{}, 0, fmt.Errorf("greeting: %w", err)
	}
	want := byte(methodNone)
	if s.auth {
		want = methodPassword
	}
	offered := false
	for _, m := range methods {
		offered = offered || m == want
	}
	if !offered {
		c.Write([]byte{socksVersion, methodNoneOK})
		return request{}, 0, fmt.Errorf("client offers no acceptable method (want %#x, got % x)", want, methods)
	}
	if _, err := c.Write([]byte{socksVersion, want}); err != nil {
		return request{}, 0, fmt.Errorf("method reply: %w", err)
	}
	if s.auth {
		if err := s.authenticate(c, buf[:]); err != nil {
			return request{}, 0, err
		}
	}
	return readRequest(c, buf[:])
}

// authenticate runs RFC 1929's subnegotiation; buf has room for it.
func (s *SOCKS5Server) authenticate(c net.Conn, buf []byte) error {
	fail := func(err error) error {
		c.Write([]byte{authVersion, 1})
		return err
	}
	if _, err := io.ReadFull(c, buf[:2]); err != nil {
		return fmt.Errorf("authentication: %w", err)
	}
	if buf[0] != authVersion {
		return fail(fmt.Errorf("%w: authentication version %d", errBadRequest, buf[0]))
	}
	ulen := int(buf[1])
	if _, err := io.ReadFull(c, buf[:ulen+1]); err != nil {
		return fmt.Errorf("authentication: %w", err)
	}
	user := buf[:ulen]
	plen := int(buf[ulen])
	pass := buf[ulen+1 : ulen+1+plen]
	if _, err := io.ReadFull(c, pass); err != nil {
		return fmt.Errorf("authentication: %w", err)
	}
	// Both compared, in constant time, so timing tells nothing of which
	// was wrong.
	okUser := subtle.ConstantTimeCompare(user, []byte(s.user))
	okPass := subtle.ConstantTimeCompare(pass, []byte(s.pass))
	if okUser&okPass != 1 {
		return fail(fmt.Errorf("wrong username or password (username %q)", truncate(string(user))))
	}
	if _, err := c.Write([]byte{authVersion, 0}); err != nil {
		return fmt.Errorf("authentication reply: %w", err)
	}
	return nil
}

// readRequest reads a request; buf holds at least 262 bytes. rep is the
// reply to send for a request that cannot be served.
func readRequest(c net.Conn, buf []byte) (_ request, rep byte, _ error) {
	if _, err := io.ReadFull(c, buf[:5]); err != nil {
		return request{}, 0, fmt.Errorf("request: %w", err)
	}
	if buf[0] != socksVersion {
		return request{}, repGeneralFailure, fmt.Errorf("%w: version %d in request", errBadRequest, buf[0])
	}
	req := request{cmd: buf[1]}
	switch req.cmd {
	case cmdConnect, cmdAssociate:
	case cmdBind:
		return request{}, repCmdNotSupported, errors.New("command BIND not supported")
	default:
		return request{}, repCmdNotSupported, fmt.Errorf("%w: unknown command %d", errBadRequest, req.cmd)
	}
	// buf[2] is RSV, which RFC 1928 asks to be 0 and nobody checks.
	var addrLen int
	switch buf[3] {
	case atypIPv4:
		addrLen = 4
	case atypIPv6:
		addrLen = 16
	case atypDomain:
		addrLen = int(buf[4])
	default:
		return request{}, repAddrNotSupported, fmt.Errorf("%w: unknown address type %d", errBadRequest, buf[3])
	}
	// The first address byte (or the domain's length) was read with the
	// header; read the rest and the port.
	rest := addrLen + 2
	if buf[3] != atypDomain {
		rest--
	}
	if _, err := io.ReadFull(c, buf[5:5+rest]); err != nil {
		return request{}, 0, fmt.Errorf("request: %w", err)
	}
	switch buf[3] {
	case atypIPv4:
		req.host = netip.AddrFrom4([4]byte(buf[4:8])).String()
	case atypIPv6:
		req.host = netip.AddrFrom16([16]byte(buf[4:20])).Unmap().String()
	case atypDomain:
		req.host = string(buf[5 : 5+addrLen])
		if err := checkDomain(req.host); err != nil {
			return request{}, repHostUnreachable, err
		}
	}
	end := 5 + rest
	req.port = binary.BigEndian.Uint16(buf[end-2 : end])
	return req, 0, nil
}

// checkDomain rejects names no DNS server could resolve: empty, longer
// than 253 bytes, or holding bytes a host name cannot (a NUL, a space,
// '/', ':' that is not an IPv6 literal). IP literals pass.
func checkDomain(name string) error {
	if _, err := netip.ParseAddr(name); err == nil {
		return nil
	}
	if name == "" {
		return fmt.Errorf("%w: empty domain name", errBadRequest)
	}
	if len(name) > 253 {
		return fmt.Errorf("%w: domain name of %d bytes, longer than DNS allows (253)", errBadRequest, len(name))
	}
	for i := 0; i < len(name); i++ {
		switch b := name[i]; {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9', b == '-', b == '.', b == '_':
		default:
			return fmt.Errorf("%w: domain name %q has byte %#x", errBadRequest, truncate(name), b)
		}
	}
	return nil
}

// truncate cuts s to a short prefix for error messages.
func truncate(s string) string {
	const max = 32
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// writeReply writes a request reply with bound address bnd (0.0.0.0:0
// when not valid).
func writeReply(c net.Conn, rep byte, bnd netip.AddrPort) error {
	var buf [22]byte
	buf[0], buf[1] = socksVersion, rep
	b := appendAddr(buf[:3], bnd)
	_, err := c.Write(b)
	return err
}

// appendAddr appends ATYP, ADDR and PORT for ap (IPv4 0.0.0.0:0 when not
// valid).
func appendAddr(b []byte, ap netip.AddrPort) []byte {
	ip := ap.Addr().Unmap()
	if !ip.IsValid() {
		ip = netip.IPv4Unspecified()
	}
	if ip.Is4() {
		b = append(b, atypIPv4)
	} else {
		b = append(b, atypIPv6)
	}
	b = append(b, ip.AsSlice()...)
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

// addrPortOf returns a's IP and port (invalid if a is not TCP or UDP).
func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// replyCode says in RFC 1928's terms why a dial failed.
func replyCode(err error) byte {
	var dnsErr *net.DNSError
	var addrErr *net.AddrError
	var ne net.Error
	switch {
	case errors.As(err, &dnsErr):
		// The name has no address, or the tunnel's DNS servers do not
		// answer: either way there is no host to reach.
		return repHostUnreachable
	case errors.Is(err, netstack.ErrNoRoute), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, syscall.EAFNOSUPPORT), errors.As(err, &addrErr):
		// No peer routes the address, or it is of a family the tunnel
		// has no address of (netstack's *net.AddrError).
		return repNetUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH):
		return repHostUnreachable
	case errors.Is(err, syscall.ECONNREFUSED):
		return repConnRefused
	case errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return repTTLExpired
	}
	return repGeneralFailure
}

// connect serves CONNECT: dial, reply, join.
func (s *SOCKS5Server) connect(c net.Conn, req request, log *slog.Logger) {
	c.SetDeadline(time.Time{}) // the dial has its own bound
	ctx, cancel := context.WithTimeout(s.t.ctx, s.dialTO)
	up, err := s.n.DialContext(ctx, "tcp", req.address())
	cancel()
	c.SetWriteDeadline(time.Now().Add(s.hsTO))
	if err != nil {
		rep := replyCode(err)
		writeReply(c, rep, netip.AddrPort{})
		log.Info("socks5: connect failed", "dest", req.address(), "reply", rep, "err", err)
		return
	}
	if err := writeReply(c, repSucceeded, addrPortOf(up.LocalAddr())); err != nil {
		up.Close()
		log.Info("socks5: connect reply", "dest", req.address(), "err", err)
		return
	}
	c.SetWriteDeadline(time.Time{})
	// Join closes up; Close's AfterFunc closing c ends the Join.
	if _, _, err := pipe.Join(c, up); err != nil {
		log.Debug("socks5: connection ended", "dest", req.address(), "err", err)
	}
}
