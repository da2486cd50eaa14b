package engine

// Engine is a WireGuard engine driven through typed configuration: a
// kernel-side implementation (a Linux `wireguard` link, a WireGuardNT
// adapter) that wg.Device can sit on instead of wireguard-go.
//
// Implementations are safe for concurrent use: each method may be called
// from any goroutine, and calls are serialized or otherwise made safe by
// the engine.
//
// After Close, every method returns an error wrapping net.ErrClosed.
type Engine interface {
	// Configure applies c as a change: nil fields and false flags leave a
	// setting as it is (see Config). A nil c is an error. It calls
	// c.Validate first and applies nothing when that fails. An engine applies c in as few
	// steps as its interface allows; when the engine itself rejects a
	// step, what came before it stays applied, as with wg(8).
	Configure(c *Config) error
	// State reads the engine's configuration and status as it is now,
	// including changes made behind the caller's back (by wg(8), say).
	State() (*State, error)
	// Up brings the interface up, which opens its UDP sockets; with a
	// listen port of 0 the engine then picks one (State reports it).
	Up() error
	// Close removes the interface (and with it the addresses and routes
	// the host had on it) and releases every handle the engine holds. It
	// is idempotent: calls after the first do nothing and return an
	// error wrapping net.ErrClosed.
	Close() error
}
