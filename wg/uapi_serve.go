package wg

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Limits on wg(8) connections. wireguard-go's IpcHandle holds the engine's
// configuration lock while it reads a request from the socket and writes
// the reply, so a client that stalls mid-request, or never reads, would
// block every status call, SetPeer and PeerFor's rebuild. wgkit instead
// reads each request whole, within these bounds, then lets the engine
// handle it from memory and writes the reply itself.
const (
	// uapiMaxLine bounds one line of a request. The longest line wg(8)
	// sends, an IPv6 endpoint with a zone, is under 100 bytes.
	uapiMaxLine = 4 << 10
	// uapiMaxRequest bounds one whole request. A wg(8) "set" costs about
	// 250 bytes per peer plus 20 to 55 per allowed IP, so 16 MiB holds a
	// `wg setconf` of 10 000 peers with up to 28 IPv6 (or 45 IPv4)
	// allowed IPs each.
	uapiMaxRequest = 16 << 20
	// uapiMaxConns bounds the connections served at once; the others wait
	// in the listener's backlog. With the request bound it caps the memory
	// wg(8) clients can hold at 64 MiB (and 24 MiB more for a moment while
	// a request's buffer grows).
	uapiMaxConns = 4
	// uapiReadTimeout bounds the wait for one whole request, counted from
	// the end of the previous reply (or the connection's start); wg(8)
	// sends its request at once after connecting.
	uapiReadTimeout = 10 * time.Second
	// uapiWriteTimeout bounds the writing of one reply.
	uapiWriteTimeout = 10 * time.Second
)

// uapiLimits are the bounds a Device applies to wg(8) connections: the
// constants above, smaller in tests.
type uapiLimits struct {
	maxLine, maxRequest, maxConns int
	readTimeout, writeTimeout     time.Duration
}

func defaultUAPILimits() uapiLimits {
	return uapiLimits{
		maxLine:      uapiMaxLine,
		maxRequest:   uapiMaxRequest,
		maxConns:     uapiMaxConns,
		readTimeout:  uapiReadTimeout,
		writeTimeout: uapiWriteTimeout,
	}
}

// uapiState is the part of a Device that serves wg(8).
type uapiState struct {
	uapi       net.Listener
	uapiLimits uapiLimits
	uapiWG     sync.WaitGroup // the accept loop and every UAPI connection handler
	uapiMu     sync.Mutex
	uapiConn   map[net.Conn]struct{} // guarded by uapiMu; nil once closed
	uapiDone   chan struct{}         // closed by closeUAPI; ends the accept loop's waits
}

// startUAPI serves wg(8) on l, if not nil, until closeUAPI. The device
// owns l from here on.
func (d *Device) startUAPI(l net.Listener) {
	if l == nil {
		return
	}
	d.uapi = l
	if d.uapiLimits == (uapiLimits{}) {
		d.uapiLimits = defaultUAPILimits()
	}
	d.uapiConn = make(map[net.Conn]struct{})
	d.uapiDone = make(chan struct{})
	d.uapiWG.Add(1)
	go d.serveUAPI()
}

// serveUAPI accepts wg(8) connections until the device is closed, serving
// at most uapiLimits.maxConns at once. A failed Accept (out of file
// descriptors, an aborted connection) is retried with a growing delay, as
// net/http's Server does, rather than ending wg(8) support for the life of
// the device.
func (d *Device) serveUAPI() {
	defer d.uapiWG.Done()
	slots := make(chan struct{}, d.uapiLimits.maxConns)
	var delay time.Duration
	for {
		select {
		case slots <- struct{}{}:
		case <-d.uapiDone:
			return
		}
		c, err := d.uapi.Accept()
		if err != nil {
			<-slots
			if errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			d.log.Error("wg: uapi accept", "err", err, "retry", delay)
			select {
			case <-time.After(delay):
				continue
			case <-d.uapiDone:
				return
			}
		}
		delay = 0
		d.uapiMu.Lock()
		if d.uapiConn == nil {
			d.uapiMu.Unlock()
			c.Close()
			return
		}
		d.uapiConn[c] = struct{}{}
		d.uapiWG.Add(1)
		d.uapiMu.Unlock()
		go func() {
			defer d.uapiWG.Done()
			d.serveUAPIConn(c)
			c.Close()
			d.uapiMu.Lock()
			delete(d.uapiConn, c)
			d.uapiMu.Unlock()
			<-slots
		}()
	}
}

// serveUAPIConn serves the requests of one wg(8) connection until the
// client closes it or breaks a limit. The engine's lock is taken only by
// IpcHandle on the in-memory copy of a request, never while waiting on c.
func (d *Device) serveUAPIConn(c net.Conn) {
	lim := d.uapiLimits
	br := bufio.NewReaderSize(c, lim.maxLine)
	var req []byte
	var reply bytes.Buffer
	for {
		c.SetReadDeadline(time.Now().Add(lim.readTimeout))
		op, err := readUAPIRequest(br, &req, lim.maxLine, lim.maxRequest)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				d.log.Warn("wg: uapi: closing connection", "err", err)
			}
			return
		}
		reply.Reset()
		d.wgo.dev.IpcHandle(&memConn{r: bytes.NewReader(req), w: &reply})
		if op == uapiSet {
			// Before the reply, so that by the time wg(8) learns the
			// change is done, PeerFor sees it. A failed set may have
			// applied part of its lines.
			d.routesChanged()
		}
		if cap(req) > 4*lim.maxLine {
			req = nil // do not keep a large request's buffer for the life of the connection
		}
		c.SetWriteDeadline(time.Now().Add(lim.writeTimeout))
		if _, err := c.Write(reply.Bytes()); err != nil {
			if !errors.Is(err, net.ErrClosed) {
				d.log.Warn("wg: uapi: closing connection", "err", err)
			}
			return
		}
		if reply.Cap() > 4*lim.maxLine {
			reply = bytes.Buffer{}
		}
	}
}

// uapiOp is the operation of a UAPI request.
type uapiOp int

const (
	uapiGet uapiOp = iota + 1
	uapiSet
)

// errUAPIOp is returned by readUAPIRequest for a request that is neither
// a get nor a set, after which the engine would close the connection.
var errUAPIOp = errors.New("not a UAPI get or set")

// readUAPIRequest reads one request into *req, reusing its memory: its
// operation line ("get=1" or "set=1") and the lines after it, through the
// blank line that ends it. It fails on a line longer than maxLine (br's
// buffer size), on a request longer than maxRequest, on a read error or
// deadline, and with io.EOF if the client closed the connection between
// requests. *req never grows beyond maxRequest bytes of capacity.
func readUAPIRequest(br *bufio.Reader, req *[]byte, maxLine, maxRequest int) (uapiOp, error) {
	*req = (*req)[:0]
	var op uapiOp
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			return 0, fmt.Errorf("line longer than %d bytes", maxLine)
		case errors.Is(err, io.EOF) && (len(*req) > 0 || len(line) > 0):
			return 0, fmt.Errorf("connection closed inside a request: %w", io.ErrUnexpectedEOF)
		case errors.Is(err, os.ErrDeadlineExceeded) && len(*req) == 0 && len(line) == 0:
			return 0, fmt.Errorf("no request within the read timeout: %w", err)
		case errors.Is(err, os.ErrDeadlineExceeded):
			return 0, fmt.Errorf("request not complete within the read timeout: %w", err)
		case err != nil:
			return 0, err
		}
		n := len(*req) + len(line)
		if n > maxRequest {
			return 0, fmt.Errorf("request longer than %d bytes", maxRequest)
		}
		if op == 0 {
			switch string(line) {
			case "get=1\n":
				op = uapiGet
			case "set=1\n":
				op = uapiSet
			default:
				return 0, fmt.Errorf("%w: %s", errUAPIOp, quote(string(line)))
			}
		}
		if n > cap(*req) {
			grown := make([]byte, len(*req), min(max(2*cap(*req), n, 4096), maxRequest))
			copy(grown, *req)
			*req = grown
		}
		*req = append(*req, line...)
		if len(line) == 1 {
			return op, nil // the blank line
		}
	}
}

// memConn is a net.Conn over one buffered request and its reply, for the
// engine's IpcHandle: reads end with io.EOF after the request, so IpcHandle
// returns once it has answered.
type memConn struct {
	r *bytes.Reader
	w *bytes.Buffer
}

func (c *memConn) Read(b []byte) (int, error)         { return c.r.Read(b) }
func (c *memConn) Write(b []byte) (int, error)        { return c.w.Write(b) }
func (c *memConn) Close() error                       { return nil }
func (c *memConn) LocalAddr() net.Addr                { return memAddr{} }
func (c *memConn) RemoteAddr() net.Addr               { return memAddr{} }
func (c *memConn) SetDeadline(t time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(t time.Time) error { return nil }

type memAddr struct{}

func (memAddr) Network() string { return "uapi" }
func (memAddr) String() string  { return "uapi" }

// closeUAPI closes the UAPI listener and its connections, once.
func (d *Device) closeUAPI() {
	if d.uapi == nil {
		return
	}
	d.uapiMu.Lock()
	defer d.uapiMu.Unlock()
	if d.uapiConn == nil {
		return // closed before
	}
	close(d.uapiDone)
	d.uapi.Close()
	for c := range d.uapiConn {
		c.Close()
	}
	d.uapiConn = nil
}
