//go:build !linux && !windows

package tun

import (
	"fmt"
	"runtime"
)

// newPlatform fails on systems without a backend, naming the system.
func newPlatform() (platform, error) {
	return nil, fmt.Errorf("not implemented on %s/%s", runtime.GOOS, runtime.GOARCH)
}
