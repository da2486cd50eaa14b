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
// DeviceOptions.UAPI. On Unix systems it creates the socket dir/name.sock;
// dir "" means DefaultUAPIDir, the only directory wg(8) itself searches.
// On Windows it listens on the named pipe that wireguard-go uses for name
// and ignores dir.
//
// wg(8) configures keys through the socket, so nobody but the process's
// user may reach it, not even for an instant: ListenUAPI makes sure dir is
// a directory that only its owner can enter before creating the socket in
// it, and does not touch the process umask. A missing dir is created with
// mode 0700 (its missing parents too); an existing dir owned by the
// process's effective user with any group or other permission bits is
// tightened to 0700; a dir owned by another user, or that is a symbolic
// link, is refused with an error wrapping os.ErrPermission, since its
// owner could swap the socket. The socket itself gets mode 0600 as well.
// dir's parents are not checked: they must not be writable by others.
//
// A stale socket left by a dead process is replaced; a live one, or a file
// there that is not a socket, is an error wrapping os.ErrExist.
//
// Closing the listener removes the socket file.
func ListenUAPI(dir, name string) (net.Listener, error) {
	if name == "" || filepath.Base(name) != name {
		return nil, fmt.Errorf("wg: listen uapi: bad interface name %q", name)
	}
	if dir == "" {
		dir = DefaultUAPIDir
	}
	if err := privateDir(dir); err != nil {
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
	// The socket is created with the process umask, which may let others
	// write to it; dir keeps them out meanwhile. Narrow it all the same,
	// in case dir is loosened later.
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("wg: listen uapi: %w", err)
	}
	return l, nil
}

// privateDir makes dir a directory that only the process's effective user
// can enter, as ListenUAPI documents.
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		return fmt.Errorf("socket directory %s is a symbolic link: %w", dir, os.ErrPermission)
	}
	if !fi.IsDir() {
		return fmt.Errorf("socket directory %s is not a directory", dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("socket directory %s: no owner in its file information", dir)
	}
	if euid := os.Geteuid(); int(st.Uid) != euid {
		return fmt.Errorf("socket directory %s is owned by uid %d, not by this process's uid %d: %w", dir, st.Uid, euid, os.ErrPermission)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("tighten socket directory: %w", err)
		}
	}
	return nil
}
