package netstack

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/waiter"
)

// tcpConn is a TCP connection over the tunnel: a net.Conn straight over a
// gVisor endpoint, with the net package's error conventions.
//
// It does the job of gonet.TCPConn without its per-call garbage: the
// writer and reader handed to the endpoint, the wait queue entries and
// their channels live in the conn and are reused, so that in steady state
// a Read or Write, blocking or not, allocates nothing. Reads are
// serialized by readMu and writes by writeMu, as the net package does.
type tcpConn struct {
	n       *Net
	ep      tcpip.Endpoint
	wq      *waiter.Queue
	local   net.Addr // kept: the endpoint reports none after Close
	remote  net.Addr
	closed  atomic.Bool
	closing chan struct{} // closed by Close; wakes blocked Read and Write

	readMu    sync.Mutex
	readBuf   tcpip.SliceWriter // guarded by readMu; the current Read's buffer
	readEntry waiter.Entry      // guarded by readMu; registered while a Read waits
	readable  chan struct{}     // capacity 1; readEntry's notifications

	writeMu    sync.Mutex
	writeBuf   bytes.Reader  // guarded by writeMu; the current Write's rest
	writeEntry waiter.Entry  // guarded by writeMu; registered while a Write waits
	writable   chan struct{} // capacity 1; writeEntry's notifications

	deadlines
}

// newTCPConn wraps a connected endpoint and its wait queue.
func newTCPConn(n *Net, ep tcpip.Endpoint, wq *waiter.Queue) *tcpConn {
	c := &tcpConn{
		n:        n,
		ep:       ep,
		wq:       wq,
		closing:  make(chan struct{}),
		readable: make(chan struct{}, 1),
		writable: make(chan struct{}, 1),
	}
	if a, err := ep.GetLocalAddress(); err == nil {
		c.local = tcpAddr(a)
	}
	if a, err := ep.GetRemoteAddress(); err == nil {
		c.remote = tcpAddr(a)
	}
	c.readEntry.Init(waiter.ChannelNotifier(c.readable), waiter.ReadableEvents)
	c.writeEntry.Init(waiter.ChannelNotifier(c.writable), waiter.WritableEvents)
	c.deadlines.init()
	return c
}

func tcpAddr(a tcpip.FullAddress) *net.TCPAddr {
	return &net.TCPAddr{IP: net.IP(a.Addr.AsSlice()), Port: int(a.Port)}
}

func (c *tcpConn) LocalAddr() net.Addr  { return c.local }
func (c *tcpConn) RemoteAddr() net.Addr { return c.remote }

// isClosed reports whether the conn or the whole Net was closed.
func (c *tcpConn) isClosed() bool { return c.closed.Load() || c.n.isClosed() }

// opErr returns err as the net package reports it for op: as net.ErrClosed
// once the conn or the Net was closed, whatever the endpoint said.
func (c *tcpConn) opErr(op string, err error) error {
	if c.isClosed() {
		err = net.ErrClosed
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.local, Addr: c.remote, Err: err}
}

// Read reads from the connection, like net.TCPConn.Read: io.EOF once the
// peer has closed its side and everything was read.
func (c *tcpConn) Read(b []byte) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	c.readBuf = b
	n, err := c.read()
	c.readBuf = nil // do not keep the caller's buffer
	if n > 0 {
		// Lets the endpoint grow its receive buffer to what is consumed.
		c.ep.ModerateRecvBuf(n)
	}
	return n, err
}

// read reads into c.readBuf, waiting for data. c.readMu is held.
func (c *tcpConn) read() (int, error) {
	expired := c.readDeadline.channel()
	select {
	case <-expired:
		return 0, c.opErr("read", os.ErrDeadlineExceeded)
	default:
	}
	registered := false
	defer func() {
		if registered {
			c.wq.EventUnregister(&c.readEntry)
		}
	}()
	for {
		res, terr := c.ep.Read(&c.readBuf, tcpip.ReadOptions{})
		switch terr.(type) {
		case nil:
			return res.Count, nil
		case *tcpip.ErrWouldBlock:
		case *tcpip.ErrClosedForReceive:
			if c.isClosed() {
				return 0, c.opErr("read", net.ErrClosed)
			}
			return 0, io.EOF
		default:
			return 0, c.opErr("read", convertErr("read", terr))
		}
		if !registered {
			// Try again once registered: data may have come in between.
			c.wq.EventRegister(&c.readEntry)
			registered = true
			continue
		}
		if err := c.wait("read", c.readable, expired); err != nil {
			return 0, err
		}
	}
}

// Write writes all of b, like net.TCPConn.Write, waiting for room in the
// send buffer as needed. On error it reports how much was written.
func (c *tcpConn) Write(b []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	n, err := c.write(b)
	c.writeBuf.Reset(nil) // do not keep the caller's buffer
	return n, err
}

// write writes b through c.writeBuf. c.writeMu is held.
func (c *tcpConn) write(b []byte) (int, error) {
	expired := c.writeDeadline.channel()
	select {
	case <-expired:
		return 0, c.opErr("write", os.ErrDeadlineExceeded)
	default:
	}
	if c.isClosed() {
		return 0, c.opErr("write", net.ErrClosed)
	}
	registered := false
	defer func() {
		if registered {
			c.wq.EventUnregister(&c.writeEntry)
		}
	}()
	// Two soft failures mix in any order: a short write (try again at
	// once with the rest) and ErrWouldBlock (wait for room).
	done := 0
	for done < len(b) {
		c.writeBuf.Reset(b[done:])
		k, terr := c.ep.Write(&c.writeBuf, tcpip.WriteOptions{})
		done += int(k)
		switch terr.(type) {
		case nil:
			continue
		case *tcpip.ErrWouldBlock:
		default:
			return done, c.opErr("write", convertErr("write", terr))
		}
		if !registered {
			// Try again once registered: room may have freed in between.
			c.wq.EventRegister(&c.writeEntry)
			registered = true
			continue
		}
		if err := c.wait("write", c.writable, expired); err != nil {
			return done, err
		}
	}
	return done, nil
}

// wait waits for a notification on ready; it fails once expired is
// closed (the deadline passed) or the conn or the Net is closed.
func (c *tcpConn) wait(op string, ready, expired <-chan struct{}) error {
	if err := waitReady(ready, expired, c.closing, c.n.done); err != nil {
		return c.opErr(op, err)
	}
	return nil
}

// waitReady waits for ready. It returns os.ErrDeadlineExceeded once
// expired is closed and net.ErrClosed once closing or done is.
func waitReady(ready, expired, closing, done <-chan struct{}) error {
	select {
	case <-ready:
		return nil
	case <-expired:
		return os.ErrDeadlineExceeded
	case <-closing:
		return net.ErrClosed
	case <-done:
		return net.ErrClosed
	}
}

// Close closes the connection and wakes blocked Read and Write calls,
// which return errors wrapping net.ErrClosed. A second Close returns such
// an error too.
func (c *tcpConn) Close() error {
	if c.closed.Swap(true) {
		return &net.OpError{Op: "close", Net: "tcp", Source: c.local, Addr: c.remote, Err: net.ErrClosed}
	}
	close(c.closing)
	c.ep.Close()
	c.deadlines.stop()
	return nil
}

// CloseRead shuts down the reading side, like net.TCPConn.CloseRead.
func (c *tcpConn) CloseRead() error {
	return c.shutdown(tcpip.ShutdownRead)
}

// CloseWrite shuts down the writing side, like net.TCPConn.CloseWrite:
// the peer reads io.EOF once it has read everything written before.
func (c *tcpConn) CloseWrite() error {
	return c.shutdown(tcpip.ShutdownWrite)
}

func (c *tcpConn) shutdown(flags tcpip.ShutdownFlags) error {
	if c.isClosed() {
		return c.opErr("close", net.ErrClosed)
	}
	if terr := c.ep.Shutdown(flags); terr != nil {
		return c.opErr("close", convertErr("shutdown", terr))
	}
	return nil
}

// deadlines are a conn's read and write deadlines, with the net.Conn
// methods that set them; they apply to pending calls too.
type deadlines struct {
	readDeadline  deadline
	writeDeadline deadline
}

func (d *deadlines) init() {
	d.readDeadline.init()
	d.writeDeadline.init()
}

// stop stops both timers for good.
func (d *deadlines) stop() {
	d.readDeadline.stop()
	d.writeDeadline.stop()
}

// SetDeadline sets the read and write deadlines, like net.Conn.
func (d *deadlines) SetDeadline(t time.Time) error {
	d.readDeadline.set(t)
	d.writeDeadline.set(t)
	return nil
}

// SetReadDeadline sets the read deadline, like net.Conn; it applies to
// pending reads too.
func (d *deadlines) SetReadDeadline(t time.Time) error {
	d.readDeadline.set(t)
	return nil
}

// SetWriteDeadline sets the write deadline, like net.Conn; it applies to
// pending writes too.
func (d *deadlines) SetWriteDeadline(t time.Time) error {
	d.writeDeadline.set(t)
	return nil
}

// deadline is the deadline of one direction of a conn. Its channel is
// closed when the deadline passes, which wakes the calls waiting on it.
// The timer is made once and reset after; the channel is replaced only
// when a deadline is set again after one has expired. So reading the
// channel, done per Read or Write, costs a lock and no allocation.
type deadline struct {
	mu      sync.Mutex
	at      time.Time     // guarded by mu; zero: no deadline
	timer   *time.Timer   // guarded by mu; nil until a deadline in the future is first set
	expired chan struct{} // guarded by mu; closed once at has passed
}

func (d *deadline) init() { d.expired = make(chan struct{}) }

// channel returns the channel closed when the current deadline passes.
func (d *deadline) channel() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.expired
}

// set sets the deadline to t; zero means none.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.at = t
	if closed(d.expired) {
		d.expired = make(chan struct{})
	}
	if t.IsZero() {
		if d.timer != nil {
			d.timer.Stop()
		}
		return
	}
	wait := time.Until(t)
	if wait <= 0 {
		if d.timer != nil {
			d.timer.Stop()
		}
		close(d.expired)
		return
	}
	if d.timer == nil {
		d.timer = time.AfterFunc(wait, d.fire)
	} else {
		d.timer.Reset(wait)
	}
}

// fire runs when the timer goes off. The deadline may have moved since
// the timer was set, so it checks against the current one.
func (d *deadline) fire() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.at.IsZero() || closed(d.expired) {
		return
	}
	if wait := time.Until(d.at); wait > 0 {
		// Moved later, or the wall clock stepped back for a deadline
		// without a monotonic reading.
		d.timer.Reset(wait)
		return
	}
	close(d.expired)
}

// stop stops the timer for good, so that it holds on to nothing.
func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.at = time.Time{}
	if d.timer != nil {
		d.timer.Stop()
	}
}

// closed reports whether ch is closed. ch is never sent on.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// tcpListener is a TCP listener over the tunnel that reports
// net.ErrClosed after its or the Net's Close. Accept returns tcpConns.
type tcpListener struct {
	n         *Net
	ep        tcpip.Endpoint
	wq        *waiter.Queue
	addr      net.Addr      // kept: the endpoint reports none after Close
	cancel    chan struct{} // closed by shutdown; wakes blocked Accept calls
	closeOnce sync.Once

	// waitMu is held by the Accept that waits with entry, so that the
	// usual single accepting goroutine allocates no entry of its own.
	waitMu sync.Mutex
	entry  waiter.Entry  // guarded by waitMu; registered while its Accept waits
	ready  chan struct{} // capacity 1; entry's notifications
}

func newTCPListener(n *Net, ep tcpip.Endpoint, wq *waiter.Queue, bound netip.Addr) *tcpListener {
	l := &tcpListener{n: n, ep: ep, wq: wq, cancel: make(chan struct{}), ready: make(chan struct{}, 1)}
	if a, err := ep.GetLocalAddress(); err == nil {
		l.addr = fixWildcard(tcpAddr(a), bound)
	}
	l.entry.Init(waiter.ChannelNotifier(l.ready), waiter.ReadableEvents)
	return l
}

func (l *tcpListener) isClosed() bool { return closed(l.cancel) || l.n.isClosed() }

// Accept waits for and returns the next connection.
func (l *tcpListener) Accept() (net.Conn, error) {
	ep, wq, terr := l.ep.Accept(nil)
	if _, ok := terr.(*tcpip.ErrWouldBlock); ok {
		// The listener's entry for the first waiting Accept; one of
		// their own for others, as several may wait at once.
		entry, ready := &l.entry, (<-chan struct{})(l.ready)
		if l.waitMu.TryLock() {
			defer l.waitMu.Unlock()
		} else {
			e, r := waiter.NewChannelEntry(waiter.ReadableEvents)
			entry, ready = &e, r
		}
		l.wq.EventRegister(entry)
		defer l.wq.EventUnregister(entry)
		for {
			ep, wq, terr = l.ep.Accept(nil)
			if _, ok := terr.(*tcpip.ErrWouldBlock); !ok {
				break
			}
			select {
			case <-ready:
			case <-l.cancel:
				return nil, l.acceptErr(net.ErrClosed)
			case <-l.n.done:
				return nil, l.acceptErr(net.ErrClosed)
			}
		}
	}
	if terr != nil {
		return nil, l.acceptErr(convertErr("accept", terr))
	}
	return newTCPConn(l.n, ep, wq), nil
}

func (l *tcpListener) acceptErr(err error) error {
	if l.isClosed() {
		err = net.ErrClosed
	}
	return &net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: err}
}

func (l *tcpListener) Addr() net.Addr { return l.addr }

// shutdown wakes blocked Accept calls and closes the endpoint. It reports
// whether this call did so.
func (l *tcpListener) shutdown() bool {
	first := false
	l.closeOnce.Do(func() {
		first = true
		close(l.cancel)
		l.ep.Close()
	})
	return first
}

func (l *tcpListener) Close() error {
	// Of concurrent calls, only the one that shuts down succeeds.
	if !l.shutdown() {
		return &net.OpError{Op: "close", Net: "tcp", Addr: l.addr, Err: net.ErrClosed}
	}
	l.n.mu.Lock()
	delete(l.n.listeners, l)
	l.n.mu.Unlock()
	return nil
}
