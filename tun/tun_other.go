//go:build !linux && !windows

package tun

import (
	"context"
	"fmt"
	"runtime"

	"github.com/wgkit/wgkit/wg"
)

// open is Open on systems without a backend: it fails, naming the system.
func open(context.Context, *wg.Config, *Options, *openArgs) (*Interface, error) {
	return nil, fmt.Errorf("not implemented on %s/%s", runtime.GOOS, runtime.GOARCH)
}
