package proxy

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"

	"github.com/wgkit/wgkit/internal/pipe"
)

// HTTPOptions configures the handler of HTTPHandler. A nil *HTTPOptions
// and every zero field mean the documented default.
type HTTPOptions struct {
	// Username and Password, when Username is not empty, require Basic
	// proxy authentication (RFC 7617 in Proxy-Authorization): a request
	// without the right pair gets 407 with a Proxy-Authenticate
	// challenge. Empty Username (the default) means none.
	Username, Password string

	// Realm is the challenge's realm. Empty means "wgkit".
	Realm string

	// DialTimeout bounds each dial through the tunnel, name resolution
	// included; past it the client gets 504. Zero means 30 s.
	DialTimeout time.Duration

	// MaxConns caps the requests proxied at once (CONNECT tunnels and
	// forwarded requests); requests past it get 503. Zero means 1024.
	MaxConns int

	// Logger receives one line per refused or failed request. nil
	// discards them.
	Logger *slog.Logger
}

// httpProxy is the handler HTTPHandler returns.
type httpProxy struct {
	n      Network
	user   string
	pass   string
	realm  string
	dialTO time.Duration
	log    *slog.Logger
	t      *tracker
	tr     *http.Transport
	rp     *httputil.ReverseProxy

	mu      sync.Mutex
	hijacks map[net.Conn]struct{} // CONNECT tunnels' client conns; guarded by mu
}

// HTTPHandler returns an HTTP proxy to mount in an http.Server: CONNECT
// requests become tunnels to their host:port, and absolute-form requests
// ("GET http://host/path") are forwarded, both through n, whose DNS
// resolves the names. Hop-by-hop headers (Connection and the headers it
// names, Proxy-Connection, Proxy-Authorization, Keep-Alive, TE, Trailer,
// Transfer-Encoding, Upgrade) are removed each way. Requests in origin
// form ("GET /") get 400. Dial failures get 502, or 504 when the dial
// timed out.
//
// The http.Server bounds the request's headers: set its
// ReadHeaderTimeout, which a CONNECT's handshake is. A CONNECT tunnel is
// the hijacked connection joined to the dialled one, half-close passed
// on; it needs HTTP/1.x (HTTP/2 CONNECT gets 505).
//
// The handler also implements io.Closer: Close ends every tunnel and
// forwarded request and answers later requests with 503; a second Close
// returns an error wrapping net.ErrClosed. Hand it to
// http.Server.RegisterOnShutdown, since Shutdown and Close of the server
// do not reach hijacked connections. The handler is safe for concurrent
// use. A nil n makes every request fail with 500.
func HTTPHandler(n Network, opts *HTTPOptions) http.Handler {
	if opts == nil {
		opts = &HTTPOptions{}
	}
	p := &httpProxy{
		n:       n,
		user:    opts.Username,
		pass:    opts.Password,
		realm:   opts.Realm,
		dialTO:  orDefault(opts.DialTimeout, defaultDialTimeout),
		log:     orDiscard(opts.Logger),
		t:       newTracker(orDefault(opts.MaxConns, defaultMaxConns)),
		hijacks: make(map[net.Conn]struct{}),
	}
	if p.realm == "" {
		p.realm = "wgkit"
	}
	p.tr = &http.Transport{
		DialContext:           p.dial,
		Proxy:                 nil, // never the host's proxy settings
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	p.rp = &httputil.ReverseProxy{
		// Rewrite (not Director) strips X-Forwarded-* and Forwarded and
		// adds none: a forward proxy does not announce its clients.
		Rewrite:      func(*httputil.ProxyRequest) {},
		Transport:    p.tr,
		ErrorLog:     slog.NewLogLogger(p.log.Handler(), slog.LevelInfo),
		ErrorHandler: p.forwardError,
	}
	return p
}

func (p *httpProxy) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.dialTO)
	defer cancel()
	return p.n.DialContext(ctx, network, addr)
}

// Close ends every CONNECT tunnel and forwarded request, closes idle
// connections to the servers, and answers later requests with 503.
func (p *httpProxy) Close() error {
	// closing the tracker cancels its context (which ends forwarded
	// requests, see ServeHTTP) but must wait for the tunnels, so they are
	// closed in between.
	p.t.mu.Lock()
	if p.t.closed {
		p.t.mu.Unlock()
		return fmt.Errorf("proxy: http: close: %w", net.ErrClosed)
	}
	p.t.mu.Unlock()
	p.t.cancel()
	p.mu.Lock()
	for c := range p.hijacks {
		c.Close()
	}
	p.mu.Unlock()
	if !p.t.close() {
		return fmt.Errorf("proxy: http: close: %w", net.ErrClosed)
	}
	p.tr.CloseIdleConnections()
	return nil
}

func (p *httpProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	log := p.log.With("client", r.RemoteAddr, "method", r.Method, "host", r.Host)
	if p.n == nil {
		http.Error(w, "proxy: HTTPHandler was given a nil Network", http.StatusInternalServerError)
		log.Error("http proxy: nil Network")
		return
	}
	if p.user != "" && !p.authorized(r) {
		w.Header().Set("Proxy-Authenticate", fmt.Sprintf("Basic realm=%q", p.realm))
		http.Error(w, "proxy authentication required", http.StatusProxyAuthRequired)
		log.Info("http proxy: refused: no or wrong proxy credentials")
		return
	}
	if r.Method != http.MethodConnect && !r.URL.IsAbs() {
		http.Error(w, "not a proxy request: the request target must be absolute (http://host/...)", http.StatusBadRequest)
		log.Info("http proxy: refused: origin-form request", "target", truncate(r.RequestURI))
		return
	}
	if err := p.t.acquire(); err != nil {
		w.Header().Set("Connection", "close")
		http.Error(w, "proxy busy or closing", http.StatusServiceUnavailable)
		log.Warn("http proxy: refused", "err", err)
		return
	}
	defer p.t.release()
	if r.Method == http.MethodConnect {
		p.connect(w, r, log)
		return
	}
	switch r.URL.Scheme {
	case "http", "https":
	default:
		http.Error(w, "unsupported scheme "+truncate(r.URL.Scheme), http.StatusBadRequest)
		log.Info("http proxy: refused: scheme", "scheme", truncate(r.URL.Scheme))
		return
	}
	// Close ends the forwarded request, as it does the tunnels.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(p.t.ctx, cancel)
	defer stop()
	p.rp.ServeHTTP(w, r.WithContext(ctx))
}

// authorized checks the Basic credentials in Proxy-Authorization.
func (p *httpProxy) authorized(r *http.Request) bool {
	scheme, enc, ok := strings.Cut(r.Header.Get("Proxy-Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return false
	}
	dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(enc))
	if err != nil {
		return false
	}
	user, pass, ok := strings.Cut(string(dec), ":")
	if !ok {
		return false
	}
	okUser := subtle.ConstantTimeCompare([]byte(user), []byte(p.user))
	okPass := subtle.ConstantTimeCompare([]byte(pass), []byte(p.pass))
	return okUser&okPass == 1
}

// statusFor is the status of a failed dial: 504 for a timeout, 502 else.
func statusFor(err error) int {
	if replyCode(err) == repTTLExpired {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

func (p *httpProxy) forwardError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) {
		// The client went away, or Close ended the request.
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	http.Error(w, "proxy: "+err.Error(), statusFor(err))
	p.log.Info("http proxy: forward failed", "client", r.RemoteAddr, "url", truncate(r.URL.String()), "err", err)
}

// connect serves CONNECT: dial, answer 200, hijack and join.
func (p *httpProxy) connect(w http.ResponseWriter, r *http.Request, log *slog.Logger) {
	if r.ProtoMajor != 1 {
		http.Error(w, "CONNECT needs HTTP/1.x", http.StatusHTTPVersionNotSupported)
		log.Info("http proxy: refused: CONNECT over HTTP/2")
		return
	}
	if _, _, err := net.SplitHostPort(r.Host); err != nil {
		http.Error(w, "CONNECT target must be host:port", http.StatusBadRequest)
		log.Info("http proxy: refused: CONNECT target", "err", err)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(p.t.ctx, cancel)
	up, err := p.dial(ctx, "tcp", r.Host)
	stop()
	cancel()
	if err != nil {
		http.Error(w, "proxy: "+err.Error(), statusFor(err))
		log.Info("http proxy: connect failed", "err", err)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		up.Close()
		http.Error(w, "CONNECT needs a connection the server lets go of", http.StatusHTTPVersionNotSupported)
		log.Info("http proxy: refused: response writer cannot hijack")
		return
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		up.Close()
		log.Info("http proxy: hijack failed", "err", err)
		return
	}
	if !p.track(c) {
		c.Close()
		up.Close()
		return
	}
	defer p.untrack(c)
	// The server's deadlines (ReadTimeout, WriteTimeout) were for the
	// request; the tunnel lives as long as its two sides want.
	c.SetDeadline(time.Now().Add(p.dialTO))
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		c.Close()
		up.Close()
		log.Info("http proxy: connect reply", "err", err)
		return
	}
	c.SetDeadline(time.Time{})
	// Bytes the client sent after its request are in the server's read
	// buffer already: they go first.
	if k := brw.Reader.Buffered(); k > 0 {
		b, _ := brw.Reader.Peek(k)
		if _, err := up.Write(b); err != nil {
			c.Close()
			up.Close()
			return
		}
	}
	if _, _, err := pipe.Join(c, up); err != nil {
		log.Debug("http proxy: tunnel ended", "err", err)
	}
}

// track registers a hijacked conn for Close; false once closing.
func (p *httpProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.t.ctx.Err() != nil {
		return false
	}
	p.hijacks[c] = struct{}{}
	return true
}

func (p *httpProxy) untrack(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.hijacks, c)
}
