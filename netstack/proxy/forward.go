package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wgkit/wgkit/internal/pipe"
)

// forwardDialTimeout bounds each dial of ForwardTCP and ForwardUDP.
const forwardDialTimeout = 30 * time.Second

// forwardMaxConns caps ForwardTCP's connections at once.
const forwardMaxConns = 4096

// ForwardTCP joins every connection accepted on ln to a newly dialled one,
// both ways, until ctx ends or ln fails. A half-close is passed on: when
// one side sends its end of stream, the other side's write half is shut
// (CloseWrite) and the reply still flows back. Host-to-tunnel (ln on the
// host, dial through the tunnel) and tunnel-to-host (ln from the tunnel's
// Listen, dial on the host) are the same call:
//
//	ln, _ := net.Listen("tcp", "127.0.0.1:2222")
//	proxy.ForwardTCP(ctx, ln, func(ctx context.Context) (net.Conn, error) {
//		return tnet.DialContext(ctx, "tcp", "10.0.0.5:22")
//	})
//
// Each dial gets a context that ends with ctx or after 30 s; a failed dial
// closes the accepted conn. At most 4096 connections are joined at once;
// more are closed as they are accepted. ForwardTCP closes ln when ctx
// ends, and closes every joined connection too. It returns after its
// connections have ended: ctx's error if ctx ended, else ln's Accept
// error (one wrapping net.ErrClosed when ln was closed).
func ForwardTCP(ctx context.Context, ln net.Listener, dial func(context.Context) (net.Conn, error)) error {
	t := newTracker(forwardMaxConns)
	// ctx's end closes ln, which ends the accept loop, and cancels the
	// tracker's context, whose AfterFuncs close the joined conns.
	stopLn := context.AfterFunc(ctx, func() { ln.Close() })
	defer stopLn()
	stopConns := context.AfterFunc(ctx, t.cancel)
	defer stopConns()
	err := t.acceptLoop(ln, slog.New(slog.DiscardHandler), func(c net.Conn) {
		stop := context.AfterFunc(t.ctx, func() { c.Close() })
		defer stop()
		dctx, cancel := context.WithTimeout(t.ctx, forwardDialTimeout)
		up, err := dial(dctx)
		cancel()
		if err != nil {
			c.Close()
			return
		}
		stopUp := context.AfterFunc(t.ctx, func() { up.Close() })
		defer stopUp()
		pipe.Join(c, up)
	})
	ln.Close()
	// The accept loop has ended, so no connection is added any more:
	// wait for the joined ones, which end on their own or with ctx.
	t.wg.Wait()
	t.cancel()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("proxy: forward tcp: %w", err)
	}
	return fmt.Errorf("proxy: forward tcp: accept: %w", err)
}

// UDPOptions configures ForwardUDP. A nil *UDPOptions and every zero field
// mean the documented default.
type UDPOptions struct {
	// IdleTimeout ends a flow that has carried no datagram either way for
	// this long. Zero means 60 s.
	IdleTimeout time.Duration

	// MaxFlows caps the flows (client addresses) at once. A datagram from
	// a new client past the cap ends the flow idle the longest. Zero
	// means 1024.
	MaxFlows int

	// Logger receives one line per flow that could not be dialled. nil
	// discards them.
	Logger *slog.Logger
}

// flow is one client address's upstream conn.
type flow struct {
	client net.Addr
	up     net.Conn
	last   atomic.Int64 // unix nanoseconds of the last datagram either way
}

// ForwardUDP relays datagrams between the clients that send to pc and
// upstream conns it dials: one upstream flow per client address, dialled
// on the client's first datagram; each reply goes back to the client of
// its flow. A flow that carries nothing for IdleTimeout ends, and past
// MaxFlows the flow idle the longest ends to make room. Flows are dialled
// in the read loop, each with a context that ends with ctx or after 30 s,
// so a slow dial delays the other clients' datagrams. Datagrams are at
// most 64 KiB; a flow's goroutine holds one such buffer.
//
// ForwardUDP closes pc when ctx ends and returns after every flow has
// ended: ctx's error if ctx ended, else pc's read error.
func ForwardUDP(ctx context.Context, pc net.PacketConn, dial func(context.Context) (net.Conn, error), opts *UDPOptions) error {
	if opts == nil {
		opts = &UDPOptions{}
	}
	idle := orDefault(opts.IdleTimeout, defaultUDPIdleTimeout)
	maxFlows := orDefault(opts.MaxFlows, defaultMaxFlows)
	log := orDiscard(opts.Logger)

	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		flows = make(map[netip.AddrPort]*flow) // guarded by mu
	)
	end := func(key netip.AddrPort, f *flow) {
		mu.Lock()
		if flows[key] == f {
			delete(flows, key)
		}
		mu.Unlock()
		f.up.Close()
	}
	defer func() {
		mu.Lock()
		for _, f := range flows {
			f.up.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("proxy: forward udp: %w", err)
		}
		key := addrPortOf(from)
		mu.Lock()
		f := flows[key]
		mu.Unlock()
		if f == nil {
			mu.Lock()
			if len(flows) >= maxFlows {
				evictOldest(flows)
			}
			mu.Unlock()
			dctx, cancel := context.WithTimeout(ctx, forwardDialTimeout)
			up, err := dial(dctx)
			cancel()
			if err != nil {
				log.Info("proxy: forward udp: dial failed", "client", from.String(), "err", err)
				continue
			}
			f = &flow{client: from, up: up}
			f.last.Store(time.Now().UnixNano())
			mu.Lock()
			flows[key] = f
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer end(key, f)
				replies(pc, f, idle)
			}()
		}
		f.last.Store(time.Now().UnixNano())
		f.up.Write(buf[:n])
	}
}

// evictOldest ends the flow idle the longest; the caller holds the lock
// of flows. Closing its conn ends its goroutine, which removes it.
func evictOldest(flows map[netip.AddrPort]*flow) {
	var oldest netip.AddrPort
	var of *flow
	for k, f := range flows {
		if of == nil || f.last.Load() < of.last.Load() {
			oldest, of = k, f
		}
	}
	if of != nil {
		delete(flows, oldest)
		of.up.Close()
	}
}

// replies sends f's upstream datagrams to its client until the flow has
// been idle for idle or its conn fails.
func replies(pc net.PacketConn, f *flow, idle time.Duration) {
	buf := make([]byte, 64<<10)
	for {
		f.up.SetReadDeadline(time.Unix(0, f.last.Load()).Add(idle))
		n, err := f.up.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && time.Since(time.Unix(0, f.last.Load())) < idle {
				continue // the client sent meanwhile: not idle
			}
			return
		}
		f.last.Store(time.Now().UnixNano())
		pc.WriteTo(buf[:n], f.client)
	}
}
