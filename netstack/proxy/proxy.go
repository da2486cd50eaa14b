package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/wgkit/wgkit/netstack"
)

// Network is the tunnel a proxy serves: where it dials, where it opens UDP
// sockets for SOCKS5 UDP ASSOCIATE, and whose DNS servers resolve names.
// [*netstack.Net] satisfies it; tests and other networks can stand in.
//
// DialContext must resolve a host name in address with the same DNS as
// LookupHost (the tunnel's); the proxies hand names to it unresolved.
type Network interface {
	// DialContext connects to address ("host:port") on network "tcp"
	// or "udp", as net.Dialer.DialContext does.
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
	// ListenPacket opens an unconnected UDP socket on the network, as
	// net.ListenPacket does; ":0" asks for any free port on every address.
	ListenPacket(network, address string) (net.PacketConn, error)
	// LookupHost returns the addresses of host from the network's DNS.
	LookupHost(ctx context.Context, host string) ([]string, error)
}

var _ Network = (*netstack.Net)(nil)

// Defaults of the options structs; each field's doc names its own.
const (
	defaultHandshakeTimeout = 10 * time.Second
	defaultDialTimeout      = 30 * time.Second
	defaultMaxConns         = 1024
	defaultUDPIdleTimeout   = 60 * time.Second
	defaultMaxFlows         = 1024
)

// orDefault returns v, or def when v is zero or negative.
func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// discard is the logger of a nil *slog.Logger option.
func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// tracker is the lifecycle shared by the servers: a context that Close
// cancels (every connection's handler closes what it holds when it ends),
// the listeners being served, a count of live connections against a cap,
// and a WaitGroup of the handlers' goroutines.
type tracker struct {
	ctx    context.Context
	cancel context.CancelFunc
	max    int

	mu        sync.Mutex
	listeners map[net.Listener]struct{} // guarded by mu
	conns     int                       // live connections; guarded by mu
	closed    bool                      // guarded by mu
	wg        sync.WaitGroup            // Add only under mu while !closed
}

func newTracker(max int) *tracker {
	ctx, cancel := context.WithCancel(context.Background())
	return &tracker{ctx: ctx, cancel: cancel, max: max, listeners: make(map[net.Listener]struct{})}
}

// addListener registers ln for Close; false after Close.
func (t *tracker) addListener(ln net.Listener) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.listeners[ln] = struct{}{}
	return true
}

func (t *tracker) removeListener(ln net.Listener) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.listeners, ln)
}

// errOverCap is acquire's answer past the cap on connections.
var errOverCap = errors.New("too many connections")

// acquire counts one more connection and its goroutine, or fails past the
// cap (errOverCap) or after Close (net.ErrClosed). Each success needs a
// release.
func (t *tracker) acquire() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return net.ErrClosed
	}
	if t.conns >= t.max {
		return errOverCap
	}
	t.conns++
	t.wg.Add(1)
	return nil
}

func (t *tracker) release() {
	t.mu.Lock()
	t.conns--
	t.mu.Unlock()
	t.wg.Done()
}

// close stops everything in this order: mark closed (no new listener or
// connection), cancel the context (each handler's context.AfterFunc closes
// its conns, which unblocks it), close the listeners (Serve returns), wait
// for the handlers. false if already closed.
func (t *tracker) close() bool {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return false
	}
	t.closed = true
	lns := make([]net.Listener, 0, len(t.listeners))
	for ln := range t.listeners {
		lns = append(lns, ln)
	}
	clear(t.listeners)
	t.mu.Unlock()
	t.cancel()
	for _, ln := range lns {
		ln.Close()
	}
	t.wg.Wait()
	return true
}

func (t *tracker) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// acceptLoop accepts on ln until it fails, handing each conn to handle on
// a new goroutine, or closing it past the cap (logged). Transient accept
// errors (descriptors used up) are retried with a back-off of 5 ms up
// to 1 s. It returns the error that ended it; after Close, one wrapping
// net.ErrClosed.
func (t *tracker) acceptLoop(ln net.Listener, log *slog.Logger, handle func(net.Conn)) error {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if t.isClosed() {
				return net.ErrClosed
			}
			if !transientAcceptErr(err) {
				return err
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			log.Warn("accept failed; retrying", "err", err, "in", backoff)
			select {
			case <-time.After(backoff):
			case <-t.ctx.Done():
			}
			continue
		}
		backoff = 0
		if err := t.acquire(); err != nil {
			log.Warn("connection refused", "client", c.RemoteAddr(), "err", err)
			c.Close()
			continue
		}
		go func() {
			defer t.release()
			handle(c)
		}()
	}
}

// transientAcceptErr reports the accept errors a server outlives: a full
// descriptor table or memory pressure, and a connection aborted before it
// was accepted.
func transientAcceptErr(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
