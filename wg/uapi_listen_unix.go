//go:build !windows

package wg

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// DefaultUAPIDir is where wg(8) looks for UAPI sockets on Unix systems.
const DefaultUAPIDir = "/var/run/wireguard"

// ListenUAPI listens for wg(8) configuration connections, for use as
// DeviceOptions.UAPI. On Unix systems it creates the socket dir/name.sock
// with owner-only permissions, creating dir with mode 0700 if needed; dir ""
// means DefaultUAPIDir, the only directory wg(8) itself searches. A stale
// socket left by a dead process is replaced; a live one, or a file
// there that is not a socket, is an error wrapping os.ErrExist. On Windows it listens on the named pipe that
// wireguard-go uses for name and ignores dir.
//
// Closing the listener removes the socket file.
func ListenUAPI(dir, name string) (net.Listener, error) {
	if name == "" || filepath.Base(name) != name {
		return nil, fmt.Errorf("wg: listen uapi: bad interface name %q", name)
	}
	if dir == "" {
		dir = DefaultUAPIDir
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("wg: listen uapi: %w", err)
	}
	path := filepath.Join(dir, name+".sock")
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			// Connecting to a regular file is refused too: never remove one.
			return nil, fmt.Errorf("wg: listen uapi: %s exists and is not a socket: %w", path, os.ErrExist)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("wg: listen uapi: %s is in use: %w", path, os.ErrExist)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("wg: listen uapi: probe existing socket: %w", err)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("wg: listen uapi: remove stale socket: %w", err)
		}
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("wg: listen uapi: %w", err)
	}
	// The socket is created with the process umask; narrow it to the owner.
	// wg(8) configures keys through it, so nobody else may connect.
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("wg: listen uapi: %w", err)
	}
	return l, nil
}
