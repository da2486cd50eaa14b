package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/wgkit/wgkit/netstack"
)

// TestReplyCode maps dial errors of the shapes netstack returns to RFC
// 1928's reply codes, and to HTTP statuses.
func TestReplyCode(t *testing.T) {
	op := func(err error) error { return &net.OpError{Op: "dial", Net: "tcp", Err: err} }
	tests := []struct {
		name   string
		err    error
		want   byte
		status int
	}{
		{"no route", op(fmt.Errorf("%w: 10.9.9.9", netstack.ErrNoRoute)), repNetUnreachable, 502},
		{"family the tunnel lacks", op(&net.AddrError{Err: "netstack: no address of a family the tunnel has (IPv4 only)", Addr: "v6.example"}), repNetUnreachable, 502},
		{"ENETUNREACH", op(os.NewSyscallError("connect", syscall.ENETUNREACH)), repNetUnreachable, 502},
		{"EHOSTUNREACH", op(os.NewSyscallError("connect", syscall.EHOSTUNREACH)), repHostUnreachable, 502},
		{"no such host", op(&net.DNSError{Err: "no such host", Name: "x", IsNotFound: true}), repHostUnreachable, 502},
		{"DNS servers not routed", op(&net.DNSError{Err: "x", Name: "x", UnwrapErr: netstack.ErrNoRoute}), repHostUnreachable, 502},
		{"refused", op(os.NewSyscallError("connect", syscall.ECONNREFUSED)), repConnRefused, 502},
		{"ETIMEDOUT", op(os.NewSyscallError("connect", syscall.ETIMEDOUT)), repTTLExpired, 504},
		{"context deadline", op(context.DeadlineExceeded), repTTLExpired, 504},
		{"other", errors.New("something else"), repGeneralFailure, 502},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := [2]int{int(replyCode(tt.err)), statusFor(tt.err)}
			if diff := cmp.Diff([2]int{int(tt.want), tt.status}, got); diff != "" {
				t.Errorf("reply code and status (-want +got):\n%s", diff)
			}
		})
	}
}
