package netstack

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// errnoOf maps a gVisor error to the errno the host's kernel would report,
// so callers can test for errors.Is(err, syscall.ECONNREFUSED) and the
// like. ok is false for errors without an errno equivalent.
func errnoOf(err tcpip.Error) (errno syscall.Errno, ok bool) {
	switch err.(type) {
	case *tcpip.ErrConnectionRefused:
		return syscall.ECONNREFUSED, true
	case *tcpip.ErrConnectionReset:
		return syscall.ECONNRESET, true
	case *tcpip.ErrConnectionAborted, *tcpip.ErrAborted:
		return syscall.ECONNABORTED, true
	case *tcpip.ErrHostUnreachable, *tcpip.ErrHostDown:
		return syscall.EHOSTUNREACH, true
	case *tcpip.ErrNetworkUnreachable, *tcpip.ErrNoNet:
		return syscall.ENETUNREACH, true
	case *tcpip.ErrTimeout:
		return syscall.ETIMEDOUT, true
	case *tcpip.ErrPortInUse, *tcpip.ErrDuplicateAddress:
		return syscall.EADDRINUSE, true
	case *tcpip.ErrBadLocalAddress:
		return syscall.EADDRNOTAVAIL, true
	case *tcpip.ErrClosedForSend:
		return syscall.EPIPE, true
	case *tcpip.ErrNotConnected:
		return syscall.ENOTCONN, true
	case *tcpip.ErrMessageTooLong:
		return syscall.EMSGSIZE, true
	case *tcpip.ErrNoBufferSpace:
		return syscall.ENOBUFS, true
	case *tcpip.ErrAddressFamilyNotSupported:
		return syscall.EAFNOSUPPORT, true
	case *tcpip.ErrNoPortAvailable:
		return syscall.EAGAIN, true
	}
	return 0, false
}

// convertErr turns a gVisor error into an error of the net package's
// shape: an *os.SyscallError around an errno where one fits.
func convertErr(call string, err tcpip.Error) error {
	if errno, ok := errnoOf(err); ok {
		return os.NewSyscallError(call, errno)
	}
	return errors.New("netstack: " + err.String())
}

// tcpipErrors are the gVisor errors whose text gonet passes on in
// errors.New(err.String()); convertText maps them back.
func convertText(call string, err error) error {
	for _, e := range []tcpip.Error{
		&tcpip.ErrConnectionRefused{}, &tcpip.ErrConnectionReset{},
		&tcpip.ErrConnectionAborted{}, &tcpip.ErrAborted{},
		&tcpip.ErrHostUnreachable{}, &tcpip.ErrNetworkUnreachable{},
		&tcpip.ErrTimeout{}, &tcpip.ErrClosedForSend{},
		&tcpip.ErrNotConnected{}, &tcpip.ErrMessageTooLong{},
		&tcpip.ErrNoBufferSpace{},
	} {
		if err.Error() == e.String() {
			return convertErr(call, e)
		}
	}
	return err
}

// fixConnErr rewrites an error from a gonet UDP conn: after the
// conn (closedLocally) or the whole Net was closed, it becomes an
// *net.OpError wrapping net.ErrClosed, as the net package reports use of
// a closed connection; gVisor's error texts become errnos. Timeouts and
// io.EOF from an open conn pass unchanged, and deadline
// timeouts wrap os.ErrDeadlineExceeded.
func (n *Net) fixConnErr(err error, op string, closedLocally bool) error {
	if err == nil {
		return nil
	}
	var oe *net.OpError
	if !errors.As(err, &oe) {
		oe = &net.OpError{Op: op, Err: err}
	} else {
		c := *oe
		oe = &c
	}
	if closedLocally || n.isClosed() {
		oe.Err = net.ErrClosed
		return oe
	}
	if err == io.EOF {
		return err
	}
	if ne, ok := oe.Err.(net.Error); ok && ne.Timeout() {
		// As the net package does, so errors.Is(err, os.ErrDeadlineExceeded).
		oe.Err = os.ErrDeadlineExceeded
		return oe
	}
	call := "read"
	if op == "write" {
		call = "write"
	}
	oe.Err = convertText(call, oe.Err)
	return oe
}
