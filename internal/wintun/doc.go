// Package wintun is the tun.Device of a Wintun adapter on Windows: the
// same packet path as wireguard-go's tun.NativeTun, over
// golang.zx2c4.com/wintun, but created with the caller's tunnel type.
//
// wireguard-go's tun.CreateTUNWithRequestedGUID reads the adapter's
// tunnel type from its package variable WintunTunnelType, so choosing a
// type per tunnel there means writing a variable of the whole process.
// Create takes the type as an argument instead, and no package
// variable of wireguard-go is read or written.
//
// The platform-independent part, [Device] over a packet ring, is tested
// on every system with a ring in memory; only the ring of a real Wintun
// session and Create (ring_windows.go, built on Windows only) need
// Windows, wintun.dll and Administrator rights.
//
// # What differs from wireguard-go's NativeTun
//
//   - The tunnel type is an argument of Create.
//   - A packet longer than the reader's buffer is dropped (and counted in
//     [Device.Dropped]) instead of being delivered cut short.
//   - Read waits on the session's event as soon as the ring is empty;
//     NativeTun first spins for up to 50 µs when its packet rate is high,
//     through linknamed runtime functions, which this package does not use.
//   - Close waits for Read and Write to leave the ring under a lock rather
//     than a WaitGroup that they join after Close may have begun waiting,
//     and a second Close returns an error wrapping net.ErrClosed.
//
// Like NativeTun, [Device.BatchSize] is 1: wireguard-go's Windows Binds
// handle one datagram per call, and a batch larger than the Bind's is
// outside the conn.Bind contract.
package wintun
