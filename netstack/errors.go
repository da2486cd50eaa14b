package netstack

import (
	"errors"
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
	case *tcpip.ErrNoPortAvailable, *tcpip.ErrWouldBlock:
		return syscall.EAGAIN, true
	case *tcpip.ErrDestinationRequired:
		return syscall.EDESTADDRREQ, true
	case *tcpip.ErrInvalidEndpointState, *tcpip.ErrInvalidOptionValue:
		return syscall.EINVAL, true
	case *tcpip.ErrBroadcastDisabled:
		return syscall.EACCES, true
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
