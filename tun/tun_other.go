//go:build !linux && !windows

package tun

import (
	"context"
	"fmt"
	"runtime"

	"github.com/wgkit/wgkit/wg"
)

// open is Open on systems without a backend: it fails, naming the system.
func open(_ context.Context, _ *wg.Config, opts *Options) (*Interface, error) {
	if opts.Bind != nil {
		opts.Bind.Close()
	}
	return nil, fmt.Errorf("tun: open: not implemented on %s/%s", runtime.GOOS, runtime.GOARCH)
}
