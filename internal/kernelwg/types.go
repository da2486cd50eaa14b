package kernelwg

import "github.com/wgkit/wgkit/internal/engine"

// The engine vocabulary lives in internal/engine, shared with the other
// engines; these aliases keep kernelwg's names.

// Key is a Curve25519 key or a preshared key: [engine.Key].
type Key = engine.Key

// MaxKeepalive is the longest persistent keepalive interval:
// [engine.MaxKeepalive].
const MaxKeepalive = engine.MaxKeepalive

// Config is a change to the link's configuration: [engine.Config].
type Config = engine.Config

// PeerConfig adds, updates or removes one peer: [engine.PeerConfig].
type PeerConfig = engine.PeerConfig

// State is the link's configuration and status: [engine.State].
type State = engine.State

// PeerState is one peer of a State: [engine.PeerState].
type PeerState = engine.PeerState
