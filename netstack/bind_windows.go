package netstack

import (
	"log/slog"

	"golang.zx2c4.com/wireguard/conn"
)

// defaultBind is the Bind of a Net whose Options name none. On Windows it
// is wireguard-go's default, the Registered I/O ring Bind: its batch is
// one datagram, so the engine holds little memory, and RIO is faster there
// than the plain sockets wgkit's own Bind would use.
func defaultBind(int, *slog.Logger) conn.Bind {
	return conn.NewDefaultBind()
}
