// Package pipe joins two connections both ways, as a proxy or a port
// forward does: bytes read from one are written to the other, an end of
// stream on one side becomes a half-close (CloseWrite) of the other, and
// the copies run on pooled buffers, so a long transfer allocates nothing
// per buffer.
package pipe

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// BufferSize is the size in bytes of each large copy buffer: the most
// one Read asks for and one Write passes on. A direction holds one only
// while data moves (see [Join]); buffers come from a pool shared by every
// Join in the process.
const BufferSize = 64 << 10

// IdleBufferSize is the size in bytes of the small buffer a direction
// reads into while no data moves, so an idle joined pair holds two of
// these (4 KiB) rather than two of [BufferSize] (128 KiB).
const IdleBufferSize = 2 << 10

// bigPool and smallPool hold *[BufferSize]byte and *[IdleBufferSize]byte.
// They are the package's only shared values and hold nothing observable:
// caches of free buffers (pointers to arrays, so that Put does not
// allocate a slice header).
var (
	bigPool   = sync.Pool{New: func() any { return new([BufferSize]byte) }}
	smallPool = sync.Pool{New: func() any { return new([IdleBufferSize]byte) }}
)

// closeWriter is the half-close of *net.TCPConn, *net.UnixConn,
// *tls.Conn and netstack's TCP conns.
type closeWriter interface {
	CloseWrite() error
}

// Join copies a to b and b to a until both directions have ended, then
// closes both conns. It returns the bytes written to b (read from a) and
// to a (read from b), and the first error that ended a direction early.
//
// A direction ends normally when its source returns io.EOF: Join then
// half-closes the destination (CloseWrite, when the conn has that
// method; otherwise it closes the destination, which ends the other
// direction as well) and keeps copying the other way, so a client that
// shuts its write side down still reads the reply. A direction that fails
// (a read or write error other than io.EOF) closes both conns at once,
// which ends the other direction; errors that only report this close
// (net.ErrClosed) are not returned. err is nil when both directions ended
// with io.EOF.
//
// Each direction reads into a small buffer ([IdleBufferSize]) while the
// data comes in small pieces or not at all, and takes a large one
// ([BufferSize]) from the pool when a read fills the small one; it gives
// the large one back after a read that does not fill it (the source had
// no more queued). So a flow that waits, as most do, holds 4 KiB, and a
// bulk transfer still moves up to 64 KiB per Read and Write.
//
// Join blocks until both copies are done; close either conn to end it
// early (the other direction's error is then net.ErrClosed, which Join
// does not report). It starts one goroutine and ends it before it
// returns. Join may be called concurrently for any number of pairs; a and
// b must not be read or written by anything else while it runs.
func Join(a, b net.Conn) (aToB, bToA int64, err error) {
	var (
		once   sync.Once
		failed error
		closed atomic.Bool // set before Join closes a conn in full
		done   = make(chan struct{})
	)
	fail := func(e error) {
		once.Do(func() {
			if !closed.Swap(true) {
				failed = quiet(e)
			}
			a.Close()
			b.Close()
		})
	}
	go func() {
		defer close(done)
		bToA = copyHalf(a, b, &closed, fail)
	}()
	aToB = copyHalf(b, a, &closed, fail)
	<-done
	// Both directions ended; close whatever a half-close left open.
	// Errors here only say the conn was closed already.
	a.Close()
	b.Close()
	return aToB, bToA, failed
}

// copyHalf copies src to dst until src ends, then half-closes dst (or
// closes it, setting closed first). On any other error it calls fail,
// which closes both conns. It returns the bytes written to dst.
func copyHalf(dst, src net.Conn, closed *atomic.Bool, fail func(error)) int64 {
	small := smallPool.Get().(*[IdleBufferSize]byte)
	defer smallPool.Put(small)
	var big *[BufferSize]byte // non-nil while data moves
	defer func() {
		if big != nil {
			bigPool.Put(big)
		}
	}()
	var written int64
	for {
		buf := small[:]
		if big != nil {
			buf = big[:]
		}
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			written += int64(nw)
			if werr == nil && nw != nr {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				fail(werr)
				return written
			}
		}
		// A full buffer means more is likely queued: read the rest in
		// large pieces. A short read drained the source: the next Read
		// may wait for long, so do not hold the large buffer through it.
		switch {
		case big == nil && nr == len(small):
			big = bigPool.Get().(*[BufferSize]byte)
		case big != nil && nr < len(big):
			bigPool.Put(big)
			big = nil
		}
		if rerr == io.EOF {
			if cw, ok := dst.(closeWriter); ok {
				if err := cw.CloseWrite(); err != nil {
					fail(err)
				}
			} else {
				closed.Store(true)
				dst.Close()
			}
			return written
		}
		if rerr != nil {
			fail(rerr)
			return written
		}
	}
}

// quiet drops net.ErrClosed and io.ErrClosedPipe: a conn closed by the
// caller to end the Join is not a failure to report. (Errors that follow
// Join's own closes are dropped by the closed flag.)
func quiet(err error) error {
	if errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe) {
		return nil
	}
	return err
}
