//go:build !windows

package wgnt

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/wgkit/wgkit/internal/engine"
)

// errNoDriver is the error of every call on this system.
var errNoDriver = fmt.Errorf("wgnt: no WireGuardNT on %s/%s: %w", runtime.GOOS, runtime.GOARCH, errors.ErrUnsupported)

// Available reports whether WireGuardNT can make adapters here: never on
// this system.
func Available() bool { return false }

// Device is a WireGuardNT adapter; there is none on this system.
type Device struct{}

// Create makes a WireGuardNT adapter; on this system it fails with an
// error wrapping errors.ErrUnsupported.
func Create(name string, opts *Options) (*Device, error) { return nil, errNoDriver }

// Name returns the adapter's name.
func (d *Device) Name() string { return "" }

// LUID returns the adapter's locally unique identifier.
func (d *Device) LUID() uint64 { return 0 }

// Up sets the adapter up.
func (d *Device) Up() error { return errNoDriver }

// Configure applies c.
func (d *Device) Configure(c *engine.Config) error { return errNoDriver }

// State reads the adapter's configuration and status.
func (d *Device) State() (*engine.State, error) { return nil, errNoDriver }

// Close removes the adapter.
func (d *Device) Close() error { return errNoDriver }
