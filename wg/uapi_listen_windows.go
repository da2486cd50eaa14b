//go:build windows

package wg

import (
	"fmt"
	"net"

	"golang.zx2c4.com/wireguard/ipc"
)

// ListenUAPI listens for wg(8) configuration connections, for use as
// DeviceOptions.UAPI. On Windows it listens on the named pipe that
// wireguard-go uses for name (`\\.\pipe\ProtectedPrefix\Administrators\WireGuard\NAME`),
// owned by Administrators, and ignores dir. On Unix systems it creates the
// socket dir/name.sock in a directory only its owner can enter.
func ListenUAPI(dir, name string) (net.Listener, error) {
	l, err := ipc.UAPIListen(name)
	if err != nil {
		return nil, fmt.Errorf("wg: listen uapi: %w", err)
	}
	return l, nil
}
