package netstack

import (
	"io"
	"net"
	"sync"
)

// joinBufSize is the copy buffer of one direction of a joined TCP flow.
const joinBufSize = 32 << 10

// joinBufs pools join's copy buffers: each direction holds one for as
// long as it runs, so an open flow holds 2 x joinBufSize.
var joinBufs = sync.Pool{New: func() any { b := make([]byte, joinBufSize); return &b }}

// join copies a to b and b to a until both directions end, passing a
// half-close on: when one side's reads end, the other side's writes are
// closed (CloseWrite) and the other direction goes on. It returns when
// both directions ended, after closing both conns.
//
// TODO: switch to internal/pipe (the proxy work) once it is on main.
func join(a, b net.Conn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		copyHalf(b, a)
	}()
	copyHalf(a, b)
	<-done
	a.Close()
	b.Close()
}

// copyHalf copies src to dst, then closes dst for writing (or entirely,
// if it cannot half-close) and src for reading.
func copyHalf(dst, src net.Conn) {
	bp := joinBufs.Get().(*[]byte)
	_, err := io.CopyBuffer(writerOnly{dst}, readerOnly{src}, *bp)
	joinBufs.Put(bp)
	if cw, ok := dst.(interface{ CloseWrite() error }); ok && err == nil {
		cw.CloseWrite()
	} else {
		// An error (a reset, a failed write) ends both directions.
		dst.Close()
		src.Close()
	}
}

// readerOnly and writerOnly hide ReadFrom and WriteTo, so that
// io.CopyBuffer uses the pooled buffer.
type readerOnly struct{ io.Reader }
type writerOnly struct{ io.Writer }
