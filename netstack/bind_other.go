//go:build !windows

package netstack

import (
	"log/slog"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/wgkit/wgkit/internal/udpbind"
)

// defaultBind is the Bind of a Net whose Options name none: wgkit's lean
// UDP Bind. Not conn.NewDefaultBind: on Linux it reports a batch of 128
// (and needs it with UDP GRO on), and the engine then holds 24 MiB of
// buffers per idle tunnel.
func defaultBind(batch int, log *slog.Logger) conn.Bind {
	return udpbind.New(&udpbind.Options{BatchSize: batch, Logger: log})
}
