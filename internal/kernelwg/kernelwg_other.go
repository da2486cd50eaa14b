//go:build !linux

package kernelwg

import (
	"errors"
	"fmt"
	"runtime"
)

// Options are the optional settings of Create. nil and zero fields mean
// the documented defaults.
type Options struct {
	// MTU is the link's MTU in bytes; 0 leaves the kernel's default
	// (1420). The kernel checks the range.
	MTU int
}

// Device is a kernel WireGuard link; there is none on this system.
type Device struct{}

// errNoKernel is the error of every call on this system.
var errNoKernel = fmt.Errorf("kernelwg: no kernel WireGuard engine on %s/%s: %w", runtime.GOOS, runtime.GOARCH, errors.ErrUnsupported)

// Available reports whether the kernel can make WireGuard links here:
// never on this system.
func Available() bool { return false }

// Create makes a kernel WireGuard link; on this system it fails with an
// error wrapping errors.ErrUnsupported.
func Create(name string, opts *Options) (*Device, error) { return nil, errNoKernel }

// Name returns the link's name.
func (d *Device) Name() string { return "" }

// Index returns the link's interface index.
func (d *Device) Index() int { return 0 }

// Up sets the link up.
func (d *Device) Up() error { return errNoKernel }

// Configure applies c.
func (d *Device) Configure(c *Config) error { return errNoKernel }

// State reads the link's configuration and status.
func (d *Device) State() (*State, error) { return nil, errNoKernel }

// Close deletes the link.
func (d *Device) Close() error { return errNoKernel }
